"""The experiment report's figures: validation P95 against the cost of each trial (weights,
multiply-adds, inference time beside the integrator's), against epoch for every trial, and the
best model's test error against momentum, |dz| and |x| and |y| at mid-leg."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from raytrack.evaluate.figures import against_variable
from raytrack.models.metrics import position_errors
from raytrack.models.mlp import straight_line
from raytrack.plotting import grid, log_ticks, pyplot, quantile_bins, save_png
from raytrack.report.best import BestModel
from raytrack.report.experiment import Experiment
from raytrack.search.leaderboard import pareto_front
from raytrack.search.timing import curve_front

#: The report's figures' resolution.
DPI = 100
#: float32 weights that fit the 64 KB of CUDA constant memory of LHCb's GPU trigger
TRIGGER_WEIGHTS = 16384
#: the order of the statuses in legends, and their colours
STATUS_COLOURS = {
    "finished": "tab:green",
    "early_stopped": "tab:cyan",
    "time_budget": "tab:blue",
    "stopped_by_asha": "tab:orange",
    "unfinished": "tab:olive",
    "interrupted": "tab:brown",
    "failed": "tab:red",
    "error": "tab:purple",
    "infeasible": "tab:gray",
}


def _title(ax, experiment: Experiment, what: str) -> None:
    ax.set_title(f"{experiment.path.name}: {what}\ndata: {experiment.dataset}", fontsize=10)


def _save(fig, path: Path) -> Path:
    return save_png(fig, path, DPI, "raytrack.report")


def _label(row: dict[str, Any]) -> str:
    """A point's label: the preset's name, or the trial id of an Optuna variant."""
    return row["trial_id"] if row["name"] in ("optuna", "?") else row["name"]


#: The figure of each cost
COST_FIGURES = {"weight_count": "p95_vs_weights.png", "macs_per_track": "p95_vs_macs.png",
                "inference_us_per_track": "p95_vs_time.png"}  # fmt: skip


def plot_p95_against_cost(
    experiment: Experiment, out: Path, cost: str, curve: dict[str, Any] | None = None
) -> Path:
    """p95_vs_weights.png, p95_vs_macs.png or p95_vs_time.png (see
    :func:`p95_against_cost_figure`)."""
    return _save(p95_against_cost_figure(experiment, cost, curve), out / COST_FIGURES[cost])


def p95_against_cost_figure(experiment: Experiment, cost: str, curve: dict[str, Any] | None = None):
    """Validation P95 against weights, multiply-adds or inference time per track: trials by
    status, the Pareto front, (for weights) the trigger's limit and (for time, given the
    ``curve`` of raytrack.search.timing) the integrator's fastest setting at each accuracy."""
    plt = pyplot()
    rows = [r for r in experiment.rows if r.get(cost)]
    fig, ax = plt.subplots(figsize=(8, 5))
    scored = [r for r in rows if r["pos_p95_mm"] is not None]
    top = max((r["pos_p95_mm"] for r in scored), default=1.0) * 1.8
    for status, colour in STATUS_COLOURS.items():
        have = [r for r in scored if r["status"] == status]
        if have:
            x, y = [r[cost] for r in have], [r["pos_p95_mm"] for r in have]
            ax.scatter(x, y, c=colour, s=36, label=status, zorder=3, edgecolors="k", linewidths=0.4)
        without = [r for r in rows if r["pos_p95_mm"] is None and r["status"] == status]
        if without:
            ax.scatter([r[cost] for r in without], [top] * len(without), c=colour, marker="x",
                       s=40, label=f"{status} (no P95: drawn at the top)", zorder=3)  # fmt: skip
    front = pareto_front(scored, cost)
    if front:
        ax.plot([r[cost] for r in front], [r["pos_p95_mm"] for r in front], "k--",
                drawstyle="steps-post", lw=1, label="Pareto front", zorder=2)  # fmt: skip
    if len(rows) <= 16:
        for r in scored:
            ax.annotate(_label(r), (r[cost], r["pos_p95_mm"]), fontsize=7,
                        xytext=(4, 3), textcoords="offset points")  # fmt: skip
    drawn_x, note = [r[cost] for r in rows], None
    if cost == "inference_us_per_track":
        ax.set_xlabel("inference time per track, ONNX Runtime, one thread, batch 4096 [us]")
        what = "validation P95 against inference time"
        if curve is not None:
            times, note = _draw_integrator(ax, curve, scored)
            drawn_x += times
    elif cost == "weight_count":
        ax.axvline(TRIGGER_WEIGHTS, color="tab:red", ls=":", lw=1.5,
                   label=f"{TRIGGER_WEIGHTS} weights: 64 KB, LHCb GPU trigger")  # fmt: skip
        ax.set_xlabel("weights [count]")
        kb = ax.secondary_xaxis("top", functions=(lambda w: w * 4 / 1024, lambda k: k * 256))
        kb.set_xlabel("float32 weights [KB]", fontsize=8)
        what = "validation P95 against weight count"
    else:
        ax.set_xlabel("multiply-adds per track [count]")
        what = "validation P95 against multiply-adds"
    ax.set(xscale="log", yscale="log", ylabel="validation P95 position error [mm]")
    drawn = [r["pos_p95_mm"] for r in scored] + ([top] if len(scored) < len(rows) else [])
    if cost == "inference_us_per_track" and curve is not None:
        drawn += [s["p95_mm"] for s in curve_front(curve)]
        log_ticks(ax, "x", drawn_x)
    log_ticks(ax, "y", drawn)
    grid(ax)
    ax.legend(fontsize=7, loc="best", title=note, title_fontsize=6)
    _title(ax, experiment, what)
    return fig


#: The label of the integrator's curve in the time figure's legend
INTEGRATOR_LABEL = "Dormand-Prince (propagate), one thread: fastest setting at each P95"


def _draw_integrator(
    ax, curve: dict[str, Any], scored: list[dict[str, Any]]
) -> tuple[list[float], str | None]:
    """The integrator's curve on the time figure: its settings that no other beats in both time
    and P95, as a staircase (a trial below and left of it beats every setting at its accuracy),
    each labelled; returns the times drawn and a note (the legend's title) on where and when it
    was measured and how many trials beat it."""
    front = curve_front(curve)
    if not front:
        return [], None
    us, p95 = [s["us_per_track"] for s in front], [s["p95_mm"] for s in front]
    ax.plot(us, p95, "D-", color="tab:red", ms=4, lw=1.2, drawstyle="steps-post", zorder=2,
            label=INTEGRATOR_LABEL)  # fmt: skip
    for s in front:
        cap = "no cap" if s["max_step_mm"] is None else f"<= {s['max_step_mm']:g} mm"
        ax.annotate(f"{s['tolerance_mm']:g} mm, {cap}", (s["us_per_track"], s["p95_mm"]),
                    fontsize=6, color="tab:red", xytext=(5, 2),
                    textcoords="offset points")  # fmt: skip
    beaten = sum(
        not any(
            s["us_per_track"] <= r["inference_us_per_track"] and s["p95_mm"] <= r["pos_p95_mm"]
            for s in front
        )
        for r in scored
    )
    note = (
        f"integrator: {curve['tracks']:,} validation tracks, batches of {curve['batch']},\n"
        f"measured on {curve['host']} at {curve['measured_at']}\n(load average "
        f"{curve['load_average'][0]:g} on {curve['cpus']} CPUs); trials: in their Ray workers\n"
        f"{beaten} of {len(scored)} trials left of or below it: no setting measured\nis as fast "
        "and as accurate (P95)"
    )
    return us, note


#: Trials with a colour of their own in the learning curves (the best, by the leaderboard)
CURVE_COLOURS = 10


def plot_p95_against_epoch(experiment: Experiment, out: Path) -> Path:
    """p95_vs_epoch.png (see :func:`p95_against_epoch_figure`)."""
    return _save(p95_against_epoch_figure(experiment), out / "p95_vs_epoch.png")


def p95_against_epoch_figure(experiment: Experiment):
    """Every trial's validation P95 per epoch. The ``CURVE_COLOURS`` best trials have a colour
    each, the others are grey; the legend names them, best first, with their status. A curve
    ends where its trial stopped: an x where ASHA stopped it; a star marks the epoch the trial
    exports (its leaderboard row's best_epoch)."""
    plt = pyplot()
    rows = {r["trial_id"]: r for r in experiment.rows}
    trials = sorted((t for t in experiment.trials if t.curve),
                    key=lambda t: _rank_key(rows.get(t.trial_id)))  # fmt: skip
    colours = plt.get_cmap("tab10").colors[:CURVE_COLOURS]
    fig, ax = plt.subplots(figsize=(9, 5))
    drawn: list[float] = []
    for i, trial in enumerate(trials):
        row = rows.get(trial.trial_id)
        state = row["status"] if row else "unfinished"
        epochs, p95 = zip(*trial.curve, strict=True)
        drawn += p95
        own = i < len(colours)
        if own:
            colour, label = colours[i], f"{_label(row) if row else trial.trial_id} ({state})"
        else:
            others = len(trials) - len(colours)
            colour, label = "0.6", f"{others} other trials" if i == len(colours) else None
        ax.plot(epochs, p95, "-", color=colour, lw=1.6 if own else 0.8, label=label,
                zorder=3 if own else 2)  # fmt: skip
        ax.plot(epochs[-1:], p95[-1:], "x" if state == "stopped_by_asha" else "o", color=colour,
                ms=6 if own else 4, zorder=3 if own else 2)  # fmt: skip
        if row and row.get("best_epoch") in epochs:
            at = epochs.index(row["best_epoch"])
            ax.plot(epochs[at], p95[at], "*", color=colour, ms=10 if own else 6, zorder=4)
    ax.set(xlabel="epoch [passes over the training split]", yscale="log",
           ylabel="validation P95 position error [mm]")  # fmt: skip
    log_ticks(ax, "y", drawn)
    ax.xaxis.get_major_locator().set_params(integer=True)
    grid(ax)
    if trials:
        ax.legend(fontsize=7, title="trial (status), best first\nx: stopped by ASHA\n"
                  "*: the exported epoch",
                  title_fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # fmt: skip
    _title(ax, experiment, "validation P95 against epoch, every trial")
    return fig


def _rank_key(row: dict[str, Any] | None) -> tuple[bool, float]:
    """Leaderboard order; trials without a rank last."""
    rank = row.get("rank") if row else None
    return rank is None, rank or 0


def plot_best_against(experiment: Experiment, best: BestModel, out: Path, what: str) -> Path:
    """best_error_vs_momentum.png, best_error_vs_dz.png, best_error_vs_x_mid.png or
    best_error_vs_y_mid.png (see :func:`best_against_figure`)."""
    return _save(best_against_figure(experiment, best, what), out / f"best_error_vs_{what}.png")


def best_against_figure(experiment: Experiment, best: BestModel, what: str):
    """The best model's position error (mean, P95, P99, worst) against momentum, |dz|, or |x|
    or |y| at mid-leg (``what``: momentum, dz, x_mid, y_mid), the straight line's (mean, P95)
    beside it."""
    plt = pyplot()
    x, label, _ = against_variable(what, best.inputs, best.truth)
    label = {"momentum": "momentum p [GeV]", "dz": "leg length |dz| [mm]"}.get(what, label)
    errors = {
        "model": position_errors(best.predicted, best.truth),
        "straight line": position_errors(straight_line(best.inputs), best.truth),
    }
    centres, stats = quantile_bins(x, errors)
    fig, ax = plt.subplots(figsize=(8, 5))
    for key, colour in (("model", "tab:blue"), ("straight line", "tab:gray")):
        mean, p95, p99, worst = stats[key]
        ax.plot(centres, mean, "o-", color=colour, ms=4, label=f"{key}: mean")
        ax.plot(centres, p95, "s--", color=colour, ms=4, label=f"{key}: P95")
        if key == "model":
            ax.plot(centres, p99, "^-.", color=colour, ms=4, label=f"{key}: P99")
            ax.plot(centres, worst, "v:", color=colour, ms=4, label=f"{key}: worst")
    ax.set(xlabel=label, ylabel="test position error [mm]", yscale="log")
    drawn = [*np.concatenate(stats["model"]), *np.concatenate(stats["straight line"][:2])]
    log_ticks(ax, "y", drawn)
    if what in ("momentum", "dz") and (what == "momentum" or np.ptp(x) > 0):
        ax.set_xscale("log")
        log_ticks(ax, "x", centres)
    grid(ax)
    ax.legend(fontsize=7)
    row = best.row
    against = {"momentum": "momentum", "dz": "|dz|", "x_mid": "|x| at mid-leg",
               "y_mid": "|y| at mid-leg"}[what]  # fmt: skip
    _title(ax, experiment, f"best model {row['name']} ({row['trial_id']}), error against "
                           f"{against}, test split")  # fmt: skip
    return fig
