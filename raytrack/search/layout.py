"""Where an experiment's files lie, below ``runs/NAME``: shared by the search that writes them
and the report that reads them (``python -m raytrack.report``), neither importing the other.

An experiment directory may move (another disk, another machine, a renamed storage directory)
and still resume, so what it records holds no path to itself: ``experiment.json`` stores the
paths under the storage directory (the default dataset) relative to the experiment, and the
objects Tune pickles for ``--resume`` (the Optuna study's storage, the MLflow callback) find the
experiment again through :func:`running_experiment` when they are unpickled.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

EXPERIMENT_FILE = "experiment.json"
#: The Optuna study of an optuna/all search: Optuna's journal storage, one file, appended to as
#: trials are asked for, report epochs and end (optuna-dashboard reads it while the search runs).
STUDY_FILE = "optuna.journal"

#: Ray's own console output while the search runs (its warnings, its workers' lines), kept
#: off the console, which is the live table's.
RAY_LOG = "ray.log"

_running: list[Path] = []


def stored_path(experiment: str | Path, path: str | Path) -> str:
    """``path`` as ``experiment.json`` records it: relative to the experiment when it lies in
    the same storage directory (it moves with the experiment), else absolute."""
    experiment, path = Path(experiment).resolve(), Path(path).resolve()
    if path.is_relative_to(experiment.parent):
        return os.path.relpath(path, experiment)
    return str(path)


def resolved_path(experiment: str | Path, stored: str) -> str:
    """The absolute path of a path ``experiment.json`` records (see :func:`stored_path`)."""
    return str((Path(experiment) / stored).resolve())


@contextlib.contextmanager
def running(experiment: str | Path) -> Iterator[None]:
    """While the search of ``experiment`` runs or is restored in this process."""
    _running.append(Path(experiment).resolve())
    try:
        yield
    finally:
        _running.pop()


def running_experiment() -> Path | None:
    """The experiment directory the search in this process runs in (absolute), else None: where
    an object Tune unpickles on ``--resume`` looks for the experiment's files, wherever the
    experiment was when the object was pickled."""
    return _running[-1] if _running else None
