"""Transport Jacobians of the integrator (raytrack.physics.propagate, its variational
equations) against finite differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raytrack.physics import DipoleField, GridField, Tolerance, TrackStatus, propagate
from raytrack.physics.fields import Field
from raytrack.physics.propagate import JACOBIAN_MAX_STEP_MM, MAX_STEP_MM

from ..models.common import phase_space_legs

#: The reference: central differences of an integration 1e4 times tighter, steps of 1e-2 mm,
#: 1e-5 in slope (docs/physics.md section 2b) and 1e-3 relative in q/p: on a short leg far out in
#: the field's tails the bending is ~1e-11 mm per 1e-5 of q/p, which float64 rounding of
#: positions of ~1 m cannot resolve; the bending is so close to linear in q/p that the larger
#: step costs nothing in truncation (2e-6 of a few per cent non-linearity at 2 GeV).
TIGHT = Tolerance(Tolerance().position / 1e4, Tolerance().slope / 1e4)
FD_STEPS = (1e-2, 1e-2, 1e-5, 1e-5)


def finite_difference_jacobian(states, z0, z1, field: Field) -> np.ndarray:
    jac = np.zeros((len(states), 5, 5))
    for column in range(5):
        step = FD_STEPS[column] if column < 4 else 1e-3 * np.abs(states[:, 4])
        shift = np.zeros_like(states)
        shift[:, column] = step
        plus = propagate(states + shift, z0, z1, field, tolerance=TIGHT, max_step=100.0)
        minus = propagate(states - shift, z0, z1, field, tolerance=TIGHT, max_step=100.0)
        jac[:, :, column] = (plus - minus) / (2 * np.asarray(step))[..., None]
    return jac


def column_errors(jac: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(N, 5) relative error of each column: |J_col - ref_col| / |ref_col|."""
    return np.linalg.norm(jac - reference, axis=1) / np.linalg.norm(reference, axis=1)


def test_jacobian_matches_finite_differences_of_a_tighter_integration():
    states, z0, z1 = phase_space_legs(300, seed=11)
    end, status, jac = propagate(
        states, z0, z1, DipoleField(), return_status=True, return_jacobian=True
    )
    ok = status == TrackStatus.OK
    assert ok.sum() > 280 and (z1 < z0).sum() > 100  # both directions
    errors = column_errors(
        jac[ok], finite_difference_jacobian(states[ok], z0[ok], z1[ok], DipoleField())
    )
    assert errors.max(axis=0).max() < 1e-5, errors.max(axis=0)
    assert np.all(jac[ok, 4] == [0, 0, 0, 0, 1])
    # The magnet really enters: d x_end / d qop is large on legs across it.
    across = ok & (np.minimum(z0, z1) < 3000) & (np.maximum(z0, z1) > 7000)
    assert np.median(np.abs(jac[across, 0, 4])) > 1e5


def test_tensor_in_tensor_out_with_the_same_jacobian():
    states, z0, z1 = phase_space_legs(100, seed=12)
    end, jac = propagate(states, z0, z1, DipoleField(), return_jacobian=True)
    t_end, t_jac = propagate(
        torch.from_numpy(states),
        torch.from_numpy(z0),
        torch.from_numpy(z1),
        DipoleField(),
        return_jacobian=True,
    )
    assert isinstance(jac, np.ndarray) and jac.shape == (100, 5, 5)
    assert isinstance(t_jac, torch.Tensor) and t_jac.dtype == torch.float64
    assert np.allclose(t_jac.numpy(), jac, rtol=1e-12, atol=0, equal_nan=True)
    reference = finite_difference_jacobian(states, z0, z1, DipoleField())
    assert np.nanmax(column_errors(t_jac.numpy(), reference)) < 1e-5


def test_asking_for_the_jacobian_does_not_change_the_end_state():
    states, z0, z1 = phase_space_legs(500, seed=13)
    cap = JACOBIAN_MAX_STEP_MM
    plain = propagate(states, z0, z1, DipoleField(), max_step=cap)
    with_jacobian, _ = propagate(states, z0, z1, DipoleField(), return_jacobian=True)
    assert np.array_equal(plain, with_jacobian, equal_nan=True)
    # Plain propagation takes longer steps by default, within the integrator's 1 micrometre.
    assert MAX_STEP_MM > JACOBIAN_MAX_STEP_MM
    default = propagate(states, z0, z1, DipoleField())
    ok = np.isfinite(plain[:, 0])
    assert not np.array_equal(default[ok], plain[ok])
    assert np.abs(default[ok, :2] - plain[ok, :2]).max() < 1e-3
    assert np.abs(default[ok, 2:4] - plain[ok, 2:4]).max() < 1e-6


def test_straight_line_jacobian_outside_any_field():
    from raytrack.physics import UniformField

    states, z0, z1 = phase_space_legs(50, seed=14)
    _, jac = propagate(states, z0, z1, UniformField(), return_jacobian=True)
    expected = np.broadcast_to(np.eye(5), (50, 5, 5)).copy()
    expected[:, 0, 2] = expected[:, 1, 3] = z1 - z0
    assert np.allclose(jac, expected, rtol=0, atol=1e-9)


def test_flagged_tracks_get_nan_jacobian_rows():
    states = np.array([[0.0, 0.0, 0.1, 0.0, 1e-4], [4990.0, 0.0, 0.5, 0.0, 1e-4]])
    end, status, jac = propagate(
        states, 0.0, 9000.0, DipoleField(), return_status=True, return_jacobian=True
    )
    assert status.tolist() == [TrackStatus.OK, TrackStatus.LEFT_VOLUME]
    assert np.isfinite(jac[0]).all() and np.isnan(jac[1]).all()


@pytest.mark.slow  # thousands of fixed steps with the Jacobian, seconds each
@pytest.mark.parametrize("method", ["rk4", "dopri5"])
def test_fixed_steps_carry_the_jacobian_too(method):
    states, z0, z1 = phase_space_legs(40, seed=15)
    _, jac = propagate(states, z0, z1, DipoleField(), method=method, step=5.0, return_jacobian=True)
    reference = finite_difference_jacobian(states, z0, z1, DipoleField())
    assert np.nanmax(column_errors(jac, reference)) < 1e-4


def test_grid_field_gradient_is_the_interpolants():
    """Fields without a closed-form gradient are differentiated in forward mode (exactly)."""
    zs = np.arange(0.0, 14001.0, 200.0)
    xs = ys = np.arange(-1000.0, 1001.0, 200.0)
    gx, gy, gz = np.meshgrid(xs, ys, zs, indexing="ij")
    values = np.stack(DipoleField()(gx, gy, gz), axis=-1)
    grid = GridField(values, (xs[0], ys[0], zs[0]), (200.0, 200.0, 200.0))
    x = torch.tensor([123.0, -456.0]), torch.tensor([77.0, -310.0]), torch.tensor([4321.0, 6100.0])
    x = tuple(v.double() for v in x)
    d_dx, d_dy = grid.gradient(*x)
    for axis, derivative in ((0, d_dx), (1, d_dy)):
        shifted = [v.clone() for v in x]
        shifted[axis] += 1e-3
        up = grid.evaluate(*shifted)
        shifted[axis] -= 2e-3
        down = grid.evaluate(*shifted)
        for component in range(3):
            central = (up[component] - down[component]) / 2e-3
            assert torch.allclose(derivative[component], central, rtol=1e-6, atol=1e-12)
