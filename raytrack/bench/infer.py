"""``bench infer``: exported models against ``propagate`` on one core."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from raytrack.bench.common import (
    Figure,
    axis_of,
    exported_session,
    fitted_model,
    inference_rates,
    preset_names,
    timed,
    torch_threads,
    training_data,
)
from raytrack.physics import DipoleField, propagate

if TYPE_CHECKING:
    from raytrack.models.mlp import ModelConfig

#: Batch sizes of ``infer`` (the larger is cut to the tracks there are).
INFER_BATCHES = (1, 4096)


def bench_infer(
    tracks: int, presets: list[str] | None = None, phase_space: str = "default"
) -> list[Figure]:
    """Each preset (and its formulation alone, and its no-physics twin) against propagate."""
    from raytrack.models import load_presets

    names = preset_names(presets)
    configs = load_presets()
    with torch_threads(1), tempfile.TemporaryDirectory() as tmp:  # figures are per core
        inputs, targets = training_data(phase_space, tracks)
        states, z0, z1 = inputs[:, :5], inputs[:, 5], inputs[:, 6]
        rk_rate = len(inputs) / timed(lambda: propagate(states, z0, z1, DipoleField()))
        print(f"propagate (Dormand-Prince, {phase_space} phase space): {rk_rate:.0f} tracks/s/core")
        figures = [
            Figure("infer", f"propagate, {phase_space} phase space", f"{rk_rate:.0f} tracks/s/core")
        ]
        print(
            f"{'model':<14} {'weights':>9} {'engine':<12} {'batch':>6} {'tracks/s':>12} "
            f"{'x RK':>8}  note"
        )
        axis = axis_of(phase_space)
        x32 = inputs.astype(np.float32)
        for name in names:
            config = configs[name]
            physics_free = dataclasses.replace(config, base="line", inputs="state")
            models = {name: config}
            if physics_free != config:
                models[f"{name}/line"] = physics_free
            engines = {}
            for label, model_config in models.items():
                model = fitted_model(model_config, inputs, targets, axis)
                session = exported_session(model, Path(tmp) / f"{label.replace('/', '-')}.onnx")
                engines[label, "onnxruntime"] = lambda b, s=session: s.run(None, {"state": b})[0]
                engines[label, "torch"] = lambda b, m=model: m(torch.from_numpy(b))
                if label == name:  # the formulation alone: physics base, features, target scale
                    engines[label, "prepare"] = lambda b, m=model: m.prepare(torch.from_numpy(b))
            for batch in sorted({min(b, len(x32)) for b in INFER_BATCHES}):
                # Measured side by side, so that the shares and ratios see the same machine.
                rates = inference_rates(engines, x32, batch)
                figures += infer_rows(name, models, rates, batch, rk_rate)
    return figures


def infer_rows(
    name: str,
    models: dict[str, ModelConfig],
    rates: dict[tuple[str, str], float],
    batch: int,
    rk_rate: float,
) -> list[Figure]:
    """Print one line per (model, engine) of a preset at one batch size; return the figures."""
    figures = []
    for (label, engine), rate in rates.items():
        config = models[label]
        if engine == "prepare":
            note = f"{rates[label, 'torch'] / rate:.0%} of {label}'s torch time"
        elif label != name:
            note = f"{rate / rates[name, engine]:.2f} x {name} (default formulation)"
        else:
            note = ""
        weights = "-" if engine == "prepare" else str(config.weight_count)
        line = (
            f"{label:<14} {weights:>9} {engine:<12} {batch:6d} {rate:12.0f} {rate / rk_rate:8.2f}"
        )
        print(f"{line}  {note}".rstrip())
        against = f"{rate / rk_rate:.2f} x propagate"
        figures.append(
            Figure(
                "infer",
                f"{label} ({config.base}, {config.inputs}) {engine}, batch {batch}",
                f"{rate:.0f} tracks/s/core",
                f"{against}; {note}" if note else against,
            )
        )
    return figures
