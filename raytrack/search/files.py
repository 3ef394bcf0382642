"""Where an experiment's files lie, below ``runs/NAME``: shared by the search that writes them
and the report that reads them (``python -m raytrack.report``), neither importing the other."""

EXPERIMENT_FILE = "experiment.json"
#: The Optuna study of an optuna/all search: Optuna's journal storage, one file, appended to as
#: trials are asked for, report epochs and end (optuna-dashboard reads it while the search runs).
STUDY_FILE = "optuna.journal"
