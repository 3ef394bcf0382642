"""Model presets, read from the shipped ``search_spaces/presets.toml`` (see raytrack.configs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from raytrack.configs import presets_file
from raytrack.files import read_toml
from raytrack.models.mlp import ModelConfig

#: The presets ``tune --search presets`` trains, and the searcher's first points otherwise.
SEARCH_PRESETS = ("large", "xlarge", "deep", "ultra", "wide")


def presets_path() -> Path:
    return presets_file()


def load_presets(path: str | Path | None = None) -> dict[str, ModelConfig]:
    """Every preset of the file (default: the shipped one), defaults applied and validated."""
    path = Path(path) if path else presets_path()
    data: dict[str, Any] = read_toml(path, ValueError, "presets")
    defaults = data.pop("defaults", {})
    presets = {}
    for name, spec in data.items():
        try:
            presets[name] = ModelConfig.from_dict({**defaults, **spec})
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: preset [{name}]: {err}") from None
    return presets


def get_preset(name: str) -> ModelConfig:
    presets = load_presets()
    if name not in presets:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(presets)}")
    return presets[name]
