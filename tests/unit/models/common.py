"""What the model tests share: tiny training settings, the classic legs' field profile, tracks
on random legs of the default phase space, and models whose network really contributes."""

from __future__ import annotations

import numpy as np
import torch

from raytrack.data import load_phase_space
from raytrack.data.manifest_field import profile_for
from raytrack.models import get_preset
from raytrack.models.train_config import TrainConfig
from raytrack.models.training import train_model
from raytrack.physics import DipoleField, TrackStatus, propagate

TINY = get_preset("tiny")
QUICK = TrainConfig(epochs=40, batch_size=128, lr=3e-3, warmup_epochs=1, patience=100)
SHORT = TrainConfig(epochs=12, batch_size=128, lr=3e-3, warmup_epochs=1, patience=100)
# The on-axis profile the classic_dataset fixture's manifest records (same field and legs).
CLASSIC_AXIS = profile_for(DipoleField(), load_phase_space("classic"))


def fit(config, settings, train, validation, **options):
    """train_model on a classic-leg split (the physics formulations read its field tables)."""
    return train_model(config, settings, train, validation, axis=CLASSIC_AXIS, **options)


def phase_space_legs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """States of the default phase space on random legs in [0, 14000] mm, both directions."""
    rng = np.random.default_rng(seed)
    sample = load_phase_space("default").sample(rng, n)
    states = np.stack([sample[k] for k in ("x", "y", "tx", "ty", "qop")], axis=1)
    return states, rng.uniform(0.0, 14000.0, n), rng.uniform(0.0, 14000.0, n)


def model_inputs(n: int, seed: int) -> torch.Tensor:
    states, z0, z1 = phase_space_legs(n, seed)
    z1[:3] = z0[:3]  # zero-length legs too
    return torch.from_numpy(np.column_stack([states, z0, z1]))


def scrambled_model(config, axis, seed: int = 0, gain: float = 2.0):
    """A model whose network really contributes: random weights (times ``gain``), its
    normalisation fitted to true end states, no training needed."""
    from raytrack.models.mlp import Normalisation, TrackMLP

    torch.manual_seed(seed)
    model = TrackMLP(config, axis=axis).eval()
    inputs = model_inputs(300, seed)
    truth = propagate(inputs[:, :5], inputs[:, 5], inputs[:, 6], DipoleField())[:, :4]
    kept = torch.isfinite(truth).all(1)  # tracks that leave the volume have no end state
    features, encoded = model.encode(inputs[kept], truth[kept])
    model.set_normalisation(Normalisation.fit(features.numpy(), encoded.numpy()))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(gain)
    return model


def jacobian_training_data(n: int, seed: int):
    """(inputs float32, end states, transport Jacobians (N, 4, 5)) of tracks that arrive."""
    inputs = model_inputs(n, seed).numpy()
    end, status, jac = propagate(
        inputs[:, :5],
        inputs[:, 5],
        inputs[:, 6],
        DipoleField(),
        return_status=True,
        return_jacobian=True,
    )
    ok = status == TrackStatus.OK
    return inputs[ok].astype(np.float32), end[ok, :4], jac[ok, :4]
