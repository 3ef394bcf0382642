"""The integrator: exact helix, curvature constant, convergence order, accuracy, flags."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raytrack.data.phase_space import load_phase_space
from raytrack.physics import (
    KAPPA,
    DipoleField,
    Tolerance,
    TrackStatus,
    UniformField,
    propagate,
)


def helix_end(
    states: np.ndarray, z0: float, z1: float, b: tuple[float, float, float]
) -> np.ndarray:
    """Exact end state in a uniform field: the direction rotates about B (Rodrigues)."""
    b = np.asarray(b, dtype=float)
    b_abs = np.linalg.norm(b)
    axis = b / b_abs
    x, y, tx, ty, qop = states.T
    norm = np.sqrt(1 + tx**2 + ty**2)
    d0 = np.stack([tx, ty, np.ones_like(tx)], axis=1) / norm[:, None]
    omega = -KAPPA * qop * b_abs  # rotation angle per mm of path: dd/ds = KAPPA qop d x B
    cross = np.cross(axis, d0)
    along = d0 @ axis

    def position_z(s):
        th = omega * s
        return (
            d0[:, 2] * np.sin(th) / omega
            + cross[:, 2] * (1 - np.cos(th)) / omega
            + axis[2] * along * (s - np.sin(th) / omega)
        )

    def direction(s):
        th = (omega * s)[:, None]
        return d0 * np.cos(th) + cross * np.sin(th) + axis * along[:, None] * (1 - np.cos(th))

    s = (z1 - z0) * norm  # Newton on z(s) = z1 - z0 from the straight-line guess
    for _ in range(50):
        s = s - (position_z(s) - (z1 - z0)) / direction(s)[:, 2]
    th = (omega * s)[:, None]
    r = (d0 * np.sin(th) + cross * (1 - np.cos(th))) / omega[:, None] + axis * (
        along * (s - np.sin(th[:, 0]) / omega)
    )[:, None]
    d = direction(s)
    return np.stack([x + r[:, 0], y + r[:, 1], d[:, 0] / d[:, 2], d[:, 1] / d[:, 2], qop], axis=1)


def random_states(n: int, seed: int = 0, p_gev=(2.0, 100.0)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = np.exp(rng.uniform(np.log(p_gev[0]), np.log(p_gev[1]), n)) * 1000.0
    columns = [
        rng.uniform(-900, 900, n),
        rng.uniform(-750, 750, n),
        rng.uniform(-0.3, 0.3, n),
        rng.uniform(-0.25, 0.25, n),
        rng.choice([-1.0, 1.0], n) / p,
    ]
    return np.stack(columns, axis=1)


@pytest.mark.parametrize("z0,z1", [(3000.0, 7000.0), (9000.0, 1000.0)])
def test_matches_exact_helix_in_a_uniform_field(z0, z1):
    b = (0.15, -1.0, 0.3)  # every component non-zero, so every term of the equations counts
    states = random_states(500, seed=1, p_gev=(5.0, 100.0))  # stays inside the volume
    end, status = propagate(states, z0, z1, UniformField(*b), return_status=True)
    ok = status == TrackStatus.OK
    assert ok.mean() > 0.9
    exact = helix_end(states[ok], z0, z1, b)
    assert np.max(np.abs(end[ok, :2] - exact[:, :2])) < 1e-3  # mm
    assert np.max(np.abs(end[ok, 2:4] - exact[:, 2:4])) < 1e-6
    assert np.array_equal(end[ok, 4], states[ok, 4])  # q/p is unchanged


def test_curvature_constant_one_gev_in_one_tesla_bends_with_radius_3336_mm():
    assert pytest.approx(0.299792458) == KAPPA
    # 1 GeV, tx = 0, By = 1 T: a circle in the x-z plane with radius R = 1 / (KAPPA * 1e-3).
    state = np.array([[0.0, 0.0, 0.0, 0.0, 1.0 / 1000.0]])
    dz = 1000.0
    end = propagate(state, 0.0, dz, UniformField(0.0, 1.0, 0.0))[0]
    # On the circle: tx_end = dz / sqrt(R^2 - dz^2) gives R from the end slope.
    radius = dz * np.sqrt(1 + end[2] ** 2) / abs(end[2])
    assert radius == pytest.approx(3335.64, abs=0.5)
    sagitta = radius - np.sqrt(radius**2 - dz**2)
    assert abs(end[0]) == pytest.approx(sagitta, abs=1e-3)
    assert end[0] < 0  # positive charge, By > 0, moving in +z: bends towards -x


@pytest.mark.parametrize("method,order", [("rk4", 4), ("dopri5", 5)])
def test_convergence_order(method, order):
    states = random_states(50, seed=2, p_gev=(2.0, 5.0))
    field = DipoleField()
    reference = propagate(states, 2000.0, 8000.0, field, tolerance=Tolerance(1e-9, 1e-12))
    errors = []
    for step in (400.0, 200.0, 100.0):
        end = propagate(states, 2000.0, 8000.0, field, method=method, step=step)
        errors.append(np.max(np.abs(end[:, 0] - reference[:, 0])))
    observed = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all(np.abs(observed - order) < 0.5), observed


def test_accuracy_over_the_default_phase_space_and_long_legs():
    """1 micrometre and 1e-6 in slope against an integration 1000 times tighter."""
    field = DipoleField()
    rng = np.random.default_rng(3)
    sample = load_phase_space("default").sample(rng, 3000)
    states = np.stack([sample[k] for k in ("x", "y", "tx", "ty", "qop")], axis=1)
    z0 = np.concatenate([sample["z_start"], np.full(1000, 0.0), np.full(1000, 14000.0)])
    z1 = np.concatenate([sample["z_end"], np.full(1000, 14000.0), np.full(1000, 0.0)])
    states = np.concatenate([states, random_states(2000, seed=4, p_gev=(2.0, 4.0))])
    end, status = propagate(states, z0, z1, field, return_status=True)
    tight = Tolerance(Tolerance().position / 1000, Tolerance().slope / 1000)
    reference, ref_status = propagate(states, z0, z1, field, tolerance=tight, return_status=True)
    assert np.mean(status != ref_status) < 1e-3  # only tracks grazing a limit may differ
    ok = (status == TrackStatus.OK) & (ref_status == TrackStatus.OK)
    assert ok.sum() > 4000
    assert np.max(np.abs(end[ok, :2] - reference[ok, :2])) < 1e-3
    assert np.max(np.abs(end[ok, 2:4] - reference[ok, 2:4])) < 1e-6


def test_the_magnet_really_bends_tracks():
    """Guards against the 1000x unit error: a 50 GeV track gets a kick of 0.027 in tx."""
    state = np.array([[0.0, 0.0, 0.0, 0.0, 1.0 / 50000.0]])
    end = propagate(state, 0.0, 10000.0, DipoleField())[0]
    integral = 1.0182 * 1744.0 * np.sqrt(2 * np.pi)  # T mm, about 4.45 T m
    assert end[2] == pytest.approx(KAPPA * integral / 50000.0, rel=0.01)


def test_backward_leg_inverts_forward_leg():
    states = random_states(200, seed=5)
    field = DipoleField()
    there, status = propagate(states, 1000.0, 9000.0, field, return_status=True)
    ok = status == TrackStatus.OK
    assert ok.mean() > 0.9
    back = propagate(there[ok], 9000.0, 1000.0, field)
    states = states[ok]
    assert np.max(np.abs(back[:, :2] - states[:, :2])) < 1e-3
    assert np.max(np.abs(back[:, 2:4] - states[:, 2:4])) < 1e-6


def test_per_track_z_arrays_and_zero_length_legs():
    states = random_states(4, seed=6)
    z0 = np.array([3000.0, 3000.0, 5000.0, 7000.0])
    z1 = np.array([7000.0, 3000.0, 1000.0, 7000.0])
    end = propagate(states, z0, z1, DipoleField())
    assert np.array_equal(end[1], states[1])
    assert np.array_equal(end[3], states[3])
    one = propagate(states[2:3], 5000.0, 1000.0, DipoleField())
    assert np.allclose(end[2], one[0], atol=1e-9)


def test_flags_tracks_that_leave_the_volume_or_exceed_slope_limits():
    states = np.array(
        [
            [4900.0, 0.0, 0.3, 0.0, 1 / 50000.0],  # leaves |x| < 5000 mm
            [0.0, 0.0, 0.0, 0.0, 1 / 200.0],  # 200 MeV: curls up, slope beyond 2
            [0.0, 0.0, 0.1, 0.1, 1 / 20000.0],  # fine
            [np.nan, 0.0, 0.0, 0.0, 1 / 20000.0],  # bad input
        ]
    )
    end, status = propagate(states, 3000.0, 8000.0, DipoleField(), return_status=True)
    assert list(status) == [
        TrackStatus.LEFT_VOLUME,
        TrackStatus.SLOPE_LIMIT,
        TrackStatus.OK,
        TrackStatus.BAD_INPUT,
    ]
    assert np.isnan(end[[0, 1, 3]]).all()
    assert np.isfinite(end[2]).all()
    plain = propagate(states, 3000.0, 8000.0, DipoleField())
    assert np.isnan(plain[0]).all()  # flagged rows never come back as numbers


def test_step_limit_is_flagged():
    states = random_states(3, seed=7)
    end, status = propagate(
        states, 0.0, 10000.0, DipoleField(), max_iterations=3, return_status=True
    )
    assert (status == TrackStatus.STEP_LIMIT).all()
    assert np.isnan(end).all()


def test_numpy_in_numpy_out_and_tensor_in_tensor_out():
    states = random_states(100, seed=8)
    field = DipoleField()
    as_numpy = propagate(states, 3000.0, 7000.0, field)
    as_tensor = propagate(torch.from_numpy(states), torch.tensor(3000.0), 7000.0, field)
    assert isinstance(as_numpy, np.ndarray)
    assert isinstance(as_tensor, torch.Tensor) and as_tensor.dtype == torch.float64
    assert np.allclose(as_tensor.numpy(), as_numpy, rtol=0, atol=1e-12)


def test_chunking_changes_results_only_at_rounding_level():
    # What docs/generate.md promises: a track's end state depends on its batch (vector lanes and
    # their scalar tails) only in the last bits, never at a level that matters.
    states = random_states(300, seed=9)
    whole = propagate(states, 3000.0, 7000.0, DipoleField(), chunk_size=1000)
    pieces = propagate(states, 3000.0, 7000.0, DipoleField(), chunk_size=64)
    alone = propagate(states[:40], 3000.0, 7000.0, DipoleField(), chunk_size=1)
    assert np.allclose(whole, pieces, rtol=0, atol=1e-9)
    assert np.allclose(whole[:40], alone, rtol=0, atol=1e-9)


def test_bad_arguments_get_clear_errors():
    states = random_states(3)
    with pytest.raises(ValueError, match=r"shape \(N, 5\)"):
        propagate(states[:, :4], 0.0, 1.0, DipoleField())
    with pytest.raises(ValueError, match="z_end"):
        propagate(states, 0.0, np.zeros(7), DipoleField())
    with pytest.raises(ValueError, match="method"):
        propagate(states, 0.0, 1.0, DipoleField(), method="euler")
    with pytest.raises(ValueError, match="fixed step"):
        propagate(states, 0.0, 1.0, DipoleField(), method="rk4")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_same_code_runs_on_cuda():
    states = random_states(1000, seed=10)
    cpu = propagate(states, 3000.0, 7000.0, DipoleField())
    gpu = propagate(torch.from_numpy(states).cuda(), 3000.0, 7000.0, DipoleField())
    assert gpu.device.type == "cuda"
    assert np.allclose(gpu.cpu().numpy(), cpu, rtol=0, atol=1e-6)
