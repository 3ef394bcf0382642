"""Field models (raytrack/physics/fields.py): the dipole, a uniform field, a grid map's
interpolation, and fields from command-line words."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raytrack.physics.fields import (
    LHCB_DIPOLE_B0_T,
    LHCB_DIPOLE_SIGMA_MM,
    LHCB_DIPOLE_Z0_MM,
    DipoleField,
    GridField,
    UniformField,
    field_from_spec,
)
from raytrack.physics.grid_files import write_cdf_quadrants

from .fieldmaps import QUAD, XS, YS, ZS, SymmetricField, field_at

RNG = np.random.default_rng(20240607)


def _jacobian(field, x, y, z, h: float = 1.0) -> np.ndarray:
    """J[..., i, j] = d B_i / d x_j by central differences with step h (mm)."""
    cols = []
    for dx, dy, dz in ((h, 0, 0), (0, h, 0), (0, 0, h)):
        plus = field_at(field, x + dx, y + dy, z + dz)
        minus = field_at(field, x - dx, y - dy, z - dz)
        cols.append((plus - minus) / (2 * h))
    return np.stack(cols, -1)


def _curl(jac: np.ndarray) -> np.ndarray:
    return np.stack(
        (
            jac[..., 2, 1] - jac[..., 1, 2],
            jac[..., 0, 2] - jac[..., 2, 0],
            jac[..., 1, 0] - jac[..., 0, 1],
        ),
        -1,
    )


def _random_points(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        RNG.uniform(-2000, 2000, n),
        RNG.uniform(-2000, 2000, n),
        RNG.uniform(0, 14000, n),
    )


def test_dipole_divergence_is_zero():
    x, y, z = _random_points(2000)
    jac = _jacobian(DipoleField(), x, y, z)
    div = jac[..., 0, 0] + jac[..., 1, 1] + jac[..., 2, 2]
    # The two terms that cancel are each up to ~1e-3 T/mm here; the rest is FD truncation.
    assert np.abs(jac[..., 1, 1]).max() > 1e-4
    assert np.abs(div).max() < 1e-9


def test_dipole_on_axis_peak_is_b0():
    bx, by, bz = DipoleField()(np.array(0.0), np.array(0.0), np.array(LHCB_DIPOLE_Z0_MM))
    assert by == pytest.approx(-1.0182, abs=1e-12)
    assert LHCB_DIPOLE_B0_T == -1.0182
    assert bx == 0.0 and bz == 0.0


def test_dipole_curl_is_second_order_in_y():
    field = DipoleField()
    s, z0 = LHCB_DIPOLE_SIGMA_MM, LHCB_DIPOLE_Z0_MM
    x = RNG.uniform(-2000, 2000, 200)
    z = RNG.uniform(0, 14000, 200)
    # On the symmetry plane the curl vanishes.
    assert np.abs(_curl(_jacobian(field, x, 0.0 * x, z))).max() < 1e-10
    # Off it, curl = (y^2/2 f'''(z), 0, 0) with f''' = (3u/s^4 - u^3/s^6) f for a Gaussian f.
    u = z - z0
    f3 = (3 * u / s**4 - u**3 / s**6) * LHCB_DIPOLE_B0_T * np.exp(-0.5 * u * u / s**2)
    for y in (250.0, 500.0, 1000.0):
        curl = _curl(_jacobian(field, x, np.full_like(x, y), z))
        np.testing.assert_allclose(curl[:, 0], 0.5 * y * y * f3, rtol=1e-4, atol=1e-10)
        assert np.abs(curl[:, 1:]).max() < 1e-10
    # curl_x grows like y^2: doubling y multiplies it by 4.
    zz = np.array([z0 + 0.5 * s])
    c1 = _curl(_jacobian(field, np.zeros(1), np.full(1, 300.0), zz))[0, 0]
    c2 = _curl(_jacobian(field, np.zeros(1), np.full(1, 600.0), zz))[0, 0]
    assert c2 / c1 == pytest.approx(4.0, rel=1e-4)


def test_dipole_polarity_up_flips_every_component():
    x, y, z = _random_points(100)
    down = field_at(DipoleField(polarity="down"), x, y, z)
    up = field_at(DipoleField(polarity="up"), x, y, z)
    np.testing.assert_array_equal(up, -down)
    assert np.abs(down[:, 2]).max() > 0.1  # Bz is really there and really flipped
    with pytest.raises(ValueError, match="polarity"):
        DipoleField(polarity="sideways")


@pytest.mark.parametrize("field", [DipoleField(), UniformField(0.1, -0.2, 0.3)])
def test_numpy_and_torch_in_any_shape(field):
    x, y, z = (RNG.uniform(-1000, 1000, (3, 4)) for _ in range(3))
    z = z + 5000.0
    out_np = field(x, y, z)
    assert all(isinstance(b, np.ndarray) and b.shape == (3, 4) for b in out_np)
    out_t = field(*(torch.from_numpy(v) for v in (x, y, z)))
    assert all(isinstance(b, torch.Tensor) and b.shape == (3, 4) for b in out_t)
    for a, b in zip(out_np, out_t, strict=True):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-15, atol=0)


def test_uniform_field_is_constant_with_input_shape():
    field = UniformField(0.5, -1.0, 0.25)
    x = np.zeros((2, 5))
    bx, by, bz = field(x, x + 10.0, x - 3.0)
    for b, want in zip((bx, by, bz), (0.5, -1.0, 0.25), strict=True):
        assert b.shape == (2, 5)
        assert np.all(b == want)


def _nodes():
    return np.meshgrid(XS, YS, ZS, indexing="ij")


def test_table_grid_exact_at_nodes_and_close_between(dipole_table):
    grid = GridField.from_table(dipole_table, field_unit="T")
    assert grid.shape == (9, 7, 21)
    assert grid.origin == (-400.0, -300.0, 3000.0)
    assert grid.spacing == (100.0, 100.0, 200.0)
    assert grid.source == {
        "file": "dipole_T.txt",
        "format": "text",
        "field_unit": "T",
        "length_unit": "mm",
    }
    x, y, z = _nodes()
    np.testing.assert_allclose(
        field_at(grid, x, y, z), field_at(DipoleField(), x, y, z), atol=1e-14
    )
    # Between nodes: trilinear error ~ h^2/8 |B''| (~2e-3 T for 200 mm in z), not more.
    px = RNG.uniform(-400, 400, 3000)
    py = RNG.uniform(-300, 300, 3000)
    pz = RNG.uniform(3000, 7000, 3000)
    err = np.abs(field_at(grid, px, py, pz) - field_at(DipoleField(), px, py, pz))
    assert 1e-5 < err.max() < 3e-3
    # Torch in -> torch out, same values.
    tb = grid(*(torch.from_numpy(v) for v in (px, py, pz)))
    np.testing.assert_allclose(torch.stack(tb, -1).numpy(), field_at(grid, px, py, pz), atol=0)


def test_table_field_is_zero_outside_grid(dipole_table):
    grid = GridField.from_table(dipole_table, field_unit="tesla")
    x = np.array([-401.0, 401.0, 0.0, 0.0, 0.0, 0.0, 1e9, 0.0])
    y = np.array([0.0, 0.0, -300.5, 300.5, 0.0, 0.0, 0.0, 0.0])
    z = np.array([5000.0, 5000.0, 5000.0, 5000.0, 2999.0, 7001.0, 5000.0, 5000.0])
    b = field_at(grid, x, y, z)
    assert np.all(b[:-1] == 0.0)
    assert b[-1, 1] != 0.0  # the last point is inside


def test_grid_nan_position_gives_nan_not_crash(dipole_table):
    # ny = 7 (odd): a NaN index must not wrap to an out-of-range gather index.
    grid = GridField.from_table(dipole_table, field_unit="T")
    b = field_at(grid, np.array([np.nan, 0.0]), np.array([0.0, 0.0]), np.array([5000.0, 5000.0]))
    assert np.isnan(b[0]).all() and np.isfinite(b[1]).all()


def test_field_from_spec(tmp_path, dipole_table):
    assert isinstance(field_from_spec(["default"]), DipoleField)
    assert isinstance(field_from_spec(None), DipoleField)
    assert field_from_spec(["default"], polarity="up").polarity == "up"
    with pytest.raises(ValueError, match="--field-unit"):
        field_from_spec([str(dipole_table)])
    grid = field_from_spec([str(dipole_table)], field_unit="T")
    assert isinstance(grid, GridField) and grid.shape == (9, 7, 21)
    with pytest.raises(ValueError, match="field_unit"):
        field_from_spec([str(dipole_table)], field_unit="kG")
    paths = [str(p) for p in write_cdf_quadrants(SymmetricField(), tmp_path, **QUAD)]
    assert field_from_spec(paths).shape == (7, 5, 5)
    with pytest.raises(ValueError, match="four quadrant"):
        field_from_spec(paths[:3])
