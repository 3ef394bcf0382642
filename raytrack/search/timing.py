"""Time against accuracy for ``--objective pareto-time``: a trial's inference time per track,
and the integrator's accuracy-against-time curve that the report draws beside the trials.

- :func:`model_us_per_track`: a trial's model exported to ONNX, run by ONNX Runtime on one
  thread (``intra_op_num_threads=1``) over batches of :data:`BATCH` validation inputs, the best
  of several rounds (``raytrack.bench.common.inference_rates``): the machine is shared, and the
  fastest round is the model's own speed.
- :func:`integrator_curve`: ``propagate`` at every setting of ``bench deploy``'s grid (position
  tolerance per step x step cap) on a sample of the experiment's validation tracks, through the
  dataset's field: mean and P95 position error against an integration 1000 times tighter than
  the default, and time per track on one thread (``bench deploy``'s ``per_track_seconds``). It
  is measured once, in the driver, and kept in the experiment directory
  (:data:`CURVE_FILE`, with the machine and the time it was measured at), so that the report
  can be written again without measuring it again.

Both take batches of :data:`BATCH` tracks (the sample repeated when the dataset has fewer), so
that a model and the integrator pay the same per-call overheads. In a local search the trials
and the driver run on the same machine; on a cluster they may not (the curve is the driver's
machine's).
"""

from __future__ import annotations

import functools
import json
import math
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from raytrack.files import write_json_atomic

#: The reported metric and leaderboard column: a trial's inference time per track, microseconds.
TIME_METRIC = "inference_us_per_track"
#: The integrator's curve in the experiment directory.
CURVE_FILE = "integrator_curve.json"
#: Tracks a call (ONNX Runtime's batch; propagate's sample), as ``bench deploy`` times them.
BATCH = 4096
#: Rounds of the model's timing (each about 0.1 s of calls; the best counts).
MODEL_ROUNDS = 5
#: Rounds of the integrator's timing: the settings take turns, each calls enough to last
#: ``CURVE_CALL_SECONDS`` a round; the fastest call counts.
CURVE_ROUNDS, CURVE_CALL_SECONDS = 3, 0.05
#: The integrator's settings: position tolerances per step (mm) x step caps (mm; inf: none);
#: None: ``bench deploy``'s grid (raytrack.bench.deploy.TOLERANCES_MM, STEP_CAPS_MM)
CURVE_TOLERANCES_MM: tuple[float, ...] | None = None
CURVE_STEP_CAPS_MM: tuple[float, ...] | None = None


def timing_batch(inputs: np.ndarray, batch: int = BATCH) -> np.ndarray:
    """``batch`` rows of ``inputs`` (repeated when there are fewer): one call's tracks."""
    return np.resize(np.asarray(inputs), (batch, np.shape(inputs)[1]))


def model_us_per_track(model, inputs: np.ndarray, rounds: int = MODEL_ROUNDS) -> float:
    """Microseconds per track of ``model`` (a TrackMLP) exported to ONNX, run by ONNX Runtime on
    one thread over batches of :data:`BATCH` of ``inputs`` (N, 7): the best of ``rounds``."""
    from raytrack.bench.common import exported_session, inference_rates

    x = timing_batch(inputs).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="raytrack-timing-") as tmp:
        session = exported_session(model.cpu().eval(), Path(tmp) / "model.onnx")
        rates = inference_rates(
            {"onnx": lambda b: session.run(None, {"state": b})}, x, BATCH, rounds=rounds
        )
    return 1e6 / rates["onnx"]


def checkpoint_us_per_track(checkpoint: Path, inputs: np.ndarray) -> float:
    """:func:`model_us_per_track` of the best weights of a trial's checkpoint file."""
    from raytrack.models.checkpoints import load_checkpoint, model_from_checkpoint

    return model_us_per_track(model_from_checkpoint(load_checkpoint(checkpoint)), inputs)


# -- the integrator's curve --------------------------------------------------------------------


def measure_curve(
    data_dir: str | Path,
    tracks: int = BATCH,
    tolerances: tuple[float, ...] | None = None,
    step_caps: tuple[float, ...] | None = None,
    rounds: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """The integrator's errors and time per track at every setting (default:
    :data:`CURVE_TOLERANCES_MM` x :data:`CURVE_STEP_CAPS_MM`) on up to ``tracks`` validation
    tracks of the dataset ``data_dir`` (a seeded sample), through its field, on one thread, the
    best of ``rounds`` (default :data:`CURVE_ROUNDS`). Returns the document :data:`CURVE_FILE`
    holds."""
    from raytrack.bench.common import TIGHT, torch_threads
    from raytrack.bench.deploy import (
        STEP_CAPS_MM,
        TOLERANCES_MM,
        Errors,
        per_track_seconds,
        settings_grid,
    )
    from raytrack.bench.deploy_cases import describe_field
    from raytrack.data import load
    from raytrack.physics import propagate

    start = time.perf_counter()
    splits = load(data_dir, dtype=np.float64, splits=("validation",))
    field = dataset_field(splits.manifest, str(splits.manifest_path))
    every = splits.validation.inputs()
    rng = np.random.default_rng(seed)
    inputs = every[np.sort(rng.choice(len(every), size=min(tracks, len(every)), replace=False))]
    tolerances = tolerances or CURVE_TOLERANCES_MM or TOLERANCES_MM
    settings = settings_grid(tolerances, step_caps or CURVE_STEP_CAPS_MM or STEP_CAPS_MM)
    rounds = rounds or CURVE_ROUNDS
    load_before = os.getloadavg()[0]
    with torch_threads(1):
        truth = propagate(inputs[:, :5], inputs[:, 5], inputs[:, 6], field, tolerance=TIGHT)
        errors = {s: Errors.of(s.propagate(inputs, field), truth) for s in settings}
        batch = timing_batch(inputs)
        engines = {s: functools.partial(s.propagate, batch, field) for s in settings}
        seconds = per_track_seconds(engines, len(batch), rounds, at_least=CURVE_CALL_SECONDS)
    return {
        "what": (
            "propagate (Dormand-Prince 5(4)) at each setting on a sample of the validation "
            "tracks: mean and P95 position error against an integration 1000 times tighter than "
            "the default, and time per track on one thread (batches of "
            f"{len(batch)} tracks, fastest call of {rounds} rounds)"
        ),
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "host": socket.gethostname(),
        "cpus": os.cpu_count(),
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "seconds": round(time.perf_counter() - start, 1),
        "dataset_id": splits.dataset_id,
        "field": describe_field(field),
        "tracks": len(inputs),
        "batch": len(batch),
        "truth_tolerance": {"position_mm": TIGHT.position, "slope": TIGHT.slope},
        "settings": [
            {
                "tolerance_mm": s.tolerance,
                "slope_tolerance": s.slope_tolerance,
                "max_step_mm": None if math.isinf(s.max_step) else s.max_step,
                "label": s.label,
                "mean_mm": _finite(errors[s].mean),
                "p95_mm": _finite(errors[s].p95),
                "us_per_track": seconds[s] * 1e6,
            }
            for s in settings
        ],
    }


def dataset_field(manifest: dict[str, Any], where: str):
    """The field the dataset was made with (as ``bench deploy`` rebuilds it)."""
    from raytrack.bench.deploy_cases import dataset_field as rebuilt

    return rebuilt(manifest, where)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def integrator_curve(
    experiment: str | Path, data_dir: str | Path, measure: bool = True, log=print
) -> dict[str, Any] | None:
    """The experiment's integrator curve: read from :data:`CURVE_FILE`, else (``measure``)
    measured now and written there; None when there is none and ``measure`` is False."""
    path = Path(experiment) / CURVE_FILE
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except ValueError:
            pass  # a damaged file is measured again
    if not measure:
        return None
    log("measuring the integrator's accuracy against time on the validation tracks (one thread)")
    curve = measure_curve(data_dir)
    write_json_atomic(path, curve)
    return curve


def curve_front(curve: dict[str, Any]) -> list[dict[str, Any]]:
    """The settings of ``curve`` that no other setting beats in both time and P95, fastest
    first: for each accuracy, the fastest integrator at least as accurate (in P95)."""
    points = [s for s in curve["settings"] if s["p95_mm"] is not None]
    front = [
        s
        for s in points
        if not any(
            o["us_per_track"] <= s["us_per_track"]
            and o["p95_mm"] <= s["p95_mm"]
            and (o["us_per_track"] < s["us_per_track"] or o["p95_mm"] < s["p95_mm"])
            for o in points
        )
    ]
    return sorted(front, key=lambda s: s["us_per_track"])


def equal_accuracy(
    curve: dict[str, Any], mean_mm: float, p95_mm: float
) -> tuple[dict[str, Any] | None, bool]:
    """The fastest setting of ``curve`` whose mean and P95 are both at most ``mean_mm`` and
    ``p95_mm`` (``bench deploy``'s rule, ``fastest_as_accurate``), and True; when none is, the
    most accurate setting, and False (None: no setting kept every track)."""
    from raytrack.bench.deploy import Errors, Setting, fastest_as_accurate

    found, entries = {}, {}
    for s in curve["settings"]:
        if s["mean_mm"] is None or s["p95_mm"] is None:  # tracks it lost: never as accurate
            continue
        cap = math.inf if s["max_step_mm"] is None else s["max_step_mm"]
        setting = Setting(s["tolerance_mm"], cap)
        found[setting] = (Errors(s["mean_mm"], s["p95_mm"]), s["us_per_track"])
        entries[setting] = s
    if not found:
        return None, False
    chosen, qualifies = fastest_as_accurate(found, Errors(mean_mm, p95_mm))
    return entries[chosen], qualifies
