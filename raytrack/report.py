"""python -m raytrack.report runs/NAME: the experiment report, runs/NAME/report/index.html.

One self-contained page (the figures are embedded; the same PNG files lie beside it):

- validation P95 position error against weight count and against multiply-adds per track, every
  trial a point coloured by its status, the Pareto front drawn, the 16384-weight (64 KB) limit
  of LHCb's GPU trigger marked; with ``--objective pareto-time``, also against each trial's
  inference time per track, beside the integrator's fastest setting at each accuracy (measured
  once, kept in ``integrator_curve.json``: raytrack.search.timing);
- validation P95 against epoch for every trial (where ASHA stopped a trial, its curve ends);
- the leaderboard, with units;
- the best model on the test split: mean, P95, P99 and worst position error, the worst track
  by name, the errors in bins of momentum, |dz| and |x| and |y| at mid-leg, and figures of the
  error against momentum, |dz|, |x| and |y| at mid-leg, with the straight line beside it.

``python -m raytrack.tune`` writes it at the end of every search; this command writes it again,
also for a search still running or one that was interrupted: it reads only the experiment
directory (the trials' ``result.json``, the leaderboard when the search has ended) and, for the
best model, the latest checkpoint of the best trial when the search left no ``best/``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import html
import json
import math
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from raytrack.cli import HelpFormatter
from raytrack.data import DatasetError
from raytrack.files import replacing

REPORT_DIR = "report"
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
#: What "unfinished" means: the files cannot tell a running trial from an interrupted one.
UNFINISHED = "unfinished (running, or the search was interrupted)"
_TRIAL_ID = re.compile(r"_([0-9a-f]{5,}(?:_\d{5})?)_\d+_")


@dataclass
class Trial:
    """One trial as its directory shows it."""

    trial_id: str
    directory: Path
    params: dict[str, Any]
    results: list[dict[str, Any]]
    errored: bool
    curve: list[tuple[int, float]] = field(default_factory=list)  # (epoch, validation P95 mm)


@dataclass
class Experiment:
    path: Path
    options: dict[str, Any]
    dataset: str
    trials: list[Trial]
    rows: list[dict[str, Any]]  # ranked leaderboard rows
    complete: bool  # the search ended and wrote its leaderboard


def read_experiment(path: str | Path) -> Experiment:
    """The experiment directory's options, trials and leaderboard (the written one when it
    covers every trial, else one built from the trials' results)."""
    from raytrack.search.layout import EXPERIMENT_FILE, resolved_path

    path = Path(path)
    options_file = path / EXPERIMENT_FILE
    if not options_file.is_file():
        raise FileNotFoundError(
            f"{path}: not a raytrack experiment (no {EXPERIMENT_FILE}); give runs/NAME, the "
            "directory python -m raytrack.tune wrote"
        )
    options = json.loads(options_file.read_text())
    options["data_dir"] = resolved_path(path, options["data_dir"])  # may be relative to it
    trials = [_read_trial(d) for d in sorted(path.iterdir()) if _is_trial_dir(d)]
    rows, complete = None, False
    board = path / "leaderboard.json"
    if board.is_file():
        rows = json.loads(board.read_text())
        complete = {r["trial_id"] for r in rows} >= {t.trial_id for t in trials}
    if not complete:
        rows = _rows_from_trials(trials, options, _tune_states(path))
    return Experiment(path, options, _dataset_label(options["data_dir"]), trials, rows, complete)


def _is_trial_dir(directory: Path) -> bool:
    """A Tune trial directory: the driver writes params.json and result.json, the trial its
    checkpoints (a trial killed early may have a checkpoint and nothing else)."""
    return directory.is_dir() and (
        (directory / "params.json").is_file()
        or (directory / "result.json").is_file()
        or any(directory.glob("checkpoint_*"))
    )


def _read_trial(directory: Path) -> Trial:
    results = []
    result_file = directory / "result.json"
    if result_file.is_file():
        for line in result_file.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):  # a line being written now
                results.append(json.loads(line))
    trial_id = next((r["trial_id"] for r in results if "trial_id" in r), None)
    if trial_id is None:
        match = _TRIAL_ID.search(directory.name)
        trial_id = match.group(1) if match else directory.name
    try:
        params = json.loads((directory / "params.json").read_text())
    except (OSError, json.JSONDecodeError):
        params = {}
    curve: dict[int, float] = {}
    for result in results:  # a resumed trial repeats epochs: the latest value counts
        value = result.get("val_pos_p95_mm")
        if "epoch" in result and isinstance(value, int | float) and math.isfinite(value):
            curve[int(result["epoch"])] = float(value)
    errored = (directory / "error.txt").is_file() or (directory / "error.pkl").is_file()
    return Trial(trial_id, directory, params, results, errored, sorted(curve.items()))


def _tune_states(path: Path) -> dict[str, str]:
    """Tune's state of each trial (TERMINATED, RUNNING, ERROR, ...) in its latest snapshot of
    the experiment, which tells a trial that ASHA stopped from one still running; {} when the
    snapshot cannot be read (Tune's own format, not raytrack's)."""
    snapshots = sorted(path.glob("experiment_state-*.json"))
    if not snapshots:
        return {}
    try:
        states = {}
        for trial, _runtime in json.loads(snapshots[-1].read_text())["trial_data"]:
            trial = json.loads(trial) if isinstance(trial, str) else trial
            states[trial["trial_id"]] = trial["status"]
        return states
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _rows_from_trials(
    trials: list[Trial], options: dict[str, Any], states: dict[str, str]
) -> list[dict[str, Any]]:
    from raytrack.search.leaderboard import make_row, rank, trial_status

    described = _describer(options)
    rows = []
    for trial in trials:
        last = trial.results[-1] if trial.results else {}
        errored = trial.errored or states.get(trial.trial_id) == "ERROR"
        ended = last.get("train_done") or last.get("infeasible") or last.get("failed")
        ended = ended or last.get("epoch", 0) >= options["max_epochs"]
        ended = ended or (states.get(trial.trial_id) == "TERMINATED" and last)
        if errored or ended:
            status = trial_status(last, errored, options["max_epochs"])
        else:  # a trial directory exists once the trial has started
            status = "unfinished"
        name, model = described(trial)
        model = {**model, **{k: last[k] for k in ("weight_count", "macs_per_track") if k in last}}
        config = {"model": model, "params": trial.params}
        rows.append(make_row(trial.trial_id, last.get("name", name), status, last, config))
    return rank(rows)


def _describer(options: dict[str, Any]):
    """config -> (name, model dict) as the search resolves it; ("?", {}) when it cannot."""
    from raytrack.evaluate import find_run
    from raytrack.run.directory import RUN_FILE, RunSpec
    from raytrack.search.trial import TrialSettings, resolve_configs

    space = None
    if options["search"] != "presets":
        try:
            from raytrack.search.space import load_search_space

            space = load_search_space(options["space"], max_weights=options.get("max_weights"))
        except Exception:  # the space file moved: results still name the trials
            space = None
    settings = TrialSettings(
        max_epochs=options["max_epochs"], time_budget=options.get("time_budget"), seed=0,
        device="cpu", cpus=1, space=space, max_weights=options.get("max_weights"),
    )  # fmt: skip

    def describe(trial: Trial) -> tuple[str, dict[str, Any]]:
        try:
            name, model, _ = resolve_configs(trial.params, settings)
        except Exception:  # no params.json yet: the run.json of a checkpoint names the model
            try:
                spec = RunSpec.from_dict(
                    json.loads((find_run(trial.directory) / RUN_FILE).read_text())
                )
                name, model = spec.name, spec.model
            except Exception:
                return "?", {"weight_count": None, "macs_per_track": None}
        return name, {**model.to_dict(), "weight_count": model.weight_count,
                      "macs_per_track": model.macs_per_track}  # fmt: skip

    return describe


def _dataset_label(data_dir: str) -> str:
    """The data set as titles name it: its directory, phase space and size."""
    name = Path(data_dir).name
    try:
        manifest = json.loads((Path(data_dir) / "manifest.json").read_text())
        phase_space = manifest["phase_space"]["name"]
        samples = manifest["identity"]["samples"]
    except (OSError, ValueError, KeyError, TypeError):
        return name
    return f"{name} ({phase_space} phase space, {samples:,} tracks)"


# -- the best model ----------------------------------------------------------------------------


@dataclass
class BestModel:
    row: dict[str, Any]
    source: str  # what was evaluated
    inputs: np.ndarray
    truth: np.ndarray
    predicted: np.ndarray


def best_model(
    experiment: Experiment, tracks: dict[str, np.ndarray] | None = None
) -> BestModel | str:
    """The best trial's model on the test split, or why there is none. ``tracks`` (inputs,
    truth, predicted) when the caller has just evaluated best/."""
    from raytrack.evaluate import find_run
    from raytrack.models.training import load_checkpoint, model_from_checkpoint
    from raytrack.run.directory import RUN_FILE, RunSpec, checkpoint_path, predict

    row = next((r for r in experiment.rows if r["pos_p95_mm"] is not None), None)
    if row is None:
        return "no trial has a validation P95 yet"
    best = experiment.path / "best"
    exported = best / "trial.json"
    if exported.is_file() and json.loads(exported.read_text())["trial_id"] == row["trial_id"]:
        run, source = best, f"{best} (the exported weights)"
    else:
        directory = next(t.directory for t in experiment.trials if t.trial_id == row["trial_id"])
        try:
            run = find_run(directory)
        except FileNotFoundError:
            return f"the best trial {row['trial_id']} has no checkpoint yet"
        source = f"{run} (its latest checkpoint, best epoch's weights)"
    if tracks is not None:
        return BestModel(row, source, tracks["inputs"], tracks["truth"], tracks["predicted"])
    from raytrack.data import load

    spec = RunSpec.from_dict(json.loads((run / RUN_FILE).read_text()))
    try:
        test = load(spec.data_dir, dtype=np.float64, splits=("test",)).test
    except (DatasetError, OSError) as err:
        return f"its data set cannot be read: {err}"
    model = model_from_checkpoint(load_checkpoint(checkpoint_path(run)))
    inputs, truth = test.inputs(), test.targets()
    return BestModel(row, source, inputs, truth, predict(model, inputs))


# -- figures -----------------------------------------------------------------------------------


def _pyplot():
    from raytrack.evaluate import pyplot  # lazily: evaluate imports torch

    return pyplot()


def _title(ax, experiment: Experiment, what: str) -> None:
    ax.set_title(f"{experiment.path.name}: {what}\ndata: {experiment.dataset}", fontsize=10)


def _save(fig, path: Path) -> Path:
    """The PNG, with its title and axis labels also in the file's text chunks (Title,
    Description), where a test or a catalogue can read them."""
    import matplotlib.pyplot as plt

    ax = fig.axes[0]
    metadata = {
        "Title": ax.get_title(),
        "Description": f"x axis: {ax.get_xlabel()}; y axis: {ax.get_ylabel()}",
        "Software": "raytrack.report",
    }
    fig.tight_layout()
    with replacing(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png", metadata=metadata)
    plt.close(fig)
    return path


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
    from raytrack.evaluate import grid, log_ticks
    from raytrack.search.leaderboard import pareto_front

    plt = _pyplot()
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
        from raytrack.search.timing import curve_front

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
    from raytrack.search.timing import curve_front

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
    ends where its trial stopped: an x where ASHA stopped it."""
    from raytrack.evaluate import grid, log_ticks

    plt = _pyplot()
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
    ax.set(xlabel="epoch [passes over the training split]", yscale="log",
           ylabel="validation P95 position error [mm]")  # fmt: skip
    log_ticks(ax, "y", drawn)
    ax.xaxis.get_major_locator().set_params(integer=True)
    grid(ax)
    if trials:
        ax.legend(fontsize=7, title="trial (status), best first\nx: stopped by ASHA",
                  title_fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # fmt: skip
    _title(ax, experiment, "validation P95 against epoch, every trial")
    return fig


def _rank_key(row: dict[str, Any] | None) -> tuple[bool, float]:
    """Leaderboard order; trials without a rank last."""
    rank = row.get("rank") if row else None
    return rank is None, rank or 0


def _binned(x: np.ndarray, errors: dict[str, np.ndarray], bins: int = 20):
    """Centres and the mean, P95, P99 and worst of each error array in quantile bins of
    ``x``."""
    if np.ptp(x) == 0:  # a fixed leg: one bin
        index, filled = np.zeros(len(x), dtype=int), [0]
    else:
        edges = np.quantile(x, np.linspace(0, 1, bins + 1))
        index = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, bins - 1)
        filled = [i for i in range(bins) if (index == i).any()]
    centres = np.array([np.median(x[index == i]) for i in filled])
    stats = {
        key: (
            np.array([e[index == i].mean() for i in filled]),
            np.array([np.percentile(e[index == i], 95) for i in filled]),
            np.array([np.percentile(e[index == i], 99) for i in filled]),
            np.array([e[index == i].max() for i in filled]),
        )
        for key, e in errors.items()
    }
    return centres, stats


def plot_best_against(experiment: Experiment, best: BestModel, out: Path, what: str) -> Path:
    """best_error_vs_momentum.png, best_error_vs_dz.png, best_error_vs_x_mid.png or
    best_error_vs_y_mid.png (see :func:`best_against_figure`)."""
    return _save(best_against_figure(experiment, best, what), out / f"best_error_vs_{what}.png")


def best_against_figure(experiment: Experiment, best: BestModel, what: str):
    """The best model's position error (mean, P95, P99, worst) against momentum, |dz|, or |x|
    or |y| at mid-leg (``what``: momentum, dz, x_mid, y_mid), the straight line's (mean, P95)
    beside it."""
    from raytrack.evaluate import against_variable, grid, log_ticks
    from raytrack.models.metrics import position_errors
    from raytrack.models.mlp import straight_line

    plt = _pyplot()
    x, label, _ = against_variable(what, best.inputs, best.truth)
    label = {"momentum": "momentum p [GeV]", "dz": "leg length |dz| [mm]"}.get(what, label)
    errors = {
        "model": position_errors(best.predicted, best.truth),
        "straight line": position_errors(straight_line(best.inputs), best.truth),
    }
    centres, stats = _binned(x, errors)
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


# -- the page ----------------------------------------------------------------------------------

#: Leaderboard columns of the page: (header with unit, row key, format)
TABLE = (
    ("#", "rank", "{}"),
    ("name", "name", "{}"),
    ("trial", "trial_id", "{}"),
    ("status", "status", "{}"),
    ("hidden layers", None, None),
    ("weights [count]", "weight_count", "{:,}"),
    ("multiply-adds per track [count]", "macs_per_track", "{:,}"),
    ("inference time per track [us]", "inference_us_per_track", "{:.3g}"),
    ("epochs", "epochs", "{}"),
    ("val mean [mm]", "pos_mean_mm", "{:.4f}"),
    ("val P95 [mm]", "pos_p95_mm", "{:.4f}"),
    ("val P99 [mm]", "pos_p99_mm", "{:.4f}"),
    ("val worst [mm]", "pos_max_mm", "{:.4f}"),
    ("val slope mean [1]", "slope_mean", "{:.2e}"),
    ("val slope P95 [1]", "slope_p95", "{:.2e}"),
    ("training time [s]", "seconds", "{:.0f}"),
)

STYLE = """
body { font-family: sans-serif; margin: 1.5em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.85em; color: #555; }
table { border-collapse: collapse; font-size: 0.8em; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
th { background: #f2f2f2; } td.text { text-align: left; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; }
.note { color: #a33; }
"""


def _figure(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    alt = html.escape(caption, quote=True)
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{alt}" '
        f'data-file="{html.escape(path.name)}"><figcaption>{html.escape(caption)} '
        f"(<code>{html.escape(path.name)}</code>)</figcaption></figure>"
    )


def _table(rows: list[dict[str, Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h, _, _ in TABLE)
    body = []
    for row in rows:
        cells = []
        for header, key, fmt in TABLE:
            if key is None:
                model = row.get("config", {}).get("model", {})
                text = "-".join(str(w) for w in model.get("hidden", [])) or "-"
                if model.get("activation"):
                    text += f" {model['activation']}"
            else:
                value = row.get(key)
                text = "-" if value is None else fmt.format(value)
            numeric = key in {k for _, k, f in TABLE if f and f != "{}"} or header == "#"
            cls = "" if numeric else ' class="text"'
            cells.append(f"<td{cls}>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _best_summary(best: BestModel) -> str:
    from raytrack.evaluate import binned_report, worst_track_lines

    report = binned_report(best.inputs, best.truth, best.predicted, None)
    lines = []
    for label, key in (("model", "model"), ("straight line", "straight_line")):
        r = report[key]
        lines.append(
            f'<tr><td class="text">{label}</td><td>{r["pos_mean_mm"]:.4f}</td>'
            f"<td>{r['pos_p95_mm']:.4f}</td><td>{r['pos_p99_mm']:.4f}</td>"
            f"<td>{r['pos_max_mm']:.4f}</td></tr>"
        )
    worst = "<br>".join(html.escape(line) for line in worst_track_lines(report["worst_tracks"][0]))
    return (
        f"<p>{html.escape(best.row['name'])} ({html.escape(best.row['trial_id'])}), evaluated "
        f"from {html.escape(best.source)} on the {len(best.truth):,} tracks of the test split "
        "(never seen in training or selection).</p><table><thead><tr><th></th><th>mean [mm]</th>"
        "<th>P95 [mm]</th><th>P99 [mm]</th><th>worst [mm]</th></tr></thead><tbody>"
        f"{''.join(lines)}</tbody></table>"
        f"<p>{worst}</p>" + _bins_table(report)
    )


def _bins_table(report: dict[str, Any]) -> str:
    """The test split's position errors in the bins of :func:`raytrack.evaluate.bin_rows`."""
    from raytrack.evaluate import bin_rows

    keys = ("pos_mean_mm", "pos_p95_mm", "pos_p99_mm", "pos_max_mm",
            "straight_line_pos_mean_mm", "straight_line_pos_p95_mm")  # fmt: skip
    body = []
    for label, row in bin_rows(report):
        cells = "".join(f"<td>{row[k]:.4f}</td>" for k in keys)
        body.append(f'<tr><td class="text">{html.escape(label)}</td><td>{row["tracks"]:,}</td>'
                    f"{cells}</tr>")  # fmt: skip
    head = "".join(f"<th>{h}</th>" for h in (
        "bin (|x|, |y|: at mid-leg)", "tracks", "mean [mm]", "P95 [mm]", "P99 [mm]",
        "worst [mm]", "straight line mean [mm]", "straight line P95 [mm]"))  # fmt: skip
    return (
        "<p>Test position error in bins of momentum, leg length and where the track is across "
        "the aperture (|x| and |y| at the middle of the leg, from its start and true end "
        "states):</p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


def _commands(experiment: Experiment) -> str:
    from raytrack.search.layout import STUDY_FILE
    from raytrack.search.tracking import resolve_uri, ui_command

    commands = [f"tensorboard --logdir {experiment.path}"]
    if (experiment.path / STUDY_FILE).is_file():
        commands.append(f"optuna-dashboard {experiment.path.resolve() / STUDY_FILE}")
    if experiment.options.get("mlflow"):
        commands.append(ui_command(resolve_uri(experiment.options["mlflow"], experiment.path)))
    return "<pre>" + html.escape("\n".join(commands)) + "</pre>"


def _time_figure(experiment: Experiment, out: Path, measure: bool, log) -> str:
    """The figure against inference time, with the integrator's curve: read from the
    experiment directory, else measured now (once; not while a search is being interrupted)."""
    from raytrack.search.timing import CURVE_FILE, integrator_curve

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
    plotted = plot_p95_against_cost(experiment, out, "inference_us_per_track", curve)
    figure = _figure(plotted, caption)
    return figure if curve is None else figure + _equal_accuracy_table(experiment.rows, curve)


#: The equal-accuracy table's columns (header, whether the cell is text)
EQUAL_ACCURACY = (
    ("#", False), ("name", True), ("trial", True), ("val mean [mm]", False),
    ("val P95 [mm]", False), ("inference [us/track]", False),
    ("integrator at least as accurate (mean and P95)", True), ("its mean [mm]", False),
    ("its P95 [mm]", False), ("its time [us/track]", False),
    ("x RK (its time / the trial's)", False),
)  # fmt: skip
TEXT_CELL = ' class="text"'


def _equal_accuracy_table(rows: list[dict[str, Any]], curve: dict[str, Any]) -> str:
    """Each timed trial beside the fastest integrator setting at least as accurate in mean and
    P95 (bench deploy's rule), and how many times faster than it the trial is."""
    from raytrack.search.timing import equal_accuracy

    body = []
    for row in rows:
        us = row.get("inference_us_per_track")
        if us is None or row["pos_p95_mm"] is None or row["pos_mean_mm"] is None:
            continue
        setting, qualifies = equal_accuracy(curve, row["pos_mean_mm"], row["pos_p95_mm"])
        if setting is None:
            continue
        label = setting["label"] if qualifies else f"none as accurate; the most: {setting['label']}"
        cells = [str(row["rank"]), row["name"], row["trial_id"], f"{row['pos_mean_mm']:.4g}",
                 f"{row['pos_p95_mm']:.4g}", f"{us:.3g}", label, f"{setting['mean_mm']:.3g}",
                 f"{setting['p95_mm']:.3g}", f"{setting['us_per_track']:.3g}",
                 f"{setting['us_per_track'] / us:.3g}"]  # fmt: skip
        tds = [
            f"<td{TEXT_CELL if text else ''}>{html.escape(cell)}</td>"
            for cell, (_, text) in zip(cells, EQUAL_ACCURACY, strict=True)
        ]
        body.append("<tr>" + "".join(tds) + "</tr>")
    if not body:
        return ""
    head = "".join(f"<th>{html.escape(h)}</th>" for h, _ in EQUAL_ACCURACY)
    return (
        f'<table class="equal-accuracy"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}'
        "</tbody></table><p>The trials' errors are on the validation split, the integrator's on "
        "its sample of it (against an integration 1000 times tighter); x RK above 1: the trial "
        "is faster than the integrator at its accuracy.</p>"
    )


def write_experiment_report(
    experiment_dir: str | Path,
    best_tracks: dict[str, np.ndarray] | None = None,
    log=print,
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
    options = experiment.options
    ended = sum(r["status"] not in ("unfinished", "interrupted") for r in experiment.rows)
    if interrupted or any(r["status"] == "interrupted" for r in experiment.rows):
        state = (
            f"interrupted: {ended} of {len(experiment.rows)} trials ended; python -m "
            "raytrack.tune --resume continues it"
        )
    elif experiment.complete:
        state = "complete"
    else:
        state = (
            f"in progress or interrupted: {ended} of {len(experiment.rows)} trials ended; "
            f"status {UNFINISHED}"
        )
    parts = [
        f"<h1>raytrack experiment {html.escape(experiment.path.name)}</h1>",
        f"<p>data: {html.escape(experiment.dataset)}<br>search: {html.escape(options['search'])}"
        f", objective {html.escape(options['objective'])}, at most {options['max_epochs']} "
        f"epochs a trial; {len(experiment.rows)} trials ({html.escape(state)})<br>"
        f"written {time.strftime('%Y-%m-%d %H:%M:%S')} from {html.escape(str(experiment.path))}"
        "</p>",
        "<h2>Accuracy against cost</h2>",
    ]
    if experiment.rows:
        weights = (
            "Validation P95 position error of each trial's exported weights against its weight "
            "count; the dotted line: 16384 float32 weights, the 64 KB of constant memory of "
            "LHCb's GPU trigger (its header's field tables take part of it: "
            "docs/trigger_header.md)"
        )
        for cost, caption in (
            ("weight_count", weights),
            ("macs_per_track", "The same against multiply-adds per track"),
        ):
            parts.append(_figure(plot_p95_against_cost(experiment, out, cost), caption))
        if any("inference_us_per_track" in r for r in experiment.rows):  # --objective pareto-time
            parts.append(_time_figure(experiment, out, measure=not interrupted, log=log))
        parts.append("<h2>Learning curves</h2>")
        caption = "Validation P95 position error of every epoch, every trial"
        parts.append(_figure(plot_p95_against_epoch(experiment, out), caption))
    else:
        parts.append('<p class="note">No trial has started yet.</p>')
    parts += ["<h2>Leaderboard</h2>", _table(experiment.rows)]
    parts.append("<h2>Best model</h2>")
    best = best_model(experiment, best_tracks)
    if isinstance(best, str):
        parts.append(f'<p class="note">No best model to show: {html.escape(best)}.</p>')
    else:
        parts.append(_best_summary(best))
        for what, caption in (
            ("momentum", "Position error against momentum, model and straight line"),
            ("dz", "Position error against the leg length |dz|, model and straight line"),
            ("x_mid", "Position error against |x| at mid-leg, model and straight line"),
            ("y_mid", "Position error against |y| at mid-leg, model and straight line"),
        ):
            parts.append(_figure(plot_best_against(experiment, best, out, what), caption))
    parts += ["<h2>Tools</h2>", _commands(experiment)]
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>raytrack {html.escape(experiment.path.name)}</title>"
        f"<style>{STYLE}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )
    index = out / "index.html"
    with replacing(index) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m raytrack.report", description=__doc__, formatter_class=HelpFormatter
    )
    parser.add_argument("experiment", help="an experiment directory of python -m raytrack.tune")
    args = parser.parse_args(argv)
    try:
        index = write_experiment_report(args.experiment)
    except (FileNotFoundError, DatasetError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
