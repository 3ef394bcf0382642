"""The on-axis profile: its tables, its manifest record, the x fit and a map's smoothed
derivatives (raytrack/physics/axis_profile.py; docs/physics.md sections 2a and 2c)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from raytrack.physics import DipoleField, GridField
from raytrack.physics.axis_lookup import AxisTables
from raytrack.physics.axis_profile import X_DEGREE, AxisProfile
from raytrack.physics.synthetic_map import WindowFrameField
from raytrack.physics.transports import field_integrals

from .tracks import sampled_window_frame


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
    """``p 2-5 GeV`` (not ``2-5.0``), and the default dipole's z 2954 -> 7060 mm of
    docs/evaluate.md."""
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
    readme = (Path(__file__).resolve().parents[3] / "docs" / "evaluate.md").read_text()
    assert "z 2954 -> 7060 mm" in " ".join(readme.split())


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
