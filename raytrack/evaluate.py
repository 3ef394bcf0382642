"""python -m raytrack.evaluate RUN_DIR [--data DIR]: the held-out report of a trained run.

RUN_DIR: a run of ``python -m raytrack.train``, a search's ``best/`` (``runs/NAME/best``), or one
of its Ray Tune trial directories (``runs/NAME/run_trial_...``, evaluated at its last checkpoint).
Writes ``RUN_DIR/evaluation/report.json`` (position and slope errors of the model and of the
straight line, mean, P95, P99 and worst, overall and in bins of momentum, |dz|, |x| and |y| at
mid-leg and where the leg lies; the worst tracks by name) and PNG plots: error histograms, error
against momentum, |dz|, mid-leg |x| and |y|, learning curves. When the dataset was generated with
``--jacobian``, also the model's transport Jacobian against the integrator's (the ``jacobian``
key, ``jacobian.png``; see :func:`jacobian_report`). With ``--data`` another dataset than the
run's, all of it goes to ``RUN_DIR/evaluation-<its directory name>/`` instead: the evaluation on
the run's own test split stays.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raytrack.cli import HelpFormatter, positive_int
from raytrack.data import DatasetError, load
from raytrack.data.independent import TIGHTER, independent_tracks
from raytrack.data.schema import JACOBIAN_INPUTS, JACOBIAN_OUTPUTS, has_jacobian, read_manifest
from raytrack.export.onnx_export import onnx_predict
from raytrack.files import write_json_atomic
from raytrack.models.jacobian import TYPICAL_SIGMA, TYPICAL_SIGMA_QOP_RELATIVE, typical_sigma
from raytrack.models.metrics import (
    MOMENTUM_BINS_GEV,
    evaluation_report,
    mid_leg_position,
    momentum_gev,
    position_errors,
    slope_errors,
)
from raytrack.models.mlp import TrackMLP, straight_line
from raytrack.models.training import load_checkpoint, model_from_checkpoint
from raytrack.run.directory import RUN_FILE, RunSpec, checkpoint_path, predict

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
    report = binned_report(inputs, truth, predicted, magnet)
    report["_tracks"] = {"inputs": inputs, "truth": truth, "predicted": predicted}
    return report


def binned_report(
    inputs: np.ndarray,
    truth: np.ndarray,
    predicted: np.ndarray,
    magnet: tuple[float, float] | None,
) -> dict[str, Any]:
    """Errors of ``predicted`` and of the straight line: overall, by momentum, by |dz|, by
    |x| and |y| at mid-leg and, with the magnet's extent, by where the leg lies; and the
    :data:`WORST_TRACKS` worst tracks, named."""
    report = evaluation_report(inputs, truth, predicted)
    report["dz_bins"] = _dz_bins(inputs, truth, predicted)
    mid = mid_leg_position(inputs, truth)
    for k, name, edges in ((0, "x", X_MID_BINS_MM), (1, "y", Y_MID_BINS_MM)):
        report[f"{name}_mid_bins"] = _position_bins(
            np.abs(mid[:, k]), edges, f"{name}_mid", inputs, truth, predicted
        )
    if magnet is not None:
        report["magnet_extent_mm"] = list(magnet)
        report["region_bins"] = _region_bins(inputs, truth, predicted, magnet)
    report["worst_tracks"] = worst_tracks(inputs, truth, predicted, magnet)
    return report


def _tails(model_err: np.ndarray, line_err: np.ndarray) -> dict[str, Any]:
    """A bin's position errors: tracks, the model's mean, P95, P99 and worst, the straight
    line's mean and P95."""
    return {
        "tracks": int(len(model_err)),
        "pos_mean_mm": float(model_err.mean()),
        "pos_p95_mm": float(np.percentile(model_err, 95)),
        "pos_p99_mm": float(np.percentile(model_err, 99)),
        "pos_max_mm": float(model_err.max()),
        "straight_line_pos_mean_mm": float(line_err.mean()),
        "straight_line_pos_p95_mm": float(np.percentile(line_err, 95)),
    }


def _dz_bins(inputs: np.ndarray, truth: np.ndarray, predicted: np.ndarray) -> list[dict[str, Any]]:
    dz = np.abs(inputs[:, 6] - inputs[:, 5])
    dpos = position_errors(predicted, truth)
    line = position_errors(straight_line(inputs), truth)
    rows = []
    for low, high in zip(DZ_BINS_MM[:-1], DZ_BINS_MM[1:], strict=True):
        inside = (dz >= low) & (dz < high) if high < DZ_BINS_MM[-1] else (dz >= low)
        if inside.any():
            rows.append({"dz_low_mm": low, "dz_high_mm": high,
                         **_tails(dpos[inside], line[inside])})  # fmt: skip
    return rows


def _position_bins(values, edges, key, inputs, truth, predicted) -> list[dict[str, Any]]:
    """Rows ``{key}_low_mm``, ``{key}_high_mm`` (None: open-ended) and :func:`_tails` of the
    tracks whose ``values`` lie in each of ``edges``' bins (the empty ones left out)."""
    dpos = position_errors(predicted, truth)
    line = position_errors(straight_line(inputs), truth)
    rows = []
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        inside = (values >= low) & (values < high)
        if inside.any():
            rows.append(
                {
                    f"{key}_low_mm": low,
                    f"{key}_high_mm": None if np.isinf(high) else high,
                    **_tails(dpos[inside], line[inside]),
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


def _region_bins(inputs, truth, predicted, magnet) -> list[dict[str, Any]]:
    region = leg_regions(inputs, magnet)
    model_err = position_errors(predicted, truth)
    line_err = position_errors(straight_line(inputs), truth)
    rows = []
    for k, name in enumerate(REGIONS):
        inside = region == k
        if inside.any():
            rows.append({"region": name, **_tails(model_err[inside], line_err[inside])})
    return rows


# -- the Jacobian against the integrator's ----------------------------------------------------

#: The floor of the per-element relative error, as a share of the propagated 1-sigma (see
#: :func:`jacobian_report`).
JACOBIAN_FLOOR = 0.01
#: The model Jacobians are computed in batches of this many tracks (memory: hidden x 5 x batch).
JACOBIAN_BATCH = 16384
#: What the report says when the dataset has no Jacobian columns.
NO_JACOBIAN_NOTE = (
    "no Jacobian report: the dataset has no Jacobian columns; generate one with "
    "python -m raytrack.generate --jacobian and evaluate on it (--data DIR)"
)


def start_sigmas(inputs: np.ndarray) -> np.ndarray:
    """(N, 5) the typical uncorrelated start uncertainties of the report (the same as the
    training's Jacobian term): sigma_x = sigma_y = 0.1 mm, sigma_tx = sigma_ty = 1e-4,
    sigma_qop = 0.005 |qop|."""
    return typical_sigma(torch.from_numpy(np.asarray(inputs, dtype=np.float64))).numpy()


def propagated_sigmas(jac: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """(N, 4) sqrt of the diagonal of ``J C J^T`` for ``C = diag(sigma^2)``: the 1-sigma of
    x, y, tx, ty at the end (mm, mm, 1, 1)."""
    return np.sqrt(np.einsum("nab,nb->na", jac**2, sigma**2))


def straight_line_jacobian(inputs: np.ndarray) -> np.ndarray:
    """(N, 4, 5) the straight line's Jacobian: the identity with d x / d tx = d y / d ty = dz."""
    jac = np.zeros((len(inputs), 4, 5))
    jac[:, np.arange(4), np.arange(4)] = 1.0
    dz = inputs[:, 6] - inputs[:, 5]
    jac[:, 0, 2] = jac[:, 1, 3] = dz
    return jac


def _quantiles(values: np.ndarray) -> dict[str, float]:
    return {"median": float(np.median(values)), "p95": float(np.percentile(values, 95))}


def _sigma_block(relative: np.ndarray) -> dict[str, Any]:
    """|sigma / sigma_RK - 1| per end coordinate: median and P95."""
    return {name: _quantiles(relative[:, k]) for k, name in enumerate(JACOBIAN_OUTPUTS)}


def jacobian_report(
    inputs: np.ndarray, jac_rk: np.ndarray, jac_model: np.ndarray, source: str = ""
) -> dict[str, Any]:
    """The model's transport Jacobian (N, 4, 5) against the integrator's, on the same tracks.

    - Per element: ``|J_model - J_RK| / (|J_RK| + floor)`` with, per track, ``floor_ab =
      0.01 sigma_end_a / sigma_b``: the element size that would carry 1 % of the propagated
      1-sigma of end coordinate a (many elements are about 0, d x / d y, d tx / d x, d x / d qop
      on a leg outside the field: against the floor their errors count by what they would do
      to a fit); median and P95 over the tracks.
    - The propagated 1-sigma a Kalman fit would get, ``sqrt(diag(J C J^T))``, for the
      uncorrelated start covariance C of :func:`start_sigmas` (0.1 mm, 0.1 mm, 1e-4, 1e-4,
      0.005 |qop|): ``|sigma_model / sigma_RK - 1|`` for x, y, tx, ty, median and P95, with
      the straight line's beside it, overall and in the report's momentum bins.
    """
    inputs, jac_rk, jac_model = (
        np.asarray(a, dtype=np.float64) for a in (inputs, jac_rk, jac_model)
    )
    sigma = start_sigmas(inputs)
    sigma_rk = propagated_sigmas(jac_rk, sigma)
    floor = JACOBIAN_FLOOR * sigma_rk[:, :, None] / sigma[:, None, :]
    element = np.abs(jac_model - jac_rk) / (np.abs(jac_rk) + floor)
    model_rel = np.abs(propagated_sigmas(jac_model, sigma) / sigma_rk - 1.0)
    line_rel = np.abs(propagated_sigmas(straight_line_jacobian(inputs), sigma) / sigma_rk - 1.0)
    elements = {
        f"J_{o}_{i}": _quantiles(element[:, a, b])
        for a, o in enumerate(JACOBIAN_OUTPUTS)
        for b, i in enumerate(JACOBIAN_INPUTS)
    }
    p = momentum_gev(inputs)
    bins = []
    for low, high in zip(MOMENTUM_BINS_GEV[:-1], MOMENTUM_BINS_GEV[1:], strict=True):
        inside = (p >= low) & (p < high)
        if inside.any():
            bins.append(
                {
                    "p_low_gev": low,
                    "p_high_gev": None if np.isinf(high) else high,
                    "tracks": int(inside.sum()),
                    "element_relative_error_p95_max": float(
                        np.percentile(element[inside], 95, axis=0).max()
                    ),
                    "sigma_relative_error": _sigma_block(model_rel[inside]),
                    "straight_line_sigma_relative_error": _sigma_block(line_rel[inside]),
                }
            )
    return {
        "source": source,
        "tracks": int(len(inputs)),
        "definition": (
            "element: |J_model - J_RK| / (|J_RK| + 0.01 sigma_end_a / sigma_b) per track; "
            "sigma: |sigma_model / sigma_RK - 1| of sqrt(diag(J C J^T)), C = diag(sigma^2)"
        ),
        "start_sigma": {
            "x_mm": TYPICAL_SIGMA[0],
            "y_mm": TYPICAL_SIGMA[1],
            "tx": TYPICAL_SIGMA[2],
            "ty": TYPICAL_SIGMA[3],
            "qop_relative": TYPICAL_SIGMA_QOP_RELATIVE,
            "correlations": 0.0,
        },
        "rk_sigma_median": {
            key: float(np.median(sigma_rk[:, k]))
            for k, key in enumerate(("x_mm", "y_mm", "tx", "ty"))
        },
        "element_relative_error": elements,
        "sigma_relative_error": _sigma_block(model_rel),
        "straight_line_sigma_relative_error": _sigma_block(line_rel),
        "momentum_bins": bins,
        "_tracks": {"momentum_gev": p, "element": element, "model": model_rel, "line": line_rel},
    }


def model_jacobians(run: Path, inputs: np.ndarray) -> tuple[np.ndarray, str]:
    """(N, 4, 5) float64 Jacobians of the run's model and what computed them: the shipped
    ``model_jacobian.onnx`` when the run has one, else the checkpoint's model in torch."""
    exported = run / "model_jacobian.onnx"
    parts = []
    if exported.is_file():
        from raytrack.export.onnx_export import INPUT_NAME, JACOBIAN_NAME, onnx_session

        session = onnx_session(exported)  # one session for every batch
        for lo in range(0, len(inputs), JACOBIAN_BATCH):
            batch = np.ascontiguousarray(inputs[lo : lo + JACOBIAN_BATCH], dtype=np.float32)
            parts.append(session.run([JACOBIAN_NAME], {INPUT_NAME: batch})[0])
        source = str(exported)
    else:
        from raytrack.models.jacobian import forward_with_jacobian

        path = checkpoint_path(run)
        model = model_from_checkpoint(load_checkpoint(path)).eval()
        with torch.no_grad():
            for lo in range(0, len(inputs), JACOBIAN_BATCH):
                batch = torch.from_numpy(np.ascontiguousarray(inputs[lo : lo + JACOBIAN_BATCH]))
                parts.append(forward_with_jacobian(model, batch)[1].numpy())
        source = f"{path} (forward_with_jacobian; the run has no model_jacobian.onnx)"
    jac = np.concatenate(parts) if parts else np.zeros((0, 4, 5))
    return jac.astype(np.float64), source


def write_report(out_dir: Path, report: dict[str, Any], history: list[dict[str, float]]) -> None:
    """report.json and the PNG plots into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tracks = report.get("_tracks")
    plain = {k: v for k, v in report.items() if k != "_tracks"}
    if isinstance(report.get("jacobian"), dict):
        plain["jacobian"] = {k: v for k, v in report["jacobian"].items() if k != "_tracks"}
    write_json_atomic(out_dir / "report.json", plain)
    run = plot_context(out_dir)
    if tracks is not None:
        _save(histograms_figure(run, **tracks), out_dir / "error_histograms.png")
        for what in AGAINST:
            _save(error_against_figure(run, what, **tracks), out_dir / f"error_vs_{what}.png")
    if isinstance(report.get("jacobian"), dict) and "_tracks" in report["jacobian"]:
        _save(jacobian_figure(run, report["jacobian"]), out_dir / "jacobian.png")
    if history:
        _save(learning_curves_figure(run, history), out_dir / "learning_curves.png")


def plot_context(out_dir: Path) -> str:
    """What the figures of ``out_dir`` show, for their titles: the run directory's name, and
    the dataset when it is not the run's own (``evaluation-<dataset>/``)."""
    other = out_dir.name.removeprefix("evaluation-") if out_dir.name != "evaluation" else ""
    return f"run {out_dir.parent.name}" + (f", data {other}" if other else "")


def pyplot():
    """matplotlib.pyplot on the Agg backend (PNG files, no display)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: runs on nodes without a display
    import matplotlib.pyplot as plt

    return plt


def log_ticks(ax, which: str, values) -> None:
    """Label a log axis (``which``: "x" or "y") with plain numbers, at least three, and put its
    limits at the labelled ticks just outside ``values``: every point lies between two labels.

    The ticks are 1, else 1-2-5, else 1-2-...-9 times the powers of ten, the first of these
    with four labels that leaves at most a quarter of the axis empty; narrower ranges get a
    linear locator's ticks, ranges of more than nine decades matplotlib's own.
    """
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter

    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values) & (values > 0)]
    if values.size == 0:
        return
    axis = ax.xaxis if which == "x" else ax.yaxis
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}".replace("e-0", "e-")))
    ticks = log_tick_values(float(values.min()), float(values.max()))
    if ticks is None:
        return
    axis.set_major_locator(FixedLocator(ticks))
    axis.set_minor_locator(LogLocator(subs="auto"))
    axis.set_minor_formatter(NullFormatter())
    margin = (ticks[-1] / ticks[0]) ** 0.02  # points on the outermost ticks clear the frame
    limits = (ticks[0] / margin, ticks[-1] * margin)
    (ax.set_xlim if which == "x" else ax.set_ylim)(*limits)


def grid(ax) -> None:
    """Grid lines at the labelled ticks, fainter ones at the minor ticks of a log axis."""
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", alpha=0.08)


def log_tick_values(low: float, high: float) -> list[float] | None:
    """The ticks of :func:`log_ticks` for values from ``low`` to ``high`` (> 0), from the tick
    at or below ``low`` to the one at or above ``high``; None: more than nine decades."""
    from matplotlib.ticker import MaxNLocator

    if high / low > 1e9:
        return None
    if high / low < 1.01:  # one value: a little around it
        low, high = low / 1.1, high * 1.1
    powers = range(int(np.floor(np.log10(low))) - 1, int(np.ceil(np.log10(high))) + 1)
    for subs in ((1,), (1, 2, 5), tuple(range(1, 10))):
        grid = sorted(s * 10.0**k for k in powers for s in subs)
        below = max(t for t in grid if t <= low * (1 + 1e-9))
        above = min(t for t in grid if t >= high * (1 - 1e-9))
        ticks = [t for t in grid if below <= t <= above]
        empty = np.log(low / below) + np.log(above / high)
        if len(ticks) >= 4 and empty <= 0.25 * np.log(above / below):
            return ticks
    # within a few steps of 1-2-...-9: a linear locator's ticks where they bracket the range
    # (the one at 0 is dropped on a log axis: 0.18 -> 2 gets 0.5 ... 2.5), else 1-2-...-9's
    linear = [float(t) for t in MaxNLocator(nbins=4).tick_values(low, high) if t > 0]
    if linear and linear[0] <= low * (1 + 1e-9) and linear[-1] >= high * (1 - 1e-9):
        return linear
    return ticks


def histograms_figure(run: str, inputs, truth, predicted):
    """error_histograms.png: position and slope errors of the model and the straight line; on
    the position panel the model's P95, P99 and worst track marked."""
    plt = pyplot()
    line = straight_line(inputs)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    for ax, errors, label in (
        (axes[0], position_errors, "position error [mm]"),
        (axes[1], slope_errors, "slope error"),
    ):
        model_err, line_err = errors(predicted, truth), errors(line, truth)
        floor = max(min(model_err.min(), line_err.min()), 1e-9)
        bins = np.logspace(np.log10(floor), np.log10(max(model_err.max(), line_err.max())), 80)
        ax.hist(model_err, bins=bins, histtype="step", label="model")
        ax.hist(line_err, bins=bins, histtype="step", label="straight line")
        ax.set(xscale="log", xlabel=label, ylabel="tracks")
        if errors is position_errors:
            for q, style, name in ((95, ":", "P95"), (99, "--", "P99"), (100, "-", "worst")):
                value = np.percentile(model_err, q)
                ax.axvline(value, color="tab:red", ls=style, lw=1,
                           label=f"model {name} {value:.3g} mm")  # fmt: skip
        log_ticks(ax, "x", bins[[0, -1]])
        ax.set_title(label.removesuffix(" [mm]").replace(" error", " errors"), fontsize=10)
        ax.legend(fontsize=8)
    fig.suptitle(f"{run}: errors at the end of the leg, test split ({len(inputs):,} tracks)",
                 fontsize=11)  # fmt: skip
    return fig


#: What error_against_figure plots the error against: error_vs_<what>.png.
AGAINST = ("momentum", "dz", "x_mid", "y_mid")


def against_variable(what: str, inputs, truth) -> tuple[np.ndarray, str, str]:
    """(values, axis label, title words) of one of :data:`AGAINST` per track."""
    if what == "momentum":
        return momentum_gev(inputs), "p [GeV]", "momentum"
    if what == "dz":
        return np.abs(inputs[:, 6] - inputs[:, 5]), "|dz| [mm]", "leg length |dz|"
    if what in ("x_mid", "y_mid"):
        name = what[0]
        values = np.abs(mid_leg_position(inputs, truth)[:, "xy".index(name)])
        return values, f"|{name}| at mid-leg [mm]", f"|{name}| at the middle of the leg"
    raise ValueError(f"unknown variable {what!r}: one of {AGAINST}")


def error_against_figure(run: str, what: str, inputs, truth, predicted):
    """error_vs_momentum.png, error_vs_dz.png, error_vs_x_mid.png, error_vs_y_mid.png: mean,
    P95, P99 and worst position error in quantile bins of momentum, |dz|, or |x| or |y| at
    mid-leg (:func:`mid_leg_position`)."""
    plt = pyplot()
    x, label, against = against_variable(what, inputs, truth)
    dpos = position_errors(predicted, truth)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    if np.ptp(x) == 0:  # a fixed leg: one point per statistic
        index, filled = np.zeros(len(x), dtype=int), [0]
    else:
        edges = np.quantile(x, np.linspace(0, 1, 21))
        index = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, 19)
        filled = [i for i in range(20) if (index == i).any()]
    centres = [np.median(x[index == i]) for i in filled]
    curves = {
        "mean": [dpos[index == i].mean() for i in filled],
        "P95": [np.percentile(dpos[index == i], 95) for i in filled],
        "P99": [np.percentile(dpos[index == i], 99) for i in filled],
        "worst": [dpos[index == i].max() for i in filled],
    }
    for (name, values), style in zip(curves.items(), ("o-", "s--", "^-.", "v:"), strict=True):
        ax.plot(centres, values, style, ms=4, label=name)
    ax.set(xlabel=label, ylabel="position error [mm]", yscale="log")
    log_ticks(ax, "y", [v for values in curves.values() for v in values])
    if what == "momentum":
        ax.set_xscale("log")
        log_ticks(ax, "x", centres)
    grid(ax)
    ax.legend(fontsize=8)
    ax.set_title(f"{run}: position error against {against}\ntest split, {len(inputs):,} tracks "
                 "in bins of equal counts", fontsize=10)  # fmt: skip
    return fig


def jacobian_figure(run: str, report: dict[str, Any]):
    """jacobian.png: the per-element P95 relative error as a 4 x 5 map, and the relative error
    of the propagated 1-sigma in x and y against momentum (model and straight line)."""
    from matplotlib.colors import LogNorm

    plt = pyplot()
    tracks = report["_tracks"]
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.8), gridspec_kw={"width_ratios": [1, 1.1]})
    p95 = np.array(
        [
            [report["element_relative_error"][f"J_{o}_{i}"]["p95"] for i in JACOBIAN_INPUTS]
            for o in JACOBIAN_OUTPUTS
        ]
    )
    shown = np.clip(p95, 1e-6, None)
    image = axes[0].imshow(
        shown,
        cmap="viridis",
        norm=LogNorm(vmin=shown.min(), vmax=max(shown.max(), shown.min() * 10)),
    )
    for a in range(p95.shape[0]):
        for b in range(p95.shape[1]):
            dark = shown[a, b] < np.sqrt(shown.min() * shown.max())
            axes[0].text(b, a, f"{p95[a, b]:.2g}", ha="center", va="center", fontsize=8,
                         color="white" if dark else "black")  # fmt: skip
    axes[0].set_xticks(range(len(JACOBIAN_INPUTS)), [f"d/d {i}" for i in JACOBIAN_INPUTS])
    axes[0].set_yticks(range(len(JACOBIAN_OUTPUTS)), [f"{o}_end" for o in JACOBIAN_OUTPUTS])
    axes[0].set_title(
        "P95 over tracks of |J_model - J_RK| / (|J_RK| + floor)\n"
        "floor: 1 % of the propagated 1-sigma",
        fontsize=9,
    )
    fig.colorbar(image, ax=axes[0], fraction=0.04)
    p = tracks["momentum_gev"]
    edges = np.array(MOMENTUM_BINS_GEV)
    index = np.searchsorted(edges, p, side="right") - 1
    filled = [i for i in range(len(edges) - 1) if (index == i).any()]
    centres = [float(np.median(p[index == i])) for i in filled]
    ax = axes[1]
    for k, name, colour in ((0, "x", "tab:blue"), (1, "y", "tab:orange")):
        for key, style, label in (("model", "o-", "model"), ("line", "s:", "straight line")):
            values = tracks[key][:, k]
            median = [np.median(values[index == i]) for i in filled]
            p95_bin = [np.percentile(values[index == i], 95) for i in filled]
            ax.plot(centres, p95_bin, style, color=colour, label=f"sigma_{name}, {label}: P95")
            if key == "model":
                ax.plot(centres, median, "--", color=colour, alpha=0.6,
                        label=f"sigma_{name}, {label}: median")  # fmt: skip
    ax.set(xscale="log", yscale="log", xlabel="p [GeV]",
           ylabel="|sigma_model / sigma_RK - 1|")  # fmt: skip
    from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter

    ax.xaxis.set_major_locator(FixedLocator([1, 2, 5, 10, 20, 50, 100, 200]))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_title(
        "propagated 1-sigma in momentum bins\nstart C = diag(0.1 mm, 0.1 mm, 1e-4, 1e-4, "
        "0.005 |qop|)^2",
        fontsize=9,
    )
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(f"{run}: transport Jacobian against the integrator's, test split", fontsize=11)
    return fig


def learning_curves_figure(run: str, history: list[dict[str, float]]):
    """learning_curves.png: training and validation loss, validation mean, P95 and P99
    position error, per epoch."""
    plt = pyplot()
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    panels = (
        (axes[0], (("train_loss", "train"), ("val_loss", "validation")),
         "loss (standardised MSE)", "loss"),
        (axes[1], (("val_pos_mean_mm", "mean"), ("val_pos_p95_mm", "P95"),
                   ("val_pos_p99_mm", "P99")),
         "validation position error [mm]", "validation position error"),
    )  # fmt: skip
    for ax, curves, ylabel, title in panels:
        values = []
        for key, label in curves:
            if not all(key in h for h in history):  # P99: not in histories before it was kept
                continue
            ys = [h[key] for h in history]
            ax.plot(epochs, ys, "o-", ms=3, label=label)
            values += ys
        ax.set(xlabel="epoch", ylabel=ylabel, yscale="log")
        ax.xaxis.get_major_locator().set_params(integer=True)
        log_ticks(ax, "y", values)
        grid(ax)
        ax.set_title(title, fontsize=10)
        ax.legend()
    fig.suptitle(f"{run}: learning curves, {len(history)} epochs", fontsize=11)
    return fig


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    fig.clf()
    import matplotlib.pyplot as plt

    plt.close(fig)


#: Ray Tune's name for the checkpoint directories of a trial (checkpoint_000003, ...).
TUNE_CHECKPOINTS = "checkpoint_*"


def is_run(directory: Path) -> bool:
    return (directory / RUN_FILE).is_file() and checkpoint_path(directory).is_file()


def find_run(directory: str | Path) -> Path:
    """The run directory to evaluate for ``directory``: itself when it is one (written by
    ``python -m raytrack.train``, or a search's ``best/``), or, for a Ray Tune trial directory,
    its latest checkpoint (each one holds the trial's run.json and checkpoint)."""
    directory = Path(directory)
    if is_run(directory):
        return directory
    checkpoints = sorted(p for p in directory.glob(TUNE_CHECKPOINTS) if is_run(p))
    if checkpoints:
        return checkpoints[-1]  # zero-padded numbers: the last name is the latest
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such directory")
    raise FileNotFoundError(
        f"{directory}: not a raytrack run: no {RUN_FILE} and {checkpoint_path('.').name} here "
        f"(a run of python -m raytrack.train, a search's best/) nor in a {TUNE_CHECKPOINTS} "
        "directory (a Ray Tune trial of python -m raytrack.tune)"
    )


def evaluation_dir(run_dir: str | Path, data_dir: str | Path | None = None) -> Path:
    """Where the evaluation of ``run_dir`` on ``data_dir`` goes: ``evaluation/`` on the run's own
    dataset, ``evaluation-<dataset directory name>/`` on another one (the run's own stays)."""
    run_dir = Path(run_dir)
    if data_dir is None:
        return run_dir / "evaluation"
    spec = RunSpec.from_dict(json.loads((find_run(run_dir) / RUN_FILE).read_text()))
    data = Path(data_dir).resolve()
    if data == Path(spec.data_dir).resolve():
        return run_dir / "evaluation"
    return run_dir / f"evaluation-{data.name}"


def evaluate_run(run_dir: str | Path, data_dir: str | Path | None = None) -> dict[str, Any]:
    """Evaluate the best weights of ``run_dir`` on the test split; writes ``evaluation/`` (see
    :func:`evaluation_dir` for another dataset).

    ``run_dir``: a run, a search's ``best/`` or a Ray Tune trial directory (see ``find_run``).
    """
    run_dir = Path(run_dir)
    run = find_run(run_dir)
    spec = RunSpec.from_dict(json.loads((run / RUN_FILE).read_text()))
    state = load_checkpoint(checkpoint_path(run))
    data = Path(data_dir or spec.data_dir)
    manifest = read_manifest(data)
    jacobian = manifest is not None and has_jacobian(manifest)
    splits = load(data, dtype=np.float64, splits=("test",), jacobian=jacobian)
    report = evaluate_model(
        model_from_checkpoint(state),
        splits.test.inputs(),
        splits.test.targets(),
        magnet=magnet_extent(splits),
    )
    report["dataset_id"] = splits.dataset_id
    if jacobian:
        inputs = splits.test.inputs()
        jac_model, source = model_jacobians(run, inputs)
        report["jacobian"] = jacobian_report(inputs, splits.test.jacobians, jac_model, source)
    write_report(evaluation_dir(run_dir, data_dir), report, state["history"])
    return report


def evaluate_independent(
    run_dir: str | Path, count: int, data_dir: str | Path | None = None
) -> dict[str, Any]:
    """Evaluate the run's export on ``count`` fresh tracks of its dataset's phase space, with a
    truth integrated 100 times tighter (raytrack.data.independent); writes
    ``independent.json`` in :func:`evaluation_dir`. The ONNX file is what is measured when the
    run has one."""
    run_dir = Path(run_dir)
    run = find_run(run_dir)
    spec = RunSpec.from_dict(json.loads((run / RUN_FILE).read_text()))
    splits = load(data_dir or spec.data_dir, splits=())
    rows = independent_tracks(splits.manifest, count, str(splits.manifest_path))
    inputs, truth = rows[:, :7], rows[:, 7:]
    measured = run / "model.onnx"
    if measured.is_file():
        predicted = onnx_predict(measured, inputs).astype(np.float64)
    else:
        measured = checkpoint_path(run)
        predicted = predict(model_from_checkpoint(load_checkpoint(measured)), inputs)
    report = binned_report(inputs, truth, predicted, magnet_extent(splits))
    report["measured"] = str(measured)
    report["truth"] = f"{count} fresh tracks, integration {TIGHTER:g} times tighter"
    out = evaluation_dir(run_dir, data_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "independent.json", report)
    return report


def magnet_extent(splits) -> tuple[float, float] | None:
    """The magnet's extent from the dataset's field, None for a field with no profile."""
    try:
        return splits.axis_profile().half_maximum_extent()
    except DatasetError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m raytrack.evaluate",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "run_dir",
        help="a run of python -m raytrack.train, a search's best/ or one of its trial directories",
    )
    parser.add_argument("--data", help="dataset to evaluate on (default: the run's own)")
    parser.add_argument(
        "--independent",
        type=positive_int,
        metavar="N",
        help="instead of the test split: N fresh tracks of the dataset's phase space that no "
        "shard holds, with a truth integrated 100 times tighter, through model.onnx "
        "(analytic fields only)",
    )
    args = parser.parse_args(argv)
    try:
        if args.independent:
            report = evaluate_independent(args.run_dir, args.independent, args.data)
        else:
            report = evaluate_run(args.run_dir, args.data)
    except (FileNotFoundError, DatasetError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.independent:
        print(f"{report['measured']} on {report['truth']}:")
    print_summary(report)
    if not args.independent and "jacobian" not in report:
        print(NO_JACOBIAN_NOTE)
    print(f"wrote {evaluation_dir(args.run_dir, args.data)}")
    return 0


def print_summary(report: dict[str, Any]) -> None:
    print(
        f"{'':15} {'mean mm':>9} {'median':>9} {'P95':>9} {'P99':>9} {'worst':>9} "
        f"{'slope mean':>11}"
    )
    for label, key in (("model", "model"), ("straight line", "straight_line")):
        r = report[key]
        print(
            f"{label:15} {r['pos_mean_mm']:9.4f} {r['pos_median_mm']:9.4f} {r['pos_p95_mm']:9.4f} "
            f"{r['pos_p99_mm']:9.4f} {r['pos_max_mm']:9.4f} {r['slope_mean']:11.2e}"
        )
    if report.get("worst_tracks"):
        print_worst_track(report["worst_tracks"][0], len(report["worst_tracks"]))
    print(
        f"{'position error in bins':28} {'tracks':>7} {'mean mm':>9} {'P95':>9} {'P99':>9} "
        f"{'worst':>9} {'line mean':>10} {'line P95':>9}"
    )
    for label, row in bin_rows(report):
        if row is None:  # a heading
            print(f"  {label}")
            continue
        print(
            f"  {label:26} {row['tracks']:7d} {row['pos_mean_mm']:9.4f} {row['pos_p95_mm']:9.4f} "
            f"{row['pos_p99_mm']:9.4f} {row['pos_max_mm']:9.4f} "
            f"{row['straight_line_pos_mean_mm']:10.4f} {row['straight_line_pos_p95_mm']:9.4f}"
        )
    if isinstance(report.get("jacobian"), dict):
        print_jacobian_summary(report["jacobian"])


def bin_rows(report: dict[str, Any]) -> list[tuple[str, dict[str, Any] | None]]:
    """Every bin of ``report`` as (label, row), a row with the keys of :func:`_tails`: momentum,
    |dz|, |x| and |y| at mid-leg, then the leg regions under a heading (label, None). Bins
    that a report written before the |x|, |y| bins lacks are left out."""
    rows: list[tuple[str, dict[str, Any] | None]] = []
    for row in report["momentum_bins"]:
        model, line = row["model"], row["straight_line"]
        rows.append((momentum_bin_label(row), {
            **{k: model[k] for k in ("tracks", "pos_mean_mm", "pos_p95_mm", "pos_p99_mm",
                                     "pos_max_mm")},
            "straight_line_pos_mean_mm": line["pos_mean_mm"],
            "straight_line_pos_p95_mm": line["pos_p95_mm"],
        }))  # fmt: skip
    complete = [r for r in report.get("dz_bins", []) if "pos_max_mm" in r]
    rows += [(f"|dz| {r['dz_low_mm']:g}-{r['dz_high_mm']:g} mm", r) for r in complete]
    for name in ("x", "y"):
        for r in report.get(f"{name}_mid_bins", []):
            high = r[f"{name}_mid_high_mm"]
            high = "inf" if high is None else f"{high:g}"
            rows.append((f"mid-leg |{name}| {r[f'{name}_mid_low_mm']:g}-{high} mm", r))
    regions = [r for r in report.get("region_bins", []) if "pos_max_mm" in r]
    if regions:
        z_in, z_out = report["magnet_extent_mm"]
        rows.append((f"legs against the magnet (z {z_in:.0f} -> {z_out:.0f} mm, |By| >= half "
                     "its peak):", None))  # fmt: skip
        rows += [(r["region"], r) for r in regions]
    return rows


def worst_track_lines(track: dict[str, Any]) -> list[str]:
    """The worst track of a report (a row of ``worst_tracks``) in five lines of text."""
    start, true, pred = track["start"], track["truth"], track["predicted"]
    region = f", {track['region']}" if track.get("region") else ""

    def state(s):
        return f"x {s['x_mm']:.1f} mm, y {s['y_mm']:.1f} mm, tx {s['tx']:.4f}, ty {s['ty']:.4f}"

    return [
        f"worst track: {track['pos_error_mm']:.4f} mm off (straight line "
        f"{track['straight_line_pos_error_mm']:.1f} mm), p {track['p_gev']:.2f} GeV, charge "
        f"{track['charge']:+d} (row {track['row']})",
        f"leg z {start['z_start_mm']:.0f} -> {start['z_end_mm']:.0f} mm{region}; mid-leg x "
        f"{track['mid_leg_mm']['x']:.0f} mm, y {track['mid_leg_mm']['y']:.0f} mm",
        f"start {state(start)}, q/p {start['qop_per_mev']:.4e}/MeV",
        f"end, true {state(true)}",
        f"end, predicted {state(pred)}",
    ]


def print_worst_track(track: dict[str, Any], named: int) -> None:
    lines = worst_track_lines(track)
    print(lines[0])
    for line in lines[1:]:
        print(f"  {line}")
    print(f"  (report.json's worst_tracks names the {named} worst)")


def momentum_bin_label(row: dict[str, Any]) -> str:
    """``p 2-5 GeV``, ``p 100-inf GeV``: a momentum bin of the report, as printed."""
    high = "inf" if row["p_high_gev"] is None else f"{row['p_high_gev']:g}"
    return f"p {row['p_low_gev']:g}-{high} GeV"


def print_jacobian_summary(report: dict[str, Any]) -> None:
    """The ``jacobian`` section: per-element relative error, propagated 1-sigma by momentum."""
    sigma = report["start_sigma"]
    print(
        f"Jacobian d end / d start against the integrator's, {report['tracks']} test tracks "
        f"({report['source']}):"
    )
    print(
        "  per element |J_model - J_RK| / (|J_RK| + 1 % of sigma_end / sigma_start): P95 (median)"
    )
    print("  " + f"{'':8}" + "".join(f"{'d/d ' + i:>21}" for i in JACOBIAN_INPUTS))
    for o in JACOBIAN_OUTPUTS:
        cells = (report["element_relative_error"][f"J_{o}_{i}"] for i in JACOBIAN_INPUTS)
        print("  " + f"{o + '_end':8}" + "".join(
            f"{c['p95']:>11.2e} ({c['median']:.1e})" for c in cells
        ))  # fmt: skip
    rk = report["rk_sigma_median"]
    print(
        f"  propagated 1-sigma sqrt(diag(J C J^T)), uncorrelated start sigma_x = sigma_y = "
        f"{sigma['x_mm']:g} mm, sigma_tx = sigma_ty = {sigma['tx']:g},\n  sigma_qop = "
        f"{sigma['qop_relative']:g} |qop| (RK's median: sigma_x {rk['x_mm']:.3g} mm, sigma_y "
        f"{rk['y_mm']:.3g} mm):"
    )

    print(
        f"  {'|sigma/sigma_RK - 1|':<20} {'x median':>9} {'x P95':>9} {'y median':>9} "
        f"{'y P95':>9} {'line x P95':>11} {'line y P95':>11} {'tracks':>7}"
    )
    rows = [("all", report["tracks"], report)]
    for row in report["momentum_bins"]:
        rows.append((momentum_bin_label(row), row["tracks"], row))
    for label, tracks, row in rows:
        x, y = row["sigma_relative_error"]["x"], row["sigma_relative_error"]["y"]
        line = row["straight_line_sigma_relative_error"]
        print(
            f"  {label:<20} {x['median']:9.2e} {x['p95']:9.2e} {y['median']:9.2e} "
            f"{y['p95']:9.2e} {line['x']['p95']:11.2e} {line['y']['p95']:11.2e} {tracks:7d}"
        )


if __name__ == "__main__":
    sys.exit(main())
