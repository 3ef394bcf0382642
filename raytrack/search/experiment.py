"""An experiment: presets and/or Optuna variants as Ray Tune trials, ASHA, leaderboard, best/.

``STORAGE/NAME`` holds Ray Tune's own state (trial directories, TensorBoard event files, the
searcher's state) and raytrack's: ``experiment.json`` (the options, for ``--resume``; see
``raytrack.search.layout`` for how it records paths, so that the experiment can move),
``leaderboard.csv``/``.json``, ``pareto.csv``/``.json`` (Pareto objectives), ``best/``, the
report (``report/index.html``), the Optuna study of an ``optuna``/``all`` search
(``optuna.journal``, which ``optuna-dashboard`` opens), Ray's own console output
(``ray.log``: its warnings, its workers' lines) and, with ``--mlflow`` and no URI, the MLflow
store (``mlflow/``).
"""

from __future__ import annotations

import importlib.util
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from raytrack.cluster import ray_output_to
from raytrack.data import load
from raytrack.data.loader import DatasetSplits
from raytrack.export.model_bin import read_model_bin
from raytrack.files import write_json_atomic
from raytrack.models.checkpoints import CHECKPOINT_NAME, load_checkpoint, result_from_checkpoint
from raytrack.models.presets import SEARCH_PRESETS
from raytrack.run.directory import RUN_FILE, RunSpec
from raytrack.run.pipeline import write_outputs

# The experiment's parts, importable from here as they always were (raytrack.tune, the tests)
from raytrack.search.experiment_options import (
    OBJECTIVES,
    ExperimentOptions,
    trial_count,
    write_options,
)
from raytrack.search.layout import RAY_LOG, running
from raytrack.search.leaderboard import (
    format_best,
    format_leaderboard,
    make_row,
    pareto_front,
    rank,
    tune_trial_status,
    write_leaderboard,
)
from raytrack.search.progress import LEGEND, LiveTable, tune_console_quiet
from raytrack.search.study import (
    MovableSearchGenerator,
    close_abandoned_study_trials,
    make_searcher,
)
from raytrack.search.trial import OBJECTIVE, TrialSettings, resolve_configs, run_trial
from raytrack.search.trigger import fits_trigger_header, trigger_summary

#: Checkpoints Tune keeps per trial (the latest always among them). Each holds the trial's
#: latest and best epoch's weights and its optimiser state: the latest alone serves best/ and
#: --resume. A resumed trial restores the checkpoint the last experiment snapshot named, and
#: Tune forces a snapshot once a trial has written this many checkpoints since the last one,
#: right after deleting the oldest; a driver killed in between leaves that trial nothing to
#: resume from. 2 puts that instant at every other epoch (1: every epoch) for twice the disk of
#: 1.
CHECKPOINTS_KEPT = 2
#: A trial's worker trains the next trial of its resources (no new process importing torch for
#: each trial): run_trial keeps nothing from one trial to the next.
REUSE_ACTORS = True


class SearchInterruptedError(Exception):
    """The search was stopped (Ctrl-C) before every trial ended; its leaderboard and report of
    what ran are written (best/ is not: it is the best of a search that ended), and
    ``--resume`` continues it."""

    def __init__(self, options: ExperimentOptions, rows: list[dict], not_started: int) -> None:
        ended = sum(r["status"] != "interrupted" for r in rows)
        super().__init__(
            f"interrupted: of the {trial_count(options)} trials in {options.path}, {ended} "
            f"ended, {len(rows) - ended} stopped in training (status interrupted), "
            f"{not_started} not begun"
        )
        self.options, self.rows, self.not_started = options, rows, not_started


def run_experiment(
    options: ExperimentOptions,
    resume: bool = False,
    log=print,
    splits: DatasetSplits | None = None,
) -> list[dict]:
    """Run (or resume) the experiment; returns the ranked leaderboard rows.

    ``splits``: the dataset when the caller has already loaded (and so checked) it. Raises
    :class:`SearchInterruptedError`, once the leaderboard and the report of what ran are
    written, when the search was stopped (Ctrl-C) before every trial ended.
    """
    settings = _settings(options)
    # A space that searches jacobian_weight trains on the dataset's Jacobians too.
    jacobians = settings.space is not None and "jacobian_weight" in settings.space.params
    if splits is None or (jacobians and splits.train.jacobians is None):
        # NumPy arrays: ray.put shares them per node
        splits = load(options.data_dir, jacobian=jacobians)
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, data=splits, settings=settings),
        {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial},
    )
    write_options(options)
    started = time.time()
    # absolute: Ray takes a relative path for a URI without a scheme and refuses it
    experiment = options.path.resolve()
    # what Tune unpickles on --resume finds the experiment here
    with running(experiment), tune_console_quiet(), ray_output_to(options.path / RAY_LOG):
        if resume and tune.Tuner.can_restore(str(experiment)):
            log(f"resuming {options.path}")
            tuner = tune.Tuner.restore(
                str(experiment), trainable, resume_unfinished=True, resume_errored=True
            )
        else:
            tuner = tune.Tuner(
                trainable,
                param_space=_param_space(options),
                tune_config=_tune_config(options, settings),
                run_config=_run_config(options, settings),
            )
        log(LEGEND)
        results = tuner.fit()
    rows, not_started = _leaderboard(results, options, settings)
    interrupted = not_started > 0 or any(r["status"] == "interrupted" for r in rows)
    write_leaderboard(options.path, rows)
    cost = OBJECTIVES[options.objective]
    if cost:
        write_leaderboard(options.path, pareto_front(rows, cost), stem="pareto")
    best = None
    if not interrupted:
        best = _export_best(rows, results, options, splits, settings, log)
        close_abandoned_study_trials(options)  # else they are the trials --resume continues
    report = _write_report(options, best, log, interrupted)
    log(format_leaderboard(rows))
    log(f"{len(rows)} trials in {time.time() - started:.0f} s; results in {options.path}")
    if best is not None:
        log(format_best(*best))
        exported = read_model_bin(best[1] / "model.bin")
        trigger = trigger_summary(rows, exported, options.search, best[1])
        if trigger is not None:
            log(trigger)
    elif interrupted:  # exporting takes a while, and a user who pressed Ctrl-C waits for it
        log("best/ (the best model's exports) is written when the search ends: --resume")
    if options.mlflow:
        from raytrack.search.tracking import finish

        try:
            finish(options.mlflow, options.name, options.path, rows,
                   best[0]["trial_id"] if best else None, log=log)  # fmt: skip
        except Exception as err:  # the search's own results are all written
            log(f"warning: MLflow: the runs' final status and artifacts not logged: {err}")
    if report is not None:
        log(f"Report: {report}")
    log(f"Ray's log (its warnings, its workers' output): {options.path / RAY_LOG}")
    if options.study_path is not None:
        log(f"Optuna study: optuna-dashboard {options.study_path}")
    log(f"TensorBoard: {tensorboard_hint(options.path)}")
    if interrupted:
        raise SearchInterruptedError(options, rows, not_started)
    return rows


def tensorboard_hint(experiment: Path) -> str:
    """The command that shows the trials' event files, and how to install TensorBoard where it
    is missing (the plain install leaves it out; Ray Tune writes the files through tensorboardX)."""
    command = f"tensorboard --logdir {experiment}"
    if importlib.util.find_spec("tensorboard") or shutil.which("tensorboard"):
        return command
    return (
        f"{command} (TensorBoard is not installed here: pip install -e "
        '".[tensorboard]" in the checkout, or pip install tensorboard)'
    )


def _write_report(options: ExperimentOptions, best, log, interrupted: bool) -> Path | None:
    """report/index.html; the best model's test-split predictions are reused from best/."""
    from raytrack.report import write_experiment_report

    tracks = None
    if best is not None and best[2] is not None:
        tracks = best[2].get("_tracks")
    try:
        return write_experiment_report(
            options.path, best_tracks=tracks, log=log, interrupted=interrupted
        )
    except Exception as err:  # python -m raytrack.report can write it later
        log(f"warning: the experiment report was not written ({type(err).__name__}: {err}); "
            f"python -m raytrack.report {options.path} writes it")  # fmt: skip
        return None


def _settings(options: ExperimentOptions) -> TrialSettings:
    space = None
    if options.search != "presets":
        from raytrack.search.space import load_search_space

        space = load_search_space(options.space, max_weights=options.max_weights)
    return TrialSettings(
        max_epochs=options.max_epochs,
        time_budget=options.time_budget,
        seed=options.seed,
        device=options.device,
        cpus=options.cpus_per_trial,
        space=space,
        max_weights=options.max_weights,
        data_dir=str(Path(options.data_dir).resolve()),
        time_inference=options.objective == "pareto-time",
    )


def _param_space(options: ExperimentOptions) -> dict[str, Any]:
    if options.search == "presets":
        return {"preset": tune.grid_search(list(SEARCH_PRESETS))}
    return {}  # Optuna's define-by-run space supplies every parameter


def _tune_config(options: ExperimentOptions, settings: TrialSettings) -> tune.TuneConfig:
    cost = OBJECTIVES[options.objective]
    scheduler = (
        ASHAScheduler(time_attr="training_iteration", metric=OBJECTIVE, mode="min",
                      max_t=options.max_epochs + 1, grace_period=options.grace_epochs,
                      reduction_factor=options.reduction_factor)
        if options.scheduler == "asha" else FIFOScheduler()
    )  # fmt: skip
    if options.search == "presets":
        return tune.TuneConfig(num_samples=1, scheduler=scheduler, reuse_actors=REUSE_ACTORS)
    return tune.TuneConfig(
        search_alg=MovableSearchGenerator(make_searcher(options, settings, cost)),
        scheduler=scheduler,
        num_samples=trial_count(options),
        reuse_actors=REUSE_ACTORS,
    )


def _run_config(options: ExperimentOptions, settings: TrialSettings) -> tune.RunConfig:
    return tune.RunConfig(
        name=options.name,
        storage_path=str(Path(options.storage).resolve()),
        failure_config=tune.FailureConfig(max_failures=options.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT),
        # Tune's own console output gives way to raytrack's live table (see search.progress)
        verbose=0,
        callbacks=[LiveTable(settings), *_tracking(options, settings)],
    )


def _tracking(options: ExperimentOptions, settings: TrialSettings) -> list:
    if not options.mlflow:
        return []
    from raytrack.search.tracking import MlflowTracking

    return [MlflowTracking(options.mlflow, options.name, str(options.path.resolve()), settings)]


def _leaderboard(
    results, options: ExperimentOptions, settings: TrialSettings
) -> tuple[list[dict], int]:
    """(ranked rows of the trials that started, how many trials did not start). Trials do not
    start when the search is interrupted: those Tune had queued, and those it had not created."""
    rows, not_started = [], 0
    for result in results:
        metrics = result.metrics or {}
        if result.config is None:  # no result, not even the one a trial gets as it starts
            not_started += result.error is None
            continue
        trial_id = metrics.get("trial_id") or Path(result.path).name
        name, model, train = resolve_configs(result.config, settings)
        config = {"model": {**model.to_dict(), "weight_count": model.weight_count,
                            "macs_per_track": model.macs_per_track},
                  "train": train.to_dict(), "params": result.config}  # fmt: skip
        status = tune_trial_status(metrics, result.error is not None, options.max_epochs)
        row = make_row(trial_id, metrics.get("name", name), status, metrics, config)
        row["fits_trigger_header"] = _fits_trigger_header(result, model.weight_count)
        rows.append(row)
    not_started += max(0, trial_count(options) - len(results))
    return rank(rows), not_started


def _fits_trigger_header(result, weight_count: int) -> bool | None:
    """Whether the trial's model fits a trigger header (see raytrack.search.trigger)."""
    if result.checkpoint is None:
        return fits_trigger_header(None, weight_count)
    with result.checkpoint.as_directory() as directory:
        return fits_trigger_header(Path(directory) / CHECKPOINT_NAME, weight_count)


def _export_best(
    rows, results, options, splits: DatasetSplits, settings, log
) -> tuple[dict[str, Any], Path, dict[str, Any] | None] | None:
    """best/: the best trial's run (run.json, checkpoint), exports, evaluation report and plots.

    Returns (its leaderboard row, best/, its test-split report), or None when no trial left a
    model."""
    best = next((r for r in rows if r["pos_p95_mm"] is not None), None)
    if best is None:
        log("no trial produced a model: nothing to export")
        return None
    result = next(r for r in results if (r.metrics or {}).get("trial_id") == best["trial_id"])
    if result.checkpoint is None:
        log(f"best trial {best['trial_id']} left no checkpoint: nothing to export")
        return None
    out = options.path / "best"
    out.mkdir(exist_ok=True)
    with result.checkpoint.as_directory() as directory:
        # a run directory like any other: python -m raytrack.evaluate takes it
        shutil.copy(Path(directory) / CHECKPOINT_NAME, out / CHECKPOINT_NAME)
    state = load_checkpoint(out / CHECKPOINT_NAME)
    name, model, train = resolve_configs(result.config, settings)
    spec = RunSpec(
        data_dir=settings.data_dir, model=model, train=train, name=name, device=options.device
    )
    write_json_atomic(out / RUN_FILE, spec.to_dict())
    # The checkpoint was saved at the trial's last epoch, before its end (and ASHA's verdict)
    # was known: the leaderboard's status is the trial's.
    trained = replace(result_from_checkpoint(state), status=best["status"])
    report = write_outputs(out, spec, splits, trained)
    write_json_atomic(out / "trial.json", {"trial_id": best["trial_id"], "row": best})
    return best, out, report
