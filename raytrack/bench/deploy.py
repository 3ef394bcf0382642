"""``bench deploy``: each model against the Dormand-Prince integrator at equal accuracy, in
Python and in C++, on the default field and on a map.

For each model: its mean and P95 position error on fresh tracks of its phase space through its
own field (truth: ``propagate`` 1000 times tighter than its default); the integrator's mean and
P95 at every setting of a grid (tolerance x step cap) on the same tracks; the fastest setting at
least as accurate as the model, in each language; and, on one core, the model's time per track
against that integrator's. Python: ONNX Runtime and torch, batches of 4096, against
``propagate``; C++: the trigger header's ``predict`` and ``predict_with_jacobian``, one track a
call, against ``dormand_prince.hpp``, one track a call (same tableau, step control and field as
``propagate``; how far the two agree is printed). With no RUN_DIR, a model is trained here on
each field: the default dipole and the window-frame test map (raytrack.physics.synthetic_map).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raytrack.bench import cpp
from raytrack.bench.common import exported_session, timed, torch_threads
from raytrack.bench.deploy_cases import (
    Case,
    run_case,
    trained_cases,
)
from raytrack.physics import Field, Tolerance, propagate

__all__ = [
    "BATCH",
    "STEP_CAPS_MM",
    "TOLERANCES_MM",
    "Errors",
    "Row",
    "Setting",
    "bench_deploy",
    "fastest_as_accurate",
    "per_track_seconds",
    "settings_grid",
]

#: The integrator settings searched: position tolerance per step (mm) x step cap (mm; inf: none).
TOLERANCES_MM = (3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0)
STEP_CAPS_MM = (250.0, 1000.0, math.inf)
#: The slope tolerance is the position tolerance times this (propagate's default: 3e-5 mm, 3e-8).
SLOPE_PER_MM = Tolerance().slope / Tolerance().position
#: Python's batch (ONNX Runtime and torch).
BATCH = 4096
#: A Python setting is timed again, in turns with the others, when its first time is within this
#: factor of the fastest qualifying one (one run on a shared machine is noisy); at most this many.
RETIME_WITHIN, RETIME_AT_MOST = 2.0, 5


@dataclasses.dataclass(frozen=True)
class Setting:
    """One integrator setting: position tolerance per step (mm; slopes scaled alike), step cap."""

    tolerance: float
    max_step: float

    @property
    def label(self) -> str:
        cap = "no step cap" if math.isinf(self.max_step) else f"steps <= {self.max_step:g} mm"
        return f"tol {self.tolerance:g} mm, {cap}"

    @property
    def slope_tolerance(self) -> float:
        return self.tolerance * SLOPE_PER_MM

    def propagate(self, inputs: np.ndarray, field: Field) -> np.ndarray:
        tolerance = Tolerance(self.tolerance, self.slope_tolerance)
        states, z0, z1 = inputs[:, :5], inputs[:, 5], inputs[:, 6]
        return propagate(states, z0, z1, field, tolerance=tolerance, max_step=self.max_step)


@dataclasses.dataclass(frozen=True)
class Errors:
    """Mean and P95 position error, mm (inf when a track the truth kept is missing)."""

    mean: float
    p95: float

    @classmethod
    def of(cls, predicted: np.ndarray, truth: np.ndarray) -> Errors:
        d = np.hypot(predicted[:, 0] - truth[:, 0], predicted[:, 1] - truth[:, 1])
        if not np.isfinite(d).all():
            return cls(math.inf, math.inf)
        return cls(float(d.mean()), float(np.percentile(d, 95)))

    def at_most(self, other: Errors) -> bool:
        return self.mean <= other.mean and self.p95 <= other.p95


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of the table: an engine of a model on a field, in one language."""

    field: str
    model: str
    language: str
    engine: str
    settings: str
    errors: Errors
    seconds_per_track: float
    times_rk: float  # the integrator's time per track over this engine's (same language)


def settings_grid(tolerances=TOLERANCES_MM, caps=STEP_CAPS_MM) -> list[Setting]:
    return [Setting(float(t), float(c)) for t in tolerances for c in caps]


# ----------------------------------------------------------------------------- Python
def python_settings(
    case: Case, settings: list[Setting]
) -> tuple[dict[Setting, tuple[Errors, float]], dict[Setting, np.ndarray]]:
    """Errors and seconds per track of ``propagate`` at each setting (one run each, one core),
    and the end states."""
    found, ends = {}, {}
    for setting in settings:
        start = time.perf_counter()
        ends[setting] = setting.propagate(case.inputs, case.field)
        seconds = (time.perf_counter() - start) / len(case.inputs)
        found[setting] = (Errors.of(ends[setting], case.truth), seconds)
    return found, ends


def fastest_as_accurate(
    found: dict[Setting, tuple[Errors, float]], anchor: Errors
) -> tuple[Setting, bool]:
    """The fastest setting whose mean and P95 are at most the anchor's; when none is, the most
    accurate one, and False."""
    qualifying = [s for s, (errors, _) in found.items() if errors.at_most(anchor)]
    if not qualifying:
        return min(found, key=lambda s: (found[s][0].p95, found[s][0].mean)), False
    return min(qualifying, key=lambda s: found[s][1]), True


def python_choice(
    case: Case, found: dict[Setting, tuple[Errors, float]], anchor: Errors, also: Setting
) -> tuple[Setting, bool]:
    """Python's fastest qualifying setting. One run each on a shared machine is noisy, so the
    qualifying ones within :data:`RETIME_WITHIN` of the first pick (at most
    :data:`RETIME_AT_MOST`), and ``also`` (C++'s pick, its times steadier) when it qualifies
    here, are timed again, taking turns, and the fastest of those is chosen."""
    first, qualifies = fastest_as_accurate(found, anchor)
    if not qualifies:
        return first, False
    ranked = sorted(
        (s for s, (errors, _) in found.items() if errors.at_most(anchor)),
        key=lambda s: found[s][1],
    )
    close = [s for s in ranked if found[s][1] <= RETIME_WITHIN * found[first][1]]
    close = close[:RETIME_AT_MOST]
    if also in ranked and also not in close:
        close.append(also)
    if len(close) < 2:
        return first, True
    engines = {s: functools.partial(s.propagate, case.inputs, case.field) for s in close}
    seconds = per_track_seconds(engines, len(case.inputs), rounds=2, at_least=0.05)
    return min(close, key=lambda s: seconds[s]), True


def per_track_seconds(
    engines: dict[Any, Callable[[], object]], n: int, rounds: int = 5, at_least: float = 0.1
) -> dict[Any, float]:
    """Seconds per track of each engine (a call handles all ``n`` tracks): the fastest of its
    calls, the engines taking turns ``rounds`` times with calls enough to last ``at_least`` s.

    The fastest call, not the mean: on a shared machine (this one runs at nice 10 beside other
    work) a call of a few milliseconds either has a core to itself or is slowed by a share of
    it, and the fastest is the engine's own speed, for every engine alike."""
    calls = {}
    for name, engine in engines.items():
        start = time.perf_counter()
        engine()
        calls[name] = max(1, math.ceil(at_least / max(time.perf_counter() - start, 1e-7)))
    best = dict.fromkeys(engines, math.inf)
    for _ in range(rounds):
        for name, engine in engines.items():
            for _ in range(calls[name]):
                best[name] = min(best[name], timed(engine, repeats=1))
    return {name: seconds / n for name, seconds in best.items()}


def python_rows(
    case: Case, onnx: Path, anchor: Errors, setting: Setting, rk_errors: Errors, rounds: int
) -> list[Row]:
    """ONNX Runtime (the model exported to ``onnx``) and torch, batches of :data:`BATCH`, against
    ``propagate`` at ``setting``."""
    session = exported_session(case.model, onnx)
    x32 = case.inputs.astype(np.float32)
    batches = [x32[i : i + BATCH] for i in range(0, len(x32), BATCH)]

    def run_onnx() -> np.ndarray:
        return np.concatenate([session.run(None, {"state": b})[0] for b in batches])

    def run_torch() -> np.ndarray:
        with torch.no_grad():
            return torch.cat([case.model(torch.from_numpy(b)) for b in batches]).numpy()

    engines = {
        "onnxruntime": run_onnx,
        "torch": run_torch,
        "propagate": lambda: setting.propagate(case.inputs, case.field),
    }
    seconds = per_track_seconds(engines, len(x32), rounds)
    errors = {
        "onnxruntime": Errors.of(run_onnx().astype(float), case.truth),
        "torch": anchor,
        "propagate": rk_errors,
    }
    rows = []
    for engine, label in (
        ("onnxruntime", f"ONNX Runtime, batch {BATCH}"),
        ("torch", f"torch, batch {BATCH}"),
        ("propagate", "propagate"),
    ):
        rk = seconds["propagate"] / seconds[engine]
        settings = setting.label if engine == "propagate" else ""
        rows.append(
            Row(case.field_name, case.model_name, "Python", label, settings, errors[engine],
                seconds[engine], rk)
        )  # fmt: skip
    return rows


# ----------------------------------------------------------------------------- C++
def cpp_rows(
    case: Case,
    result: cpp.CppRun,
    engine: str,
    settings: list[Setting],
    anchor: Errors,
    python_ends: dict[Setting, np.ndarray],
) -> tuple[list[Row], str, Setting]:
    """The C++ rows of a case (the integrator at its fastest setting at least as accurate as
    the model), a line on how far the C++ integrator agrees with ``propagate``, and the
    setting."""
    n = len(case.inputs)
    found = {
        s: (Errors.of(ends, case.truth), t / n)
        for s, ends, t in zip(settings, result.rk_ends, result.rk_seconds, strict=True)
    }
    chosen, qualifies = fastest_as_accurate(found, anchor)
    rk_errors, rk_seconds = found[chosen]
    agreement = agreement_line(case, settings, result.rk_ends, python_ends)
    if not qualifies:
        agreement += "; no setting is as accurate as the model: the most accurate is shown"
    names = ("predict", "predict_with_jacobian")
    if engine != "header":  # over 64 KB: model.bin through raytrack_mlp.hpp, one track a call
        names = ("Mlp::forward (model.bin)", "Mlp::forward_with_jacobian")
        agreement += (
            "; the model's constant data exceeds the header's 64 KB: C++ runs it from its "
            "model.bin with raytrack_mlp.hpp, one track a call"
        )
    rows = [
        Row(case.field_name, case.model_name, "C++", names[0], "",
            Errors.of(result.predicted, case.truth), result.predict_seconds / n,
            rk_seconds / (result.predict_seconds / n)),
        Row(case.field_name, case.model_name, "C++", names[1], "",
            Errors.of(result.predicted_with_jacobian, case.truth), result.jacobian_seconds / n,
            rk_seconds / (result.jacobian_seconds / n)),
        Row(case.field_name, case.model_name, "C++", "Dormand-Prince", chosen.label, rk_errors,
            rk_seconds, 1.0),
    ]  # fmt: skip
    return rows, agreement, chosen


def agreement_line(
    case: Case,
    settings: list[Setting],
    cpp_ends: list[np.ndarray],
    python_ends: dict[Setting, np.ndarray],
) -> str:
    """How far the C++ integrator is from ``propagate``, same tracks and settings.

    Both take the same steps, so on a smooth field they agree to rounding. On a grid at tight
    tolerances the step control works through the interpolant's kinks (cell faces, the map's
    edge), where the error estimate (a small difference of large terms) turns last-bit
    differences into different steps: the two then miss the truth by different amounts of the
    same size. So: the share of (track, setting) pairs that agree to 1e-9 mm, the largest
    difference, and how far apart their mean and P95 errors against the truth are.
    """
    same = pairs = dropped = 0
    largest, figures = (0.0, settings[0]), 0.0
    for setting, ends in zip(settings, cpp_ends, strict=True):
        reference = python_ends[setting]
        both = np.isfinite(ends[:, 0]) & np.isfinite(reference[:, 0])
        dropped += int((np.isfinite(ends[:, 0]) != np.isfinite(reference[:, 0])).sum())
        d = np.hypot(*(ends[both, :2] - reference[both, :2]).T)
        same, pairs = same + int((d <= 1e-9).sum()), pairs + d.size
        if d.size and d.max() > largest[0]:
            largest = (float(d.max()), setting)
        mine, theirs = Errors.of(ends, case.truth), Errors.of(reference, case.truth)
        for a, b in ((mine.mean, theirs.mean), (mine.p95, theirs.p95)):
            if math.isfinite(a) and math.isfinite(b):
                figures = max(figures, abs(a - b))
    return (
        f"{case.field_name}, {case.model_name}: C++ Dormand-Prince against propagate, the same "
        f"{len(case.inputs)} tracks at each of the {len(settings)} settings: end positions the "
        f"same to 1e-9 mm for {same / max(pairs, 1):.1%} of them, at most {largest[0]:.2g} mm "
        f"apart ({largest[1].label}); their mean and P95 errors differ by at most "
        f"{figures:.2g} mm; tracks dropped by one and not the other: {dropped}"
    )


# ----------------------------------------------------------------------------- the command
def bench_deploy(
    run_dirs: list[str],
    preset: str = "trigger",
    samples: int = 60_000,
    budget: float = 90.0,
    tracks: int = 4096,
    tolerances: tuple[float, ...] = TOLERANCES_MM,
    step_caps: tuple[float, ...] = STEP_CAPS_MM,
    rounds: int = 5,
) -> list[Row]:
    """Every model (of ``run_dirs``, or trained here on both fields) against the integrator at
    equal accuracy in Python and C++; prints the settings found and one table; returns its rows."""
    start = time.perf_counter()
    load = os.getloadavg()[0]
    print(f"{os.cpu_count()} CPUs, load average {load:.1f} at the start", flush=True)
    settings = settings_grid(tolerances, step_caps)
    if run_dirs:
        cases = [run_case(run_dir, tracks) for run_dir in run_dirs]
    else:
        cases = trained_cases(preset, samples, budget, tracks)
    rows: list[Row] = []
    with torch_threads(1), tempfile.TemporaryDirectory(prefix="raytrack-deploy-") as tmp:
        work = Path(tmp)
        models = [cpp.export_model(case.model, work, k) for k, case in enumerate(cases)]
        exe, compile_seconds = cpp.build(models, work)
        flags = " ".join(cpp.CXX_FLAGS)
        print(f"compiled the C++ benchmark ({flags}) in {compile_seconds:.0f} s", flush=True)
        notes = []
        for k, case in enumerate(cases):
            case_rows, note = measure_case(case, k, models[k], exe, work, settings, rounds)
            rows += case_rows
            notes.append(note)
    print()
    for note in notes:
        print(note)
    print_rows(rows, len(cases[0].inputs) if cases else 0)
    print(closing_line(time.perf_counter() - start, os.getloadavg()[0], os.cpu_count() or 1))
    return rows


def closing_line(wall_seconds: float, load: float, cpus: int) -> str:
    """The run's wall time and the load average at its end, said to be a busy machine only when
    that load is above the CPU count (the times are then shares of a core, not its speed)."""
    busy = " (above the CPU count: the machine was busy)" if load > cpus else ""
    return (
        f"wall time {wall_seconds:.0f} s; load average {load:.1f} at the end on {cpus} CPUs{busy}"
    )


def measure_case(
    case: Case,
    index: int,
    model: cpp.CppModel,
    exe: Path,
    work: Path,
    settings: list[Setting],
    rounds: int,
) -> tuple[list[Row], str]:
    """The settings search and both languages' rows of one case."""
    from raytrack.run.directory import predict

    anchor = Errors.of(predict(case.model, case.inputs), case.truth)
    found, python_ends = python_settings(case, settings)
    print_settings(case, anchor, found)
    triples = [(s.tolerance, s.slope_tolerance, s.max_step) for s in settings]
    result = cpp.run(exe, work, f"case{index}", index, case.field, case.inputs, triples, rounds)
    cpp_part, note, cpp_choice = cpp_rows(case, result, model.engine, settings, anchor, python_ends)
    chosen, _ = python_choice(case, found, anchor, also=cpp_choice)
    onnx = work / f"model{index}.onnx"
    rows = python_rows(case, onnx, anchor, chosen, found[chosen][0], rounds)
    return rows + cpp_part, note


def print_settings(case: Case, anchor: Errors, found: dict[Setting, tuple[Errors, float]]) -> None:
    """The integrator's errors at every setting, marked where they are at most the model's."""
    print(
        f"\n{case.field_name}, {case.model_name}: model (torch) mean {anchor.mean:.3g} mm, P95 "
        f"{anchor.p95:.3g} mm on {len(case.inputs)} fresh tracks; propagate at each setting "
        "(* at most as far off as the model):"
    )
    print(f"  {'setting':<32} {'mean mm':>9} {'P95 mm':>9} {'us/track':>9}")
    for setting, (errors, seconds) in found.items():
        mark = "*" if errors.at_most(anchor) else " "
        print(
            f"{mark} {setting.label:<32} {errors.mean:9.3g} {errors.p95:9.3g} {seconds * 1e6:9.2f}"
        )


def print_rows(rows: list[Row], tracks: int) -> None:
    """The table: every engine of every case, its errors, time per track and the ratio."""
    headers = ("field", "model", "lang", "engine", "integrator settings", "mean mm", "P95 mm")
    cells = [
        (r.field, r.model, r.language, r.engine, r.settings, f"{r.errors.mean:.3g}",
         f"{r.errors.p95:.3g}", f"{r.seconds_per_track * 1e6:.3g}", f"{r.times_rk:.3g}")
        for r in rows
    ]  # fmt: skip
    headers += ("us/track", "x RK")
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    print(
        f"\nbench deploy: {tracks} fresh tracks a model, one core; x RK = the integrator's time "
        "per track over the engine's, same language, measured in this run"
    )
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)).rstrip())
