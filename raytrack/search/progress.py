"""The live table of a running search: one compact row per trial, in place of Tune's output.

A Ray Tune callback: after each step of Tune's loop it renders the trials (name, status, epoch,
the validation mean and P95 position error of each trial's best epoch, weights). On a terminal
the table is redrawn in place; in a log file (a batch job, a pipe) it is printed again only when
it changed, at most every ``LOG_INTERVAL_S``, so the log stays short.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

from ray import tune

from raytrack.search.leaderboard import tune_trial_status
from raytrack.search.trial import OBJECTIVE, TrialSettings, resolve_configs

#: Printed once above the table: what its error columns are.
LEGEND = (
    "val mean/P95 mm: validation position errors of each trial's best epoch (the weights it "
    "would export); the search minimises val P95"
)
#: Seconds between two tables in a log file (a terminal redraws at most every second).
LOG_INTERVAL_S = 30.0
TERMINAL_INTERVAL_S = 1.0
#: Tune's trial states -> the words of the table (an ended trial gets the leaderboard's status)
_LIVE = {"PENDING": "pending", "RUNNING": "running", "PAUSED": "paused", "ERROR": "error"}


def trial_row(trial: Any, settings: TrialSettings, described: dict[str, tuple[str, int]]) -> dict:
    """The table's row of one Tune trial; ``described`` caches (name, weights) per trial."""
    result = trial.last_result or {}
    name, weights = _describe(trial, settings, described)
    if trial.status == "TERMINATED":
        status = tune_trial_status(result, False, settings.max_epochs)
    else:
        status = _LIVE.get(trial.status, trial.status.lower())
    return {
        "trial": trial.trial_id,
        "name": result.get("name", name),
        "status": status,
        "epoch": int(result["epoch"]) if "epoch" in result else None,
        "mean": _finite(result.get("best_val_pos_mean_mm")),
        "p95": _finite(result.get(OBJECTIVE)),
        "weights": result.get("weight_count", weights),
    }


def _describe(
    trial: Any, settings: TrialSettings, described: dict[str, tuple[str, int]]
) -> tuple[str, int | None]:
    if trial.trial_id not in described:
        try:  # known before the first epoch: a preset name, or the searcher's sampled config
            name, model, _ = resolve_configs(trial.config, settings)
        except Exception:  # not sampled yet: the first result names it
            return "?", None
        described[trial.trial_id] = (name, model.weight_count)
    return described[trial.trial_id]


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def format_table(rows: Sequence[dict], max_epochs: int, seconds: float) -> str:
    """The rows under one header, and a line that counts them and names the best so far."""

    def mm(value: float | None) -> str:
        return f"{value:11.4f}" if value is not None else f"{'-':>11}"

    lines = [
        f"{'trial':<12} {'name':<9} {'status':<15} {'epoch':>7} {'val mean mm':>11} "
        f"{'val P95 mm':>11} {'weights':>9}"
    ]
    for r in rows:
        epoch = f"{r['epoch']}/{max_epochs}" if r["epoch"] is not None else "-"
        weights = f"{r['weights']:>9}" if r["weights"] is not None else f"{'-':>9}"
        lines.append(
            f"{r['trial']:<12} {r['name']:<9} {r['status']:<15} {epoch:>7} {mm(r['mean'])} "
            f"{mm(r['p95'])} {weights}"
        )
    lines.append(_status_line(rows, seconds))
    return "\n".join(lines)


def _status_line(rows: Sequence[dict], seconds: float) -> str:
    live = {"pending", "running", "paused"}
    counts = {state: sum(r["status"] == state for r in rows) for state in ("running", "pending")}
    done = sum(r["status"] not in live for r in rows)
    line = (
        f"{len(rows)} trials: {counts['running']} running, {counts['pending']} pending, "
        f"{done} ended; {seconds:.0f} s"
    )
    scored = [r for r in rows if r["p95"] is not None]
    if scored:
        best = min(scored, key=lambda r: r["p95"])
        line += f"; best so far {best['name']} ({best['trial']}), val P95 {best['p95']:.4f} mm"
    return line


class LiveTable(tune.Callback):
    """The callback. Pickled with the Tuner's state (for --resume): it keeps no open stream."""

    def __init__(self, settings: TrialSettings) -> None:
        self.settings = settings
        self._start()

    def _start(self) -> None:
        self._started = time.monotonic()
        self._described: dict[str, tuple[str, int]] = {}
        self._shown = ""  # the last table drawn, without its clock
        self._shown_at = -math.inf
        self._lines = 0  # lines to overwrite on a terminal

    def __getstate__(self) -> dict[str, Any]:
        return {"settings": self.settings}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.settings = state["settings"]
        self._start()

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self._draw(trials, final=False)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._draw(trials, final=True)

    def _draw(self, trials: list, final: bool) -> None:
        if not trials:
            return
        rows = [trial_row(t, self.settings, self._described) for t in trials]
        now = time.monotonic()
        table = format_table(rows, self.settings.max_epochs, now - self._started)
        terminal = sys.stdout.isatty()
        if final and not terminal:
            return  # a log gets the leaderboard next, which says it all
        due = now - self._shown_at >= (TERMINAL_INTERVAL_S if terminal else LOG_INTERVAL_S)
        changed = table.rsplit("\n", 1)[0] != self._shown.rsplit("\n", 1)[0]
        if not final and not (due and (changed or terminal)):  # a terminal's clock ticks
            return
        if terminal and self._lines:
            sys.stdout.write(f"\x1b[{self._lines}F\x1b[J")  # back to the table's first line
        sys.stdout.write(table + "\n" + ("" if terminal else "\n"))
        sys.stdout.flush()
        self._shown, self._shown_at = table, now
        self._lines = table.count("\n") + 1 if terminal else 0


_INTERRUPTION_LOGGERS = ("tune", "analysis.experiment_analysis")
_ABOUT_THE_INTERRUPTION = ("Trials did not complete", "Failed to fetch metrics for")


def _not_about_the_interruption(record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return "Tuner.restore(" not in message and not message.startswith(_ABOUT_THE_INTERRUPTION)


#: Tune's switch for its warning about frequent experiment-state snapshots (0: off)
SNAPSHOT_WARNING_ENV = "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S"


@contextlib.contextmanager
def _frequent_snapshots_unwarned() -> Iterator[None]:
    """Tune snapshots the experiment state whenever a trial has written ``num_to_keep``
    checkpoints since the last snapshot (so that no snapshot names a checkpoint it deleted) and
    warns "Experiment state snapshotting has been triggered multiple times in the last 5.0
    seconds" when two come closer. With epochs of seconds and two checkpoints kept
    (``experiment.CHECKPOINTS_KEPT``) that is the intent, and a snapshot is a few kB of JSON.
    """
    saved = os.environ.get(SNAPSHOT_WARNING_ENV)
    os.environ[SNAPSHOT_WARNING_ENV] = "0"  # read when Tune's loop starts
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(SNAPSHOT_WARNING_ENV, None)
        else:
            os.environ[SNAPSHOT_WARNING_ENV] = saved


@contextlib.contextmanager
def tune_console_quiet() -> Iterator[None]:
    """While Tune runs, the live table is its only output on the console.

    Tune's newer console engine prints its configuration box and a TensorBoard hint into Ray's
    temporary directory whatever the verbosity; its older one (``RAY_AIR_NEW_OUTPUT=0``) prints
    nothing at ``verbose=0``. Tune's INFO logs (state snapshots written) are for debugging. Of
    an interrupted search, Tune's list of the trials that did not complete, the trials it
    finds no result of and its Python resume hint (``Tuner.restore(...)``) give way to
    raytrack's leaderboard and resume command.
    """
    saved_env = os.environ.get("RAY_AIR_NEW_OUTPUT")
    tune_logger = logging.getLogger("ray.tune")
    saved_level = tune_logger.level
    # where those are logged: a filter acts on the logger a message is logged to
    loggers = [logging.getLogger(f"ray.tune.{name}") for name in _INTERRUPTION_LOGGERS]
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    tune_logger.setLevel(logging.WARNING)
    for logger in loggers:
        logger.addFilter(_not_about_the_interruption)
    try:
        with _frequent_snapshots_unwarned():
            yield
    finally:
        for logger in loggers:
            logger.removeFilter(_not_about_the_interruption)
        tune_logger.setLevel(saved_level)
        if saved_env is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = saved_env
