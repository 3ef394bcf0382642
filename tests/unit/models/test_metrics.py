"""Position and slope errors and the evaluation report's bins (raytrack.models.metrics, and
raytrack.evaluate's binned report built on it)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from raytrack.models.metrics import evaluation_report
from raytrack.run.directory import predict

from .common import QUICK, TINY, fit


def test_momentum_binned_report(splits):
    train, validation, s = splits
    result = fit(TINY, QUICK, train, validation)
    report = evaluation_report(
        s.test.inputs(), s.test.targets(), predict(result.model, s.test.inputs())
    )
    bins = report["momentum_bins"]
    assert [b["p_low_gev"] for b in bins] == [2.0, 5.0, 10.0, 20.0, 50.0]
    assert sum(b["model"]["tracks"] for b in bins) == len(s.test)
    for row in bins:
        assert row["model"]["pos_mean_mm"] < row["straight_line"]["pos_mean_mm"]
        assert set(row["model"]["bias"]) == {"x", "y", "tx", "ty"}
    # Stiff tracks bend less: the straight line is better at high momentum.
    assert bins[-1]["straight_line"]["pos_mean_mm"] < bins[0]["straight_line"]["pos_mean_mm"]


def test_binned_report_names_the_tails_and_bins_by_mid_leg_position(capsys, parabolic_tracks):
    """Issue 15: P99 and the worst track in every bin, bins by |x| and |y| at mid-leg, and the
    worst tracks named by their start state and leg."""
    from raytrack.evaluate import X_MID_BINS_MM, binned_report, print_summary
    from raytrack.models.metrics import mid_leg_position, position_errors

    rng = np.random.default_rng(5)
    n = 3000
    inputs = parabolic_tracks.starts(rng, n, 1500, 1200)
    dz = inputs[:, 6] - inputs[:, 5]
    # A constant curvature per track (a parabola in x and in y): the cubic's mid-leg is exact.
    bend = rng.uniform(-2e-5, 2e-5, (n, 2))
    truth = parabolic_tracks.ends(inputs, bend)
    mid_true = inputs[:, :2] + inputs[:, 2:4] * (dz / 2)[:, None] + bend * (dz**2 / 8)[:, None]
    np.testing.assert_allclose(mid_leg_position(inputs, truth), mid_true, atol=1e-6)
    predicted = truth + rng.lognormal(-4, 1, truth.shape)
    worst = 1234
    predicted[worst, 0] += 50.0  # one track far off
    report = binned_report(inputs, truth, predicted, (3000.0, 7000.0))
    errors = position_errors(predicted, truth)
    for key in ("dz_bins", "x_mid_bins", "y_mid_bins", "region_bins"):
        rows = report[key]
        assert sum(r["tracks"] for r in rows) == n, key
        for r in rows:
            assert r["pos_mean_mm"] <= r["pos_p95_mm"] <= r["pos_p99_mm"] <= r["pos_max_mm"], key
        assert max(r["pos_max_mm"] for r in rows) == errors[worst], key
    mid_x = np.abs(mid_true[:, 0])
    for r in report["x_mid_bins"]:
        high = np.inf if r["x_mid_high_mm"] is None else r["x_mid_high_mm"]
        inside = (mid_x >= r["x_mid_low_mm"]) & (mid_x < high)
        assert r["tracks"] == inside.sum() and r["pos_max_mm"] == errors[inside].max()
    assert [r["x_mid_low_mm"] for r in report["x_mid_bins"]] == list(X_MID_BINS_MM[:-1])
    named = report["worst_tracks"]
    assert len(named) == 10 and named[0]["row"] == worst
    assert [t["pos_error_mm"] for t in named] == sorted(errors, reverse=True)[:10]
    start = named[0]["start"]
    assert [start[k] for k in ("x_mm", "y_mm", "tx", "ty", "qop_per_mev", "z_start_mm",
                               "z_end_mm")] == list(inputs[worst])  # fmt: skip
    assert named[0]["truth"]["x_mm"] == truth[worst, 0]
    assert named[0]["predicted"]["x_mm"] == predicted[worst, 0]
    assert named[0]["mid_leg_mm"]["x"] == pytest.approx(mid_true[worst, 0])
    json.dumps(report)  # report.json holds it as it is
    print_summary(report)
    printed = capsys.readouterr().out
    assert f"worst track: {errors[worst]:.4f} mm off" in printed
    assert f"start x {inputs[worst, 0]:.1f} mm, y {inputs[worst, 1]:.1f} mm" in printed
    assert "mid-leg |x| 0-250 mm" in printed and "mid-leg |y| 1000-1500 mm" in printed
    header = next(line for line in printed.splitlines() if "position error in bins" in line)
    assert "P99" in header.split() and "worst" in header.split()
