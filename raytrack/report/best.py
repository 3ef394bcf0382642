"""The experiment's best model on the test split: the best trial's exported weights (``best/``)
or its latest checkpoint, its predictions and the evaluation's numbers of them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from raytrack.data import DatasetError, load
from raytrack.evaluate.bins import binned_report
from raytrack.evaluate.runs import find_run
from raytrack.models.checkpoints import load_checkpoint, model_from_checkpoint
from raytrack.report.experiment import Experiment
from raytrack.run.directory import checkpoint_path, predict, run_spec


@dataclass
class BestModel:
    """The best trial's leaderboard row, what was evaluated, and its test-split tracks."""

    row: dict[str, Any]
    source: str  # what was evaluated
    inputs: np.ndarray
    truth: np.ndarray
    predicted: np.ndarray

    @cached_property
    def report(self) -> dict[str, Any]:
        """The evaluation's numbers of the tracks (:func:`raytrack.evaluate.binned_report`,
        without the leg regions, which need the dataset's field)."""
        return binned_report(self.inputs, self.truth, self.predicted, None)


def best_model(
    experiment: Experiment, tracks: dict[str, np.ndarray] | None = None
) -> BestModel | str:
    """The best trial's model on the test split, or why there is none. ``tracks`` (inputs,
    truth, predicted) when the caller has just evaluated best/."""
    row = next((r for r in experiment.rows if r["pos_p95_mm"] is not None), None)
    if row is None:
        return "no trial has a validation P95 yet"
    best = experiment.path / "best"
    exported = best / "trial.json"
    if exported.is_file() and json.loads(exported.read_text())["trial_id"] == row["trial_id"]:
        run, source = best, f"{best} (the exported weights)"
    else:
        directory = next(t.directory for t in experiment.trials if t.trial_id == row["trial_id"])
        try:
            run = find_run(directory)
        except FileNotFoundError:
            return f"the best trial {row['trial_id']} has no checkpoint yet"
        source = f"{run} (its latest checkpoint, best epoch's weights)"
    if tracks is not None:
        return BestModel(row, source, tracks["inputs"], tracks["truth"], tracks["predicted"])
    spec = run_spec(run)
    try:
        test = load(spec.data_dir, dtype=np.float64, splits=("test",)).test
    except (DatasetError, OSError) as err:
        return f"its data set cannot be read: {err}"
    model = model_from_checkpoint(load_checkpoint(checkpoint_path(run)))
    inputs, truth = test.inputs(), test.targets()
    return BestModel(row, source, inputs, truth, predict(model, inputs))
