"""A training run directory: what a run trains (``RunSpec``) and where its files lie.

Training, export and evaluation are tied together one layer up, in :mod:`raytrack.run.pipeline`.
``RUN_DIR`` holds::

    run.json         what was asked: model and training config, dataset, device
    checkpoint.pt    the latest state (resume from it), tensors and plain types only
    history.json     metrics of every epoch
    model.onnx       exports of the best weights: (N, 7) float32 in, (N, 4) out, physical units
    model_jacobian.onnx  the same, plus the transport Jacobian (N, 4, 5) (raytrack.models.jacobian)
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

from raytrack.files import write_json_atomic as write_json
from raytrack.models.checkpoints import CHECKPOINT_NAME
from raytrack.models.mlp import ModelConfig, TrackMLP
from raytrack.models.train_config import TrainConfig

RUN_FILE = "run.json"
#: What a run that ended writes beside run.json and its checkpoint; metadata.json comes last.
OUTPUTS = (
    "history.json",
    "evaluation/report.json",
    "model.onnx",
    "model_jacobian.onnx",
    "model.bin",
    "metadata.json",
)


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


def check_run_dir(run_dir: Path, spec: RunSpec) -> None:
    """Raise ``ValueError`` unless ``run_dir`` is absent, empty or holds this same run; reads
    only, so that a refused start leaves nothing behind."""
    existing = run_dir / RUN_FILE
    wanted = spec.to_dict()
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"{run_dir}: exists and is not a directory; choose another --out")
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
    elif run_dir.exists() and {p.name for p in run_dir.iterdir()} - {CHECKPOINT_NAME}:
        # (a lone checkpoint is a run restored from elsewhere, e.g. a Ray Tune trial's)
        raise ValueError(f"{run_dir}: not empty and not a raytrack run directory")


def prepare_run_dir(run_dir: Path, spec: RunSpec) -> None:
    """Create ``run_dir`` for ``spec``, or accept it when it holds the same run (resume)."""
    check_run_dir(run_dir, spec)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / RUN_FILE, spec.to_dict())


#: Tracks a prediction takes at once: bounds the formulation's float64 temporaries, which a
#: map's x terms make the largest per track (docs/benchmarks.md, "Training").
PREDICT_BATCH = 8192


def predict(model: TrackMLP, inputs: np.ndarray, batch: int = PREDICT_BATCH) -> np.ndarray:
    """(N, 4) float64 predictions of (N, 7) physical inputs, in batches, on the CPU."""
    model = model.cpu().eval()
    with torch.no_grad():
        parts = [
            model(torch.as_tensor(inputs[i : i + batch], dtype=torch.float32))
            for i in range(0, len(inputs), batch)
        ]
    return torch.cat(parts).double().numpy() if parts else np.empty((0, 4))


def predict_base(model: TrackMLP, inputs: np.ndarray, batch: int = PREDICT_BATCH) -> np.ndarray:
    """(N, 4) float64 end states of the model's physics base alone (no network), from the
    same float32 inputs as :func:`predict`: what the network adds is the difference."""
    model = model.cpu().eval()
    with torch.no_grad():
        parts = [
            model.formulation.base_prediction(
                torch.as_tensor(inputs[i : i + batch], dtype=torch.float32).double()
            )
            for i in range(0, len(inputs), batch)
        ]
    return torch.cat(parts).numpy() if parts else np.empty((0, 4))


def checkpoint_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINT_NAME


def run_spec(run_dir: str | Path) -> RunSpec:
    """What the run in ``run_dir`` trains: its run.json."""
    return RunSpec.from_dict(json.loads((Path(run_dir) / RUN_FILE).read_text()))


def checkpoint_summary(run_dir: str | Path) -> dict[str, Any] | None:
    """The epochs done, status, reason and best epoch's metrics of ``run_dir``'s checkpoint;
    None without a readable one."""
    path = checkpoint_path(run_dir)
    if not path.is_file():
        return None
    try:  # memory-mapped: reads the small pickled part, not the tensors
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return {k: state[k] for k in ("epoch", "status", "reason", "best")}
    except Exception:  # a damaged checkpoint is training's to report, with its own words
        return None


def finished_run(run_dir: str | Path, spec: RunSpec) -> dict[str, Any] | None:
    """The checkpoint summary of ``run_dir`` when it holds ``spec``'s run, ended (not failed),
    with every one of its OUTPUTS written: a run with nothing left to do. None otherwise.

    Raises ``ValueError`` when ``run_dir`` holds another run (see :func:`check_run_dir`)."""
    run_dir = Path(run_dir)
    check_run_dir(run_dir, spec)
    if not (run_dir / RUN_FILE).is_file() or not all((run_dir / n).is_file() for n in OUTPUTS):
        return None
    summary = checkpoint_summary(run_dir)
    if summary is None or summary["status"] in ("", "failed"):
        return None
    try:
        metadata = json.loads((run_dir / "metadata.json").read_text())
    except (OSError, ValueError):  # a damaged file is written again, as a missing one is
        return None
    ended = metadata.get("status") == summary["status"]
    return summary if ended and metadata.get("epochs_run") == summary["epoch"] else None
