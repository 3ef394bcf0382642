"""What the benchmarks share: the figures table, timing on a shared machine, tracks, models."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from raytrack.data.phase_space import PhaseSpace, load_phase_space
from raytrack.physics import DipoleField, Field, Tolerance, TrackStatus, propagate

if TYPE_CHECKING:  # imported where used: `bench generate` and --help need no model code
    from raytrack.models.mlp import ModelConfig, TrackMLP
    from raytrack.physics.axis_profile import AxisProfile

STATE_KEYS = ("x", "y", "tx", "ty", "qop")
#: The truth of accuracy figures: ``propagate`` at a tolerance 1000 times tighter than its default.
TIGHT = Tolerance(Tolerance().position / 1000, Tolerance().slope / 1000)


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
    phase_space: str | PhaseSpace, n: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(states (N, 5), z_start, z_end) drawn from a phase space (a name, a file or one read)."""
    space = phase_space if isinstance(phase_space, PhaseSpace) else load_phase_space(phase_space)
    sample = space.sample(np.random.default_rng(seed), n)
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


def taking_turns(functions: list[Callable[[], object]], rounds: int = 3) -> list[float]:
    """Best wall time of each function over ``rounds`` rounds in which each runs once in turn
    (load comes in bursts: taking turns spreads it over all of them)."""
    best = [math.inf] * len(functions)
    for _ in range(rounds):
        for k, function in enumerate(functions):
            best[k] = min(best[k], timed(function, repeats=1))
    return best


def accuracy(
    states: np.ndarray,
    z0: np.ndarray,
    z1: np.ndarray,
    end: np.ndarray,
    status: np.ndarray,
    field: Field,
) -> tuple[float, float]:
    """Largest position (mm) and slope deviation from an integration 1000 times tighter."""
    reference = propagate(states, z0, z1, field, tolerance=TIGHT)
    ok = (status == TrackStatus.OK) & np.isfinite(reference[:, 0])
    delta = np.abs(end[ok] - reference[ok])
    return float(delta[:, :2].max()), float(delta[:, 2:4].max())


def training_data(
    phase_space: str | PhaseSpace,
    tracks: int,
    seed: int = 3,
    field: Field | None = None,
    tolerance: Tolerance | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(inputs (N, 7), end states (N, 4)) of ``tracks`` tracks of a phase space, propagated here
    through ``field`` (default: the default dipole) at ``tolerance`` (default: propagate's).

    A few more are drawn than asked for and the ones ``propagate`` drops (about 1 in 1000) are
    left out, so that there are ``tracks`` of them (as long as fewer than 2 % are dropped).
    """
    states, z0, z1 = sample_tracks(phase_space, tracks + tracks // 50 + 10, seed=seed)
    field = field or DipoleField()
    tolerance = tolerance or Tolerance()
    end, status = propagate(states, z0, z1, field, tolerance=tolerance, return_status=True)
    ok = status == TrackStatus.OK
    inputs = np.concatenate([states, z0[:, None], z1[:, None]], axis=1)[ok]
    return inputs[:tracks], end[ok, :4][:tracks]


def axis_of(phase_space: str | PhaseSpace, field: Field | None = None) -> AxisProfile:
    """The on-axis field profile of ``field`` (default: the default dipole) over a phase space's
    z range."""
    from raytrack.data.manifest_field import profile_for

    space = phase_space if isinstance(phase_space, PhaseSpace) else load_phase_space(phase_space)
    return profile_for(field or DipoleField(), space)


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
