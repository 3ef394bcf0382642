"""The evaluation's figures: error histograms, the error against momentum, |dz| and |x| and
|y| at mid-leg, the Jacobian against the integrator's and the learning curves. matplotlib is
imported by the functions that draw, as in :mod:`raytrack.plotting`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from raytrack.data.schema import JACOBIAN_INPUTS, JACOBIAN_OUTPUTS
from raytrack.models.metrics import (
    MOMENTUM_BINS_GEV,
    mid_leg_position,
    momentum_gev,
    position_errors,
    slope_errors,
)
from raytrack.models.mlp import straight_line
from raytrack.plotting import grid, log_ticks, pyplot, quantile_bins


def plot_context(out_dir: Path, model: str | None = None) -> str:
    """What the figures of ``out_dir`` show, for their titles: the model (its preset or variant
    name; the run directory's name when it is not known), and the dataset when it is not the
    run's own (``evaluation-<dataset>/``)."""
    other = out_dir.name.removeprefix("evaluation-") if out_dir.name != "evaluation" else ""
    shown = model or f"run {out_dir.parent.name}"
    return shown + (f", data {other}" if other else "")


#: The learning curves' loss axis for each training loss (TrainConfig.loss); the loss is
#: computed on the standardised targets (raytrack.models.targets).
LOSS_LABELS = {"huber": "loss (Huber, standardised targets)",
               "mse": "loss (MSE, standardised targets)"}  # fmt: skip


def loss_label(loss: str | None, jacobian_weight: float = 0.0) -> str:
    """The loss axis of the learning curves for a run trained with ``loss`` (None: unknown)
    and, when positive, a Jacobian-matching term of weight ``jacobian_weight`` in its training
    loss (the validation loss has none)."""
    label = LOSS_LABELS.get(loss or "", "loss (standardised targets)")
    if jacobian_weight > 0:
        label = label[:-1] + f";\ntraining + {jacobian_weight:g} x Jacobian term)"
    return label


def histograms_figure(run: str, inputs, truth, predicted):
    """error_histograms.png: position and slope errors of the model and the straight line; on
    the position panel the model's P95, P99 and worst track marked."""
    plt = pyplot()
    line = straight_line(inputs)
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.2))  # taller: the legends lie below
    for ax, errors, label in (
        (axes[0], position_errors, "position error [mm]"),
        (axes[1], slope_errors, "slope error"),
    ):
        model_err, line_err = errors(predicted, truth), errors(line, truth)
        floor = max(min(model_err.min(), line_err.min()), 1e-9)
        bins = np.logspace(np.log10(floor), np.log10(max(model_err.max(), line_err.max())), 80)
        ax.hist(model_err, bins=bins, histtype="step", label="model")
        ax.hist(line_err, bins=bins, histtype="step", label="straight line")
        ax.set(xscale="log", xlabel=label, ylabel="tracks")
        if errors is position_errors:
            for q, style, name in ((95, ":", "P95"), (99, "--", "P99"), (100, "-", "worst")):
                value = np.percentile(model_err, q)
                ax.axvline(value, color="tab:red", ls=style, lw=1,
                           label=f"model {name} {value:.3g} mm")  # fmt: skip
        log_ticks(ax, "x", bins[[0, -1]])
        ax.set_title(label.removesuffix(" [mm]").replace(" error", " errors"), fontsize=10)
        # below the axes: inside, it would hide the tails and the P95, P99 and worst marks
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=3)
    fig.suptitle(f"{run}: errors at the end of the leg, test split ({len(inputs):,} tracks)",
                 fontsize=11)  # fmt: skip
    return fig


#: What error_against_figure plots the error against: error_vs_<what>.png.
AGAINST = ("momentum", "dz", "x_mid", "y_mid")


def against_variable(what: str, inputs, truth) -> tuple[np.ndarray, str, str]:
    """(values, axis label, title words) of one of :data:`AGAINST` per track."""
    if what == "momentum":
        return momentum_gev(inputs), "p [GeV]", "momentum"
    if what == "dz":
        return np.abs(inputs[:, 6] - inputs[:, 5]), "|dz| [mm]", "leg length |dz|"
    if what in ("x_mid", "y_mid"):
        name = what[0]
        values = np.abs(mid_leg_position(inputs, truth)[:, "xy".index(name)])
        return values, f"|{name}| at mid-leg [mm]", f"|{name}| at the middle of the leg"
    raise ValueError(f"unknown variable {what!r}: one of {AGAINST}")


def error_against_figure(run: str, what: str, inputs, truth, predicted):
    """error_vs_momentum.png, error_vs_dz.png, error_vs_x_mid.png, error_vs_y_mid.png: mean,
    P95, P99 and worst position error in quantile bins of momentum, |dz|, or |x| or |y| at
    mid-leg (:func:`mid_leg_position`)."""
    plt = pyplot()
    x, label, against = against_variable(what, inputs, truth)
    dpos = position_errors(predicted, truth)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    centres, stats = quantile_bins(x, {"model": dpos})
    curves = dict(zip(("mean", "P95", "P99", "worst"), stats["model"], strict=True))
    for (name, values), style in zip(curves.items(), ("o-", "s--", "^-.", "v:"), strict=True):
        ax.plot(centres, values, style, ms=4, label=name)
    ax.set(xlabel=label, ylabel="position error [mm]", yscale="log")
    log_ticks(ax, "y", [v for values in curves.values() for v in values])
    if what == "momentum":
        ax.set_xscale("log")
        log_ticks(ax, "x", centres)
    grid(ax)
    ax.legend(fontsize=8)
    ax.set_title(f"{run}: position error against {against}\ntest split, {len(inputs):,} tracks "
                 "in bins of equal counts", fontsize=10)  # fmt: skip
    return fig


def jacobian_figure(run: str, report: dict[str, Any]):
    """jacobian.png: the per-element P95 relative error as a 4 x 5 map, and the relative error
    of the propagated 1-sigma in x and y against momentum (model and straight line)."""
    from matplotlib.colors import LogNorm
    from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter

    plt = pyplot()
    tracks = report["_tracks"]
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.8), gridspec_kw={"width_ratios": [1, 1.1]})
    p95 = np.array(
        [
            [report["element_relative_error"][f"J_{o}_{i}"]["p95"] for i in JACOBIAN_INPUTS]
            for o in JACOBIAN_OUTPUTS
        ]
    )
    shown = np.clip(p95, 1e-6, None)
    image = axes[0].imshow(
        shown,
        cmap="viridis",
        norm=LogNorm(vmin=shown.min(), vmax=max(shown.max(), shown.min() * 10)),
    )
    for a in range(p95.shape[0]):
        for b in range(p95.shape[1]):
            dark = shown[a, b] < np.sqrt(shown.min() * shown.max())
            axes[0].text(b, a, f"{p95[a, b]:.2g}", ha="center", va="center", fontsize=8,
                         color="white" if dark else "black")  # fmt: skip
    axes[0].set_xticks(range(len(JACOBIAN_INPUTS)), [f"d/d {i}" for i in JACOBIAN_INPUTS])
    axes[0].set_yticks(range(len(JACOBIAN_OUTPUTS)), [f"{o}_end" for o in JACOBIAN_OUTPUTS])
    axes[0].set_title(
        "P95 over tracks of |J_model - J_RK| / (|J_RK| + floor)\n"
        "floor: 1 % of the propagated 1-sigma",
        fontsize=9,
    )
    fig.colorbar(image, ax=axes[0], fraction=0.04)
    p = tracks["momentum_gev"]
    edges = np.array(MOMENTUM_BINS_GEV)
    index = np.searchsorted(edges, p, side="right") - 1
    filled = [i for i in range(len(edges) - 1) if (index == i).any()]
    centres = [float(np.median(p[index == i])) for i in filled]
    ax = axes[1]
    for k, name, colour in ((0, "x", "tab:blue"), (1, "y", "tab:orange")):
        for key, style, label in (("model", "o-", "model"), ("line", "s:", "straight line")):
            values = tracks[key][:, k]
            median = [np.median(values[index == i]) for i in filled]
            p95_bin = [np.percentile(values[index == i], 95) for i in filled]
            ax.plot(centres, p95_bin, style, color=colour, label=f"sigma_{name}, {label}: P95")
            if key == "model":
                ax.plot(centres, median, "--", color=colour, alpha=0.6,
                        label=f"sigma_{name}, {label}: median")  # fmt: skip
    ax.set(xscale="log", yscale="log", xlabel="p [GeV]",
           ylabel="|sigma_model / sigma_RK - 1|")  # fmt: skip
    ax.xaxis.set_major_locator(FixedLocator([1, 2, 5, 10, 20, 50, 100, 200]))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_title(
        "propagated 1-sigma in momentum bins\nstart C = diag(0.1 mm, 0.1 mm, 1e-4, 1e-4, "
        "0.005 |qop|)^2",
        fontsize=9,
    )
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(f"{run}: transport Jacobian against the integrator's, test split", fontsize=11)
    return fig


def learning_curves_figure(
    run: str, history: list[dict[str, float]], loss: str | None = None, jacobian_weight: float = 0.0
):
    """learning_curves.png: training and validation loss (the run's ``loss``, see
    :func:`loss_label`), validation mean, P95 and P99 position error, per epoch."""
    plt = pyplot()
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    panels = (
        (axes[0], (("train_loss", "train"), ("val_loss", "validation")),
         loss_label(loss, jacobian_weight), "loss"),
        (axes[1], (("val_pos_mean_mm", "mean"), ("val_pos_p95_mm", "P95"),
                   ("val_pos_p99_mm", "P99")),
         "validation position error [mm]", "validation position error"),
    )  # fmt: skip
    for ax, curves, ylabel, title in panels:
        values = []
        for key, label in curves:
            if not all(key in h for h in history):  # a run's history may lack P99
                continue
            ys = [h[key] for h in history]
            ax.plot(epochs, ys, "o-", ms=3, label=label)
            values += ys
        ax.set(xlabel="epoch", ylabel=ylabel, yscale="log")
        ax.xaxis.get_major_locator().set_params(integer=True)
        log_ticks(ax, "y", values)
        grid(ax)
        ax.set_title(title, fontsize=10)
        ax.legend()
    fig.suptitle(f"{run}: learning curves, {len(history)} epochs", fontsize=11)
    return fig
