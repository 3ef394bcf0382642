"""What the trigger-header tests share: their formulations, models and tracks, and the
comparison of predictions and transport Jacobians against torch's forward-mode derivatives."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from raytrack.models.mlp import ModelConfig, Normalisation, TrackMLP

from . import helpers
from .helpers import AXIS, LEG_GROUPS, mismatch, torch_predict

#: Largest error of a Jacobian element, relative to that element's largest magnitude over a
#: batch of one kind of leg, for raytrack_mlp.hpp (formulation in double) and the header with
#: either precision of the formulation.
JACOBIAN_RTOL = {"mlp.hpp": 2e-5, "float32": 2e-5, "float64": 2e-5}
#: torch's forward-mode AD scripts its decompositions on first use (a torch deprecation notice).
IGNORE_JIT_WARNING = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")

# (base, inputs, target, leg_power, activation): the expansion formulation, the straight line
# on the 7 inputs, the kick with a raw target, and the default (path) formulation.
FORMULATIONS = [
    ("expansion", "physics", "residual_qop", 2.0, "silu"),
    ("line", "state", "residual", 0.0, "tanh"),
    ("kick", "physics", "raw", 0.0, "gelu"),
    ("path", "physics", "residual_qop", 2.0, "silu"),
]


def case_id(case) -> str:
    return "-".join(str(v) for v in case)


def draw_tracks(n: int, seed: int, legs: str = "any") -> np.ndarray:
    """(n, 7) float32 tracks: legs anywhere in 0..14 m either way ("any"), 25-250 mm hops
    ("short"), ends up to 1.5 m beyond the field tables ("beyond"), 3000 -> 7000 mm ("fixed")."""
    return helpers.draw_tracks(n, seed, legs, qop_last=True)


def track_groups(seed: int, n: int = 150) -> dict[str, np.ndarray]:
    return {legs: draw_tracks(n, seed + k, legs) for k, legs in enumerate(LEG_GROUPS)}


def make_model(base, inputs, target, leg_power, activation, hidden=(24, 12, 6), seed=0, axis=AXIS):
    """A TrackMLP with random weights and a normalisation fitted on synthetic end states (the
    expansion transport plus a residual growing with q/p and the leg), in eval mode; ``axis``
    the field profile (default: the default dipole's)."""
    config = ModelConfig(
        hidden=hidden,
        activation=activation,
        base=base,
        inputs=inputs,
        target=target,
        leg_power=leg_power,
    )
    model = TrackMLP(config, axis=axis)
    gen = torch.Generator().manual_seed(seed)
    fit_on = torch.from_numpy(np.concatenate([draw_tracks(1000, seed + 50), draw_tracks(300, 7)]))
    with torch.no_grad():
        leg = torch.abs(fit_on[:, 6] - fit_on[:, 5]).double() / 1000.0  # in float32, then double
        truth = helpers.synthetic_truth(fit_on, gen, leg)
        model.set_normalisation(Normalisation.fit(*model.encode(fit_on, truth)))
    helpers.randomise_layers(model, gen)
    return model.eval()


def torch_jacobian(model: TrackMLP, inputs: np.ndarray) -> np.ndarray:
    """(N, 4, 5) d end / d (x, y, tx, ty, qop) of the model in float64, by forward mode: one
    ``torch.func.jvp`` per input direction (the exact derivative, not finite differences)."""
    double = copy.deepcopy(model).double()
    x = torch.from_numpy(inputs.astype(np.float64))
    state, legs = x[:, :5], x[:, 5:]
    columns = []
    for b in range(5):
        tangent = torch.zeros_like(state)
        tangent[:, b] = 1.0
        _, column = torch.func.jvp(lambda s: double(torch.cat((s, legs), 1)), (state,), (tangent,))
        columns.append(column)
    return torch.stack(columns, 2).detach().numpy()


def jacobian_error(got: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """(4, 5) largest error of each Jacobian element relative to its largest magnitude."""
    return np.abs(got.astype(np.float64) - ref).max(axis=0) / np.abs(ref).max(axis=0)


def check_against_torch(model, groups, out, jac, rtol: float, what: str) -> np.ndarray:
    """Compare per kind of leg; returns the (4, 5) worst relative Jacobian errors."""
    inputs = np.concatenate(list(groups.values()))
    ref_out, ref_jac = torch_predict(model, inputs), torch_jacobian(model, inputs)
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(jac)), what
    worst = np.zeros((4, 5))
    start = 0
    for legs, tracks in groups.items():
        part = slice(start, start + len(tracks))
        start += len(tracks)
        err = mismatch(out[part], ref_out[part])
        assert err <= 1.0, f"{what}, {legs} legs: predictions {err:.3g} x the float32 tolerance"
        worst = np.maximum(worst, jacobian_error(jac[part], ref_jac[part]))
    assert worst.max() <= rtol, f"{what}: Jacobian error per element (relative)\n{worst}"
    return worst
