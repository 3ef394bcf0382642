"""The searches the report's tests read: one small Optuna search, and one with --objective
pareto-time, each run once for the whole package on the session's Ray and classic dataset."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from raytrack.search import timing
from raytrack.search.experiment import run_experiment
from raytrack.search.experiment_options import ExperimentOptions

from ..evaluate.axes import close_figures  # noqa: F401  (a fixture: every test closes its figures)


def quiet(_message: str) -> None:
    pass


def search(tmp: Path, data: Path, **changes) -> tuple[ExperimentOptions, list[dict]]:
    settings = dict(search="presets", data_dir=str(data), storage=str(tmp), name="exp",
                    max_epochs=2, grace_epochs=1)  # fmt: skip
    options = ExperimentOptions(**{**settings, **changes})
    return options, run_experiment(options, log=quiet)


SMALL_SPACE = """
name = "small"
# The straight line on the 7 inputs: what is tested here is the search, and this formulation
# trains and exports fastest (no field tables in the graph).
[params.base]
type = "fixed"
value = "line"
[params.inputs]
type = "fixed"
value = "state"
[params.depth]
type = "int"
low = 2
high = 3
[params.width]
type = "int"
per_layer = true
low = 8
high = 48
[params.activation]
type = "categorical"
choices = ["relu", "silu"]
[params.lr]
type = "float"
low = 1e-3
high = 3e-3
log = true
"""


@pytest.fixture(scope="package")
def optuna_search(ray_cluster, classic_dataset, tmp_path_factory):
    """``python -m raytrack.tune --search optuna --num-samples 4 --max-epochs 3`` (ASHA), in a
    space of small models that train in a blink (3 epochs: more than the checkpoints kept)."""
    tmp = tmp_path_factory.mktemp("optuna")
    space = tmp / "small.toml"
    space.write_text(SMALL_SPACE)
    return search(
        tmp, classic_dataset, search="optuna", num_samples=4, space=str(space), max_epochs=3
    )


#: The integrator's curve of the search below: 6 of bench deploy's 33 settings, one round
CURVE_GRID = {"CURVE_TOLERANCES_MM": (0.01, 0.3, 3.0), "CURVE_STEP_CAPS_MM": (1000.0, math.inf),
              "CURVE_ROUNDS": 1}  # fmt: skip


@pytest.fixture(scope="package")
def pareto_time_search(ray_cluster, classic_dataset, tmp_path_factory):
    """``python -m raytrack.tune --search optuna --num-samples 3 --max-epochs 2 --objective
    pareto-time`` in the space of small models above; the integrator's curve on 6 settings
    (:data:`CURVE_GRID`). (Not the search above: a multi-objective study keeps no epochs for
    the dashboard, which a test there checks.)"""
    tmp = tmp_path_factory.mktemp("pareto-time")
    space = tmp / "small.toml"
    space.write_text(SMALL_SPACE)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in CURVE_GRID.items():
            patch.setattr(timing, name, value)
        return search(tmp, classic_dataset, search="optuna", num_samples=3, space=str(space),
                      objective="pareto-time")  # fmt: skip
