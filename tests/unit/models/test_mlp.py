"""The network and its configuration (raytrack.models.mlp)."""

from __future__ import annotations

import pytest

from raytrack.models import ModelConfig, TrackMLP, get_preset

from .common import CLASSIC_AXIS


def test_weight_count_and_multiply_adds():
    config = get_preset("small")
    model = TrackMLP(config, axis=CLASSIC_AXIS)
    assert config.weight_count == sum(p.numel() for p in model.parameters())
    assert config.n_features == 14  # the physics inputs
    assert config.macs_per_track == 14 * 128 + 128 * 128 + 128 * 64 + 64 * 4


def test_bad_model_configs_are_named():
    with pytest.raises(ValueError, match="activation"):
        ModelConfig(activation="swish2")
    with pytest.raises(ValueError, match="target"):
        ModelConfig(target="residuals")
