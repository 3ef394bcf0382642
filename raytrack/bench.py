"""python -m raytrack.bench: throughput and accuracy, as ratios against a baseline timed in the
same run (machines are shared and noisy: only a ratio measured side by side means something).

    python -m raytrack.bench generate [--tracks 200000] [--baseline-tracks 20]

``generate``: tracks/s on one CPU core for :func:`raytrack.physics.propagate` on the classic leg
(z 3000 -> 7000 mm) and on the variable legs of the default phase space, against a per-track
scalar RK4 loop with 10 mm steps (the earlier generator's method), and the ratio. The accuracy
of the run against an integration 1000 times tighter is printed beside it. Then, on the same
variable-leg tracks, plain ``propagate`` (steps <= 1000 mm) against the 250 mm step cap that the
Jacobian needs, taking turns, and ``propagate`` with the transport Jacobian (``return_jacobian=True``, what
``python -m raytrack.generate --jacobian`` runs) against without it: the two take turns, three
times, each keeps its best time, and the ratio is printed. With a CUDA device, the same
propagations on the GPU are measured too.

    python -m raytrack.bench train [--preset small] [--tracks 100000] [--epochs 2] [--device cpu]

``train``: training samples/s of a preset (its default formulation, on default-phase-space
tracks) with raytrack's fast path (features prepared once, data on the device once, shuffled by
one gather per epoch) and with a plain ``TensorDataset`` + ``DataLoader(batch_size=512,
shuffle=True)`` loop (the earlier scripts' method) on the same features and targets, same model,
same AdamW settings, and the ratio. Both at batch 512; the fast path also at its default batch.

    python -m raytrack.bench infer [--tracks 8192] [--presets NAME ...]

``infer``: tracks/s on one CPU core of each exported preset (ONNX Runtime and torch, batch 1 and
batch 4096) against ``propagate`` on the same default-phase-space tracks, and the ratio. Beside
each model: its formulation alone (``model.prepare``: the physics base and features), as a share
of the torch model's time, and the same network with ``base="line", inputs="state"`` (no physics),
as a speed ratio to the default formulation: what the physics costs.

    python -m raytrack.bench accuracy [--samples 200000] [--preset small] [--budget 120]

``accuracy``: generates a default-phase-space dataset with ``python -m raytrack.generate`` into a
temporary directory, trains the preset for ``--budget`` seconds and reports the test split's
mean and P95 position error, overall and by |dz|, beside the straight line's.

    python -m raytrack.bench all [--device cpu] [--search auto]

``all``: every benchmark above, with smaller sizes (options ``--generate-tracks``,
``--train-tracks``, ``--infer-tracks``, ``--accuracy-samples``, ...), then one table with every
figure. On a GPU (``--device cuda``) it also runs a small ``python -m raytrack.tune --search
all`` with fractional GPUs and reports its best validation figures and wall time. About 3 minutes
on 2 CPU cores; at most 10 on a GPU node.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import math
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from raytrack.cli import HelpFormatter, positive_float, positive_int
from raytrack.data.phase_space import load_phase_space
from raytrack.physics import DipoleField, Tolerance, TrackStatus, propagate
from raytrack.physics.propagate import JACOBIAN_MAX_STEP_MM, MAX_STEP_MM
from raytrack.physics.units import KAPPA

if TYPE_CHECKING:  # imported where used: `bench generate` and --help need no model code
    from torch.utils.data import TensorDataset

    from raytrack.models.mlp import ModelConfig, TrackMLP
    from raytrack.physics.field_integrals import AxisProfile

STATE_KEYS = ("x", "y", "tx", "ty", "qop")
#: Batch sizes of ``infer`` (the larger is cut to the tracks there are).
INFER_BATCHES = (1, 4096)
#: The DataLoader baseline's batch size (the earlier scripts'); the fast path is timed at it too.
BASELINE_BATCH = 512


@dataclasses.dataclass(frozen=True)
class Figure:
    """One measured figure: its benchmark, what was measured, the value, and the comparison."""

    bench: str
    what: str
    value: str
    against: str = ""


def print_figures(figures: list[Figure], title: str) -> None:
    """One aligned table of every figure."""
    width = max([len(f.what) for f in figures] + [11])
    value_width = max([len(f.value) for f in figures] + [5])
    print(f"\n{title}")
    print(f"{'benchmark':<9}  {'measurement':<{width}}  {'value':<{value_width}}  against")
    for f in figures:
        print(f"{f.bench:<9}  {f.what:<{width}}  {f.value:<{value_width}}  {f.against}".rstrip())


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run a block on ``count`` torch threads (None: unchanged), then restore the setting, so
    that ``bench all`` times training on every core after the one-core measurements."""
    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def sample_tracks(
    phase_space: str, n: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(states (N, 5), z_start, z_end) drawn from a phase space."""
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
) -> np.ndarray:
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


def taking_turns(functions: list[Callable[[], object]], rounds: int = 3) -> list[float]:
    """Best wall time of each function over ``rounds`` rounds in which each runs once in turn
    (load comes in bursts: taking turns spreads it over all of them)."""
    best = [math.inf] * len(functions)
    for _ in range(rounds):
        for k, function in enumerate(functions):
            best[k] = min(best[k], timed(function, repeats=1))
    return best


def bench_step_cap(
    states: np.ndarray, z0: np.ndarray, z1: np.ndarray, field: DipoleField, rounds: int = 3
) -> list[Figure]:
    """Plain ``propagate`` at its default step cap against the 250 mm cap that the Jacobian
    needs (and that plain propagation had too, before it got its own), same tracks, one core."""
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


def accuracy(
    states: np.ndarray,
    z0: np.ndarray,
    z1: np.ndarray,
    end: np.ndarray,
    status: np.ndarray,
    field: DipoleField,
) -> tuple[float, float]:
    """Largest position (mm) and slope deviation from an integration 1000 times tighter."""
    tight = Tolerance(Tolerance().position / 1000, Tolerance().slope / 1000)
    reference = propagate(states, z0, z1, field, tolerance=tight)
    ok = (status == TrackStatus.OK) & np.isfinite(reference[:, 0])
    delta = np.abs(end[ok] - reference[ok])
    return float(delta[:, :2].max()), float(delta[:, 2:4].max())


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


def training_data(phase_space: str, tracks: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(inputs (N, 7), end states (N, 4)) of ``tracks`` tracks of a phase space, made here.

    A few more are drawn than asked for and the ones ``propagate`` drops (about 1 in 1000) are
    left out, so that there are ``tracks`` of them (as long as fewer than 2 % are dropped).
    """
    states, z0, z1 = sample_tracks(phase_space, tracks + tracks // 50 + 10, seed=seed)
    end, status = propagate(states, z0, z1, DipoleField(), return_status=True)
    ok = status == TrackStatus.OK
    inputs = np.concatenate([states, z0[:, None], z1[:, None]], axis=1)[ok]
    return inputs[:tracks], end[ok, :4][:tracks]


def axis_of(phase_space: str) -> AxisProfile:
    """The on-axis field profile of the default field over a phase space's z range."""
    from raytrack.data.axis import profile_for

    return profile_for(DipoleField(), load_phase_space(phase_space))


def bench_train(
    preset: str,
    tracks: int,
    epochs: int,
    device: str = "cpu",
    phase_space: str = "default",
    rounds: int = 2,
) -> list[Figure]:
    """Fast-path training against the DataLoader loop, same model, features and targets."""
    from raytrack.models import get_preset
    from raytrack.models.training import TrainConfig

    inputs, targets = training_data(phase_space, tracks)
    split = int(0.9 * len(inputs))
    train, validation = (inputs[:split], targets[:split]), (inputs[split:], targets[split:])
    config = get_preset(preset)
    axis = axis_of(phase_space)
    print(
        f"{preset} {list(config.hidden)} (base {config.base}, inputs {config.inputs}), "
        f"{split} training tracks ({phase_space}), {epochs} epochs x {rounds} turns, on {device}, "
        f"{torch.get_num_threads()} torch threads"
    )
    label = f"DataLoader, batch {BASELINE_BATCH}"
    loops: dict[str, Callable[[], float]] = {
        f"fast path, batch {batch}": functools.partial(
            fast_path_rate, config, batch, epochs, train, validation, axis, device
        )
        for batch in dict.fromkeys((BASELINE_BATCH, TrainConfig().batch_size))
    }
    loops[label] = functools.partial(dataloader_rate, config, train, epochs, axis, device)
    # The loops take turns, ``rounds`` times, and each keeps its best epoch: load from other
    # processes on a shared machine comes in bursts that would otherwise hit one loop only.
    rates = dict.fromkeys(loops, 0.0)
    for _ in range(rounds):
        for what, loop in loops.items():
            rates[what] = max(rates[what], loop())
    baseline = rates[label]
    figures = []
    for what, rate in rates.items():
        print(f"{what:<24} {rate:12.0f} samples/s  {rate / baseline:6.2f} x DataLoader")
        figures.append(
            Figure(
                "train",
                f"{preset}, {what}, {device}",
                f"{rate:.0f} samples/s",
                f"{rate / baseline:.2f} x DataLoader",
            )
        )
    return figures


def fast_path_rate(
    config: ModelConfig,
    batch: int,
    epochs: int,
    train: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray],
    axis: AxisProfile | None,
    device: str,
) -> float:
    """Training samples/s of raytrack's loop (its best epoch), at ``batch``."""
    from raytrack.models.training import TrainConfig, train_model

    settings = TrainConfig(epochs=epochs, batch_size=batch, patience=epochs)
    result = train_model(config, settings, train, validation, axis=axis, device=device)
    return max(h["train_samples_per_s"] for h in result.history)


def baseline_model_and_data(
    config: ModelConfig, train: tuple[np.ndarray, np.ndarray], axis: AxisProfile | None
) -> tuple[TrackMLP, TensorDataset]:
    """The DataLoader baseline's model and TensorDataset of (features, standardised targets),
    computed as the fast path computes its own: features from the float32 inputs, float64
    arithmetic, float32 storage, standardisation fitted on the same split."""
    from torch.utils.data import TensorDataset

    from raytrack.models.mlp import Normalisation, TrackMLP

    model = TrackMLP(config, axis=axis if config.needs_field else None)
    with torch.no_grad():
        features, encoded = model.encode(
            torch.as_tensor(train[0], dtype=torch.float32), torch.as_tensor(train[1])
        )
    norm = Normalisation.fit(features, encoded)
    model.set_normalisation(norm)
    standard = (encoded - torch.as_tensor(norm.target_mean)) / torch.as_tensor(norm.target_std)
    return model, TensorDataset(features.float(), standard.float())


def dataloader_rate(
    config: ModelConfig,
    train: tuple[np.ndarray, np.ndarray],
    epochs: int,
    axis: AxisProfile | None,
    device: str = "cpu",
) -> float:
    """The earlier scripts' loop: TensorDataset + DataLoader(batch_size=512, shuffle=True),
    batches moved to the device one by one, a plain (unfused) AdamW at the fast path's settings.

    The model, its features and its standardised targets are the fast path's (see
    :func:`baseline_model_and_data`), prepared once as the fast path prepares them, so the ratio
    measures the loops alone.
    """
    from torch.utils.data import DataLoader

    from raytrack.models.training import TrainConfig

    settings = TrainConfig()
    dev = torch.device(device)
    model, dataset = baseline_model_and_data(config, train, axis)
    model.to(dev)
    loader = DataLoader(dataset, batch_size=BASELINE_BATCH, shuffle=True)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay
    )
    model.train()
    best = math.inf
    for _ in range(epochs):  # best epoch, as for the fast path
        start = time.perf_counter()
        for x, t in loader:
            x, t = x.to(dev), t.to(dev)
            loss = torch.nn.functional.mse_loss(model.standardised(x), t)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            optimizer.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return len(dataset) / best


def preset_names(presets: list[str] | None) -> list[str]:
    """The presets asked for (checked), or every preset of search_spaces/presets.toml."""
    from raytrack.models import load_presets

    known = list(load_presets())
    if not presets:
        return known
    unknown = [name for name in presets if name not in known]
    if unknown:
        raise ValueError(f"unknown preset(s) {unknown}; choose from {known}")
    return list(presets)


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


def fitted_model(
    config: ModelConfig, inputs: np.ndarray, targets: np.ndarray, axis: AxisProfile | None
) -> TrackMLP:
    """An untrained TrackMLP with its standardisation fitted on the tracks (weights do not change
    the speed), in eval mode."""
    from raytrack.models.mlp import Normalisation, TrackMLP

    model = TrackMLP(config, axis=axis if config.needs_field else None)
    with torch.no_grad():
        features, encoded = model.encode(torch.from_numpy(inputs), torch.from_numpy(targets))
    model.set_normalisation(Normalisation.fit(features, encoded))
    return model.eval()


def exported_session(model: TrackMLP, path: Path) -> Any:
    """The model exported to ONNX at ``path``, in a one-thread ONNX Runtime session."""
    from raytrack.export.onnx_export import export_onnx, onnx_session

    export_onnx(model, path)
    return onnx_session(path, intra_op_num_threads=1)


def inference_rates(
    runs: dict[Any, Callable[[np.ndarray], object]], x: np.ndarray, batch: int, rounds: int = 5
) -> dict[Any, float]:
    """Tracks/s of each of ``runs`` over batches of ``x``: about 0.1 s of calls a round, the
    runs interleaved round by round, best round of each."""
    batches = [x[i : i + batch] for i in range(0, len(x) - batch + 1, batch)] or [x[:batch]]
    calls = {
        key: max(1, int(0.1 / _one_call_seconds(run, batches[0]))) for key, run in runs.items()
    }
    best = dict.fromkeys(runs, math.inf)
    with torch.no_grad():
        for _ in range(rounds):
            for key, run in runs.items():
                start = time.perf_counter()
                for i in range(calls[key]):
                    run(batches[i % len(batches)])
                best[key] = min(best[key], time.perf_counter() - start)
    return {key: calls[key] * len(batches[0]) / best[key] for key in runs}


def _one_call_seconds(run, batch: np.ndarray) -> float:
    with torch.no_grad():
        run(batch)
        start = time.perf_counter()
        run(batch)
    return max(time.perf_counter() - start, 1e-7)


def run_module(module: str, *args: str) -> float:
    """Run ``python -m module args`` in a child process (Ray starts and stops there, not in this
    process); its output is shown only when it fails. Returns its wall time, s."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise RuntimeError(f"python -m {module} {' '.join(args)}: exit status {done.returncode}")
    return time.perf_counter() - start


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
    from raytrack.models.run import predict
    from raytrack.models.training import TrainConfig, train_model

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


def bench_all(args: argparse.Namespace) -> int:
    """Every benchmark with the ``all`` sizes; one table at the end. A benchmark that fails is
    reported in the table and the others still run (a borrowed GPU's minutes are not wasted)."""
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        print(f"error: --device {device}, but this torch sees no GPU", file=sys.stderr)
        return 1
    search = args.search == "yes" or (args.search == "auto" and device.startswith("cuda"))
    gpus = args.gpus_per_trial if device.startswith("cuda") else 0.0
    with tempfile.TemporaryDirectory(prefix="raytrack-bench-") as tmp:
        benches: dict[str, Callable[[], list[Figure]]] = {
            "generate": lambda: bench_generate(args.generate_tracks, args.baseline_tracks),
            "train": lambda: bench_train(
                args.train_preset, args.train_tracks, args.train_epochs, device
            ),
            "infer": lambda: bench_infer(args.infer_tracks, args.infer_presets),
            "accuracy": lambda: bench_accuracy(
                args.accuracy_samples,
                args.accuracy_preset,
                args.accuracy_budget,
                device,
                Path(tmp) / "accuracy",
            ),
        }
        if search:
            benches["search"] = lambda: bench_search(
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m raytrack.bench",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    command = functools.partial(commands.add_parser, formatter_class=HelpFormatter)
    generate = command("generate", help="propagation throughput against scalar RK4")
    generate.add_argument(
        "--tracks", type=positive_int, default=200_000, help="tracks per measurement"
    )
    generate.add_argument(
        "--baseline-tracks", type=positive_int, default=20, help="tracks for the slow baseline"
    )
    train = command("train", help="fast-path training against a DataLoader loop")
    train.add_argument("--preset", default="small", help="model to train")
    train.add_argument("--tracks", type=positive_int, default=100_000, help="tracks (90%% train)")
    train.add_argument("--epochs", type=positive_int, default=2, help="epochs per loop")
    train.add_argument("--device", default="cpu", help="cpu or cuda")
    infer = command("infer", help="exported models against propagate, one core")
    infer.add_argument("--tracks", type=positive_int, default=8192, help="tracks timed")
    infer.add_argument(
        "--presets", nargs="+", help="presets to time (default: every preset in presets.toml)"
    )
    accuracy = command("accuracy", help="generate, train a preset briefly, test errors by |dz|")
    accuracy.add_argument("--samples", type=positive_int, default=200_000, help="tracks generated")
    accuracy.add_argument("--preset", default="small", help="model to train")
    accuracy.add_argument("--budget", type=positive_float, default=120, help="seconds of training")
    accuracy.add_argument("--device", default="cpu", help="cpu or cuda")
    every = command("all", help="every benchmark, smaller sizes, one table of every figure")
    every.add_argument("--device", default="cpu", help="cpu or cuda: training and generation")
    every.add_argument(
        "--search",
        choices=("auto", "yes", "no"),
        default="auto",
        help="run a small tune --search all (auto: only with --device cuda)",
    )
    every.add_argument(
        "--generate-tracks", type=positive_int, default=100_000, help="generate: tracks"
    )
    every.add_argument(
        "--baseline-tracks", type=positive_int, default=20, help="generate: slow baseline"
    )
    every.add_argument("--train-preset", default="small", help="train: model")
    every.add_argument("--train-tracks", type=positive_int, default=60_000, help="train: tracks")
    every.add_argument("--train-epochs", type=positive_int, default=2, help="train: epochs")
    every.add_argument("--infer-tracks", type=positive_int, default=4096, help="infer: tracks")
    every.add_argument("--infer-presets", nargs="+", help="infer: presets (default: every preset)")
    every.add_argument(
        "--accuracy-samples", type=positive_int, default=100_000, help="accuracy: tracks generated"
    )
    every.add_argument("--accuracy-preset", default="small", help="accuracy: model")
    every.add_argument(
        "--accuracy-budget", type=positive_float, default=60, help="accuracy: training seconds"
    )
    every.add_argument(
        "--search-num-samples", type=positive_int, default=4, help="search: Optuna trials"
    )
    every.add_argument(
        "--search-samples", type=positive_int, default=200_000, help="search: dataset tracks"
    )
    every.add_argument(
        "--search-max-epochs", type=positive_int, default=5, help="search: epochs per trial"
    )
    every.add_argument(
        "--search-time-budget",
        type=positive_float,
        default=60,
        help="search: training seconds a trial at most (keeps the whole run under 10 minutes)",
    )
    every.add_argument(
        "--gpus-per-trial", type=positive_float, default=0.25, help="search: GPU share a trial"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "all":
        return bench_all(args)
    try:
        if args.command == "generate":
            bench_generate(args.tracks, args.baseline_tracks)
        elif args.command == "train":
            bench_train(args.preset, args.tracks, args.epochs, args.device)
        elif args.command == "infer":
            bench_infer(args.tracks, args.presets)
        else:
            bench_accuracy(args.samples, args.preset, args.budget, args.device)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
