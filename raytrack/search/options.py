"""What a search space may search: the option behind each parameter name, and its checks.

Parameter names are ``depth``, ``width`` and ``taper`` (the architecture), the ModelConfig
options other than ``hidden``, and the TrainConfig options other than ``epochs``,
``time_budget`` and ``seed`` (those come from the command line). The catalogue is read from
the config dataclasses, so a new option is searchable without touching this file.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from raytrack.models.mlp import ACTIVATIONS, TARGET_MODES, ModelConfig
from raytrack.models.train_config import PRECISIONS, SCHEDULES, TrainConfig

CLI_OPTIONS = ("epochs", "time_budget", "seed")
ARCHITECTURE = ("depth", "width", "taper")
DEFAULT_MIN_WIDTH = 8
# String options whose allowed values an error message lists (the configs check the others).
STRING_CHOICES: dict[str, tuple[str, ...]] = {
    "activation": tuple(ACTIVATIONS),
    "target": TARGET_MODES,
    "schedule": SCHEDULES,
    "precision": PRECISIONS,
}

_PY_TYPES = {"int": int, "float": (int, float), "str": str}
_KIND_WORDS = {"int": "an integer", "float": "a number", "str": "a string"}
# The parameter types that can express a value of each kind (an int range of a float option
# draws whole numbers, which is still a valid float setting).
_PARAM_TYPES = {
    "int": ("int", "categorical", "fixed"),
    "float": ("float", "int", "categorical", "fixed"),
    "str": ("categorical", "fixed"),
}


class SearchSpaceError(ValueError):
    """A search space is malformed or cannot express a request; the message names the file and
    the key at fault."""


@dataclass(frozen=True)
class Option:
    """What one parameter name stands for: value kind, owner (arch/model/train), default."""

    name: str
    kind: str  # "int", "float", "str"
    owner: str  # "arch", "model", "train"
    default: Any = None

    @property
    def param_types(self) -> tuple[str, ...]:
        """The ``type`` values a ``[params.NAME]`` table of this option may have."""
        return _PARAM_TYPES[self.kind]

    def check(self, value: Any) -> str | None:
        """Why ``value`` is not a valid setting of this option, or None."""
        if isinstance(value, bool) or not isinstance(value, _PY_TYPES[self.kind]):
            return f"{value!r} is not {_KIND_WORDS[self.kind]}"
        allowed = STRING_CHOICES.get(self.name)
        if allowed is not None and value not in allowed:
            return f"{value!r} is not allowed; allowed: {allowed}"
        if self.owner == "arch":
            return None if value > 0 else f"{value!r} must be > 0"
        # The config's own check, so that the file cannot drift from what training accepts.
        config = ModelConfig if self.owner == "model" else TrainConfig
        try:
            config(**{self.name: value})
        except ValueError as err:
            return f"{value!r} is not a valid {self.name} ({err})"
        return None


def _options() -> dict[str, Option]:
    """Every searchable option, by parameter name."""
    options = {
        "depth": Option("depth", "int", "arch"),
        "width": Option("width", "int", "arch"),
        "taper": Option("taper", "float", "arch"),
    }
    for owner, config in (("model", ModelConfig), ("train", TrainConfig)):
        defaults = config()
        for field in fields(config):
            if field.name in ("hidden", *CLI_OPTIONS):
                continue
            default = getattr(defaults, field.name)
            kind = "str" if isinstance(default, str) else type(default).__name__
            options[field.name] = Option(field.name, kind, owner, default)
    return options


OPTIONS = _options()
MODEL_OPTIONS = tuple(name for name, opt in OPTIONS.items() if opt.owner == "model")
TRAIN_OPTIONS = tuple(name for name, opt in OPTIONS.items() if opt.owner == "train")


def option_named(name: str, where: str) -> Option:
    """The option a ``[params.NAME]`` table searches; ``where`` prefixes any error."""
    if name in OPTIONS:
        return OPTIONS[name]
    if name in CLI_OPTIONS:
        raise SearchSpaceError(
            f"{where}: {name} is not searched: epochs, time_budget and seed come from the "
            "command line"
        )
    if name == "hidden" or (name.startswith("width_") and name[6:].isdigit()):
        raise SearchSpaceError(
            f"{where}: declare the widths once as [params.width] with per_layer = true "
            "(width_0, width_1, ...) or with [params.taper]"
        )
    raise SearchSpaceError(f"{where}: unknown parameter {name!r}; allowed: {sorted(OPTIONS)}")
