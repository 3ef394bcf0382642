"""A training run's checkpoint: written atomically after every epoch, read back to resume, to
evaluate or to export.

Checkpoints hold tensors and plain Python types only (``torch.load(weights_only=True)``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from raytrack.files import replacing
from raytrack.models.mlp import ModelConfig, TrackMLP
from raytrack.models.train_config import TrainResult

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = "raytrack-checkpoint-2"  # 2: the formulation (field tables) in the model


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write atomically: a run killed while saving keeps its previous checkpoint."""
    with replacing(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path, device: str = "cpu") -> dict[str, Any]:
    return torch.load(Path(path), map_location=device, weights_only=True)


def result_from_checkpoint(state: dict[str, Any]) -> TrainResult:
    """The result a checkpoint records, with its best weights loaded."""
    return TrainResult(
        status=state["status"] or "unfinished",
        model=model_from_checkpoint(state),
        history=state["history"],
        best=state["best"],
        reason=state["reason"],
        epochs_run=state["epoch"],
    )


def check_checkpoint_format(state: dict[str, Any]) -> None:
    """Refuse a checkpoint this raytrack cannot read: one of an older format (the model had no
    formulation before format 2) or something else altogether."""
    found = state.get("format")
    if found == CHECKPOINT_FORMAT:
        return
    if isinstance(found, str) and found.startswith("raytrack-checkpoint-"):
        raise ValueError(
            f"checkpoint format {found!r} is not {CHECKPOINT_FORMAT!r}: it was written by an "
            "older raytrack; train the run again"
        )
    raise ValueError(f"not a raytrack checkpoint (format {found!r})")


def model_from_checkpoint(state: dict[str, Any], best: bool = True) -> TrackMLP:
    """The model stored in a checkpoint (its best weights by default), on the CPU, eval mode."""
    check_checkpoint_format(state)
    config = ModelConfig.from_dict(state["model_config"])
    weights = state["best_state"] if best else state["model_state"]
    return TrackMLP.from_state(config, {k: v.cpu() for k, v in weights.items()}).eval()
