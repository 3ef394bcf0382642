"""``experiment_dir/report/``: read the experiment, evaluate its best model, draw the figures
and write the page that shows them (:mod:`raytrack.report.page`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from raytrack.data import DatasetError
from raytrack.files import replacing
from raytrack.report import page
from raytrack.report.best import best_model
from raytrack.report.experiment import (
    Experiment,
    equal_accuracy_pairs,
    progress,
    read_experiment,
    tool_commands,
)
from raytrack.report.figures import (
    plot_best_against,
    plot_p95_against_cost,
    plot_p95_against_epoch,
)
from raytrack.search.timing import CURVE_FILE, TIME_METRIC, integrator_curve

REPORT_DIR = "report"
#: The captions of the figures of the best model against each variable
BEST_AGAINST = (
    ("momentum", "Position error against momentum, model and straight line"),
    ("dz", "Position error against the leg length |dz|, model and straight line"),
    ("x_mid", "Position error against |x| at mid-leg, model and straight line"),
    ("y_mid", "Position error against |y| at mid-leg, model and straight line"),
)
WEIGHTS_CAPTION = (
    "Validation P95 position error of each trial's exported weights against its weight count; "
    "the dotted line: 16384 float32 weights, the 64 KB of constant memory of LHCb's GPU trigger "
    "(its header's field tables take part of it: docs/trigger_header.md)"
)


def write_experiment_report(
    experiment_dir: str | Path,
    best_tracks: dict[str, np.ndarray] | None = None,
    log: Callable[[str], None] = print,
    interrupted: bool = False,
) -> Path:
    """Write ``experiment_dir/report/`` (index.html and its PNG figures); returns index.html.

    ``best_tracks``: the best model's test-split (inputs, truth, predicted) when the caller
    has them (the search has just evaluated best/); otherwise the best model is evaluated here.
    ``interrupted``: the search (which calls this) was interrupted; the report says so (it
    also does when its leaderboard marks trials interrupted).
    """
    experiment = read_experiment(experiment_dir)
    out = experiment.path / REPORT_DIR
    out.mkdir(exist_ok=True)
    parts = [page.heading(experiment, progress(experiment, interrupted))]
    parts.append("<h2>Accuracy against cost</h2>")
    if experiment.rows:
        for cost, caption in (
            ("weight_count", WEIGHTS_CAPTION),
            ("macs_per_track", "The same against multiply-adds per track"),
        ):
            parts.append(page.figure(plot_p95_against_cost(experiment, out, cost), caption))
        if any(TIME_METRIC in r for r in experiment.rows):  # --objective pareto-time
            parts.append(time_section(experiment, out, measure=not interrupted, log=log))
        parts.append("<h2>Learning curves</h2>")
        caption = "Validation P95 position error of every epoch, every trial"
        parts.append(page.figure(plot_p95_against_epoch(experiment, out), caption))
    else:
        parts.append(page.note("No trial has started yet."))
    parts += ["<h2>Leaderboard</h2>", page.leaderboard_table(experiment.rows)]
    parts.append("<h2>Best model</h2>")
    best = best_model(experiment, best_tracks)
    if isinstance(best, str):
        parts.append(page.note(f"No best model to show: {best}."))
    else:
        parts.append(page.best_summary(best))
        for what, caption in BEST_AGAINST:
            parts.append(page.figure(plot_best_against(experiment, best, out, what), caption))
    parts += ["<h2>Tools</h2>", page.commands(tool_commands(experiment))]
    index = out / "index.html"
    with replacing(index) as tmp:
        tmp.write_text(page.document(f"raytrack {experiment.path.name}", parts), encoding="utf-8")
    return index


def time_section(
    experiment: Experiment, out: Path, measure: bool, log: Callable[[str], None]
) -> str:
    """The figure against inference time with the integrator's curve, and the table of each
    trial beside the integrator at its accuracy. The curve is read from the experiment
    directory, else measured now (once; not while a search is being interrupted)."""
    caption = (
        "The same against each trial's inference time per track (its model exported to ONNX, "
        "ONNX Runtime on one thread, batches of 4096 validation inputs, best of 5 rounds)"
    )
    curve, why = None, "is measured when the search ends or by python -m raytrack.report"
    try:
        curve = integrator_curve(
            experiment.path, experiment.options["data_dir"], measure=measure, log=log
        )
    except (DatasetError, OSError, ValueError) as err:  # the rest of the report is still due
        why = f"could not be measured: {err}"
        log(f"warning: the integrator's curve ({CURVE_FILE}) {why}")
    if curve is None:
        caption += f"; the integrator's curve ({CURVE_FILE}) {why}"
    else:
        caption += (
            "; red: propagate (Dormand-Prince 5(4)) at the fastest of its settings (tolerance x "
            "step cap, as bench deploy) at each P95, on a sample of the validation tracks "
            "against an integration 1000 times tighter, one thread, measured by the driver on "
            f"{curve['host']} at {curve['measured_at']} ({CURVE_FILE}): a trial below and left "
            "of its staircase beats the integrator at equal accuracy. On a cluster the trials "
            "may have been timed on other machines"
        )
    shown = page.figure(plot_p95_against_cost(experiment, out, TIME_METRIC, curve), caption)
    if curve is None:
        return shown
    return shown + page.equal_accuracy_table(equal_accuracy_pairs(experiment.rows, curve))
