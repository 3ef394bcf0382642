"""The on-axis profile: its tables, its manifest record, the x fit and a map's spline
(raytrack/physics/axis_profile.py; docs/physics.md sections 2a and 2c)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from raytrack.physics import DipoleField
from raytrack.physics.axis_profile import X_DEGREE, AxisProfile, smoothed_over
from raytrack.physics.synthetic_map import WindowFrameField

from .tracks import sampled_window_frame


def test_a_map_profile_is_the_spline_through_the_maps_own_nodes():
    """A trilinear map is taken as samples of a smooth field (docs/physics.md section 2c): By
    at the map's z nodes exactly, and in between the field it samples (the window-frame
    dipole's F and H, not those of By linear between the nodes)."""
    grid = sampled_window_frame()
    profile = AxisProfile.from_field(grid, 1500.0, 8500.0)
    assert profile.rule == "smooth" and profile.grid_mm == 0.0
    smooth = AxisProfile.from_field(WindowFrameField(), 1500.0, 8500.0)
    on_grid = (profile.z_first + profile.spacing * np.arange(len(profile.by))) % 100.0 == 0.0
    zero = torch.zeros(int(on_grid.sum()), dtype=torch.float64)
    z = torch.from_numpy(profile.z_first + profile.spacing * np.flatnonzero(on_grid))
    np.testing.assert_allclose(profile.by[on_grid], grid.evaluate(zero, zero, z)[1].numpy())
    for mine, field in ((profile.f, smooth.f), (profile.h, smooth.h)):
        assert np.abs(mine - field).max() < 1e-5 * np.abs(field).max()
    linear = AxisProfile.from_by(profile.z_first, profile.spacing, profile.by, "linear")
    assert np.abs(linear.h - smooth.h).max() > 10 * np.abs(profile.h - smooth.h).max()


def test_a_manifest_written_before_the_spline_reads_as_it_was_written():
    """Its record, By linear between the map's nodes and derivatives smoothed over its grid,
    gives the tables its datasets' models were trained with."""
    record = AxisProfile.from_field(sampled_window_frame(), 1500.0, 8500.0).to_dict()
    record.update(by_between_nodes="linear", derivatives_smoothed_over_mm=100.0)
    profile = AxisProfile.from_dict(json.loads(json.dumps(record)))
    assert (profile.rule, profile.grid_mm) == ("linear", 100.0)
    smoothed = np.gradient(smoothed_over(profile.by, 10), profile.spacing)
    np.testing.assert_array_equal(profile.tables()[1].numpy(), smoothed)


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


def test_a_map_profile_round_trips_through_the_manifest_and_follows_the_field():
    field = WindowFrameField()
    grid = sampled_window_frame()
    profile = AxisProfile.from_field(grid, 1500.0, 8500.0)
    assert profile.x_degree == X_DEGREE
    again = AxisProfile.from_dict(json.loads(json.dumps(profile.to_dict())))
    assert again.grid_mm == profile.grid_mm and again.x_scale == profile.x_scale
    assert np.array_equal(again.x_coefficients, profile.x_coefficients)
    assert torch.equal(again.tables(), profile.tables())
    assert torch.equal(again.x_tables(), profile.x_tables())
    # dBy/dz of the map's tables against the analytic field's (away from the tables' ends,
    # which lie in the margin beyond the phase space); By linear between the grid's nodes
    # would jump at every one of them.
    exact = AxisProfile.from_field(field, 1500.0, 8500.0).tables()[1].numpy()[15:-15]
    splined = profile.tables()[1].numpy()[15:-15]
    assert np.abs(splined - exact).max() < 0.01 * np.abs(exact).max()
