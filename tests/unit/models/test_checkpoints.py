"""A run's checkpoint files (raytrack.models.checkpoints)."""

from __future__ import annotations

import dataclasses

import pytest

from raytrack.models import TrackMLP
from raytrack.models.checkpoints import load_checkpoint, model_from_checkpoint

from .common import QUICK, TINY, fit


def test_checkpoints_load_with_weights_only(splits, tmp_path):
    train, validation, _ = splits
    fit(TINY, dataclasses.replace(QUICK, epochs=1), train, validation, checkpoint_dir=tmp_path)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    model = model_from_checkpoint(state)
    assert isinstance(model, TrackMLP)


def test_checkpoints_of_an_older_format_are_refused_by_name():
    with pytest.raises(ValueError, match="older raytrack"):
        model_from_checkpoint({"format": "raytrack-checkpoint-1"})
