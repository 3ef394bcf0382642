"""A training run directory: train, checkpoint, evaluate and export in one place.

``RUN_DIR`` holds::

    run.json         what was asked: model and training config, dataset, device
    checkpoint.pt    the latest state (resume from it), tensors and plain types only
    history.json     metrics of every epoch
    model.onnx       exports of the best weights: (N, 7) float32 in, (N, 4) out, physical units
    model.bin        the documented binary format (docs/model_bin.md)
    metadata.json    architecture, normalisation, dataset hash, metrics, weight count, version
    evaluation/      report.json and PNG plots (python -m raytrack.evaluate)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import raytrack
from raytrack.data import DatasetSplits, load
from raytrack.data.schema import INPUT_COLUMNS, TARGET_COLUMNS, UNITS, canonical_hash
from raytrack.files import write_json_atomic as write_json
from raytrack.models.mlp import ModelConfig, TrackMLP
from raytrack.models.training import (
    CHECKPOINT_NAME,
    EpochCallback,
    TrainConfig,
    TrainResult,
    train_model,
)

RUN_FILE = "run.json"


@dataclass(frozen=True)
class RunSpec:
    """What one run trains: a model config (and its preset name) on a dataset."""

    data_dir: str
    model: ModelConfig
    train: TrainConfig
    name: str = "custom"
    device: str = "cpu"

    def to_dict(self) -> dict[str, Any]:
        return {
            "data_dir": str(Path(self.data_dir).resolve()),
            "name": self.name,
            "model": self.model.to_dict(),
            "train": self.train.to_dict(),
            "device": self.device,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        return cls(
            data_dir=data["data_dir"],
            name=data["name"],
            model=ModelConfig.from_dict(data["model"]),
            train=TrainConfig.from_dict(data["train"]),
            device=data["device"],
        )


def prepare_run_dir(run_dir: Path, spec: RunSpec) -> None:
    """Create ``run_dir`` for ``spec``, or accept it when it holds the same run (resume)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    existing = run_dir / RUN_FILE
    wanted = spec.to_dict()
    if existing.exists():
        recorded = json.loads(existing.read_text())
        same = {k: recorded.get(k) for k in ("model", "train", "data_dir")} == {
            k: wanted[k] for k in ("model", "train", "data_dir")
        }
        if not same:
            raise ValueError(
                f"{run_dir}: holds a run with another model, training or dataset configuration; "
                "choose a new --out (or the same options to resume it)"
            )
    elif {p.name for p in run_dir.iterdir()} - {CHECKPOINT_NAME}:
        # (a lone checkpoint is a run restored from elsewhere, e.g. a Ray Tune trial's)
        raise ValueError(f"{run_dir}: not empty and not a raytrack run directory")
    write_json(existing, wanted)


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
    prepare_run_dir(run_dir, spec)
    splits = splits or load(spec.data_dir)
    result = train_model(
        spec.model,
        spec.train,
        (splits.train.inputs(), splits.train.targets()),
        (splits.validation.inputs(), splits.validation.targets()),
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


def write_outputs(
    out_dir: Path, spec: RunSpec, splits: DatasetSplits, result: TrainResult, evaluate: bool = True
) -> None:
    """Evaluation on the test split (``evaluation/``) and the exports of ``result``'s model."""
    model = result.model.cpu().eval()
    report = None
    if evaluate:
        from raytrack.evaluate import evaluate_model, write_report

        report = evaluate_model(model, splits.test.inputs(), splits.test.targets())
        write_report(out_dir / "evaluation", report, result.history)
    write_exports(out_dir, model, _metadata(spec, result, splits, report))


def write_exports(run_dir: Path, model: TrackMLP, metadata: dict[str, Any]) -> None:
    """model.onnx, model.bin and metadata.json of ``model`` into ``run_dir``."""
    from raytrack.export.model_bin import write_model_bin
    from raytrack.export.onnx_export import export_onnx

    export_onnx(model, run_dir / "model.onnx")
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
        "architecture": {**config.to_dict(), "layers": [7, *config.hidden, 4]},
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


def predict(model: TrackMLP, inputs: np.ndarray, batch: int = 65536) -> np.ndarray:
    """(N, 4) float64 predictions of (N, 7) physical inputs, in batches, on the CPU."""
    model = model.cpu().eval()
    with torch.no_grad():
        parts = [
            model(torch.as_tensor(inputs[i : i + batch], dtype=torch.float32))
            for i in range(0, len(inputs), batch)
        ]
    return torch.cat(parts).double().numpy() if parts else np.empty((0, 4))


def checkpoint_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINT_NAME


def json_report(run_dir: Path) -> dict[str, Any]:
    """The evaluation report a finished run wrote."""
    return json.loads((Path(run_dir) / "evaluation" / "report.json").read_text())
