"""A training run's options (raytrack.models.train_config)."""

from __future__ import annotations

import pytest

from raytrack.models.train_config import TrainConfig


def test_bad_training_configs_are_named():
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr=-1)
    with pytest.raises(ValueError, match="unknown training option"):
        TrainConfig.from_dict({"epochz": 3})
    with pytest.raises(ValueError, match="loss"):
        TrainConfig(loss="l1")
