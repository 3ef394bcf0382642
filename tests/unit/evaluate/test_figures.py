"""The evaluation's figures: titles that name the model, labelled log axes that do not crowd,
the loss the run trained with, the tails marked and left uncovered."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from raytrack.evaluate import (
    binned_report,
    error_against_figure,
    histograms_figure,
    learning_curves_figure,
    log_tick_values,
    model_title,
    plot_context,
    write_report,
)
from raytrack.models.metrics import position_errors
from raytrack.models.mlp import ModelConfig
from raytrack.models.train_config import TrainConfig
from raytrack.run.directory import RUN_FILE, RunSpec

from .axes import check_log_axis


def test_evaluation_figures_have_titles_and_labelled_log_axes(tmp_path):
    """Issue 17: evaluation/*.png had no titles; learning_curves.png's right panel had two
    labels with the curve below the lowest. Built from tracks and a history like a run's."""
    rng = np.random.default_rng(1)
    n = 400
    inputs = np.zeros((n, 7))
    inputs[:, 4] = rng.choice([-1, 1], n) / rng.uniform(2e3, 1e5, n)  # q/p [1/MeV]
    inputs[:, 6] = rng.uniform(100.0, 9000.0, n)
    truth = rng.normal(0, 100, (n, 4))
    predicted = truth + rng.lognormal(-3, 1.5, (n, 4))
    tracks = {"inputs": inputs, "truth": truth, "predicted": predicted}
    # the right panel of the learning curves: P95 0.152 -> 0.207 mm, mean 0.216 -> 0.203
    history = [{"epoch": 1, "train_loss": 0.99, "val_loss": 0.48, "val_pos_mean_mm": 0.216,
                "val_pos_p95_mm": 0.152},
               {"epoch": 2, "train_loss": 0.94, "val_loss": 0.46, "val_pos_mean_mm": 0.203,
                "val_pos_p95_mm": 0.207}]  # fmt: skip
    run = plot_context(tmp_path / "best" / "evaluation")
    assert run == "run best"
    figures = [
        histograms_figure(run, **tracks),
        error_against_figure(run, "momentum", **tracks),
        error_against_figure(run, "dz", **tracks),
        error_against_figure(run, "x_mid", **tracks),
        error_against_figure(run, "y_mid", **tracks),
        learning_curves_figure(run, history),
        learning_curves_figure(
            run, [dict(h, val_pos_p99_mm=p) for h, p in zip(history, (0.4, 0.5), strict=True)]
        ),
    ]
    for fig in figures:
        title = fig.get_suptitle() or fig.axes[0].get_title()
        assert title.startswith("run best: "), title
        assert all(ax.get_title() for ax in fig.axes)
        for ax in fig.axes:
            for axis in (ax.xaxis, ax.yaxis):
                if axis.get_scale() == "log" and ax.lines:
                    values = [v for line in ax.lines for v in line.get_data()[axis is ax.yaxis]]
                    check_log_axis(axis, values)
    # issue 15: P99 and the worst track beside mean and P95, and the bins across the aperture
    errors = position_errors(predicted, truth)
    marks = [line.get_label() for line in figures[0].axes[0].lines]
    assert [m.split()[1] for m in marks] == ["P95", "P99", "worst"]
    assert figures[0].axes[0].lines[2].get_xdata()[0] == errors.max()
    for fig in figures[1:5]:
        (ax,) = fig.axes
        assert [line.get_label() for line in ax.lines] == ["mean", "P95", "P99", "worst"]
        assert max(ax.lines[3].get_ydata()) == errors.max()
    assert figures[3].axes[0].get_xlabel() == "|x| at mid-leg [mm]"
    assert "|y| at the middle of the leg" in figures[4].axes[0].get_title()
    assert "P99" not in [t.get_text() for t in figures[5].axes[1].get_legend().get_texts()]
    assert "P99" in [t.get_text() for t in figures[6].axes[1].get_legend().get_texts()]
    for low, high in ((0.152, 0.216), (0.46, 1.0), (0.05, 3.0), (2.0, 95.0), (1e-5, 30.0),
                      (0.2, 0.2), (3e-4, 3e4), (0.1838, 2.045)):  # fmt: skip
        ticks = log_tick_values(low, high)
        assert 3 <= len(ticks) <= 12 and ticks[0] <= low and high <= ticks[-1], (low, ticks)


# -- issue 25, item 8: the learning curves and the histograms ---------------------------------

#: A run's losses from 0.0801 down to 0.0089: log_tick_values puts a tick at every 1-9 times
#: a power of ten from 0.008 to 0.09 on this axis, too many to label each.
FALLING = [
    {"epoch": k + 1, "train_loss": train, "val_loss": val, "val_pos_mean_mm": 0.1 / (k + 1),
     "val_pos_p95_mm": 0.3 / (k + 1), "val_pos_p99_mm": 0.5 / (k + 1)}
    for k, (train, val) in enumerate(
        [(0.0801, 0.07), (0.05, 0.04), (0.03, 0.025), (0.015, 0.012), (0.0095, 0.0089)]
    )
]  # fmt: skip


def tracks(n: int = 400, mu: float = -3.0, sigma: float = 1.5) -> dict[str, np.ndarray]:
    """Tracks like a run's test split, with lognormal errors (log mm: ``mu``, ``sigma``)."""
    rng = np.random.default_rng(1)
    inputs = np.zeros((n, 7))
    inputs[:, 4] = rng.choice([-1, 1], n) / rng.uniform(2e3, 1e5, n)  # q/p [1/MeV]
    inputs[:, 6] = rng.uniform(100.0, 9000.0, n)
    truth = rng.normal(0, 100, (n, 4))
    return {"inputs": inputs, "truth": truth, "predicted": truth + rng.lognormal(mu, sigma, (n, 4))}


def test_the_loss_axis_names_the_runs_loss():
    """The loss axis says which loss the run trained with (huber by default, or mse)."""
    assert TrainConfig().loss == "huber"
    for loss, name in (("huber", "Huber"), ("mse", "MSE")):
        (ax, _) = learning_curves_figure("tiny", FALLING, loss=loss).axes
        assert name in ax.get_ylabel() and "standardised" in ax.get_ylabel()
    (ax, _) = learning_curves_figure("tiny", FALLING, loss="huber").axes
    assert "MSE" not in ax.get_ylabel()
    sobolev = learning_curves_figure("tiny", FALLING, loss="huber", jacobian_weight=0.1)
    assert "0.1 x Jacobian term" in sobolev.axes[0].get_ylabel()


def test_log_axis_labels_do_not_crowd():
    """Of the ticks from 0.008 to 0.09 a handful are labelled, at least one and a half label
    heights apart (centre to centre), the values still between two labels."""
    fig = learning_curves_figure("tiny", FALLING, loss="huber")
    for ax in fig.axes:
        values = [v for line in ax.lines for v in line.get_ydata()]
        check_log_axis(ax.yaxis, values)  # still bracketed by labels, at least three
        fig.canvas.draw()
        shown = [t.label1 for t in ax.yaxis.get_major_ticks() if t.label1.get_text()]
        assert 3 <= len(shown) <= 6, [label.get_text() for label in shown]
        boxes = sorted((label.get_window_extent() for label in shown), key=lambda b: b.y0)
        for low, high in zip(boxes, boxes[1:], strict=False):
            assert high.y0 - low.y1 >= 0.5 * low.height, (low, high)
    assert log_tick_values(0.0089, 0.0801)[:3] == pytest.approx([0.008, 0.009, 0.01])


def test_the_figures_name_the_model(tmp_path):
    """The figures' titles name the run's model (its preset and layers), not its directory
    (best/)."""
    assert plot_context(tmp_path / "best" / "evaluation", "tiny") == "tiny"
    assert plot_context(tmp_path / "best" / "evaluation-fresh", "tiny") == "tiny, data fresh"
    run = tmp_path / "best"
    run.mkdir()
    model = ModelConfig(hidden=(32, 16), activation="relu")
    spec = RunSpec(str(tmp_path), model, TrainConfig(), name="tiny")
    (run / RUN_FILE).write_text(json.dumps(spec.to_dict()))
    assert model_title(spec) == "tiny (32-16 relu)"
    data = tracks()
    report = binned_report(data["inputs"], data["truth"], data["predicted"], None)
    write_report(run / "evaluation", {**report, "_tracks": data}, FALLING)  # spec: run.json
    for name in ("learning_curves", "error_histograms", "error_vs_momentum", "error_vs_dz"):
        text = Image.open(run / "evaluation" / f"{name}.png").text
        assert text["Title"].startswith(f"{model_title(spec)}: "), text["Title"]
        assert "run best" not in text["Title"]
    described = Image.open(run / "evaluation" / "learning_curves.png").text["Description"]
    assert "loss (Huber, standardised targets)" in described


@pytest.mark.parametrize("mu, sigma", [(-3.0, 1.5), (-2.0, 0.7)])
def test_the_histograms_legends_leave_the_tails_and_their_marks_free(mu, sigma):
    """The legends cover neither the histograms nor the P95, P99 and worst marks; errors of
    0.14 mm with a spread of 0.7 in log are where matplotlib's "best" place would cover
    the marks."""
    fig = histograms_figure("tiny", **tracks(mu=mu, sigma=sigma))
    fig.tight_layout()
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        legend = ax.get_legend().get_window_extent(renderer)
        assert not legend.overlaps(ax.get_window_extent(renderer))  # nothing drawn is covered
        for line in ax.lines:  # the P95, P99 and worst marks
            assert not legend.overlaps(line.get_window_extent(renderer)), line.get_label()
        for patch in ax.patches:  # the histograms
            assert not legend.overlaps(patch.get_window_extent(renderer))
