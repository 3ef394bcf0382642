"""Hyperparameter search: search spaces as TOML files (``search_spaces/*.toml``), Ray Tune
trials (``trial.py``), the experiment driver (``experiment.py``), its leaderboard and its MLflow
tracking (``tracking.py``; ``--mlflow``).

A search space, from the bottom up: ``options.py`` (what may be searched), ``params.py`` (one
``[params.NAME]`` table: its pydantic model and its Optuna distribution), ``constraints.py``
(``[[constraints]]`` expressions), ``schema.py`` (a whole file checked, errors naming the key)
and ``space.py`` (:class:`SearchSpace`: define-by-run sampling, configs, presets; loading)."""

from raytrack.search.experiment import run_experiment
from raytrack.search.experiment_options import ExperimentOptions, load_options
from raytrack.search.space import (
    Condition,
    Constraint,
    Param,
    SearchSpace,
    SearchSpaceError,
    builtin_search_spaces,
    constraints_func,
    load_search_space,
    parse_constraint,
    parse_search_space,
)

__all__ = [
    "ExperimentOptions",
    "load_options",
    "run_experiment",
    "Condition",
    "Constraint",
    "Param",
    "SearchSpace",
    "SearchSpaceError",
    "builtin_search_spaces",
    "constraints_func",
    "load_search_space",
    "parse_constraint",
    "parse_search_space",
]
