"""An experiment: presets and/or Optuna variants as Ray Tune trials, ASHA, leaderboard, best/.

``STORAGE/NAME`` holds Ray Tune's own state (trial directories, TensorBoard event files, the
searcher's state) and raytrack's: ``experiment.json`` (the options, for ``--resume``; see
``raytrack.search.layout`` for how it records paths, so that the experiment can move),
``leaderboard.csv``/``.json``, ``pareto.csv``/``.json`` (Pareto objectives), ``best/``, the
report (``report/index.html``), the Optuna study of an ``optuna``/``all`` search
(``optuna.journal``, which ``optuna-dashboard`` opens) and, with ``--mlflow`` and no URI, the
MLflow store (``mlflow/``).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import ray
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import SearchGenerator
from ray.tune.search.optuna import OptunaSearch

from raytrack.data import load
from raytrack.data.loader import DatasetSplits
from raytrack.files import write_json_atomic
from raytrack.models.presets import SEARCH_PRESETS, load_presets
from raytrack.models.training import (
    CHECKPOINT_NAME,
    TrainConfig,
    load_checkpoint,
    result_from_checkpoint,
)
from raytrack.run.directory import RUN_FILE, RunSpec
from raytrack.run.pipeline import write_outputs
from raytrack.search.layout import (
    EXPERIMENT_FILE,
    STUDY_FILE,
    resolved_path,
    running,
    running_experiment,
    stored_path,
)
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
from raytrack.search.timing import TIME_METRIC
from raytrack.search.trial import OBJECTIVE, TrialSettings, resolve_configs, run_trial

SEARCHES = ("presets", "optuna", "all")
#: objective -> the cost (a leaderboard column and reported metric) searched against the P95
OBJECTIVES = {"p95": None, "pareto-weights": "weight_count", "pareto-macs": "macs_per_track",
              "pareto-time": TIME_METRIC}  # fmt: skip
#: Checkpoints Tune keeps per trial (the latest always among them). Each holds the trial's
#: latest and best epoch's weights and its optimiser state: the latest alone serves best/ and
#: --resume. A resumed trial restores the checkpoint the last experiment snapshot named, and
#: Tune forces a snapshot once a trial has written this many checkpoints since the last one,
#: right after deleting the oldest; a driver killed in between leaves that trial nothing to
#: resume from. 2 puts that instant at every other epoch (1: every epoch) for twice the disk of
#: 1 (the quick search: 5 kept took 504 MB).
CHECKPOINTS_KEPT = 2


@dataclass(frozen=True)
class ExperimentOptions:
    """Everything an experiment needs; stored in ``experiment.json`` so --resume can rebuild it."""

    search: str
    data_dir: str
    storage: str
    name: str
    num_samples: int = 8
    space: str = "default"
    objective: str = "p95"
    max_weights: int | None = None
    max_epochs: int = 30
    time_budget: float | None = None
    grace_epochs: int = 3
    reduction_factor: int = 3
    #: "asha" or "none"; None: the search's own default (see ``default_scheduler``)
    scheduler: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_failures: int = 2
    seed: int = 0
    #: MLflow tracking URI (``--mlflow``), resolved; None: no MLflow
    mlflow: str | None = None
    #: Of the default dataset tune generates in ``data_dir`` (no ``--data``): its tracks and
    #: phase space, so that --resume completes a generation that was interrupted; else None
    samples: int | None = None
    phase_space: str | None = None

    def __post_init__(self) -> None:
        if self.search not in SEARCHES:
            raise ValueError(f"--search must be one of {list(SEARCHES)}, got {self.search!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(
                f"--objective must be one of {list(OBJECTIVES)}, got {self.objective!r}"
            )
        if self.scheduler is None:  # resolved here, so experiment.json records what ran
            object.__setattr__(self, "scheduler", default_scheduler(self.search))
        if self.scheduler not in ("asha", "none"):
            raise ValueError(f"--scheduler must be asha or none, got {self.scheduler!r}")
        for name in ("num_samples", "max_epochs", "grace_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
        if self.cpus_per_trial <= 0 or self.gpus_per_trial < 0:
            raise ValueError("--cpus-per-trial must be > 0 and --gpus-per-trial >= 0")
        if self.max_weights is not None and self.max_weights < 1:
            raise ValueError("--max-weights must be a positive number of weights")
        if self.time_budget is not None and self.time_budget <= 0:
            raise ValueError(
                f"--time-budget must be a positive number of seconds, got {self.time_budget:g}"
            )
        if self.scheduler == "asha":
            self._check_asha()

    def _check_asha(self) -> None:
        # Ray's ASHAScheduler answers these with a bare AssertionError or ZeroDivisionError.
        if self.grace_epochs > self.max_epochs:
            raise ValueError(
                f"--grace-epochs {self.grace_epochs} is more than --max-epochs {self.max_epochs}: "
                "ASHA would never get to compare trials; lower --grace-epochs, raise "
                "--max-epochs, or use --scheduler none"
            )
        if self.reduction_factor < 2:
            raise ValueError(
                f"--reduction-factor must be at least 2 (ASHA keeps 1 in that many trials), "
                f"got {self.reduction_factor}"
            )

    @property
    def path(self) -> Path:
        return Path(self.storage) / self.name

    @property
    def device(self) -> str:
        return "cuda" if self.gpus_per_trial > 0 else "cpu"

    @property
    def study_path(self) -> Path | None:
        """The Optuna study's file (optuna and all searches), else None."""
        return None if self.search == "presets" else self.path.resolve() / STUDY_FILE


def default_scheduler(search: str) -> str:
    """No early stopping when comparing the presets: each gets the same data and budget. A
    search (optuna, all) samples many variants, where ASHA saves most of the time."""
    return "none" if search == "presets" else "asha"


class SearchInterruptedError(Exception):
    """The search was stopped (Ctrl-C) before every trial ended; its leaderboard and report of
    what ran are written (best/ is not: it is the best of a search that ended), and
    ``--resume`` continues it."""

    def __init__(self, options: ExperimentOptions, rows: list[dict], not_started: int) -> None:
        ended = sum(r["status"] != "interrupted" for r in rows)
        super().__init__(
            f"interrupted: of the {_trial_count(options)} trials in {options.path}, {ended} "
            f"ended, {len(rows) - ended} stopped in training (status interrupted), "
            f"{not_started} not begun"
        )
        self.options, self.rows, self.not_started = options, rows, not_started


def study_storage(path: str | Path) -> StudyJournal:
    """Optuna's journal storage on the study file ``path``."""
    return StudyJournal(path)


def _study_journal(path: str) -> StudyJournal:
    """Unpickles a :class:`StudyJournal`: the study file of the experiment running now."""
    here = running_experiment()
    return StudyJournal(here / STUDY_FILE if here is not None else path)


class StudyJournal(JournalStorage):
    """Optuna's journal storage on an experiment's study file.

    Pickled with the searcher for ``--resume`` (the study, its trials and the searcher share
    it), it is unpickled onto the study file of the experiment being resumed: the experiment
    may have moved since, and the study must not be written at its old place.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        super().__init__(JournalFileBackend(self.path))

    def __reduce__(self) -> tuple:
        return (_study_journal, (self.path,))


def load_study(experiment: str | Path):
    """The Optuna study of an ``optuna`` or ``all`` experiment directory, read from its file."""
    import optuna

    path = Path(experiment) / STUDY_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no Optuna study (only optuna and all searches keep one)")
    storage = study_storage(path)
    names = optuna.study.get_all_study_names(storage)  # one: the experiment's
    return optuna.load_study(study_name=names[0], storage=storage)


def load_options(storage: str, name: str) -> ExperimentOptions:
    """The options of the experiment ``storage/name``, its paths resolved where it lies now."""
    path = Path(storage) / name / EXPERIMENT_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: no experiment to resume (check --storage and --name)")
    document = json.loads(path.read_text())
    # where the experiment lies now, not where it was started (see raytrack.search.layout)
    document.update(storage=storage, name=name)
    document["data_dir"] = resolved_path(path.parent, document["data_dir"])
    if document.get("mlflow"):
        from raytrack.search.tracking import resolve_uri

        document["mlflow"] = resolve_uri(document["mlflow"], path.parent)
    return ExperimentOptions(**document)


def write_options(options: ExperimentOptions) -> None:
    """The experiment directory and its ``experiment.json``: from then on, --resume takes it."""
    options.path.mkdir(parents=True, exist_ok=True)
    write_json_atomic(options.path / EXPERIMENT_FILE, options_document(options))


def options_document(options: ExperimentOptions) -> dict[str, Any]:
    """``experiment.json``: the options, with no path that stops the experiment from moving (the
    storage directory is where it lies; see raytrack.search.layout)."""
    document = asdict(options)
    del document["storage"]
    document["data_dir"] = stored_path(options.path, options.data_dir)
    for key in ("space", "phase_space"):  # a file (not a built-in's name) may be relative
        value = document[key]
        if value is not None and (Path(value).suffix or Path(value).exists()):
            document[key] = str(Path(value).resolve())
    if options.mlflow:
        from raytrack.search.tracking import LOCAL, local_uri

        if options.mlflow == local_uri(options.path):
            document["mlflow"] = LOCAL
    return document


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
    with running(experiment), tune_console_quiet():
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
        _close_abandoned_study_trials(options)  # else they are the trials --resume continues
    report = _write_report(options, best, log, interrupted)
    log(format_leaderboard(rows))
    log(f"{len(rows)} trials in {time.time() - started:.0f} s; results in {options.path}")
    if best is not None:
        log(format_best(*best))
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


def _close_abandoned_study_trials(options: ExperimentOptions) -> None:
    """A search interrupted between the searcher asking Optuna for a trial and Tune recording
    it leaves that trial running in the study file forever; once the search is over, such
    trials are marked failed, with a note, so that the dashboard shows no phantom trial."""
    if options.study_path is None or not options.study_path.is_file():
        return
    from optuna.trial import TrialState

    study = load_study(options.path)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(
            trial._trial_id, "raytrack", "abandoned: the search was interrupted before it ran"
        )
        study.tell(trial.number, state=TrialState.FAIL)


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
    # Not reuse_actors: it ran five presets of 2 epochs on 2 CPUs in 6 s instead of 16 (no new
    # worker importing torch for each trial), but one of 24 runs of the Ctrl-C test failed its
    # check of a clean exit (status 130, no traceback) when the Ctrl-C came between trials,
    # while the reused actors waited; not understood, so not taken.
    if options.search == "presets":
        return tune.TuneConfig(num_samples=1, scheduler=scheduler)
    return tune.TuneConfig(
        search_alg=MovableSearchGenerator(_searcher(options, settings, cost)),
        scheduler=scheduler,
        num_samples=_trial_count(options),
    )


def _trial_count(options: ExperimentOptions) -> int:
    if options.search == "presets":
        return len(SEARCH_PRESETS)
    return options.num_samples + (len(SEARCH_PRESETS) if options.search == "all" else 0)


class StudyFileSearch(OptunaSearch):
    """Ray's OptunaSearch on a study file that may be ahead of Tune's experiment snapshot.

    The study file is written as results arrive; Tune's snapshot, which --resume restores, is
    written now and then. A trial that finished between the last snapshot and a kill is run
    again on resume, and Optuna refuses results for a trial its study already holds as
    finished: that trial's entry is final, so its repeated results are not reported again.
    """

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        from optuna.exceptions import UpdateFinishedTrialError

        try:
            super().on_trial_result(trial_id, result)
        except UpdateFinishedTrialError:
            self._completed_trials.add(trial_id)


class MovableSearchGenerator(SearchGenerator):
    """Tune's wrapper of a searcher, whose new trials go where the experiment lies now.

    On --resume Tune restores the wrapper's experiment from its saved state, with the directory
    the experiment had then, and makes the trials still to come there: after a move, where the
    experiment no longer is (their checkpoints fail). Tune moves the restored trials itself
    (``TuneController._restore_trials``); this moves the trials to come the same way.
    """

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        here = running_experiment()
        storage = self._experiment.spec.get("storage") if self._experiment else None
        if here is not None and storage is not None:
            moved = copy.copy(storage)
            moved.storage_fs_path = str(here.parent)
            moved.experiment_dir_name = here.name
            self._experiment.spec["storage"] = moved


def _searcher(options: ExperimentOptions, settings: TrialSettings, cost: str | None):
    import optuna

    space = settings.space
    points = None
    if options.search == "all":  # the presets first: the searcher continues from what they show
        presets = load_presets()
        default_train = TrainConfig()
        points = [space.point_for(presets[name], default_train) for name in SEARCH_PRESETS]
    metric, mode = ([OBJECTIVE, cost], ["min", "min"]) if cost else (OBJECTIVE, "min")
    options.path.mkdir(parents=True, exist_ok=True)
    # Optuna logs "A new study created in Journal with name: ..." (INFO) to the console, which
    # is the live table's; the summary names the study's file
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return StudyFileSearch(
        space=space.define_by_run,
        metric=metric,
        mode=mode,
        points_to_evaluate=points,
        sampler=space.sampler(options.seed),
        # in a file, not in memory: optuna-dashboard and optuna.load_study read it; the path is
        # absolute, as the searcher is pickled for --resume
        study_name=options.name,
        storage=study_storage(options.study_path),
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
        rows.append(make_row(trial_id, metrics.get("name", name), status, metrics, config))
    not_started += max(0, _trial_count(options) - len(results))
    return rank(rows), not_started


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


def describe_resources(options: ExperimentOptions) -> str:
    """The notice printed at start: what a trial gets and how many run at once."""
    total = ray.cluster_resources()
    cpus, gpus = total.get("CPU", 0), total.get("GPU", 0)
    slots = math.floor(cpus / options.cpus_per_trial)
    if options.gpus_per_trial:
        slots = min(slots, math.floor(gpus / options.gpus_per_trial))
    where = (
        f"{options.gpus_per_trial:g} GPU + {options.cpus_per_trial:g} CPU per trial"
        if options.gpus_per_trial
        else f"{options.cpus_per_trial:g} CPU per trial"
    )
    return f"Ray sees {cpus:g} CPUs and {gpus:g} GPUs; {where}; up to {slots} trials at once"


def check_trials_fit(
    options: ExperimentOptions, wait_s: float = 0.0, poll_s: float = 5.0, log=print
) -> None:
    """Raise ``ValueError`` naming the option at fault unless one node of the Ray cluster has
    the CPUs and GPUs of a trial; Ray Tune would otherwise wait for them forever.

    ``wait_s`` > 0 (a joined cluster, where nodes may still be arriving) waits that long for
    such a node, saying so, before giving up.
    """
    deadline = time.monotonic() + wait_s
    waiting = False
    while (problem := _unfit_trial(options)) is not None:
        if time.monotonic() >= deadline:
            waited = f" after waiting {wait_s:.0f} s for nodes to join" if waiting else ""
            raise ValueError(f"{problem}{waited}")
        if not waiting:
            log(f"waiting up to {wait_s:.0f} s for a node that fits a trial: {problem}")
            waiting = True
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))


def _unfit_trial(options: ExperimentOptions) -> str | None:
    """Why no live node can run a trial, or ``None`` when one can."""
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    gpus = max((node.get("GPU", 0) for node in nodes), default=0)
    cpus = max((node.get("CPU", 0) for node in nodes), default=0)
    if any(
        node.get("CPU", 0) >= options.cpus_per_trial
        and node.get("GPU", 0) >= options.gpus_per_trial
        for node in nodes
    ):
        return None
    if options.gpus_per_trial > gpus:
        have = "no GPU" if gpus == 0 else f"at most {gpus:g} GPUs on a node"
        advice = "--gpus-per-trial 0 trains on CPUs" if gpus == 0 else "lower --gpus-per-trial"
        return f"--gpus-per-trial {options.gpus_per_trial:g}: this Ray cluster has {have}; {advice}"
    if options.cpus_per_trial > cpus:
        return (
            f"--cpus-per-trial {options.cpus_per_trial:g}: no node of this Ray cluster has that "
            f"many CPUs (at most {cpus:g}); lower --cpus-per-trial"
        )
    return (
        f"--cpus-per-trial {options.cpus_per_trial:g} with --gpus-per-trial "
        f"{options.gpus_per_trial:g}: no node of this Ray cluster has both; lower one of them"
    )
