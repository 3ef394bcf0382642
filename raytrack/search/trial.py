"""One Ray Tune trial: build the model a config asks for, train it, report every epoch.

The trial is :func:`raytrack.run.pipeline.train_run` (the same code as ``python -m raytrack.train``)
with a callback that hands each epoch's metrics and checkpoint to Ray Tune. The dataset arrives
through Ray's object store (``tune.with_parameters``): one copy per node, read without copying.
"""

from __future__ import annotations

import logging
import math
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from raytrack.data.loader import DatasetSplits
from raytrack.models.checkpoints import CHECKPOINT_NAME
from raytrack.models.mlp import ModelConfig
from raytrack.models.presets import load_presets
from raytrack.models.train_config import VALIDATION_METRICS, TrainConfig
from raytrack.run.directory import RUN_FILE, RunSpec
from raytrack.run.pipeline import train_run
from raytrack.search.timing import TIME_METRIC, checkpoint_us_per_track

#: The metric searchers and schedulers optimise: P95 position error of the weights a trial
#: would export (its best epoch, the one of the lowest validation P95: BEST_METRIC), mm.
OBJECTIVE = "best_val_pos_p95_mm"
#: Reported instead of a metric by a trial that diverged or was not trained (sorts last).
WORST = math.inf


@dataclass(frozen=True)
class TrialSettings:
    """What every trial of an experiment shares (plain data, pickled to the workers)."""

    max_epochs: int
    time_budget: float | None
    seed: int
    device: str
    cpus: float
    space: Any = None  # raytrack.search.space.SearchSpace for Optuna trials
    max_weights: int | None = None
    data_dir: str = ""
    #: ``--objective pareto-time``: measure the model's inference time per track (see
    #: raytrack.search.timing) and report it with every result
    time_inference: bool = False


def resolve_configs(
    config: dict[str, Any], settings: TrialSettings
) -> tuple[str, ModelConfig, TrainConfig]:
    """(name, model, training) of a trial config: ``{"preset": name}`` or sampled parameters."""
    base = TrainConfig(
        epochs=settings.max_epochs,
        time_budget=settings.time_budget,
        seed=settings.seed,
        patience=max(5, settings.max_epochs // 4),
    )
    if "preset" in config:
        return config["preset"], load_presets()[config["preset"]], base
    model, train_overrides = settings.space.to_configs(config)
    return preset_name_of(model) or "optuna", model, replace(base, **train_overrides)


def preset_name_of(model: ModelConfig) -> str | None:
    """The preset whose architecture ``model`` is, if any (labels the searcher's initial points)."""
    for name, preset in load_presets().items():
        if preset == model:
            return name
    return None


def run_trial(config: dict[str, Any], data: DatasetSplits, settings: TrialSettings) -> None:
    """The Ray Tune function trainable."""
    name, model, train = resolve_configs(config, settings)
    # One INFO line per epoch ("Checkpoint successfully created at ...") would reach the
    # driver's console between the rows of the live table.
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    # The dataset is read in place from Ray's object store, read-only by design; training
    # reads it and never writes to it.
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
    quiet_sigterm_exit()
    if settings.device == "cpu":  # torch threads follow --cpus-per-trial
        torch.set_num_threads(max(1, int(settings.cpus)))
    fixed = {
        "torch_threads": torch.get_num_threads(),
        "node_id": ray.get_runtime_context().get_node_id(),  # where the trial ran
        "name": name,
        "weight_count": model.weight_count,
        "macs_per_track": model.macs_per_track,
    }
    timing = None
    if settings.time_inference:  # inf until measured: a trial that never trains sorts last
        fixed[TIME_METRIC], timing = WORST, data.validation.inputs()
    too_big = settings.max_weights is not None and model.weight_count > settings.max_weights
    if too_big:  # never trained: report once so the searcher learns the limit
        tune.report({**fixed, **_worst(), "infeasible": 1.0, "failed": 0.0, "train_done": 1.0})
        return
    run_dir = Path(tempfile.mkdtemp(prefix="raytrack-trial-"))
    _restore_checkpoint(run_dir)
    spec = RunSpec(
        data_dir=settings.data_dir, model=model, train=train, name=name, device=settings.device
    )
    try:
        train_run(run_dir, spec, splits=data, callback=_Reporter(fixed, timing), export=False)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def quiet_sigterm_exit() -> None:
    """Let the trial's worker process end without a traceback on the driver's console.

    When a trial ends, Tune stops its actor and frees its placement group; the raylet then
    sends the worker SIGTERM while it is still shutting down, and Ray's handler raises
    ``SystemExit``. Raised inside a garbage-collection callback (a ``WeakSet``'s), Python
    cannot raise it and prints it instead ("Exception ignored in: ... SystemExit: 1"), which
    Ray forwards to the driver. The process exits either way (SIGKILL follows); only that
    ``SystemExit`` goes unprinted, any other unraisable exception is reported as before.
    """
    if getattr(sys.unraisablehook, "_raytrack", False):
        return
    previous = sys.unraisablehook

    def hook(unraisable) -> None:
        if not isinstance(unraisable.exc_value, SystemExit):
            previous(unraisable)

    hook._raytrack = True  # installed once per worker process
    sys.unraisablehook = hook


def _restore_checkpoint(run_dir: Path) -> None:
    """Put the trial's last checkpoint (after a crash, a lost node or --resume) in place."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return
    with checkpoint.as_directory() as directory:
        shutil.copy(Path(directory) / CHECKPOINT_NAME, run_dir / CHECKPOINT_NAME)


def _worst() -> dict[str, float]:
    return {f"best_{k}": WORST for k in VALIDATION_METRICS} | dict.fromkeys(
        VALIDATION_METRICS, WORST
    )


class _Reporter:
    """Epoch callback: the metrics (with the best epoch's, ``best_*``) and checkpoint, to Tune.

    One result per epoch, so that Tune's files (TensorBoard's included) hold one step per epoch:
    the last epoch's carries ``train_done`` and ``train_status`` (early stopping, time budget,
    finished), which the training loop sets on it.

    ``timing`` (``--objective pareto-time``): validation inputs; the model's inference time per
    track is measured on the first epoch's checkpoint (its best weights, exported to ONNX) and
    reported with that epoch's result and every later one. The time depends on the model's
    shape, not on its weights' values, and so every result, that of a trial ASHA stops
    included, carries what the searcher needs.
    """

    def __init__(self, fixed: dict[str, Any], timing=None) -> None:
        self.fixed = fixed
        self.timing = timing

    def __call__(self, metrics: dict[str, Any], checkpoint: Path | None) -> None:
        if metrics.get("failed"):
            tune.report({**self.fixed, **metrics, **_worst(), "failed": 1.0, "train_done": 1.0})
            return
        if self.timing is not None and checkpoint is not None:
            self.fixed[TIME_METRIC] = checkpoint_us_per_track(checkpoint, self.timing)
            self.timing = None
        done = 1.0 if metrics.get("train_status") else 0.0
        result = {**self.fixed, **metrics, "failed": 0.0, "train_done": done}
        with tempfile.TemporaryDirectory() as tmp:
            # with run.json beside it, every checkpoint Tune keeps is a run directory that
            # python -m raytrack.evaluate (and a search's best/) can use like any run
            shutil.copy(checkpoint, Path(tmp) / CHECKPOINT_NAME)
            shutil.copy(checkpoint.parent / RUN_FILE, Path(tmp) / RUN_FILE)
            tune.report(result, checkpoint=tune.Checkpoint.from_directory(tmp))
