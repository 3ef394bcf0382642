"""An experiment's options: what ``python -m raytrack.tune`` was asked for, checked, and kept in
``STORAGE/NAME/experiment.json`` so that ``--resume`` rebuilds them (see ``raytrack.search.layout``
for how the file records paths, so that the experiment can move)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from raytrack.files import write_json_atomic
from raytrack.models.presets import SEARCH_PRESETS
from raytrack.search.layout import EXPERIMENT_FILE, STUDY_FILE, resolved_path, stored_path
from raytrack.search.timing import TIME_METRIC

SEARCHES = ("presets", "optuna", "all")
#: objective -> the cost (a leaderboard column and reported metric) searched against the P95
OBJECTIVES = {"p95": None, "pareto-weights": "weight_count", "pareto-macs": "macs_per_track",
              "pareto-time": TIME_METRIC}  # fmt: skip


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


def trial_count(options: ExperimentOptions) -> int:
    if options.search == "presets":
        return len(SEARCH_PRESETS)
    return options.num_samples + (len(SEARCH_PRESETS) if options.search == "all" else 0)


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
