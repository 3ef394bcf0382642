"""The dataset loader's dtypes and splits (raytrack.data.loader)."""

from __future__ import annotations

import numpy as np

from raytrack.data import load


def test_loader_gives_float32_and_float64_on_request(default_dataset):
    assert load(default_dataset).train.inputs().dtype == np.float32
    exact = load(default_dataset, dtype=np.float64, splits=("test",))
    assert exact.test.targets().dtype == np.float64 and len(exact.train) == 0


def test_a_float32_load_keeps_the_exact_bending(default_dataset):
    """The bending (end minus the straight line from the start) of a float32 load is the
    float64 columns' difference rounded once: far closer to it than the same difference of
    the rounded columns, whose position rounding is what the targets must not see."""
    exact = load(default_dataset, dtype=np.float64).train
    rounded = load(default_dataset).train
    assert exact.bending is None and rounded.bending.dtype == np.float32
    x, y, tx, ty, _, z0, z1 = exact.inputs().T
    line = np.stack((x + tx * (z1 - z0), y + ty * (z1 - z0), tx, ty), 1)
    want = exact.targets() - line
    np.testing.assert_allclose(rounded.bending, want, rtol=1e-6, atol=1e-9)
    x, y, tx, ty, _, z0, z1 = rounded.inputs().astype(np.float64).T
    naive = rounded.targets() - np.stack((x + tx * (z1 - z0), y + ty * (z1 - z0), tx, ty), 1)
    short = np.abs(z1 - z0) < 300  # legs whose bending is far below the positions' rounding
    kept = np.abs(rounded.bending[short, :2] - want[short, :2]).max()
    assert kept < 0.01 * np.abs(naive[short, :2] - want[short, :2]).max()
