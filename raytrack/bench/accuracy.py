"""``bench accuracy``: generate a dataset, train a preset briefly, test errors by |dz|."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import numpy as np

from raytrack.bench.common import Figure, run_module


def bench_accuracy(
    samples: int,
    preset: str,
    budget: float,
    device: str = "cpu",
    workdir: str | Path | None = None,
) -> list[Figure]:
    """Generate a default-phase-space dataset, train ``preset`` for ``budget`` s, and report the
    test split's position errors, overall and by |dz|, beside the straight line's."""
    from raytrack.data import load
    from raytrack.evaluate import DZ_BINS_MM
    from raytrack.models import get_preset
    from raytrack.models.metrics import position_errors
    from raytrack.models.mlp import straight_line
    from raytrack.models.train_config import TrainConfig
    from raytrack.models.training import train_model
    from raytrack.run.directory import predict

    with contextlib.ExitStack() as stack:
        root = Path(workdir or stack.enter_context(tempfile.TemporaryDirectory()))
        data = root / f"default-{samples}"
        generate_args = ["--samples", str(samples), "--out", str(data), "--device", device]
        seconds = run_module("raytrack.generate", *generate_args)
        print(f"generated {samples} default-phase-space tracks in {seconds:.1f} s (with Ray start)")
        figures = [
            Figure(
                "accuracy",
                f"python -m raytrack.generate, {samples} tracks, {device}",
                f"{seconds:.1f} s",
                f"{samples / seconds:.0f} tracks/s with Ray's start",
            )
        ]
        splits = load(data)
        config = get_preset(preset)
        # Epochs unbounded: the budget ends the run and the cosine schedule follows it.
        settings = TrainConfig(epochs=1_000_000, time_budget=budget)
        result = train_model(
            config,
            settings,
            (splits.train.inputs(), splits.train.targets()),
            (splits.validation.inputs(), splits.validation.targets()),
            axis=splits.axis_profile(),
            device=device,
        )
        inputs = splits.test.inputs().astype(np.float64)
        truth = splits.test.targets().astype(np.float64)
    model_err = position_errors(predict(result.model, inputs), truth)
    line_err = position_errors(straight_line(inputs), truth)
    print(
        f"{preset} ({config.base}, {config.inputs}), {len(splits.train)} training tracks, "
        f"{budget:g} s on {device}: {result.epochs_run} epochs, {result.status}"
    )
    figures.append(
        Figure(
            "accuracy",
            f"{preset}: {len(splits.train)} tracks, {budget:g} s, {device}",
            f"{result.epochs_run} epochs",
            result.status,
        )
    )
    dz = np.abs(inputs[:, 6] - inputs[:, 5])
    bins = [("all legs", np.ones(len(dz), dtype=bool))]
    for low, high in zip(DZ_BINS_MM[:-1], DZ_BINS_MM[1:], strict=True):
        inside = (dz >= low) & ((dz < high) | (high == DZ_BINS_MM[-1]))
        if inside.any():
            bins.append((f"|dz| {low:g}-{high:g} mm", inside))
    print(
        f"{'test tracks':<22} {'count':>7} {'mean mm':>9} {'P95 mm':>9} "
        f"{'line mean':>10} {'line P95':>9}"
    )
    for label, inside in bins:
        m, line = model_err[inside], line_err[inside]
        mean, p95 = float(m.mean()), float(np.percentile(m, 95))
        line_mean, line_p95 = float(line.mean()), float(np.percentile(line, 95))
        print(
            f"{label:<22} {int(inside.sum()):7d} {mean:9.3g} {p95:9.3g} "
            f"{line_mean:10.3g} {line_p95:9.3g}"
        )
        # (errors span 1e-4 to 1e2 mm from the shortest legs to the longest: 3 significant
        # figures, not a fixed number of decimals)
        figures.append(
            Figure(
                "accuracy",
                f"{preset}, test, {label} ({int(inside.sum())} tracks)",
                f"mean {mean:.3g} mm, P95 {p95:.3g} mm",
                f"line: mean {line_mean:.3g} mm, P95 {line_p95:.3g} mm "
                f"(model {line_mean / max(mean, 1e-12):.0f} x, "
                f"{line_p95 / max(p95, 1e-12):.0f} x better)",
            )
        )
    return figures
