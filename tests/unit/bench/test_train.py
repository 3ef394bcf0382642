"""``bench train``: the fast path against the DataLoader loop, on the same features and targets."""

from __future__ import annotations

import numpy as np
import torch

from raytrack import bench
from raytrack.bench import common, train
from raytrack.models.train_config import TrainConfig


def test_train_compares_the_fast_path_with_the_dataloader_loop(capsys):
    args = ["train", "--preset", "tiny", "--tracks", "300", "--epochs", "1"]
    assert bench.main(args) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith(("fast path", "DataLoader"))]
    default = TrainConfig().batch_size
    labels = ["fast path, batch 512", f"fast path, batch {default}", "DataLoader, batch 512"]
    assert [line[:24].strip() for line in rows] == labels
    assert all(line.endswith("x DataLoader") and "samples/s" in line for line in rows)
    assert rows[-1].split()[-3] == "1.00"  # the baseline against itself


def test_dataloader_baseline_trains_on_the_fast_paths_features_and_targets():
    from raytrack.models import get_preset
    from raytrack.models.train_config import TrainConfig
    from raytrack.models.training import train_model

    inputs, targets = common.training_data("default", 400)
    axis = common.axis_of("default")
    config = get_preset("tiny")
    model, dataset = train.baseline_model_and_data(config, (inputs, targets), axis)
    fast = train_model(
        config, TrainConfig(epochs=1), (inputs, targets), (inputs, targets), axis=axis
    )
    for name in ("input_mean", "input_std", "target_mean", "target_std"):
        torch.testing.assert_close(getattr(model, name), getattr(fast.model, name))
    features, standard = dataset.tensors
    assert features.shape == (len(inputs), config.n_features)
    assert features.dtype == standard.dtype == torch.float32
    # Standardised as the huber loss's training does: centred and scaled by the bulk.
    standard = standard.double().numpy()
    assert np.all(np.abs(np.median(standard, 0)) < 0.2)
    spread = np.quantile(standard, 0.9, 0) - np.quantile(standard, 0.1, 0)
    assert np.all((spread > 0.2) & (spread < 5))
