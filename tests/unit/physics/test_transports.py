"""The field integrals and the transports of the physics bases against the integrator
(raytrack/physics/transports.py; docs/physics.md sections 2a and 2c)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from raytrack.physics import DipoleField
from raytrack.physics.axis_lookup import AxisTables
from raytrack.physics.axis_profile import X_DEGREE, AxisProfile, fit_x_dependence
from raytrack.physics.synthetic_map import WindowFrameField, sampled_grid
from raytrack.physics.transports import (
    axial_transport,
    expansion_transport,
    field_integrals,
    gauss_legendre,
    integration_matrix,
    kick_transport,
)

from .tracks import (
    OnAxisOnly,
    path_base,
    path_tables,
    position_error,
    random_tracks,
    tables_of,
    tracks_and_truth,
    truth,
)


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


def test_d2by_is_continuous_so_the_path_base_reaches_micrometres_on_the_dipole():
    """d2By/dz2 linear between the nodes' central differences (docs/physics.md section 2c):
    continuous across a node, where the stepped rule of older models jumps, and the 12-node
    path base several times closer to the truth with it than with the stepped rule."""
    profile = AxisProfile.from_field(DipoleField(), -500.0, 14500.0)
    node = profile.z_first + 300 * profile.spacing
    z = torch.tensor([node - 1e-6, node + 1e-6], dtype=torch.float64)
    for continuous, jumps in ((True, False), (False, True)):
        tables = AxisTables(
            profile.tables(), profile.z_first, profile.spacing, continuous_curvature=continuous
        )
        d2by = tables.at(z).d2by
        assert bool(abs(d2by[1] - d2by[0]) > 1e-3 * abs(d2by[0])) == jumps
    inputs, expected = tracks_and_truth(DipoleField(), 1500, seed=5)
    stepped = AxisTables(
        profile.tables(), profile.z_first, profile.spacing, continuous_curvature=False
    )
    smooth = position_error(path_base(inputs, path_tables(DipoleField())), expected)
    rough = position_error(path_base(inputs, stepped), expected)
    assert np.mean(smooth) < 0.002 and np.percentile(smooth, 95) < 0.003  # mm
    assert np.mean(smooth) < 0.25 * np.mean(rough)


def test_the_x_coefficients_second_dz_derivative_is_continuous_too():
    """The midplane's d2d/dz2 (docs/physics.md section 2c), linear between the nodes' central
    differences as d2By: continuous across a node, where the stepped rule (model.bin version
    4) jumps; the rest of the x terms are the same in both."""
    profile = AxisProfile.from_field(WindowFrameField(), -500.0, 14500.0)
    node = profile.z_first + 150 * profile.spacing  # z 2500 mm: the entrance fringe
    z = torch.tensor([node - 1e-6, node + 1e-6], dtype=torch.float64)
    x = torch.tensor([2500.0, 2500.0], dtype=torch.float64)
    terms = {}
    for continuous in (True, False):
        tables = AxisTables(
            profile.tables(),
            profile.z_first,
            profile.spacing,
            x_values=profile.x_tables(),
            x_scale=profile.x_scale,
            continuous_x_curvature=continuous,
        )
        terms[continuous] = tables.at(z).midplane_terms(x)
    for continuous, jumps in ((True, False), (False, True)):
        laplacian = terms[continuous][2]
        assert bool(abs(laplacian[1] - laplacian[0]) > 1e-3 * abs(laplacian[0])) == jumps
    for k in (0, 1, 3):  # d, dd/dx, dd/dz
        torch.testing.assert_close(terms[True][k], terms[False][k], rtol=0, atol=0)


@pytest.mark.slow  # integrates 800 tracks through the trilinear map
def test_on_a_map_the_path_base_reads_the_smooth_field_the_grid_samples():
    """The window-frame map on its 100 mm grid: the path base from the map's profile (splines
    through its nodes) against the tracks integrated through the map itself, several times
    closer than the profile that takes By linear between the map's nodes, as the map does on
    its axis (docs/physics.md section 2c)."""
    grid = sampled_grid()
    inputs, expected = tracks_and_truth(grid, 800, seed=8)
    profile = AxisProfile.from_field(grid, -500.0, 14500.0)
    nodes = profile.z_first + profile.spacing * np.arange(len(profile.by))
    zero = torch.zeros(len(nodes), dtype=torch.float64)
    on_axis = grid.evaluate(zero, zero, torch.from_numpy(nodes))[1].numpy()
    trilinear = dataclasses.replace(
        AxisProfile.from_by(profile.z_first, profile.spacing, on_axis, "linear"),
        x_coefficients=fit_x_dependence(grid, nodes, profile.x_scale),
        x_scale=profile.x_scale,
        grid_mm=100.0,
    )
    splined = position_error(path_base(inputs, path_tables(grid, profile)), expected)
    linear = position_error(path_base(inputs, path_tables(grid, trilinear)), expected)
    assert np.mean(splined) < 0.7 * np.mean(linear)
    assert np.percentile(splined, 95) < 0.5 * np.percentile(linear, 95)
