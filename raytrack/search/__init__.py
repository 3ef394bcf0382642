"""Hyperparameter search: search spaces as TOML files (``search_spaces/*.toml``), Ray Tune
trials (``trial.py``), the experiment driver (``experiment.py``) and its leaderboard."""

from raytrack.search.experiment import ExperimentOptions, load_options, run_experiment
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
