"""``bench train``: raytrack's training loop against a plain DataLoader loop."""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch

from raytrack.bench.common import Figure, axis_of, training_data

if TYPE_CHECKING:
    from torch.utils.data import TensorDataset

    from raytrack.models.mlp import ModelConfig, TrackMLP
    from raytrack.physics.axis_profile import AxisProfile

#: The DataLoader baseline's batch size; the fast path is timed at it too.
BASELINE_BATCH = 512


def bench_train(
    preset: str,
    tracks: int,
    epochs: int,
    device: str = "cpu",
    phase_space: str = "default",
    rounds: int = 2,
) -> list[Figure]:
    """Fast-path training against the DataLoader loop, same model, features and targets."""
    from raytrack.models import get_preset
    from raytrack.models.train_config import TrainConfig

    inputs, targets = training_data(phase_space, tracks)
    split = int(0.9 * len(inputs))
    train, validation = (inputs[:split], targets[:split]), (inputs[split:], targets[split:])
    config = get_preset(preset)
    axis = axis_of(phase_space)
    print(
        f"{preset} {list(config.hidden)} (base {config.base}, inputs {config.inputs}), "
        f"{split} training tracks ({phase_space}), {epochs} epochs x {rounds} turns, on {device}, "
        f"{torch.get_num_threads()} torch threads"
    )
    label = f"DataLoader, batch {BASELINE_BATCH}"
    loops: dict[str, Callable[[], float]] = {
        f"fast path, batch {batch}": functools.partial(
            fast_path_rate, config, batch, epochs, train, validation, axis, device
        )
        for batch in dict.fromkeys((BASELINE_BATCH, TrainConfig().batch_size))
    }
    loops[label] = functools.partial(dataloader_rate, config, train, epochs, axis, device)
    # The loops take turns, ``rounds`` times, and each keeps its best epoch: load from other
    # processes on a shared machine comes in bursts that would otherwise hit one loop only.
    rates = dict.fromkeys(loops, 0.0)
    for _ in range(rounds):
        for what, loop in loops.items():
            rates[what] = max(rates[what], loop())
    baseline = rates[label]
    figures = []
    for what, rate in rates.items():
        print(f"{what:<24} {rate:12.0f} samples/s  {rate / baseline:6.2f} x DataLoader")
        figures.append(
            Figure(
                "train",
                f"{preset}, {what}, {device}",
                f"{rate:.0f} samples/s",
                f"{rate / baseline:.2f} x DataLoader",
            )
        )
    return figures


def fast_path_rate(
    config: ModelConfig,
    batch: int,
    epochs: int,
    train: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray],
    axis: AxisProfile | None,
    device: str,
) -> float:
    """Training samples/s of raytrack's loop (its best epoch), at ``batch``."""
    from raytrack.models.train_config import TrainConfig
    from raytrack.models.training import train_model

    settings = TrainConfig(epochs=epochs, batch_size=batch, patience=epochs)
    result = train_model(config, settings, train, validation, axis=axis, device=device)
    return max(h["train_samples_per_s"] for h in result.history)


def baseline_model_and_data(
    config: ModelConfig, train: tuple[np.ndarray, np.ndarray], axis: AxisProfile | None
) -> tuple[TrackMLP, TensorDataset]:
    """The DataLoader baseline's model and TensorDataset of (features, standardised targets),
    computed as the fast path computes its own: features from the float32 inputs, float64
    arithmetic, float32 storage, standardisation fitted on the same split."""
    from torch.utils.data import TensorDataset

    from raytrack.models.mlp import Normalisation, TrackMLP
    from raytrack.models.targets import standardisation
    from raytrack.models.train_config import TrainConfig
    from raytrack.models.training import encoding_truth, path_nodes_for

    axis = axis if config.needs_field else None
    model = TrackMLP(config, axis=axis, path_nodes=path_nodes_for(config, axis, train))
    with torch.no_grad():
        features, encoded = model.encode(*encoding_truth(*train))
    norm = standardisation(Normalisation.fit(features, encoded), encoded, TrainConfig().loss)
    model.set_normalisation(norm)
    standard = (encoded - torch.as_tensor(norm.target_mean)) / torch.as_tensor(norm.target_std)
    return model, TensorDataset(features.float(), standard.float())


def dataloader_rate(
    config: ModelConfig,
    train: tuple[np.ndarray, np.ndarray],
    epochs: int,
    axis: AxisProfile | None,
    device: str = "cpu",
) -> float:
    """The plain PyTorch loop: TensorDataset + DataLoader(batch_size=512, shuffle=True),
    batches moved to the device one by one, a plain (unfused) AdamW at the fast path's settings.

    The model, its features and its standardised targets are the fast path's (see
    :func:`baseline_model_and_data`), prepared once as the fast path prepares them, so the ratio
    measures the loops alone.
    """
    from torch.utils.data import DataLoader

    from raytrack.models.train_config import TrainConfig

    settings = TrainConfig()
    dev = torch.device(device)
    model, dataset = baseline_model_and_data(config, train, axis)
    model.to(dev)
    loader = DataLoader(dataset, batch_size=BASELINE_BATCH, shuffle=True)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay
    )
    model.train()
    best = math.inf
    for _ in range(epochs):  # best epoch, as for the fast path
        start = time.perf_counter()
        for x, t in loader:
            x, t = x.to(dev), t.to(dev)
            loss = torch.nn.functional.mse_loss(model.standardised(x), t)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            optimizer.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return len(dataset) / best
