"""The on-axis field tables and the transports built on them (docs/physics.md section 2a)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from raytrack.physics import DipoleField, Field, GridField, Tolerance, propagate
from raytrack.physics.field_integrals import (
    X_DEGREE,
    AxisProfile,
    AxisTables,
    axial_transport,
    choose_path_nodes,
    expansion_transport,
    field_integrals,
    gauss_legendre,
    integration_matrix,
    kick_transport,
    path_transport,
)
from raytrack.physics.synthetic_map import WindowFrameField


class OnAxisOnly(Field):
    """The field of ``inner`` on the axis, everywhere: (0, By(0, 0, z), 0)."""

    def __init__(self, inner: Field) -> None:
        self.inner = inner

    def evaluate(self, x, y, z):
        zero = torch.zeros_like(x)
        return zero, self.inner.evaluate(zero, zero, z)[1], zero

    def describe(self):
        return {"type": "on-axis", "inner": self.inner.describe()}


def tables_of(field: Field) -> AxisTables:
    profile = AxisProfile.from_field(field, -500.0, 14500.0)
    return AxisTables(profile.tables(), profile.z_first, profile.spacing)


def random_tracks(n: int, seed: int = 0, p_gev=(2.0, 100.0), legs=(25.0, 10000.0)):
    rng = np.random.default_rng(seed)
    p = np.exp(rng.uniform(*np.log(p_gev), n)) * 1000.0
    dz = np.exp(rng.uniform(*np.log(legs), n)) * rng.choice([-1.0, 1.0], n)
    z0 = rng.uniform(np.maximum(0, -dz), np.minimum(14000, 14000 - dz))
    return np.stack(
        [
            rng.uniform(-900, 900, n),
            rng.uniform(-750, 750, n),
            rng.uniform(-0.3, 0.3, n),
            rng.uniform(-0.25, 0.25, n),
            rng.choice([-1.0, 1.0], n) / p,
            z0,
            z0 + dz,
        ],
        axis=1,
    )


def truth(inputs: np.ndarray, field: Field) -> np.ndarray:
    end = propagate(
        inputs[:, :5], inputs[:, 5], inputs[:, 6], field, tolerance=Tolerance(3e-7, 3e-10)
    )
    return end[:, :4]


def position_error(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.hypot(a[:, 0] - b[:, 0], a[:, 1] - b[:, 1])


def test_field_integrals_equal_direct_integration_both_directions():
    field = DipoleField()
    tables = tables_of(field)
    z0 = torch.tensor([0.0, 3000.0, 7000.0, 5012.3, 14000.0, 9000.0], dtype=torch.float64)
    z1 = torch.tensor([14000.0, 7000.0, 3000.0, 5037.7, 0.0, 9000.0], dtype=torch.float64)
    i1, i2 = field_integrals(tables.at(z0), tables.at(z1), z1 - z0)
    for k in range(len(z0)):
        z = torch.linspace(float(z0[k]), float(z1[k]), 200001, dtype=torch.float64)
        by = field.evaluate(torch.zeros_like(z), torch.zeros_like(z), z)[1]
        expected_i1 = torch.trapezoid(by, z)
        expected_i2 = torch.trapezoid((z1[k] - z) * by, z)
        # 1e-5 T mm bends a 2 GeV track by 1.5e-9; 0.01 T mm^2 moves it by 1.5 nm.
        assert float(i1[k]) == pytest.approx(float(expected_i1), rel=1e-8, abs=1e-5)
        assert float(i2[k]) == pytest.approx(float(expected_i2), rel=1e-8, abs=1e-2)
    # The whole dipole: about 4 T m (docs/physics.md section 3), negative for "down".
    assert -4600 < float(i1[0]) < -4300


def test_tables_are_exact_on_a_trilinear_map():
    # By piecewise linear in z between 100 mm grid nodes: F and H are exact polynomials there.
    rng = np.random.default_rng(4)
    values = np.zeros((2, 2, 31, 3))
    values[:, :, :, 1] = rng.uniform(-1, 1, 31)
    grid = GridField(values, origin=(-100.0, -100.0, 1000.0), spacing=(200.0, 200.0, 100.0))
    profile = AxisProfile.from_field(grid, 1000.0, 4000.0)
    tables = AxisTables(profile.tables(), profile.z_first, profile.spacing)
    z0, z1 = torch.tensor([1000.0, 1234.5]), torch.tensor([4000.0, 3210.9])
    i1, i2 = field_integrals(tables.at(z0.double()), tables.at(z1.double()), (z1 - z0).double())
    for k in range(2):
        z = torch.linspace(float(z0[k]), float(z1[k]), 400001, dtype=torch.float64)
        by = grid.evaluate(torch.zeros_like(z), torch.zeros_like(z), z)[1]
        assert float(i1[k]) == pytest.approx(float(torch.trapezoid(by, z)), rel=1e-8)
        assert float(i2[k]) == pytest.approx(float(torch.trapezoid((z1[k] - z) * by, z)), rel=1e-7)


def test_axial_transport_is_the_motion_in_the_on_axis_field():
    field = OnAxisOnly(DipoleField())
    inputs = random_tracks(400, seed=1)
    expected = truth(inputs, field)
    nodes, weights = gauss_legendre()
    got = axial_transport(torch.from_numpy(inputs), tables_of(DipoleField()), nodes, weights)
    error = position_error(got.numpy(), expected)
    assert np.nanmean(error) < 1e-3  # mm
    assert np.abs(got.numpy()[:, 2:] - expected[:, 2:]).max() < 1e-5


def test_kick_is_first_order_the_axial_transport_exact_for_stiff_tracks():
    inputs = random_tracks(200, seed=2, p_gev=(500.0, 1000.0))
    expected = truth(inputs, OnAxisOnly(DipoleField()))
    tables = tables_of(DipoleField())
    kick = kick_transport(torch.from_numpy(inputs), tables).numpy()
    assert position_error(kick, expected).max() < 0.05  # second order in a small field


def test_expansion_transport_accuracy_on_the_default_dipole():
    # The base the models start from: what a network still has to learn, by leg length.
    inputs = random_tracks(2000, seed=3)
    expected = truth(inputs, DipoleField())
    kept = np.isfinite(expected).all(axis=1)  # (tracks that leave the volume are dropped)
    inputs, expected = inputs[kept], expected[kept]
    nodes, weights = gauss_legendre()
    base = expansion_transport(torch.from_numpy(inputs), tables_of(DipoleField()), nodes, weights)
    error = position_error(base.numpy(), expected)
    line = position_error(
        inputs[:, :2] + inputs[:, 2:4] * (inputs[:, 6:7] - inputs[:, 5:6]), expected
    )
    short = np.abs(inputs[:, 6] - inputs[:, 5]) < 250
    assert np.mean(error) < 0.01 * np.mean(line)
    assert np.mean(error[short]) < 1e-3  # mm: far below the straight line's 0.09 mm
    assert np.percentile(error, 95) < 0.5


def test_profile_round_trips_through_its_manifest_record():
    profile = AxisProfile.from_field(DipoleField(), 0.0, 14000.0)
    again = AxisProfile.from_dict(profile.to_dict())
    assert np.array_equal(again.by, profile.by) and np.array_equal(again.h, profile.h)
    assert profile.rule == "smooth"
    z_in, z_out = profile.half_maximum_extent()
    # Half the Gaussian's peak at z0 -+ sigma sqrt(2 ln 2), not at the nearest 20 mm node.
    half_width = 1744.0 * np.sqrt(2 * np.log(2))
    assert abs(z_in - (5007.0 - half_width)) < 0.5 and abs(z_out - (5007.0 + half_width)) < 0.5


def test_evaluate_prints_the_magnet_extent_and_momentum_bins_as_the_readme_does(capsys):
    """``p 2-5 GeV`` (not ``2-5.0``), and the default dipole's z 2954 -> 7060 mm of the README."""
    from raytrack.data import load_phase_space
    from raytrack.evaluate import binned_report, print_summary

    sample = load_phase_space("default").sample(np.random.default_rng(3), 2000)
    inputs = np.stack(
        [sample[k] for k in ("x", "y", "tx", "ty", "qop", "z_start", "z_end")], axis=1
    )
    dz = inputs[:, 6] - inputs[:, 5]
    truth = np.stack([inputs[:, 0] + inputs[:, 2] * dz, inputs[:, 1] + inputs[:, 3] * dz,
                      inputs[:, 2], inputs[:, 3]], axis=1)  # fmt: skip
    magnet = AxisProfile.from_field(DipoleField(), 0.0, 14000.0).half_maximum_extent()
    print_summary(binned_report(inputs, truth, truth + 0.01, magnet))
    printed = capsys.readouterr().out
    assert "p 2-5 GeV" in printed and "p 50-100 GeV" in printed and ".0 GeV" not in printed
    assert "z 2954 -> 7060 mm" in printed
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "z 2954 -> 7060 mm" in " ".join(readme.split())


# -- the path base: the whole field along the track's own path -----------------------------------


def path_tables(field: Field, profile: AxisProfile | None = None) -> AxisTables:
    profile = profile or AxisProfile.from_field(field, -500.0, 14500.0)
    x_values = profile.x_tables() if profile.x_degree else None
    return AxisTables(
        profile.tables(),
        profile.z_first,
        profile.spacing,
        x_values=x_values,
        x_scale=profile.x_scale,
    )


def path_base(inputs: np.ndarray, tables: AxisTables, count: int = 12) -> np.ndarray:
    nodes, weights = gauss_legendre(count)
    matrix = integration_matrix(nodes)
    return path_transport(torch.from_numpy(inputs), tables, nodes, weights, matrix).numpy()


def tracks_and_truth(field: Field, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    inputs = random_tracks(n, seed=seed)
    expected = truth(inputs, field)
    kept = np.isfinite(expected).all(axis=1)
    return inputs[kept], expected[kept]


def test_integration_matrix_integrates_polynomials_to_every_node():
    for count in (8, 32):  # 32: where the monomials' Vandermonde inverse broke down
        nodes, _ = gauss_legendre(count)
        matrix = integration_matrix(nodes).numpy()
        t = nodes.numpy()
        for degree in (0, 3, count - 1):
            expected = t ** (degree + 1) / (degree + 1)
            assert np.allclose(matrix @ t**degree, expected, rtol=0, atol=1e-12)


def test_path_transport_is_near_exact_on_the_default_dipole():
    inputs, expected = tracks_and_truth(DipoleField(), 1500, seed=5)
    tables = path_tables(DipoleField())
    assert tables.x_degree == 0  # the default dipole has no x dependence
    path = position_error(path_base(inputs, tables), expected)
    nodes, weights = gauss_legendre()
    expansion = expansion_transport(torch.from_numpy(inputs), tables, nodes, weights).numpy()
    expansion = position_error(expansion, expected)
    assert np.mean(path) < 0.03 and np.percentile(path, 95) < 0.06  # mm
    assert np.mean(path) < 0.1 * np.mean(expansion)


def test_path_transport_reads_the_x_dependence_of_a_map():
    field = WindowFrameField()
    inputs, expected = tracks_and_truth(field, 1500, seed=6)
    profile = AxisProfile.from_field(field, -500.0, 14500.0)
    assert profile.x_degree == X_DEGREE and profile.x_scale == 4000.0
    with_x = position_error(path_base(inputs, path_tables(field, profile)), expected)
    on_axis = AxisTables(profile.tables(), profile.z_first, profile.spacing)
    without_x = position_error(path_base(inputs, on_axis), expected)
    assert np.mean(with_x) < 0.05 and np.percentile(with_x, 95) < 0.1  # mm
    assert np.mean(with_x) < 0.05 * np.mean(without_x)


def test_the_x_fit_reproduces_the_midplane_field():
    field = WindowFrameField()
    profile = AxisProfile.from_field(field, 2000.0, 8000.0)
    rng = np.random.default_rng(7)
    x, index = rng.uniform(-4000, 4000, 500), rng.integers(0, len(profile.by), 500)
    z = profile.z_first + profile.spacing * index
    u = (x / profile.x_scale)[:, None] ** np.arange(1, X_DEGREE + 1)
    fitted = profile.by[index] + (profile.x_coefficients[index] * u).sum(1)
    zero = np.zeros_like(x)
    exact = field.evaluate(*(torch.from_numpy(v) for v in (x, zero, z)))[1].numpy()
    assert np.abs(fitted - exact).max() < 1e-4 * np.abs(profile.by).max()


def test_path_nodes_follow_the_field():
    inputs = torch.from_numpy(random_tracks(2000, seed=8))
    assert choose_path_nodes(path_tables(DipoleField()), inputs) == 8
    # The window frame's fringes are sharper than the Gaussian dipole's: more nodes.
    assert choose_path_nodes(path_tables(WindowFrameField()), inputs) >= 10


def test_a_map_profile_smooths_its_derivatives_and_round_trips_through_the_manifest():
    field = WindowFrameField()
    grid = sampled_window_frame()
    profile = AxisProfile.from_field(grid, 1500.0, 8500.0)
    assert profile.grid_mm == 100.0 and profile.x_degree == X_DEGREE
    again = AxisProfile.from_dict(json.loads(json.dumps(profile.to_dict())))
    assert again.grid_mm == profile.grid_mm and again.x_scale == profile.x_scale
    assert np.array_equal(again.x_coefficients, profile.x_coefficients)
    assert torch.equal(again.tables(), profile.tables())
    assert torch.equal(again.x_tables(), profile.x_tables())
    # dBy/dz of the trilinear map's tables, against the analytic field's: the raw central
    # differences jump at every grid node, the smoothed ones follow the field (away from the
    # tables' ends, which lie in the margin beyond the phase space).
    exact = AxisProfile.from_field(field, 1500.0, 8500.0).tables()[1].numpy()[15:-15]
    smoothed = profile.tables()[1].numpy()[15:-15]
    raw = np.gradient(profile.by, profile.spacing)[15:-15]
    assert np.abs(smoothed - exact).max() < 0.01 * np.abs(exact).max()
    assert np.abs(raw - exact).max() > 2 * np.abs(smoothed - exact).max()


def sampled_window_frame() -> GridField:
    """The window-frame field on a 100 mm grid over the region the tests read."""
    x = np.arange(-4000.0, 4000.1, 100.0)
    y = np.array([-100.0, 0.0, 100.0])
    z = np.arange(1000.0, 9000.1, 100.0)
    xs, ys, zs = np.meshgrid(x, y, z, indexing="ij")
    field = WindowFrameField()
    values = np.stack([b.numpy() for b in field.evaluate(*map(torch.from_numpy, (xs, ys, zs)))], -1)
    return GridField(values, origin=(x[0], y[0], z[0]), spacing=(100.0, 100.0, 100.0))
