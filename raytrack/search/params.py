"""Search parameters: one ``[params.NAME]`` table each, checked by its pydantic model.

Like Optuna's distributions, each parameter type is a class that knows how to draw itself on
a trial: :class:`IntParam`, :class:`FloatParam` (``low``, ``high``, ``step`` or ``log``),
:class:`CategoricalParam` (``choices``) and :class:`FixedParam` (``value``, not searched).
Any of them may carry a :class:`Condition` (``when``). The models check one table; the rules
between tables (architecture, conditions, constraints) are in ``schema.py``.

Values are checked against the option the table searches (``options.OPTIONS``), given as the
validation context: ``IntParam.model_validate(table, context={"option": OPTIONS["depth"]})``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import optuna
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from raytrack.search.options import DEFAULT_MIN_WIDTH, SearchSpaceError

WHEN_FORM = '{ param = "depth", in = [4, 5] } or { param = "schedule", equals = "cosine" }'
WIDTH_KEYS = frozenset({"per_layer", "min_width"})  # keys of [params.width] only
StrictFloat = Annotated[float, Field(strict=True)]  # a TOML integer is accepted, a string not


class Table(BaseModel):
    """A TOML table: an unknown key is refused with the list of allowed ones."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any, info: ValidationInfo) -> Any:
        # Before pydantic's own extra="forbid": its message does not say what is allowed.
        if isinstance(data, dict):
            allowed = {field.alias or name for name, field in cls.model_fields.items()}
            allowed -= cls._keys_not_for(info.context or {})
            unknown = sorted(set(data) - allowed)
            if unknown:
                raise ValueError(f"unknown key(s) {unknown}; allowed: {sorted(allowed)}")
        return data

    @classmethod
    def _keys_not_for(cls, context: Mapping[str, Any]) -> set[str]:
        """Keys the model has but this table may not use."""
        return set()


class Condition(Table):
    """``when = { param = ..., in = [...] }`` (or ``equals = ...``): holds for those values."""

    param: StrictStr
    in_: list[Any] | None = Field(None, alias="in", min_length=1)
    equals: Any = None

    @model_validator(mode="before")
    @classmethod
    def _a_table(cls, data: Any) -> Any:
        if not isinstance(data, dict):  # say what the table looks like, not only its type
            raise ValueError(f"expected {WHEN_FORM}, got {data!r}")
        return data

    @model_validator(mode="after")
    def _one_form(self) -> Condition:
        if ("in_" in self.model_fields_set) == ("equals" in self.model_fields_set):
            raise ValueError(f"give exactly one of 'in' and 'equals': {WHEN_FORM}")
        return self

    @property
    def values(self) -> tuple[Any, ...]:
        """The values of ``param`` for which the condition holds."""
        return tuple(self.in_) if self.in_ is not None else (self.equals,)

    def holds(self, values: Mapping[str, Any]) -> bool:
        """True when the referenced parameter is present and takes one of the values."""
        return self.param in values and values[self.param] in self.values


def _valid_setting(value: Any, info: ValidationInfo) -> Any:
    """``value`` if the option in the validation context accepts it (no context: no check)."""
    option = (info.context or {}).get("option")
    problem = option.check(value) if option is not None else None
    if problem:
        raise ValueError(problem)
    return value


class Param(Table):
    """One ``[params.NAME]`` table: a distribution (or a fixed value) and its condition."""

    type: str
    when: Condition | None = None
    # [params.width] only: per-layer widths width_0..width_{depth-1}, or the floor of tapered
    # widths.
    per_layer: StrictBool = False
    min_width: StrictInt = Field(DEFAULT_MIN_WIDTH, ge=1)

    @classmethod
    def _keys_not_for(cls, context: Mapping[str, Any]) -> set[str]:
        option = context.get("option")
        return set(WIDTH_KEYS) if option is not None and option.name != "width" else set()

    @field_validator("min_width")
    @classmethod
    def _tapered_only(cls, min_width: int, info: ValidationInfo) -> int:
        if info.data.get("per_layer"):
            raise ValueError("only for tapered widths (without per_layer = true)")
        return min_width

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        """Draw this parameter as ``name`` on an Optuna trial (a fixed value is returned)."""
        raise NotImplementedError

    def contains(self, value: Any) -> bool:
        """Whether the parameter can take ``value``."""
        raise NotImplementedError

    def describe(self) -> str:
        """The allowed values in words, for error messages."""
        raise NotImplementedError

    def largest(self) -> Any:
        """The largest value the parameter can take (numeric parameters)."""
        raise NotImplementedError

    def discrete_values(self) -> tuple[Any, ...] | None:
        """All values of a categorical or fixed parameter, None for a range."""
        return None


class _Range(Param):
    """``low`` to ``high`` (both included), optionally on a grid of ``step`` or drawn in log."""

    # high before low: a field's validator sees only the fields declared before it
    # (info.data), so low is checked against high, log against low, step against all three.
    high: StrictFloat
    low: StrictFloat
    log: StrictBool = False
    step: StrictFloat | None = Field(None, gt=0)

    @field_validator("high")
    @classmethod
    def _high(cls, high: float, info: ValidationInfo) -> float:
        return _valid_setting(high, info)

    @field_validator("low")
    @classmethod
    def _low(cls, low: float, info: ValidationInfo) -> float:
        _valid_setting(low, info)
        high = info.data.get("high")
        if high is not None and low >= high:
            raise ValueError(
                f'low ({low}) must be below high ({high}); for one value use type = "fixed"'
            )
        return low

    @field_validator("log")
    @classmethod
    def _log(cls, log: bool, info: ValidationInfo) -> bool:
        low = info.data.get("low")
        if log and low is not None and low <= 0:
            raise ValueError(f"log = true needs low > 0, got low = {low}")
        return log

    @field_validator("step")
    @classmethod
    def _step(cls, step: float | None, info: ValidationInfo) -> float | None:
        if step is None:
            return None
        if info.data.get("log"):
            raise ValueError("step and log = true cannot be combined")
        low, high = info.data.get("low"), info.data.get("high")
        if low is not None and high is not None and not _on_grid(high - low, step):
            raise ValueError(f"high - low ({high - low}) is not a multiple of step ({step})")
        return step

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        suggest = trial.suggest_int if self.type == "int" else trial.suggest_float
        if self.step is not None:
            return suggest(name, self.low, self.high, step=self.step)
        return suggest(name, self.low, self.high, log=self.log)

    def contains(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.type == "int" and value != int(value):
            return False
        if not self.low <= value <= self.high:
            return False
        return self.step is None or _on_grid(value - self.low, self.step)

    def describe(self) -> str:
        extra = " (log)" if self.log else f" (step {self.step})" if self.step is not None else ""
        return f"{self.type} {self.low}..{self.high}{extra}"

    def largest(self) -> Any:
        return self.high


class IntParam(_Range):
    """``type = "int"``: whole numbers (Optuna's ``suggest_int``)."""

    type: Literal["int"] = "int"
    high: StrictInt
    low: StrictInt
    step: StrictInt | None = Field(None, gt=0)


class FloatParam(_Range):
    """``type = "float"``: real numbers (Optuna's ``suggest_float``)."""

    type: Literal["float"] = "float"


class CategoricalParam(Param):
    """``type = "categorical"``: one of ``choices``."""

    type: Literal["categorical"] = "categorical"
    choices: list[Any] = Field(min_length=1)

    @field_validator("choices")
    @classmethod
    def _choices(cls, choices: list[Any], info: ValidationInfo) -> list[Any]:
        for choice in choices:
            _valid_setting(choice, info)
        if len(set(choices)) != len(choices):
            raise ValueError(f"repeated values in {choices}")
        return choices

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        return trial.suggest_categorical(name, list(self.choices))

    def contains(self, value: Any) -> bool:
        return value in self.choices

    def describe(self) -> str:
        return f"one of {list(self.choices)}"

    def largest(self) -> Any:
        return max(self.choices)

    def discrete_values(self) -> tuple[Any, ...]:
        return tuple(self.choices)


class FixedParam(Param):
    """``type = "fixed"``: not searched; ``value`` sets the option for every trial."""

    type: Literal["fixed"] = "fixed"
    value: Any

    @field_validator("value")
    @classmethod
    def _value(cls, value: Any, info: ValidationInfo) -> Any:
        return _valid_setting(value, info)

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        return self.value

    def contains(self, value: Any) -> bool:
        return value == self.value

    def describe(self) -> str:
        return f"fixed {self.value!r}"

    def largest(self) -> Any:
        return self.value

    def discrete_values(self) -> tuple[Any, ...]:
        return (self.value,)


PARAM_TYPES: dict[str, type[Param]] = {
    "int": IntParam,
    "float": FloatParam,
    "categorical": CategoricalParam,
    "fixed": FixedParam,
}


def _on_grid(distance: float, step: float) -> bool:
    steps = distance / step
    return math.isclose(steps, round(steps), abs_tol=1e-9)


def suggestion_order(params: Mapping[str, Param], where: str) -> tuple[str, ...]:
    """Parameter names with every condition's parameter (and depth) before its dependants."""
    order: list[str] = []
    visiting: list[str] = []

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            cycle = " -> ".join([*visiting[visiting.index(name) :], name])
            raise SearchSpaceError(
                f"{where}: [params.{name}].when: conditions form a cycle: {cycle}"
            )
        visiting.append(name)
        param = params[name]
        dependencies = [param.when.param] if param.when else []
        for dependency in dependencies + (["depth"] if param.per_layer else []):
            visit(dependency)
        visiting.pop()
        order.append(name)

    for name in params:
        visit(name)
    return tuple(order)
