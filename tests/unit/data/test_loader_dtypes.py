"""The dataset loader's dtypes and splits (raytrack.data.loader)."""

from __future__ import annotations

import numpy as np

from raytrack.data import load


def test_loader_gives_float32_and_float64_on_request(default_dataset):
    assert load(default_dataset).train.inputs().dtype == np.float32
    exact = load(default_dataset, dtype=np.float64, splits=("test",))
    assert exact.test.targets().dtype == np.float64 and len(exact.train) == 0
