"""``bench all``: every benchmark with smaller sizes, then one table of every figure."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

# Modules, not their functions: each benchmark is looked up when it runs (tests replace them).
from raytrack.bench import accuracy, generate, infer, search, train
from raytrack.bench.common import Figure, print_figures


def bench_all(args: argparse.Namespace) -> int:
    """Every benchmark with the ``all`` sizes; one table at the end. A benchmark that fails is
    reported in the table and the others still run (a borrowed GPU's minutes are not wasted)."""
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        print(f"error: --device {device}, but this torch sees no GPU", file=sys.stderr)
        return 1
    with_search = args.search == "yes" or (args.search == "auto" and device.startswith("cuda"))
    gpus = args.gpus_per_trial if device.startswith("cuda") else 0.0
    with tempfile.TemporaryDirectory(prefix="raytrack-bench-") as tmp:
        benches: dict[str, Callable[[], list[Figure]]] = {
            "generate": lambda: generate.bench_generate(args.generate_tracks, args.baseline_tracks),
            "train": lambda: train.bench_train(
                args.train_preset, args.train_tracks, args.train_epochs, device
            ),
            "infer": lambda: infer.bench_infer(args.infer_tracks, args.infer_presets),
            "accuracy": lambda: accuracy.bench_accuracy(
                args.accuracy_samples,
                args.accuracy_preset,
                args.accuracy_budget,
                device,
                Path(tmp) / "accuracy",
            ),
        }
        if with_search:
            benches["search"] = lambda: search.bench_search(
                args.search_num_samples,
                args.search_samples,
                args.search_max_epochs,
                gpus,
                Path(tmp) / "search",
                args.search_time_budget,
            )
        figures, walls, failed = [], [], []
        start_all = time.perf_counter()
        for name, bench in benches.items():
            print(f"\n== bench {name} ==", flush=True)
            start = time.perf_counter()
            try:
                figures += bench()
            except Exception as err:  # noqa: BLE001 - reported, and the other benchmarks run
                traceback.print_exc()
                failed.append(name)
                figures.append(Figure(name, "FAILED", type(err).__name__, str(err)[:120]))
            walls.append(Figure("wall", name, f"{time.perf_counter() - start:.0f} s"))
        walls.append(Figure("wall", "total", f"{time.perf_counter() - start_all:.0f} s"))
    where = torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"
    print_figures(
        figures + walls,
        f"raytrack bench all: device {device} ({where}), {torch.get_num_threads()} torch threads",
    )
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0
