"""The experiment report's figures: the trials told apart in the learning curves, the
integrator's curve beside the trials against inference time, and the best model's section."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from raytrack.models.metrics import position_errors
from raytrack.report import (
    INTEGRATOR_LABEL,
    BestModel,
    best_against_figure,
    best_summary,
    p95_against_cost_figure,
    p95_against_epoch_figure,
    read_experiment,
    write_experiment_report,
)
from raytrack.search.timing import CURVE_FILE, TIME_METRIC, curve_front

from ..evaluate.axes import check_log_axis


def test_learning_curves_of_the_report_tell_the_trials_apart(optuna_search):
    """Issue 17: p95_vs_epoch.png drew every trial in the same colour, named them with labels
    that overlapped, and had two labels on its log axis."""
    options, rows = optuna_search
    experiment = read_experiment(options.path)
    fig = p95_against_epoch_figure(experiment)
    (ax,) = fig.axes
    curves = [line for line in ax.lines if line.get_linestyle() == "-"]
    assert len(curves) == len({str(line.get_color()) for line in curves}) == len(rows) == 4
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    names = [r["trial_id"] if r["name"] == "optuna" else r["name"] for r in rows]
    expected = [f"{n} ({r['status']})" for n, r in zip(names, rows, strict=True)]
    assert legend == expected  # best first
    assert not ax.texts  # no labels beside the curves
    assert ax.get_title().startswith(f"{options.name}: ")
    check_log_axis(ax.yaxis, [p for t in experiment.trials for _, p in t.curve])
    for cost in ("weight_count", "macs_per_track"):
        (ax, *_) = p95_against_cost_figure(experiment, cost).axes
        check_log_axis(ax.yaxis, [r["pos_p95_mm"] for r in rows])


def test_the_time_figure_draws_the_integrators_curve_beside_the_trials(
    pareto_time_search, tmp_path
):
    """Issue 16: the report's figure against inference time draws the integrator's fastest
    setting at each accuracy, measured once by the driver on the validation tracks and kept in
    the experiment; the report is written again from the kept curve."""
    options, rows = pareto_time_search
    curve = json.loads((options.path / CURVE_FILE).read_text())
    settings = curve["settings"]
    assert len(settings) == 6 and curve["tracks"] > 0 and curve["batch"] == 4096
    assert {(s["tolerance_mm"], s["max_step_mm"]) for s in settings} == {
        (t, c) for t in (0.01, 0.3, 3.0) for c in (1000.0, None)
    }
    for s in settings:
        assert math.isfinite(s["us_per_track"]) and s["us_per_track"] > 0, s
        assert 0 < s["mean_mm"] <= s["p95_mm"], s
    by = {(s["tolerance_mm"], s["max_step_mm"]): s for s in settings}
    assert by[(0.01, None)]["p95_mm"] < by[(3.0, None)]["p95_mm"]  # tighter is more accurate
    front = curve_front(curve)
    assert front and [s["us_per_track"] for s in front] == sorted(s["us_per_track"] for s in front)

    experiment = read_experiment(options.path)
    fig = p95_against_cost_figure(experiment, TIME_METRIC, curve)
    (ax, *_) = fig.axes
    (line,) = [line for line in ax.lines if line.get_label() == INTEGRATOR_LABEL]
    assert list(line.get_xdata()) == [s["us_per_track"] for s in front]
    assert list(line.get_ydata()) == [s["p95_mm"] for s in front]
    assert line.get_marker() == "D" and line.get_drawstyle() == "steps-post"
    legend = ax.get_legend()
    assert INTEGRATOR_LABEL in [text.get_text() for text in legend.get_texts()]
    note = legend.get_title().get_text()
    assert f"measured on {curve['host']} at {curve['measured_at']}" in note
    trials = [(x, y) for c in ax.collections for x, y in c.get_offsets()]
    assert sorted(trials) == sorted((r[TIME_METRIC], r["pos_p95_mm"]) for r in rows)
    check_log_axis(ax.xaxis, [r[TIME_METRIC] for r in rows] + list(line.get_xdata()))
    check_log_axis(ax.yaxis, [r["pos_p95_mm"] for r in rows] + list(line.get_ydata()))
    page = (options.path / "report" / "index.html").read_text()
    assert 'data-file="p95_vs_time.png"' in page
    assert f"measured by the driver on {curve['host']}" in page

    copy = tmp_path / "exp"  # written again: the kept curve, not measured again
    shutil.copytree(options.path, copy)
    said: list[str] = []
    write_experiment_report(copy, log=said.append)
    assert (copy / CURVE_FILE).read_bytes() == (options.path / CURVE_FILE).read_bytes()
    assert not any("measuring" in line for line in said), said
    (copy / CURVE_FILE).unlink()  # an interrupted search does not wait for it
    write_experiment_report(copy, log=said.append, interrupted=True)
    assert not (copy / CURVE_FILE).exists()
    assert "is measured when the search ends" in (copy / "report" / "index.html").read_text()
    document = json.loads((copy / "experiment.json").read_text())  # its dataset gone:
    (copy / "experiment.json").write_text(json.dumps({**document, "data_dir": "gone"}))
    said.clear()
    write_experiment_report(copy, log=said.append)  # the report, without the curve
    assert any(f"{CURVE_FILE}) could not be measured" in line for line in said), said
    assert "could not be measured" in (copy / "report" / "index.html").read_text()


def test_best_model_section_has_the_tails_the_worst_track_and_the_mid_leg_bins(parabolic_tracks):
    """Issue 15: the report's best model, its P99 and worst, its worst track by name, its
    errors in bins across the aperture, and figures against |x| and |y| at mid-leg."""
    rng = np.random.default_rng(2)
    n = 500
    inputs = parabolic_tracks.starts(rng, n, 900, 750)
    bend = rng.uniform(-2e-5, 2e-5, (n, 1)) * [1.0, 0.1]  # a parabola, mostly in x
    truth = parabolic_tracks.ends(inputs, bend)
    predicted = truth + rng.lognormal(-4, 1, truth.shape)
    row = {"name": "small", "trial_id": "t_00001"}
    best = BestModel(row, "best/ (the exported weights)", inputs, truth, predicted)
    page = best_summary(best)
    errors = position_errors(predicted, truth)
    worst = int(np.argmax(errors))
    assert "<th>P99 [mm]</th><th>worst [mm]</th>" in page
    assert f"<td>{np.percentile(errors, 99):.4f}</td><td>{errors.max():.4f}</td>" in page
    assert f"worst track: {errors[worst]:.4f} mm off" in page and f"(row {worst})" in page
    assert f"start x {inputs[worst, 0]:.1f} mm, y {inputs[worst, 1]:.1f} mm" in page
    assert "mid-leg |x| 0-250 mm" in page and "mid-leg |y| 500-750 mm" in page
    experiment = SimpleNamespace(path=Path("runs/exp"), dataset="default-600-seed0")
    for what, name in (("x_mid", "|x|"), ("y_mid", "|y|")):
        (ax,) = best_against_figure(experiment, best, what).axes
        assert ax.get_xlabel() == f"{name} at mid-leg [mm]"
        assert f"error against {name} at mid-leg" in ax.get_title()
        labels = [line.get_label() for line in ax.lines]
        assert labels == ["model: mean", "model: P95", "model: P99", "model: worst",
                          "straight line: mean", "straight line: P95"]  # fmt: skip
        assert max(ax.lines[3].get_ydata()) == errors.max()
        check_log_axis(ax.yaxis, [v for line in ax.lines for v in line.get_ydata()])
