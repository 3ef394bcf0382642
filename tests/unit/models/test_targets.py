"""The targets' standardisation and the training loss (raytrack.models.targets)."""

from __future__ import annotations

import numpy as np
import torch

from raytrack.models.mlp import Normalisation
from raytrack.models.targets import standardisation


def test_the_huber_loss_scales_targets_by_their_spread_without_the_outliers():
    rng = np.random.default_rng(3)
    targets = rng.normal(0.0, 2.0, (20_000, 4))
    targets[:50, 0] = 1e4  # a quarter of a percent of tracks the base misses
    targets[:, 3] = 5.0  # a fixed column keeps its scale of 1
    norm = Normalisation.fit(np.zeros((20_000, 7)), targets)
    norm.target_std[3] = 1.0
    assert norm.target_std[0] > 100  # the full spread follows the outliers
    trimmed = standardisation(norm, torch.from_numpy(targets), "huber")
    spread, mean = trimmed.target_std, trimmed.target_mean
    assert 1.7 < spread[0] < 2.1 and 1.7 < spread[1] < 2.1 and spread[3] == 1.0
    assert abs(mean[0]) < 0.1 and norm.target_mean[0] > 20


def test_the_trimmed_moments_are_those_of_the_kept_targets():
    """Column by column through one scratch array (what bounds a 10M-track run's memory), the
    moments are those of the targets within the trimmed deviation from their median."""
    from raytrack.models.targets import TARGET_TRIM

    rng = np.random.default_rng(4)
    targets = (rng.standard_t(3, (50_001, 4)) * [1.0, 10.0, 0.1, 5.0]).astype(np.float32)
    norm = Normalisation.fit(np.zeros((len(targets), 7)), targets)
    trimmed = standardisation(norm, torch.from_numpy(targets), "huber")
    for k in range(4):
        values = targets[:, k].astype(np.float64)
        deviation = np.abs(values - np.median(values))
        kept = values[deviation <= np.quantile(deviation, 1 - TARGET_TRIM)]
        assert len(kept) < len(values)
        np.testing.assert_allclose(trimmed.target_mean[k], kept.mean(), rtol=1e-12)
        np.testing.assert_allclose(trimmed.target_std[k], kept.std(), rtol=1e-12)
