"""Extrapolation metrics: position and slope errors, overall and in momentum bins.

Position error ``sqrt(dx^2 + dy^2)`` in mm, slope error ``sqrt(dtx^2 + dty^2)``, per-component
bias (mean signed error). The straight-line extrapolation is reported beside every model as the
floor any model must beat.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from raytrack.models.mlp import straight_line

#: Momentum bins of the report, GeV (the last one is open-ended).
MOMENTUM_BINS_GEV = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, float("inf"))
COMPONENTS = ("x", "y", "tx", "ty")


def position_errors(predicted, truth):
    """sqrt(dx^2 + dy^2) per track, mm (NumPy or torch)."""
    d = predicted[:, :2] - truth[:, :2]
    return (d[:, 0] ** 2 + d[:, 1] ** 2) ** 0.5


def slope_errors(predicted, truth):
    """sqrt(dtx^2 + dty^2) per track (NumPy or torch)."""
    d = predicted[:, 2:4] - truth[:, 2:4]
    return (d[:, 0] ** 2 + d[:, 1] ** 2) ** 0.5


def summarise(predicted: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """Error statistics of (N, 4) predictions against (N, 4) truth."""
    dpos = position_errors(predicted, truth)
    dslope = slope_errors(predicted, truth)
    bias = (predicted - truth).mean(axis=0)
    return {
        "tracks": int(len(truth)),
        "pos_mean_mm": float(dpos.mean()),
        "pos_median_mm": float(np.median(dpos)),
        "pos_p95_mm": float(np.percentile(dpos, 95)),
        "pos_p99_mm": float(np.percentile(dpos, 99)),
        "pos_max_mm": float(dpos.max()),
        "slope_mean": float(dslope.mean()),
        "slope_p95": float(np.percentile(dslope, 95)),
        "bias": {name: float(b) for name, b in zip(COMPONENTS, bias, strict=True)},
    }


def momentum_gev(inputs: np.ndarray) -> np.ndarray:
    return 1.0 / np.abs(inputs[:, 4]) / 1000.0


def mid_leg_position(inputs: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(N, 2) x and y (mm) of the true trajectory at the middle of the leg, z = (z_start +
    z_end) / 2: the cubic through the start state and the true end state (positions and
    slopes), ``(x0 + x1) / 2 + (tx0 - tx1) dz / 8``.

    From the start and the truth, not from a model's base: every model, and the straight line,
    is binned on the same tracks whatever its formulation, with no field needed (a map's
    datasets too). The cubic is exact for a constant curvature. Against an integration to
    mid-leg, 20,000 default-phase-space tracks through the default dipole: median 1e-4 mm, P99
    84 mm in x and 7 mm in y, worst 0.44 m: a low-momentum track bent sharply in a short
    stretch of a long leg may land in a neighbouring bin (the bins are 250 mm and wider).
    """
    dz = inputs[:, 6] - inputs[:, 5]
    return np.stack(
        [
            (inputs[:, k] + truth[:, k]) / 2 + (inputs[:, k + 2] - truth[:, k + 2]) * dz / 8
            for k in (0, 1)
        ],
        axis=1,
    )


def evaluation_report(
    inputs: np.ndarray, truth: np.ndarray, predicted: np.ndarray, base: np.ndarray | None = None
) -> dict[str, Any]:
    """The model and the straight line, overall and per momentum bin; with ``base`` (the
    model's physics base alone) that too."""
    line = straight_line(inputs)
    p = momentum_gev(inputs)
    bins = []
    for low, high in zip(MOMENTUM_BINS_GEV[:-1], MOMENTUM_BINS_GEV[1:], strict=True):
        inside = (p >= low) & (p < high)
        if not inside.any():
            continue
        bins.append(
            {
                "p_low_gev": low,
                "p_high_gev": None if np.isinf(high) else high,
                "model": summarise(predicted[inside], truth[inside]),
                "straight_line": summarise(line[inside], truth[inside]),
            }
        )
        if base is not None:
            bins[-1]["base"] = summarise(base[inside], truth[inside])
    report = {
        "model": summarise(predicted, truth),
        "straight_line": summarise(line, truth),
        "momentum_bins": bins,
    }
    if base is not None:
        report["base"] = summarise(base, truth)
    return report
