"""A run from start to end: train into a run directory, then export and evaluate its model.

This sits above ``raytrack.models`` (the model, its training loop, the run directory's spec),
``raytrack.evaluate`` and ``raytrack.export``, and ties them together for
``python -m raytrack.train``, the Ray Tune trials and a search's ``best/``. The run directory's
layout is described in :mod:`raytrack.run.directory`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

import raytrack
from raytrack.data import DatasetError, DatasetSplits, Split, load
from raytrack.data.schema import INPUT_COLUMNS, TARGET_COLUMNS, UNITS, canonical_hash
from raytrack.evaluate import evaluate_model, magnet_extent, write_report
from raytrack.export.model_bin import write_model_bin
from raytrack.export.onnx_export import export_onnx_pair
from raytrack.files import write_json_atomic as write_json
from raytrack.models.mlp import TrackMLP
from raytrack.models.train_config import EpochCallback, TrainResult
from raytrack.models.training import train_model
from raytrack.run.directory import RunSpec, check_run_dir, prepare_run_dir


def train_run(
    run_dir: str | Path,
    spec: RunSpec,
    *,
    splits: DatasetSplits | None = None,
    callback: EpochCallback | None = None,
    evaluate: bool = True,
    export: bool = True,
) -> TrainResult:
    """Train ``spec`` into ``run_dir`` (resuming from its checkpoint), then export and evaluate.

    ``splits`` may be given when the caller already holds the dataset (Ray Tune trials share
    one copy per node); otherwise it is loaded from ``spec.data_dir``.
    """
    run_dir = Path(run_dir)
    # Every check before the first write: a refused start (bad --data, a run dir of another
    # run) must leave nothing that makes the corrected command look like another run.
    check_run_dir(run_dir, spec)
    sobolev = spec.train.jacobian_weight > 0  # Jacobian-matching training needs them
    owned = splits is None
    splits = splits or load(spec.data_dir, jacobian=sobolev)
    if owned:  # the evaluation reads the test split again, exact (_exact_test_split)
        splits.test.bending = None
    if sobolev and splits.train.jacobians is None:
        raise DatasetError(
            f"{spec.data_dir}: training option jacobian_weight={spec.train.jacobian_weight} "
            "needs the dataset's Jacobians, and they were not loaded (generate with --jacobian)"
        )
    prepare_run_dir(run_dir, spec)
    result = train_model(
        spec.model,
        spec.train,
        (splits.train.inputs(), splits.train.targets()),
        (splits.validation.inputs(), splits.validation.targets()),
        axis=splits.axis_profile() if spec.model.needs_field else None,
        jacobians=splits.train.jacobians if sobolev else None,
        bending=_handed_over(splits.train) if owned else splits.train.bending,
        validation_bending=_handed_over(splits.validation) if owned else splits.validation.bending,
        device=spec.device,
        checkpoint_dir=run_dir,
        callback=callback,
    )
    write_json(run_dir / "history.json", result.history)
    if result.status == "failed":
        write_json(run_dir / "metadata.json", _metadata(spec, result, splits, None))
    elif export:
        write_outputs(run_dir, spec, splits, result, evaluate=evaluate)
    return result


def _handed_over(split: Split) -> np.ndarray | None:
    """The split's bending, which the split lets go: training reads it once, when it encodes
    its targets, and a dataset loaded for one run need not hold it for the whole training."""
    bending, split.bending = split.bending, None
    return bending


def write_outputs(
    out_dir: Path, spec: RunSpec, splits: DatasetSplits, result: TrainResult, evaluate: bool = True
) -> dict[str, Any] | None:
    """Evaluation on the test split (``evaluation/``) and the exports of ``result``'s model;
    returns the evaluation report (None without ``evaluate``)."""
    model = result.model.cpu().eval()
    report = None
    if evaluate:
        test = _exact_test_split(spec, splits)
        report = evaluate_model(model, test.inputs(), test.targets(), magnet=magnet_extent(splits))
        write_report(out_dir / "evaluation", report, result.history)
    write_exports(out_dir, model, _metadata(spec, result, splits, report))
    return report


def _exact_test_split(spec: RunSpec, splits: DatasetSplits):
    """The test split in float64 (what python -m raytrack.evaluate measures), read again from
    the dataset when it is at hand; training loaded it in float32."""
    try:
        return load(spec.data_dir, dtype=np.float64, splits=("test",)).test
    except (DatasetError, OSError):
        return splits.test


def write_exports(run_dir: Path, model: TrackMLP, metadata: dict[str, Any]) -> None:
    """model.onnx, model_jacobian.onnx, model.bin and metadata.json into ``run_dir``."""
    export_onnx_pair(model, run_dir / "model.onnx", run_dir / "model_jacobian.onnx")
    write_model_bin(model, run_dir / "model.bin")
    write_json(run_dir / "metadata.json", metadata)


def _metadata(spec: RunSpec, result: TrainResult, splits: DatasetSplits, report) -> dict[str, Any]:
    norm = result.model.normalisation()
    config = spec.model
    return {
        "raytrack_version": raytrack.__version__,
        "name": spec.name,
        "status": result.status,
        "reason": result.reason,
        "epochs_run": result.epochs_run,
        "architecture": {**config.to_dict(), "layers": [config.n_features, *config.hidden, 4]},
        "weight_count": config.weight_count,
        "macs_per_track": config.macs_per_track,
        "inputs": [{"name": c, "unit": UNITS[c]} for c in INPUT_COLUMNS],
        "outputs": [{"name": c, "unit": UNITS[c]} for c in TARGET_COLUMNS],
        "normalisation": {k: np.asarray(v).tolist() for k, v in vars(norm).items()},
        "training": spec.train.to_dict(),
        "device": spec.device,
        "dataset": {
            "dir": str(Path(spec.data_dir).resolve()),
            "dataset_id": splits.dataset_id,
            "manifest_sha256": canonical_hash(splits.manifest),
            "train_tracks": len(splits.train),
            "validation_tracks": len(splits.validation),
            "test_tracks": len(splits.test),
        },
        "best_validation": result.best,
        "test_metrics": None
        if report is None
        else {
            "model": report["model"],
            "straight_line": report["straight_line"],
        },
    }


def json_report(run_dir: Path) -> dict[str, Any]:
    """The evaluation report a finished run wrote."""
    return json.loads((Path(run_dir) / "evaluation" / "report.json").read_text())
