"""``bench all --search``: a small ``python -m raytrack.tune --search all``."""

from __future__ import annotations

import contextlib
import json
import tempfile
from pathlib import Path

from raytrack.bench.common import Figure, run_module


def bench_search(
    num_samples: int,
    samples: int,
    max_epochs: int,
    gpus_per_trial: float,
    workdir: str | Path | None = None,
    time_budget: float | None = None,
) -> list[Figure]:
    """A small ``python -m raytrack.tune --search all`` (the presets, then Optuna trials) with
    ``gpus_per_trial`` GPUs a trial: its best validation figures and wall time."""
    with contextlib.ExitStack() as stack:
        storage = Path(workdir or stack.enter_context(tempfile.TemporaryDirectory()))
        args = [
            "--search", "all", "--num-samples", str(num_samples), "--samples", str(samples),
            "--max-epochs", str(max_epochs), "--gpus-per-trial", str(gpus_per_trial),
            "--storage", str(storage), "--name", "bench-search",
        ]  # fmt: skip
        if time_budget is not None:
            args += ["--time-budget", str(time_budget)]
        seconds = run_module("raytrack.tune", *args)
        rows = json.loads((storage / "bench-search" / "leaderboard.json").read_text())
    scored = [r for r in rows if r.get("pos_p95_mm") is not None]
    print(f"tune --search all: {len(rows)} trials, {len(scored)} scored, {seconds:.0f} s")
    figures = [
        Figure(
            "search",
            f"tune --search all: {len(rows)} trials, {samples} tracks, {max_epochs} epochs, "
            f"{gpus_per_trial:g} GPU a trial",
            f"{seconds:.0f} s wall",
            f"{len(scored)} trials scored",
        )
    ]
    if scored:
        best = min(scored, key=lambda r: r["pos_p95_mm"])
        print(
            f"best: {best['name']} ({best['weight_count']} weights): validation mean "
            f"{best['pos_mean_mm']:.3g} mm, P95 {best['pos_p95_mm']:.3g} mm"
        )
        figures.append(
            Figure(
                "search",
                f"best: {best['name']} ({best['weight_count']} weights, {best['epochs']} epochs)",
                f"mean {best['pos_mean_mm']:.3g} mm, P95 {best['pos_p95_mm']:.3g} mm",
                f"validation; slopes: mean {best['slope_mean']:.3g}, P95 {best['slope_p95']:.3g}",
            )
        )
    return figures
