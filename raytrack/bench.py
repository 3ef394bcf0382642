"""python -m raytrack.bench: throughput as ratios against a baseline timed in the same process.

    python -m raytrack.bench generate [--tracks 200000] [--baseline-tracks 20]

``generate``: tracks/s on one CPU core for :func:`raytrack.physics.propagate` on the classic leg
(z 3000 -> 7000 mm) and on the variable legs of the default phase space, against a per-track
scalar RK4 loop with 10 mm steps (the earlier generator's method), and the ratio. The accuracy
of the run against an integration 1000 times tighter is printed beside it. With a CUDA device,
the same propagation on the GPU is measured too.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable

import numpy as np
import torch

from raytrack.data.phase_space import load_phase_space
from raytrack.physics import DipoleField, Tolerance, TrackStatus, propagate
from raytrack.physics.units import KAPPA

STATE_KEYS = ("x", "y", "tx", "ty", "qop")


def sample_tracks(
    phase_space: str, n: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sample = load_phase_space(phase_space).sample(np.random.default_rng(seed), n)
    states = np.stack([sample[k] for k in STATE_KEYS], axis=1)
    return states, sample["z_start"], sample["z_end"]


def timed(function: Callable[[], object], repeats: int = 3) -> float:
    """Best wall time of ``repeats`` calls (the machine is shared: the minimum is the signal)."""
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def scalar_rk4_track(
    state: np.ndarray, z0: float, z1: float, field: DipoleField, step: float = 10.0
):
    """One track, fixed 10 mm RK4 steps, field evaluated point by point: the earlier method."""
    b0 = field.b0 * (1.0 if field.polarity == "down" else -1.0)
    inv_s2 = 1.0 / field.sigma**2
    qop = state[4]

    def derivative(z: float, y: np.ndarray) -> np.ndarray:
        x, yy, tx, ty = y
        u = z - field.z0
        f = b0 * np.exp(-0.5 * inv_s2 * u * u)
        by = f - 0.5 * yy * yy * (inv_s2 * inv_s2 * u * u - inv_s2) * f
        bz = yy * (-inv_s2 * u * f)
        k = KAPPA * qop * np.sqrt(1.0 + tx * tx + ty * ty)
        return np.array(
            [tx, ty, k * (-(1.0 + tx * tx) * by + ty * bz), k * (-tx * ty * by - tx * bz)]
        )

    n_steps = max(1, math.ceil(abs(z1 - z0) / step))
    h = (z1 - z0) / n_steps
    y = np.array(state[:4], dtype=np.float64)
    z = z0
    for _ in range(n_steps):
        k1 = derivative(z, y)
        k2 = derivative(z + h / 2, y + h / 2 * k1)
        k3 = derivative(z + h / 2, y + h / 2 * k2)
        k4 = derivative(z + h, y + h * k3)
        y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        z += h
    return y


def bench_generate(tracks: int, baseline_tracks: int) -> None:
    torch.set_num_threads(1)  # figures are per core
    field = DipoleField()
    states, z0, z1 = sample_tracks("classic", baseline_tracks, seed=1)
    baseline_end: list[np.ndarray] = []

    def run_baseline() -> None:
        baseline_end[:] = [
            scalar_rk4_track(*track, field) for track in zip(states, z0, z1, strict=True)
        ]

    baseline_rate = baseline_tracks / timed(run_baseline, repeats=1)
    agree = np.abs(np.stack(baseline_end) - propagate(states, z0, z1, field)[:, :4])
    print(
        f"baseline: scalar RK4, 10 mm steps, classic leg: {baseline_rate:10.1f} tracks/s/core "
        f"(agrees with propagate to {agree[:, :2].max() * 1000:.3f} um)"
    )
    print(
        f"{'leg':<10} {'device':<6} {'tracks/s/core':>14} {'x baseline':>11} "
        f"{'max dpos um':>12} {'max dslope':>11} {'dropped':>8}"
    )
    for leg, phase_space in (("classic", "classic"), ("variable", "default")):
        states, z0, z1 = sample_tracks(phase_space, tracks, seed=2)
        seconds = timed(lambda s=states, a=z0, b=z1: propagate(s, a, b, field))
        end, status = propagate(states, z0, z1, field, return_status=True)
        dpos, dslope = accuracy(
            states[:2000], z0[:2000], z1[:2000], end[:2000], status[:2000], field
        )
        rate = tracks / seconds
        dropped = int((status != TrackStatus.OK).sum())
        print(
            f"{leg:<10} {'cpu':<6} {rate:14.0f} {rate / baseline_rate:11.0f} "
            f"{dpos * 1000:12.3f} {dslope:11.2e} {dropped:8d}"
        )
        if torch.cuda.is_available():
            print_gpu_rate(leg, states, z0, z1, field, baseline_rate)


def accuracy(states, z0, z1, end, status, field) -> tuple[float, float]:
    """Largest position (mm) and slope deviation from an integration 1000 times tighter."""
    tight = Tolerance(Tolerance().position / 1000, Tolerance().slope / 1000)
    reference = propagate(states, z0, z1, field, tolerance=tight)
    ok = (status == TrackStatus.OK) & np.isfinite(reference[:, 0])
    delta = np.abs(end[ok] - reference[ok])
    return float(delta[:, :2].max()), float(delta[:, 2:4].max())


def print_gpu_rate(leg, states, z0, z1, field, baseline_rate) -> None:
    device = torch.device("cuda")
    s, a, b = (torch.from_numpy(v).to(device) for v in (states, z0, z1))
    propagate(s, a, b, field)  # warm-up: kernels, field tables
    torch.cuda.synchronize()

    def run() -> None:
        propagate(s, a, b, field)
        torch.cuda.synchronize()

    rate = len(states) / timed(run)
    print(f"{leg:<10} {'cuda':<6} {rate:14.0f} {rate / baseline_rate:11.0f}   (per GPU)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m raytrack.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    generate = commands.add_parser("generate", help="propagation throughput against scalar RK4")
    generate.add_argument("--tracks", type=int, default=200_000, help="tracks per measurement")
    generate.add_argument(
        "--baseline-tracks", type=int, default=20, help="tracks for the slow baseline"
    )
    args = parser.parse_args(argv)
    if args.command == "generate":
        bench_generate(args.tracks, args.baseline_tracks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
