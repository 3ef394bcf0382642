"""``bench generate``: propagation throughput against a per-track scalar RK4 loop, the step
caps, and the Jacobian's cost."""

from __future__ import annotations

import math

import numpy as np
import torch

from raytrack.bench.common import (
    Figure,
    accuracy,
    sample_tracks,
    taking_turns,
    timed,
    torch_threads,
)
from raytrack.physics import DipoleField, TrackStatus, propagate
from raytrack.physics.propagate import JACOBIAN_MAX_STEP_MM, MAX_STEP_MM
from raytrack.physics.units import KAPPA


def scalar_rk4_track(
    state: np.ndarray, z0: float, z1: float, field: DipoleField, step: float = 10.0
) -> np.ndarray:
    """One track, fixed 10 mm RK4 steps, field evaluated point by point: the baseline."""
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


def bench_generate(tracks: int, baseline_tracks: int) -> list[Figure]:
    """Propagation throughput against the scalar RK4 loop, one core (and per GPU)."""
    figures = []
    with torch_threads(1):  # figures are per core
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
            f"baseline: scalar RK4, 10 mm steps, classic leg: {baseline_rate:10.1f} "
            f"tracks/s/core (agrees with propagate to {agree[:, :2].max() * 1000:.3f} um)"
        )
        figures.append(
            Figure(
                "generate", "scalar RK4, 10 mm steps, classic", f"{baseline_rate:.1f} tracks/s/core"
            )
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
            figures.append(
                Figure(
                    "generate",
                    f"propagate, {leg} legs, cpu (max dpos {dpos * 1000:.3f} um)",
                    f"{rate:.0f} tracks/s/core",
                    f"{rate / baseline_rate:.0f} x scalar RK4",
                )
            )
            if torch.cuda.is_available():
                gpu_rate = gpu_propagate_rate(states, z0, z1, field)
                print(
                    f"{leg:<10} {'cuda':<6} {gpu_rate:14.0f} {gpu_rate / baseline_rate:11.0f}"
                    "   (per GPU)"
                )
                figures.append(
                    Figure(
                        "generate",
                        f"propagate, {leg} legs, cuda",
                        f"{gpu_rate:.0f} tracks/s/GPU",
                        f"{gpu_rate / baseline_rate:.0f} x scalar RK4 (one core)",
                    )
                )
        figures += bench_step_cap(states, z0, z1, field)
        figures += bench_jacobian(states, z0, z1, field)
    return figures


def bench_jacobian(
    states: np.ndarray, z0: np.ndarray, z1: np.ndarray, field: DipoleField, rounds: int = 3
) -> list[Figure]:
    """``propagate`` with the Jacobian against without, on the same tracks (the variable legs
    of the default phase space), taking turns ``rounds`` times, best time of each; one core,
    and per GPU when there is one."""
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(
        f"\npropagate with the Jacobian against without, the same {len(states)} variable-leg "
        f"tracks, best of {rounds}:\n{'':<10} {'device':<6} {'without':>14} {'with':>14} "
        f"{'with/without':>13}"
    )
    figures = []
    for device in devices:
        without, with_jacobian = jacobian_rates(states, z0, z1, field, device, rounds)
        unit = "tracks/s/core" if device == "cpu" else "tracks/s/GPU"
        ratio = with_jacobian / without
        print(
            f"{'jacobian':<10} {device:<6} {without:14.0f} {with_jacobian:14.0f} {ratio:13.3f}"
            f"   {unit}: the Jacobian costs {without / with_jacobian:.2f} x the time"
        )
        figures.append(
            Figure(
                "generate",
                f"propagate with Jacobian, variable legs, {device}",
                f"{with_jacobian:.0f} {unit}",
                f"{ratio:.3f} x without ({without:.0f}; same tracks, same run)",
            )
        )
    return figures


def jacobian_rates(
    states: np.ndarray,
    z0: np.ndarray,
    z1: np.ndarray,
    field: DipoleField,
    device: str = "cpu",
    rounds: int = 3,
) -> tuple[float, float]:
    """Tracks/s of ``propagate`` without and with ``return_jacobian`` on the same tracks; the
    two take turns ``rounds`` times and each keeps its best (load comes in bursts)."""
    arrays: tuple = (states, z0, z1)
    if device != "cpu":
        arrays = tuple(torch.from_numpy(v).to(device) for v in arrays)

    def run(jacobian: bool) -> None:
        propagate(*arrays, field, return_jacobian=jacobian)
        if device != "cpu":
            torch.cuda.synchronize()

    if device != "cpu":  # warm-up: kernels, field tables
        run(False)
        run(True)
    without, with_jacobian = taking_turns([lambda: run(False), lambda: run(True)], rounds)
    return len(states) / without, len(states) / with_jacobian


def bench_step_cap(
    states: np.ndarray, z0: np.ndarray, z1: np.ndarray, field: DipoleField, rounds: int = 3
) -> list[Figure]:
    """Plain ``propagate`` at its default step cap against the 250 mm cap that the Jacobian
    needs, same tracks, one core."""
    default, capped = taking_turns(
        [
            lambda: propagate(states, z0, z1, field),
            lambda: propagate(states, z0, z1, field, max_step=JACOBIAN_MAX_STEP_MM),
        ],
        rounds,
    )
    ratio = capped / default
    print(
        f"\npropagate, default steps (<= {MAX_STEP_MM:g} mm) against steps <= "
        f"{JACOBIAN_MAX_STEP_MM:g} mm, the same {len(states)} variable-leg tracks, best of "
        f"{rounds}: {len(states) / default:.0f} against {len(states) / capped:.0f} "
        f"tracks/s/core, {ratio:.2f} x"
    )
    return [
        Figure(
            "generate",
            f"propagate, variable legs, steps <= {MAX_STEP_MM:g} mm (default)",
            f"{len(states) / default:.0f} tracks/s/core",
            f"{ratio:.2f} x steps <= {JACOBIAN_MAX_STEP_MM:g} mm (same tracks, same run)",
        )
    ]


def gpu_propagate_rate(
    states: np.ndarray, z0: np.ndarray, z1: np.ndarray, field: DipoleField
) -> float:
    """Tracks/s of ``propagate`` on the GPU (inputs already there, warmed up)."""
    device = torch.device("cuda")
    s, a, b = (torch.from_numpy(v).to(device) for v in (states, z0, z1))
    propagate(s, a, b, field)  # warm-up: kernels, field tables
    torch.cuda.synchronize()

    def run() -> None:
        propagate(s, a, b, field)
        torch.cuda.synchronize()

    return len(states) / timed(run)
