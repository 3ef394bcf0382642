"""Reading an experiment directory as Ray Tune and raytrack left it: the options, each trial's
results and parameters, Tune's state of each trial, and the leaderboard (the written one, or one
built from the trials' results while the search runs or after it was interrupted)."""

from __future__ import annotations

import contextlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raytrack.evaluate.runs import find_run
from raytrack.run.directory import run_spec
from raytrack.search.layout import EXPERIMENT_FILE, STUDY_FILE, resolved_path
from raytrack.search.leaderboard import make_row, rank, trial_status
from raytrack.search.space import load_search_space
from raytrack.search.timing import equal_accuracy
from raytrack.search.tracking import resolve_uri, ui_command
from raytrack.search.trial import TrialSettings, resolve_configs

#: What "unfinished" means: the files cannot tell a running trial from an interrupted one.
UNFINISHED = "unfinished (running, or the search was interrupted)"
#: A Tune trial directory's name, run_trial_<id>_<number>_<params>: the trial id.
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
    """An experiment directory as :func:`read_experiment` finds it."""

    path: Path
    options: dict[str, Any]
    dataset: str
    trials: list[Trial]
    rows: list[dict[str, Any]]  # ranked leaderboard rows
    complete: bool  # the search ended and wrote its leaderboard


def read_experiment(path: str | Path) -> Experiment:
    """The experiment directory's options, trials and leaderboard (the written one when it
    covers every trial, else one built from the trials' results)."""
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
    space = None
    if options["search"] != "presets":
        try:
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
                spec = run_spec(find_run(trial.directory))
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


def tool_commands(experiment: Experiment) -> list[str]:
    """The commands that open the experiment in TensorBoard, the Optuna dashboard (when it has
    a study file) and the MLflow UI (when the search tracked it in MLflow)."""
    commands = [f"tensorboard --logdir {experiment.path}"]
    if (experiment.path / STUDY_FILE).is_file():
        commands.append(f"optuna-dashboard {experiment.path.resolve() / STUDY_FILE}")
    if experiment.options.get("mlflow"):
        commands.append(ui_command(resolve_uri(experiment.options["mlflow"], experiment.path)))
    return commands


def progress(experiment: Experiment, interrupted: bool = False) -> str:
    """Where the search stands: complete, interrupted (``interrupted``, or trials marked so) or
    in progress, with how many trials ended."""
    rows = experiment.rows
    ended = sum(r["status"] not in ("unfinished", "interrupted") for r in rows)
    if interrupted or any(r["status"] == "interrupted" for r in rows):
        return (
            f"interrupted: {ended} of {len(rows)} trials ended; python -m raytrack.tune "
            "--resume continues it"
        )
    if experiment.complete:
        return "complete"
    return f"in progress or interrupted: {ended} of {len(rows)} trials ended; status {UNFINISHED}"


def equal_accuracy_pairs(
    rows: list[dict[str, Any]], curve: dict[str, Any]
) -> list[tuple[dict[str, Any], dict[str, Any], bool]]:
    """(row, setting, qualifies) for each timed trial with a mean and P95: the fastest
    integrator setting of ``curve`` at least as accurate in both (bench deploy's rule), or,
    with ``qualifies`` False, the most accurate one."""
    pairs = []
    for row in rows:
        if row.get("inference_us_per_track") is None:
            continue
        if row["pos_p95_mm"] is None or row["pos_mean_mm"] is None:
            continue
        setting, qualifies = equal_accuracy(curve, row["pos_mean_mm"], row["pos_p95_mm"])
        if setting is not None:
            pairs.append((row, setting, qualifies))
    return pairs
