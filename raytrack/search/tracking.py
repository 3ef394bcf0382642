"""MLflow tracking of a search (``python -m raytrack.tune --mlflow [URI]``).

Every trial is one MLflow run in the MLflow experiment named after the raytrack experiment: its
config as parameters (preset or variant name, widths, model and training options, weight count,
multiply-adds), each epoch's validation metrics as metric histories (step = epoch; ``val_*`` of
the epoch, ``best_val_*`` of the best epoch so far, the weights the trial exports), and its
status as the tag ``status`` (the leaderboard's word). The best trial's exports and evaluation
are its artifacts.

A run is found again by its tag ``raytrack.trial_id``, never by what this process remembers, so
``--resume`` (a new driver process, the callback unpickled from Tune's state) continues the same
runs and logs only the epochs they do not hold yet. Ray Tune's own ``MLflowLoggerCallback`` keeps
the trial -> run map in memory and would start a second run for every resumed trial.

Without a URI the store is ``STORAGE/NAME/mlflow/mlflow.db`` (SQLite; MLflow 3 refuses its old
file store) with artifacts in ``STORAGE/NAME/mlflow/artifacts``.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

from ray import tune

from raytrack.models.train_config import VALIDATION_METRICS
from raytrack.search.layout import running_experiment
from raytrack.search.leaderboard import trial_status
from raytrack.search.trial import TrialSettings, resolve_configs

#: ``--mlflow`` given without a URI: a local store under the experiment directory.
LOCAL = "local"
STORE_DIR = "mlflow"
TRIAL_TAG = "raytrack.trial_id"
STATUS_TAG = "status"
#: The validation figures of the weights a trial exports (its best epoch so far), as the
#: leaderboard shows them: a run's summary metrics (the latest value of each key) ``best_val_*``
#: are the exported epoch's, while ``val_*`` are the last epoch's.
BEST_METRICS = tuple(f"best_{k}" for k in VALIDATION_METRICS)
#: Logged every epoch, step = epoch.
EPOCH_METRICS = ("train_loss", *VALIDATION_METRICS, *BEST_METRICS, "lr", "seconds")
#: Leaderboard status -> MLflow's run status.
_RUN_STATUS = {"failed": "FAILED", "error": "FAILED", "unfinished": "KILLED",
               "interrupted": "KILLED"}  # fmt: skip
#: The best trial's files logged as its artifacts (directories whole).
BEST_ARTIFACTS = ("model.onnx", "model.bin", "metadata.json", "run.json", "trial.json")


class MlflowMissingError(ValueError):
    """--mlflow was asked for and MLflow is not installed."""


def require_mlflow() -> None:
    """Raise :class:`MlflowMissingError`, saying how to install it, unless MLflow imports."""
    if importlib.util.find_spec("mlflow") is None:
        raise MlflowMissingError(
            "--mlflow: MLflow is not installed in this Python; install it with the project, "
            'pip install -e ".[mlflow]" (or pip install mlflow), or leave out --mlflow'
        )


def local_uri(experiment: Path) -> str:
    """The local store of ``experiment``: a SQLite file under it (an absolute URI)."""
    return f"sqlite:///{(Path(experiment) / STORE_DIR / 'mlflow.db').resolve()}"


def resolve_uri(asked: str, experiment: Path) -> str:
    """The tracking URI for ``--mlflow [URI]``; ``LOCAL`` means the experiment's own store."""
    return local_uri(experiment) if asked == LOCAL else asked


def ui_command(uri: str) -> str:
    return f"mlflow ui --backend-store-uri {uri}"


def _quiet_mlflow() -> None:
    # The first use of a SQLite store prints its table creation and migrations at INFO.
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


class MlflowStore:
    """The MLflow experiment of one raytrack experiment and its runs, looked up by trial id."""

    def __init__(self, uri: str, experiment_name: str, experiment_dir: Path) -> None:
        from mlflow import MlflowClient

        _quiet_mlflow()  # after the import, which sets MLflow's loggers to INFO

        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        found = self.client.get_experiment_by_name(experiment_name)
        if found is None:
            artifacts = None
            if uri == local_uri(experiment_dir):
                artifacts = (Path(experiment_dir) / STORE_DIR / "artifacts").resolve().as_uri()
            self.experiment_id = self.client.create_experiment(
                experiment_name, artifact_location=artifacts
            )
        else:
            self.experiment_id = found.experiment_id
        self._runs: dict[str, str] | None = None  # trial id -> run id
        self._logged: dict[str, int] = {}  # run id -> last epoch logged

    def runs(self) -> dict[str, str]:
        """Every run of the experiment that belongs to a trial, by trial id."""
        if self._runs is None:
            self._runs = {}
            token = None
            while True:
                page = self.client.search_runs(
                    [self.experiment_id], max_results=1000, page_token=token
                )
                for run in page:
                    trial_id = run.data.tags.get(TRIAL_TAG)
                    if trial_id:
                        self._runs.setdefault(trial_id, run.info.run_id)
                token = page.token
                if not token:
                    break
        return self._runs

    def run_for(self, trial_id: str, name: str, params: dict[str, Any]) -> str:
        """The run of ``trial_id``, created with its parameters the first time."""
        runs = self.runs()
        if trial_id not in runs:
            run = self.client.create_run(
                self.experiment_id,
                run_name=f"{name}-{trial_id}",
                tags={TRIAL_TAG: trial_id, STATUS_TAG: "running"},
            )
            runs[trial_id] = run.info.run_id
            self._log_params(run.info.run_id, params)
        return runs[trial_id]

    def _log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        values = [Param(key, _text(value)) for key, value in params.items() if value is not None]
        for start in range(0, len(values), 100):  # MLflow takes at most 100 params a batch
            self.client.log_batch(run_id, params=values[start : start + 100])

    def log_epoch(self, run_id: str, result: dict[str, Any]) -> None:
        """The metrics of one epoch, unless the run already holds that epoch (a resumed trial
        repeats the epochs after its checkpoint)."""
        from mlflow.entities import Metric

        epoch = result.get("epoch")
        if not isinstance(epoch, int | float) or epoch < 1:
            return
        epoch = int(epoch)
        if run_id not in self._logged:
            history = self.client.get_metric_history(run_id, "val_pos_p95_mm")
            self._logged[run_id] = max((m.step for m in history), default=0)
        if epoch <= self._logged[run_id]:
            return
        now = int(time.time() * 1000)
        metrics = [
            Metric(key, float(result[key]), now, epoch)
            for key in EPOCH_METRICS
            if isinstance(result.get(key), int | float) and math.isfinite(result[key])
        ]
        if metrics:
            self.client.log_batch(run_id, metrics=metrics)
        self._logged[run_id] = epoch

    def end(self, run_id: str, status: str) -> None:
        self.client.set_tag(run_id, STATUS_TAG, status)
        self.client.set_terminated(run_id, _RUN_STATUS.get(status, "FINISHED"))


def trial_params(
    trial_id: str, config: dict[str, Any], settings: TrialSettings
) -> tuple[str, dict[str, Any]]:
    """(name, MLflow parameters) of a trial's config: the model and training options, the
    architecture's weight count and multiply-adds, and the sampled values as ``param.*``."""
    name, model, train = resolve_configs(config, settings)
    params: dict[str, Any] = {
        "name": name,
        "trial_id": trial_id,
        "preset": config.get("preset"),
        "hidden": "-".join(str(w) for w in model.hidden),
        "depth": len(model.hidden),
        "weight_count": model.weight_count,
        "macs_per_track": model.macs_per_track,
    }
    params.update({k: v for k, v in model.to_dict().items() if k != "hidden"})
    params.update({f"train.{k}": v for k, v in train.to_dict().items()})
    if "preset" not in config:
        params.update({f"param.{k}": v for k, v in config.items()})
    return name, params


def _text(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."  # MLflow's limit on a value


class MlflowTracking(tune.Callback):
    """The Tune callback on the driver: a run per trial as it starts, each epoch as it comes,
    the status when it ends. Pickled with the Tuner's state (for --resume): it keeps its
    settings only and reconnects to the store when it is next used."""

    def __init__(
        self, uri: str, experiment_name: str, experiment_dir: str, settings: TrialSettings
    ) -> None:
        self.uri, self.experiment_name = uri, experiment_name
        self.experiment_dir, self.settings = experiment_dir, settings
        self._store: MlflowStore | None = None
        self._warned = False

    def __getstate__(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("uri", "experiment_name", "experiment_dir",
                                                "settings")}  # fmt: skip

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._store, self._warned = None, False
        here = running_experiment()  # --resume: the experiment may have moved since
        if here is not None:
            if self.uri == local_uri(Path(self.experiment_dir)):
                self.uri = local_uri(here)
            self.experiment_dir = str(here)

    def store(self) -> MlflowStore:
        if self._store is None:
            self._store = MlflowStore(self.uri, self.experiment_name, Path(self.experiment_dir))
        return self._store

    def _run(self, trial: Any, result: dict[str, Any] | None = None) -> str:
        known = self.store().runs().get(trial.trial_id)
        if known is not None:
            return known
        try:
            name, params = trial_params(trial.trial_id, trial.config, self.settings)
        except Exception:  # a config the space cannot read back: the trial still gets a run
            name, params = (result or {}).get("name", "trial"), {"trial_id": trial.trial_id}
        return self.store().run_for(trial.trial_id, name, params)

    def _guarded(self, action, *args) -> None:
        """MLflow trouble (a server gone, a locked file) is reported once and never stops the
        search: the trials, the leaderboard and best/ matter more than their copy in MLflow."""
        try:
            action(*args)
        except Exception as err:
            if not self._warned:
                print(f"warning: MLflow logging to {self.uri} failed: {err}", file=sys.stderr)
                self._warned = True

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._guarded(self._run, trial)

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        self._guarded(lambda: self.store().log_epoch(self._run(trial, result), result))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._guarded(self._end, trial, False)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._guarded(self._end, trial, True)

    def _end(self, trial: Any, errored: bool) -> None:
        result = trial.last_result or {}
        status = trial_status(result, errored, self.settings.max_epochs)
        self.store().end(self._run(trial, result), status)


def finish(
    uri: str,
    experiment_name: str,
    experiment_dir: Path,
    rows: list[dict[str, Any]],
    best_trial: str | None,
    log=print,
) -> None:
    """After the search: every run gets the leaderboard's status and rank (a run missing for a
    trial is created), and the best trial's run its exports, evaluation and the experiment
    report as artifacts."""
    store = MlflowStore(uri, experiment_name, experiment_dir)
    for row in rows:
        params = {"name": row["name"], "trial_id": row["trial_id"]}
        model = row["config"].get("model", {})
        params |= {k: v for k, v in model.items() if k != "hidden"}
        params["hidden"] = "-".join(str(w) for w in model.get("hidden", []))
        run_id = store.run_for(row["trial_id"], row["name"], params)
        store.client.set_tag(run_id, "rank", str(row["rank"]))
        store.end(run_id, row["status"])
    if best_trial is not None:
        run_id = store.runs()[best_trial]
        store.client.set_tag(run_id, "raytrack.best", "true")
        best = Path(experiment_dir) / "best"
        for name in BEST_ARTIFACTS:
            if (best / name).is_file():
                store.client.log_artifact(run_id, str(best / name))
        if (best / "evaluation").is_dir():
            store.client.log_artifacts(run_id, str(best / "evaluation"), "evaluation")
        report = Path(experiment_dir) / "report"
        if report.is_dir():
            store.client.log_artifacts(run_id, str(report), "experiment_report")
    log(f"MLflow: {len(rows)} runs in experiment {experiment_name!r}; {ui_command(uri)}")
