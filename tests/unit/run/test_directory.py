"""A run directory (raytrack.run.directory): what it holds and whose run it is."""

from __future__ import annotations

import dataclasses

import pytest

from raytrack.models import get_preset
from raytrack.run.directory import RunSpec
from raytrack.run.pipeline import train_run

from ..models.common import QUICK, TINY


def test_run_directory_refuses_another_run(classic_dataset, tmp_path):
    spec = RunSpec(
        data_dir=str(classic_dataset),
        model=TINY,
        train=dataclasses.replace(QUICK, epochs=1),
        name="tiny",
    )
    train_run(tmp_path / "run", spec, evaluate=False, export=False)  # the checkpoint is enough
    other = dataclasses.replace(spec, model=get_preset("small"))
    with pytest.raises(ValueError, match="another model"):
        train_run(tmp_path / "run", other)
