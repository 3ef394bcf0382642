"""The evaluation report's numbers: position errors of a model, of its physics base alone and
of the straight line,
overall and in bins of momentum, |dz|, |x| and |y| at mid-leg and where the leg lies against
the magnet, and the worst tracks by name."""

from __future__ import annotations

from typing import Any

import numpy as np

from raytrack.models.metrics import (
    evaluation_report,
    mid_leg_position,
    momentum_gev,
    position_errors,
)
from raytrack.models.mlp import TrackMLP, straight_line
from raytrack.run.directory import predict, predict_base

DZ_BINS_MM = (0.0, 100.0, 300.0, 1000.0, 3000.0, 6000.0, 10000.0, 14000.0)
#: Bins of |x| and |y| at the middle of the leg (mm; :func:`mid_leg_position`), the last one
#: open-ended: LHCb's acceptance reaches |x| ~ 3-4 m and |y| ~ 2.5-3 m at the magnet, where a
#: real field falls off towards the coils; the default phase space reaches |x| 2.5 m, |y| 1.9 m.
X_MID_BINS_MM = (0.0, 250.0, 500.0, 750.0, 1000.0, 1500.0, 2000.0, 3000.0, float("inf"))
Y_MID_BINS_MM = (0.0, 250.0, 500.0, 750.0, 1000.0, 1500.0, 2000.0, float("inf"))
#: How many of the worst tracks the report names (``worst_tracks``).
WORST_TRACKS = 10


def evaluate_model(
    model: TrackMLP,
    inputs: np.ndarray,
    truth: np.ndarray,
    magnet: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """The report dict plus the per-track arrays the plots need (under ``_tracks``).

    ``magnet``: the z extent (mm) of the magnet for the leg-region bins (see
    :func:`leg_regions`), e.g. ``splits.axis_profile().half_maximum_extent()``.
    """
    predicted = predict(model, inputs)
    base = predict_base(model, inputs)
    report = binned_report(inputs, truth, predicted, magnet, base)
    report["_tracks"] = {"inputs": inputs, "truth": truth, "predicted": predicted}
    return report


def binned_report(
    inputs: np.ndarray,
    truth: np.ndarray,
    predicted: np.ndarray,
    magnet: tuple[float, float] | None,
    base: np.ndarray | None = None,
) -> dict[str, Any]:
    """Errors of ``predicted``, of ``base`` (the model's physics base alone, when given) and of
    the straight line: overall, by momentum, by |dz|, by |x| and |y| at mid-leg and, with the
    magnet's extent, by where the leg lies; and the :data:`WORST_TRACKS` worst tracks, named."""
    report = evaluation_report(inputs, truth, predicted, base)
    errors = _Errors(inputs, truth, predicted, base)
    report["dz_bins"] = _dz_bins(inputs, errors)
    mid = mid_leg_position(inputs, truth)
    for k, name, edges in ((0, "x", X_MID_BINS_MM), (1, "y", Y_MID_BINS_MM)):
        report[f"{name}_mid_bins"] = _position_bins(np.abs(mid[:, k]), edges, f"{name}_mid", errors)
    if magnet is not None:
        report["magnet_extent_mm"] = list(magnet)
        report["region_bins"] = _region_bins(inputs, errors, magnet)
    report["worst_tracks"] = worst_tracks(inputs, truth, predicted, magnet)
    return report


class _Errors:
    """Per-track position errors of the model, the straight line and (may be None) the base."""

    def __init__(self, inputs, truth, predicted, base) -> None:
        self.model = position_errors(predicted, truth)
        self.line = position_errors(straight_line(inputs), truth)
        self.base = None if base is None else position_errors(base, truth)

    def tails(self, inside: np.ndarray) -> dict[str, Any]:
        """A bin's position errors: tracks, the model's mean, P95, P99 and worst, the straight
        line's mean and P95, and the base's mean, P95, P99 and worst when known."""
        model_err, line_err = self.model[inside], self.line[inside]
        row = {
            "tracks": int(len(model_err)),
            "pos_mean_mm": float(model_err.mean()),
            "pos_p95_mm": float(np.percentile(model_err, 95)),
            "pos_p99_mm": float(np.percentile(model_err, 99)),
            "pos_max_mm": float(model_err.max()),
            "straight_line_pos_mean_mm": float(line_err.mean()),
            "straight_line_pos_p95_mm": float(np.percentile(line_err, 95)),
        }
        if self.base is not None:
            base_err = self.base[inside]
            row |= {
                "base_pos_mean_mm": float(base_err.mean()),
                "base_pos_p95_mm": float(np.percentile(base_err, 95)),
                "base_pos_p99_mm": float(np.percentile(base_err, 99)),
                "base_pos_max_mm": float(base_err.max()),
            }
        return row


def _dz_bins(inputs: np.ndarray, errors: _Errors) -> list[dict[str, Any]]:
    dz = np.abs(inputs[:, 6] - inputs[:, 5])
    rows = []
    for low, high in zip(DZ_BINS_MM[:-1], DZ_BINS_MM[1:], strict=True):
        inside = (dz >= low) & (dz < high) if high < DZ_BINS_MM[-1] else (dz >= low)
        if inside.any():
            rows.append({"dz_low_mm": low, "dz_high_mm": high, **errors.tails(inside)})
    return rows


def _position_bins(values, edges, key, errors: _Errors) -> list[dict[str, Any]]:
    """Rows ``{key}_low_mm``, ``{key}_high_mm`` (None: open-ended) and the errors
    (:meth:`_Errors.tails`) of the tracks whose ``values`` lie in each of ``edges``' bins (the
    empty ones left out)."""
    rows = []
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        inside = (values >= low) & (values < high)
        if inside.any():
            rows.append(
                {
                    f"{key}_low_mm": low,
                    f"{key}_high_mm": None if np.isinf(high) else high,
                    **errors.tails(inside),
                }
            )
    return rows


def worst_tracks(
    inputs: np.ndarray,
    truth: np.ndarray,
    predicted: np.ndarray,
    magnet: tuple[float, float] | None = None,
    count: int = WORST_TRACKS,
) -> list[dict[str, Any]]:
    """The ``count`` tracks with the largest position error, worst first, each named by its
    start state and leg (``start``; ``row``: its index among the tracks evaluated, the test
    split in shard order or the fresh tracks of ``--independent``), its momentum, where it is
    at mid-leg, where its leg lies against the magnet, and its true and predicted end
    states."""
    dpos = position_errors(predicted, truth)
    line = position_errors(straight_line(inputs), truth)
    order = np.argsort(-dpos, kind="stable")[:count]
    mid = mid_leg_position(inputs[order], truth[order])
    region = leg_regions(inputs[order], magnet) if magnet is not None else None
    rows = []
    for j, i in enumerate(order):
        x, y, tx, ty, qop, z_start, z_end = (float(v) for v in inputs[i])
        rows.append(
            {
                "row": int(i),
                "pos_error_mm": float(dpos[i]),
                "straight_line_pos_error_mm": float(line[i]),
                "start": {
                    "x_mm": x,
                    "y_mm": y,
                    "tx": tx,
                    "ty": ty,
                    "qop_per_mev": qop,
                    "z_start_mm": z_start,
                    "z_end_mm": z_end,
                },  # fmt: skip
                "p_gev": float(momentum_gev(inputs[i : i + 1])[0]),
                "charge": int(np.sign(qop)),
                "dz_mm": z_end - z_start,
                "mid_leg_mm": {"x": float(mid[j, 0]), "y": float(mid[j, 1])},
                "region": None if region is None else REGIONS[region[j]],
                "truth": _end_state(truth[i]),
                "predicted": _end_state(predicted[i]),
            }
        )
    return rows


def _end_state(row) -> dict[str, float]:
    return {"x_mm": float(row[0]), "y_mm": float(row[1]), "tx": float(row[2]),
            "ty": float(row[3])}  # fmt: skip


#: Where a leg lies against the magnet's extent [z_in, z_out]; legs run either way.
REGIONS = ("before", "inside", "after", "entering or leaving", "across")


def leg_regions(inputs: np.ndarray, magnet: tuple[float, float]) -> np.ndarray:
    """Index into REGIONS per track: both ends before the magnet, both inside, both after, one
    end inside and one outside, or one end before and one after (the whole crossing)."""
    z_in, z_out = magnet
    low = np.minimum(inputs[:, 5], inputs[:, 6])
    high = np.maximum(inputs[:, 5], inputs[:, 6])
    region = np.full(len(inputs), 3)  # entering or leaving
    region[high <= z_in] = 0
    region[(low >= z_in) & (high <= z_out)] = 1
    region[low >= z_out] = 2
    region[(low < z_in) & (high > z_out)] = 4
    return region


def _region_bins(inputs, errors: _Errors, magnet) -> list[dict[str, Any]]:
    region = leg_regions(inputs, magnet)
    rows = []
    for k, name in enumerate(REGIONS):
        inside = region == k
        if inside.any():
            rows.append({"region": name, **errors.tails(inside)})
    return rows
