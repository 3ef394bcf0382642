"""Where the configs that ship with raytrack lie: presets, search spaces and phase spaces.

They are TOML files in the repository's top-level ``search_spaces/`` (for users to read and
copy), installed as the package ``raytrack.search_spaces``::

    search_spaces/presets.toml            model presets (raytrack.models.presets)
    search_spaces/*.toml                  search spaces (raytrack.search.space)
    search_spaces/phase_spaces/*.toml     phase spaces (raytrack.data.phase_space)

A user's own file is given by path instead of by name; this module only finds shipped ones.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Literal

Kind = Literal["search space", "phase space"]

PRESET_FILE = "presets.toml"
_FOLDERS: dict[str, str] = {"search space": "", "phase space": "phase_spaces"}


def config_folder() -> Path:
    """The folder of the shipped configs (``search_spaces/`` of the repository)."""
    return Path(str(resources.files("raytrack.search_spaces")))


def presets_file() -> Path:
    """The shipped model presets."""
    return config_folder() / PRESET_FILE


def shipped_names(kind: Kind) -> list[str]:
    """The names of the shipped configs of ``kind``, sorted."""
    folder = config_folder() / _FOLDERS[kind]
    return sorted(p.stem for p in folder.glob("*.toml") if p.name != PRESET_FILE)


def shipped_file(kind: Kind, name: str) -> Path | None:
    """The shipped config ``name`` of ``kind``, or None when there is none by that name."""
    if name not in shipped_names(kind):
        return None
    return config_folder() / _FOLDERS[kind] / f"{name}.toml"
