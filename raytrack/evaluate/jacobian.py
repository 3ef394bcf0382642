"""The model's transport Jacobian against the integrator's (the ``jacobian`` key of
report.json): per-element relative errors and the propagated 1-sigma a Kalman fit would get."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from raytrack.data.schema import JACOBIAN_INPUTS, JACOBIAN_OUTPUTS
from raytrack.export.onnx_export import INPUT_NAME, JACOBIAN_NAME, onnx_session
from raytrack.models.checkpoints import load_checkpoint, model_from_checkpoint
from raytrack.models.jacobian import (
    TYPICAL_SIGMA,
    TYPICAL_SIGMA_QOP_RELATIVE,
    forward_with_jacobian,
    typical_sigma,
)
from raytrack.models.metrics import MOMENTUM_BINS_GEV, momentum_gev
from raytrack.run.directory import checkpoint_path

#: The floor of the per-element relative error, as a share of the propagated 1-sigma (see
#: :func:`jacobian_report`).
JACOBIAN_FLOOR = 0.01
#: The model Jacobians are computed in batches of this many tracks (memory: hidden x 5 x batch).
JACOBIAN_BATCH = 16384


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
        session = onnx_session(exported)  # one session for every batch
        for lo in range(0, len(inputs), JACOBIAN_BATCH):
            batch = np.ascontiguousarray(inputs[lo : lo + JACOBIAN_BATCH], dtype=np.float32)
            parts.append(session.run([JACOBIAN_NAME], {INPUT_NAME: batch})[0])
        source = str(exported)
    else:
        path = checkpoint_path(run)
        model = model_from_checkpoint(load_checkpoint(path)).eval()
        with torch.no_grad():
            for lo in range(0, len(inputs), JACOBIAN_BATCH):
                batch = torch.from_numpy(np.ascontiguousarray(inputs[lo : lo + JACOBIAN_BATCH]))
                parts.append(forward_with_jacobian(model, batch)[1].numpy())
        source = f"{path} (forward_with_jacobian; the run has no model_jacobian.onnx)"
    jac = np.concatenate(parts) if parts else np.zeros((0, 4, 5))
    return jac.astype(np.float64), source
