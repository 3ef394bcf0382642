"""The default dipole's table, written once per test module that asks for it."""

from __future__ import annotations

from pathlib import Path

import pytest

from .fieldmaps import write_dipole_table


@pytest.fixture(scope="module")
def dipole_table(tmp_path_factory) -> Path:
    return write_dipole_table(tmp_path_factory.mktemp("table"))
