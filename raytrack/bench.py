"""python -m raytrack.bench: throughput as ratios against a baseline timed in the same process.

    python -m raytrack.bench generate [--tracks 200000] [--baseline-tracks 20]

``generate``: tracks/s on one CPU core for :func:`raytrack.physics.propagate` on the classic leg
(z 3000 -> 7000 mm) and on the variable legs of the default phase space, against a per-track
scalar RK4 loop with 10 mm steps (the earlier generator's method), and the ratio. The accuracy
of the run against an integration 1000 times tighter is printed beside it. With a CUDA device,
the same propagation on the GPU is measured too.

    python -m raytrack.bench train [--preset small] [--tracks 100000] [--epochs 2]

``train``: training samples/s of a preset with raytrack's fast path (data on the device once,
shuffled by one gather per epoch, batches are slices) and with a plain ``TensorDataset`` +
``DataLoader(batch_size=512, shuffle=True)`` loop (the earlier scripts' method) on the same
tracks, same model and optimiser, and the ratio. Both at batch 512; the fast path also at its
default batch size.

    python -m raytrack.bench infer [--tracks 8192]

``infer``: tracks/s on one CPU core of each exported preset (ONNX Runtime and torch, batch 1 and
batch 4096) against ``propagate`` on the same tracks, and the ratio.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
import time
from collections.abc import Callable

import numpy as np
import torch

from raytrack.cli import HelpFormatter
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


def training_data(tracks: int) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets) of ``tracks`` classic-leg tracks, made in this process."""
    states, z0, z1 = sample_tracks("classic", tracks, seed=3)
    end, status = propagate(states, z0, z1, DipoleField(), return_status=True)
    ok = status == TrackStatus.OK
    inputs = np.concatenate([states, z0[:, None], z1[:, None]], axis=1)[ok]
    return inputs, end[ok, :4]


def bench_train(preset: str, tracks: int, epochs: int) -> None:
    from raytrack.models import get_preset
    from raytrack.models.training import TrainConfig, train_model

    inputs, targets = training_data(tracks)
    split = int(0.9 * len(inputs))
    train, validation = (inputs[:split], targets[:split]), (inputs[split:], targets[split:])
    config = get_preset(preset)
    print(
        f"{preset} {list(config.hidden)}, {split} training tracks, {epochs} epochs, "
        f"{torch.get_num_threads()} torch threads"
    )
    rates = {}
    for batch in (512, TrainConfig().batch_size):
        settings = TrainConfig(epochs=epochs, batch_size=batch, patience=epochs)
        result = train_model(config, settings, train, validation)
        rates[f"fast path, batch {batch}"] = max(h["train_samples_per_s"] for h in result.history)
    rates["DataLoader, batch 512"] = dataloader_rate(config, train, epochs)
    baseline = rates["DataLoader, batch 512"]
    for label, rate in rates.items():
        print(f"{label:<24} {rate:12.0f} samples/s  {rate / baseline:6.2f} x DataLoader")


def dataloader_rate(config, train: tuple[np.ndarray, np.ndarray], epochs: int) -> float:
    """The earlier scripts' loop: TensorDataset + DataLoader(batch_size=512, shuffle=True)."""
    from torch.utils.data import DataLoader, TensorDataset

    from raytrack.models.mlp import Normalisation, TrackMLP, encode_targets

    norm = Normalisation.fit(train[0], train[1], config.target)
    model = TrackMLP(config, norm)
    standard = (encode_targets(*train, config.target) - norm.target_mean) / norm.target_std
    dataset = TensorDataset(
        torch.as_tensor(train[0], dtype=torch.float32),
        torch.as_tensor(standard, dtype=torch.float32),
    )
    loader = DataLoader(dataset, batch_size=512, shuffle=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-5)
    best = math.inf
    for _ in range(epochs):  # best epoch, as for the fast path
        start = time.perf_counter()
        for x, t in loader:
            loss = torch.nn.functional.mse_loss(model.standardised(x), t)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
        best = min(best, time.perf_counter() - start)
    return len(dataset) / best


def bench_infer(tracks: int, presets: list[str]) -> None:
    import tempfile

    from raytrack.export.onnx_export import export_onnx, onnx_session
    from raytrack.models import load_presets
    from raytrack.models.mlp import Normalisation, TrackMLP

    torch.set_num_threads(1)  # figures are per core
    inputs, targets = training_data(tracks)
    states, z0, z1 = inputs[:, :5], inputs[:, 5], inputs[:, 6]
    rk_rate = len(inputs) / timed(lambda: propagate(states, z0, z1, DipoleField()))
    print(f"propagate (Dormand-Prince, classic leg): {rk_rate:12.0f} tracks/s/core")
    print(f"{'model':<8} {'weights':>9} {'engine':<12} {'batch':>6} {'tracks/s':>12} {'x RK':>8}")
    configs = load_presets()
    x32 = inputs.astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        for name in presets:
            model = TrackMLP(
                configs[name], Normalisation.fit(inputs, targets, configs[name].target)
            )
            model.eval()
            path = f"{tmp}/{name}.onnx"
            export_onnx(model, path)
            session = onnx_session(path, intra_op_num_threads=1)
            engines = {
                "onnxruntime": lambda b, s=session: s.run(None, {"state": b})[0],
                "torch": lambda b, m=model: m(torch.from_numpy(b)),
            }
            for engine, run in engines.items():
                for batch in (1, 4096):
                    rate = inference_rate(run, x32, batch)
                    print(
                        f"{name:<8} {configs[name].weight_count:9d} {engine:<12} {batch:6d} "
                        f"{rate:12.0f} {rate / rk_rate:8.2f}"
                    )


def inference_rate(run: Callable[[np.ndarray], object], x: np.ndarray, batch: int) -> float:
    """Tracks/s of ``run`` over batches of ``x``; at least 0.3 s of calls, best of three."""
    batches = [x[i : i + batch] for i in range(0, len(x) - batch + 1, batch)] or [x[:batch]]
    calls = max(1, int(0.1 / _one_call_seconds(run, batches[0])))
    with torch.no_grad():
        seconds = timed(lambda: [run(batches[i % len(batches)]) for i in range(calls)])
    return calls * len(batches[0]) / seconds


def _one_call_seconds(run, batch: np.ndarray) -> float:
    with torch.no_grad():
        run(batch)
        start = time.perf_counter()
        run(batch)
    return max(time.perf_counter() - start, 1e-7)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m raytrack.bench",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    command = functools.partial(commands.add_parser, formatter_class=HelpFormatter)
    generate = command("generate", help="propagation throughput against scalar RK4")
    generate.add_argument("--tracks", type=int, default=200_000, help="tracks per measurement")
    generate.add_argument(
        "--baseline-tracks", type=int, default=20, help="tracks for the slow baseline"
    )
    train = command("train", help="fast-path training against a DataLoader loop")
    train.add_argument("--preset", default="small", help="model to train")
    train.add_argument("--tracks", type=int, default=100_000, help="tracks (90%% train)")
    train.add_argument("--epochs", type=int, default=2, help="epochs per loop")
    infer = command("infer", help="exported models against propagate, one core")
    infer.add_argument("--tracks", type=int, default=8192, help="tracks timed")
    presets = ["tiny", "small", "large", "xlarge", "deep", "ultra", "wide"]
    infer.add_argument(
        "--presets",
        nargs="+",
        default=presets,
        help=f"presets to time (default: {' '.join(presets)})",
    )
    args = parser.parse_args(argv)
    if args.command == "generate":
        bench_generate(args.tracks, args.baseline_tracks)
    elif args.command == "train":
        bench_train(args.preset, args.tracks, args.epochs)
    else:
        bench_infer(args.tracks, args.presets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
