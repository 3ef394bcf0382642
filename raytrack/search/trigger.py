"""Which trials of a search could become a GPU trigger header (``python -m raytrack.export RUN
--header``, docs/trigger_header.md): those whose constant data fits CUDA's 64 KB of constant
memory, judged by the header export's own check on the trial's checkpoint; and the closing
summary's line on it, with how to search for a model that fits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from raytrack.export.header_data import (
    CONSTANT_MEMORY_BYTES,
    ConstantMemoryError,
    check_fits,
    weights_that_fit,
)
from raytrack.export.model_bin import BinModel
from raytrack.models.checkpoints import load_checkpoint, model_from_checkpoint


def fits_trigger_header(checkpoint: Path | None, weight_count: int) -> bool | None:
    """Whether the model of the checkpoint file ``checkpoint`` fits a trigger header; None
    without a checkpoint. A model whose float32 weights alone exceed the constant memory is
    judged without reading its checkpoint."""
    if 4 * weight_count > CONSTANT_MEMORY_BYTES:
        return False
    if checkpoint is None:
        return None
    return header_problem(bin_model(checkpoint)) is None


def bin_model(checkpoint: Path) -> BinModel:
    """The model.bin that the checkpoint file's exported weights would give."""
    return BinModel.from_torch(model_from_checkpoint(load_checkpoint(checkpoint)))


def header_problem(model: BinModel, name: str = "model") -> str | None:
    """Why ``model`` cannot become a trigger header (the export's own words), or None."""
    try:
        check_fits(model, name=name)
    except ConstantMemoryError as err:
        return str(err)
    return None


def trigger_summary(
    rows: list[dict[str, Any]], best: BinModel | None, search: str, out: Path | None
) -> str | None:
    """The closing summary's line on trigger headers: whether the best trial fits (``out``: its
    exports, best/), else the best one that does, else how to search for one (the most weights
    that fit with the formulation of ``best``, the best trial's model.bin). None when no trial
    has a model."""
    scored = [r for r in rows if r.get("pos_p95_mm") is not None]
    if not scored:
        return None
    memory = "CUDA's 64 KB of constant memory (docs/trigger_header.md)"
    if scored[0].get("fits_trigger_header"):
        where = out if out is not None else "RUN"
        return (
            f"trigger header: the best trial fits {memory}: "
            f"python -m raytrack.export {where} --header OUT.h"
        )
    fitting = next((r for r in scored if r.get("fits_trigger_header")), None)
    if fitting is not None:
        return (
            f"trigger header: the best trial does not fit {memory}; the best that does is "
            f"{fitting['name']} ({fitting['trial_id']}, rank {fitting['rank']}, val P95 "
            f"{fitting['pos_p95_mm']:.4f} mm; its checkpoints are in its trial directory)"
        )
    most = weights_that_fit(best) if best is not None else 0
    command = f"python -m raytrack.tune --search {'optuna' if search == 'presets' else search}"
    if most > 0:
        return (
            f"trigger header: no trial fits {memory}; with the best model's formulation at most "
            f"{most} weights and biases fit: `{command} --max-weights {most}` searches models "
            "that do"
        )
    return (
        f"trigger header: no trial fits {memory}, nor could any network with the best model's "
        "formulation (its field tables alone fill it); search another formulation with "
        f"`{command} --max-weights N`"
    )
