"""Vectorised Runge-Kutta propagation of track states through a magnetic field.

One implementation in torch (float64) serves NumPy callers on the CPU and tensor callers on
any device, so data generation on a GPU node runs the same code as the tests.

Equations of motion (docs/physics.md section 2), with ``N = sqrt(1 + tx^2 + ty^2)``::

    dx/dz = tx                dtx/dz = KAPPA qop N ( tx ty Bx - (1 + tx^2) By + ty Bz)
    dy/dz = ty                dty/dz = KAPPA qop N ((1 + ty^2) Bx - tx ty By - tx Bz)

The default method is Dormand-Prince 5(4) with local extrapolation and one step size per
track: every track of a batch advances in the same loop iteration, with its own step, and
finished tracks are compacted out of the working set. Fixed-step RK4 stays as a reference.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np
import torch

from raytrack.physics.fields import Field
from raytrack.physics.units import KAPPA


class TrackStatus(enum.IntEnum):
    """Why a track has no end state. Flagged tracks come back as NaN rows."""

    OK = 0
    LEFT_VOLUME = 1  # |x| or |y| beyond Limits.max_abs_xy
    SLOPE_LIMIT = 2  # |tx| or |ty| beyond Limits.max_abs_slope
    STEP_LIMIT = 3  # did not reach z_end within max_iterations steps
    BAD_INPUT = 4  # a non-finite number in the start state or z


@dataclass(frozen=True)
class Limits:
    """Field volume and slope limits past which a track is dropped (docs/physics.md section 4)."""

    max_abs_xy: float = 5000.0  # mm
    max_abs_slope: float = 2.0


@dataclass(frozen=True)
class Tolerance:
    """Per-step error bounds of the adaptive integrator (on the embedded 4th-order estimate).

    With local extrapolation the 5th-order result is kept, so the global error over any leg in
    [0, 14000] mm of the default phase space stays below 1 micrometre and 1e-6 in slope at
    these defaults (tests/unit/physics/test_propagate.py measures it against a tolerance 1000
    times tighter).
    """

    position: float = 3e-5  # mm
    slope: float = 3e-8


@dataclass(frozen=True)
class Tableau:
    """Butcher tableau; ``b_err`` (weights of the embedded lower order) is None for plain RK."""

    name: str
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    order: int
    b_err: tuple[float, ...] | None = None


RK4 = Tableau(
    name="rk4",
    c=(0.0, 0.5, 0.5, 1.0),
    a=((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
    b=(1 / 6, 1 / 3, 1 / 3, 1 / 6),
    order=4,
)

DOPRI5 = Tableau(
    name="dopri5",
    c=(0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0),
    a=(
        (),
        (1 / 5,),
        (3 / 40, 9 / 40),
        (44 / 45, -56 / 15, 32 / 9),
        (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
        (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
        (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
    ),
    b=(35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0),
    order=5,
    b_err=(5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40),
)

METHODS = {"dopri5": DOPRI5, "rk4": RK4}

#: Largest adaptive step (mm) of plain propagation: the state is good to 1e-6 mm with it
#: (tests/unit/physics/test_propagate.py), and a smaller cap only costs steps far out in the
#: field's tails.
MAX_STEP_MM = 1000.0
#: Largest adaptive step (mm) with ``return_jacobian``. Far out in the dipole's tails the bending
#: of a step is tiny, so the absolute tolerances let steps grow long enough to spoil d end / d qop
#: though not the state; this cap keeps every Jacobian column close to a much tighter
#: integration, for more steps, which plain propagation (and so the generator) does not pay
#: (docs/physics.md sections 2b and 5). With the same ``max_step``, asking for the Jacobian
#: never changes the end state.
JACOBIAN_MAX_STEP_MM = 250.0


def propagate(
    states,
    z_start,
    z_end,
    field: Field,
    *,
    method: str = "dopri5",
    tolerance: Tolerance = Tolerance(),
    step: float | None = None,
    max_step: float | None = None,
    limits: Limits = Limits(),
    max_iterations: int = 20000,
    chunk_size: int | None = None,
    return_status: bool = False,
    return_jacobian: bool = False,
):
    """Propagate ``states`` from ``z_start`` to ``z_end`` (forward or backward).

    Args:
        states: (N, 5) ``[x, y, tx, ty, qop]`` in mm, 1, 1, 1, 1/MeV; NumPy array or tensor.
        z_start, z_end: scalars or (N,) arrays, mm.
        field: a field model from :mod:`raytrack.physics.fields`.
        method: "dopri5" (adaptive, default) or "rk4".
        tolerance: per-step error bounds of the adaptive method.
        step: fixed step length in mm. Required for "rk4"; given with "dopri5" it turns the
            step control off (used to measure the convergence order).
        max_step: largest adaptive step, mm; by default :data:`MAX_STEP_MM`, and
            :data:`JACOBIAN_MAX_STEP_MM` with ``return_jacobian``.
        limits: tracks beyond these are flagged (NaN row, status != OK), not returned.
        max_iterations: steps after which unfinished tracks are flagged STEP_LIMIT.
        chunk_size: tracks integrated together (default: 16384 on CPU, 2**20 on CUDA).
        return_status: also return a (N,) int8 array/tensor of :class:`TrackStatus` codes.
        return_jacobian: also return the (N, 5, 5) transport Jacobian
            ``jac[i, a, b] = d end_a / d start_b`` over ``[x, y, tx, ty, qop]`` (the units of
            the states: mm/mm, mm, mm MeV, ...). It is integrated with the state (the
            variational equations, through the same steps), so ``end`` is the same with or
            without it at the same ``max_step`` (the defaults differ: see
            :data:`JACOBIAN_MAX_STEP_MM`); flagged tracks get NaN rows here too.

    Returns:
        (N, 5) end states of the same kind (NumPy or tensor, same device) as ``states``;
        with ``return_status``, the pair ``(end_states, status)``; with ``return_jacobian``,
        ``(end_states, jac)`` or ``(end_states, status, jac)``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    tableau = METHODS[method]
    if tableau.b_err is None and step is None:
        raise ValueError(f"method {method!r} has no error estimate: give a fixed step")
    is_numpy = not isinstance(states, torch.Tensor)
    s = torch.from_numpy(np.asarray(states, dtype=np.float64)) if is_numpy else states
    if s.ndim != 2 or s.shape[1] != 5:
        raise ValueError(f"states must have shape (N, 5) [x, y, tx, ty, qop], got {tuple(s.shape)}")
    s = s.to(torch.float64)
    z0 = _as_column(z_start, s, "z_start")
    z1 = _as_column(z_end, s, "z_end")
    if chunk_size is None:
        chunk_size = 2**20 if s.device.type == "cuda" else 16384
    if max_step is None:
        max_step = JACOBIAN_MAX_STEP_MM if return_jacobian else MAX_STEP_MM

    end = torch.empty_like(s)
    status = torch.empty(s.shape[0], dtype=torch.int8, device=s.device)
    jac = torch.empty((s.shape[0], 5, 5), dtype=s.dtype, device=s.device)
    for lo in range(0, s.shape[0], chunk_size):
        hi = min(lo + chunk_size, s.shape[0])
        end[lo:hi], status[lo:hi], jac_chunk = _propagate_chunk(
            s[lo:hi],
            z0[lo:hi],
            z1[lo:hi],
            field,
            tableau,
            tolerance,
            step,
            max_step,
            limits,
            max_iterations,
            return_jacobian,
        )
        if return_jacobian:
            jac[lo:hi] = jac_chunk
    if is_numpy:
        end, status, jac = end.numpy(), status.numpy(), jac.numpy()
    results = (end, status) if return_status else (end,)
    if return_jacobian:
        results += (jac,)
    return results if len(results) > 1 else end


def _as_column(z, like: torch.Tensor, name: str) -> torch.Tensor:
    z = torch.as_tensor(z, dtype=torch.float64, device=like.device)
    if z.ndim == 0:
        return z.expand(like.shape[0])
    if z.shape != (like.shape[0],):
        raise ValueError(
            f"{name} must be a scalar or have shape ({like.shape[0]},), got {tuple(z.shape)}"
        )
    return z


def _propagate_chunk(
    s, z0, z1, field, tableau, tolerance, step, max_step, limits, max_iterations, with_jacobian
):
    y = s[:, :4].T.contiguous()  # (4, n): rows x, y, tx, ty
    qop = s[:, 4].contiguous()
    finite = torch.isfinite(s).all(dim=1) & torch.isfinite(z0) & torch.isfinite(z1)
    z = torch.where(finite, z0, 0.0)
    z_end = torch.where(finite, z1, 0.0)
    y = torch.where(finite, y, 0.0)
    qop = torch.where(finite, qop, 0.0)
    # Tangents (4, 5, n): d (x, y, tx, ty) / d start (x, y, tx, ty, qop), the identity at start.
    tangent = _start_tangent(y) if with_jacobian else None
    if step is None:
        y_end, tangent_end, status = _integrate_adaptive(
            y, tangent, z, z_end, qop, field, tableau, tolerance, max_step, limits, max_iterations
        )
    else:
        y_end, tangent_end, status = _integrate_fixed(
            y, tangent, z, z_end, qop, field, tableau, step, limits
        )
    status = torch.where(finite, status, torch.full_like(status, TrackStatus.BAD_INPUT))
    flagged = status != TrackStatus.OK
    end = torch.cat((y_end.T, s[:, 4:5]), dim=1)
    end[flagged] = float("nan")
    jac = None
    if with_jacobian:
        jac = torch.zeros((s.shape[0], 5, 5), dtype=s.dtype, device=s.device)
        jac[:, :4] = tangent_end.permute(2, 0, 1)
        jac[:, 4, 4] = 1.0  # q/p does not change
        jac[flagged] = float("nan")
    return end, status, jac


def _start_tangent(y: torch.Tensor) -> torch.Tensor:
    tangent = torch.zeros((4, 5, y.shape[1]), dtype=y.dtype, device=y.device)
    for row in range(4):
        tangent[row, row] = 1.0
    return tangent


def _derivative(y: torch.Tensor, z: torch.Tensor, qop: torch.Tensor, field: Field) -> torch.Tensor:
    """d(x, y, tx, ty)/dz for a (4, n) state at positions z."""
    return _equations_of_motion(y, qop, field.evaluate(y[0], y[1], z))


def _equations_of_motion(y: torch.Tensor, qop: torch.Tensor, b) -> torch.Tensor:
    tx, ty = y[2], y[3]
    bx, by, bz = b
    txty = tx * ty
    tx2 = tx * tx
    ty2 = ty * ty
    k = KAPPA * qop * torch.sqrt(1.0 + tx2 + ty2)
    dtx = k * (txty * bx - (1.0 + tx2) * by + ty * bz)
    dty = k * ((1.0 + ty2) * bx - txty * by - tx * bz)
    return torch.stack((tx, ty, dtx, dty))


def _derivative_and_tangent(y, tangent, z, qop, field: Field):
    """The derivative of a (4, n) state and of its (4, 5, n) tangents (variational equations).

    The tangents move with the linearised equations of motion, d(dy)/dz = (df/dy) dy +
    (df/dqop) dqop, where df/dy needs the field's transverse gradient at the same point.
    """
    b, ((bx_x, by_x, bz_x), (bx_y, by_y, bz_y)) = field.evaluate_with_gradient(y[0], y[1], z)
    k = _equations_of_motion(y, qop, b)
    bx, by, bz = b
    tx, ty = y[2], y[3]
    n2 = 1.0 + tx * tx + ty * ty
    norm = torch.sqrt(n2)
    kappa = KAPPA * qop * norm
    a_tx = tx * ty * bx - (1.0 + tx * tx) * by + ty * bz  # dtx/dz = kappa * a_tx
    a_ty = (1.0 + ty * ty) * bx - tx * ty * by - tx * bz  # dty/dz = kappa * a_ty
    # Partial derivatives of (dtx/dz, dty/dz) by x, y, tx, ty and q/p.
    d_tx = (
        kappa * (tx * ty * bx_x - (1.0 + tx * tx) * by_x + ty * bz_x),
        kappa * (tx * ty * bx_y - (1.0 + tx * tx) * by_y + ty * bz_y),
        kappa * (tx / n2 * a_tx + ty * bx - 2.0 * tx * by),
        kappa * (ty / n2 * a_tx + tx * bx + bz),
        KAPPA * norm * a_tx,
    )
    d_ty = (
        kappa * ((1.0 + ty * ty) * bx_x - tx * ty * by_x - tx * bz_x),
        kappa * ((1.0 + ty * ty) * bx_y - tx * ty * by_y - tx * bz_y),
        kappa * (tx / n2 * a_ty - ty * by - bz),
        kappa * (ty / n2 * a_ty + 2.0 * ty * bx - tx * by),
        KAPPA * norm * a_ty,
    )
    by_state = torch.stack((torch.stack(d_tx[:4]), torch.stack(d_ty[:4])))  # (2, 4, n)
    slopes = (by_state.unsqueeze(2) * tangent).sum(1)  # (2, 5, n)
    slopes[:, 4] += torch.stack((d_tx[4], d_ty[4]))  # d qop / d start_qop = 1
    return k, torch.cat((tangent[2:4], slopes))


def _stages(y, tangent, z, h, qop, field, tableau: Tableau, k1, dk1):
    """Stage derivatives k_1..k_s of one step of length h (per track, may be 0), and those of
    the tangents (``dks``, None without tangents)."""
    ks, dks = [k1], [dk1]
    for c, row in zip(tableau.c[1:], tableau.a[1:], strict=True):
        y_stage = torch.addcmul(y, _combine(ks, row), h)
        if tangent is None:
            ks.append(_derivative(y_stage, z + c * h, qop, field))
            continue
        tangent_stage = tangent + _combine(dks, row) * h
        k, dk = _derivative_and_tangent(y_stage, tangent_stage, z + c * h, qop, field)
        ks.append(k)
        dks.append(dk)
    return ks, (dks if tangent is not None else None)


def _combine(ks: list[torch.Tensor], weights: tuple[float, ...]) -> torch.Tensor:
    acc = None
    for w, k in zip(weights, ks, strict=True):
        if w != 0.0:
            acc = k * w if acc is None else acc.add_(k, alpha=w)
    return acc


def _first_stage(y, tangent, z, qop, field):
    if tangent is None:
        return _derivative(y, z, qop, field), None
    return _derivative_and_tangent(y, tangent, z, qop, field)


def _limit_status(y: torch.Tensor, limits: Limits) -> torch.Tensor:
    """TrackStatus code per column of a (4, n) state: OK, LEFT_VOLUME or SLOPE_LIMIT."""
    out_xy = torch.amax(torch.abs(y[:2]), dim=0) > limits.max_abs_xy
    out_slope = torch.amax(torch.abs(y[2:]), dim=0) > limits.max_abs_slope
    status = torch.zeros(y.shape[1], dtype=torch.int8, device=y.device)
    status[out_slope] = TrackStatus.SLOPE_LIMIT
    status[out_xy] = TrackStatus.LEFT_VOLUME
    return status


def _integrate_fixed(y, tangent, z, z_end, qop, field, tableau, step, limits):
    """Fixed-step integration: each track takes ceil(|dz| / step) equal steps."""
    if step <= 0:
        raise ValueError(f"step must be positive, got {step}")
    dz = z_end - z
    n_steps = torch.ceil(torch.abs(dz) / step).clamp(min=1)
    h_track = dz / n_steps
    status = torch.zeros(y.shape[1], dtype=torch.int8, device=y.device)
    for i in range(int(n_steps.max().item()) if y.shape[1] else 0):
        h = torch.where(n_steps > i, h_track, 0.0)
        k1, dk1 = _first_stage(y, tangent, z, qop, field)
        ks, dks = _stages(y, tangent, z, h, qop, field, tableau, k1, dk1)
        y = torch.addcmul(y, _combine(ks, tableau.b), h)
        if tangent is not None:
            tangent = tangent + _combine(dks, tableau.b) * h
        z = z + h
        status = torch.maximum(status, _limit_status(y, limits))
    return y, tangent, status


def _integrate_adaptive(
    y, tangent, z, z_end, qop, field, tableau, tolerance, max_step, limits, max_iterations
):
    """Embedded RK with local extrapolation and one step size per track.

    The working set holds the unfinished tracks; finished ones take steps of length 0 until
    enough of them have piled up to be worth compacting out (a gather costs a few stages).
    Tangents, when given, take the same steps; only the state's error controls the step, so
    asking for the Jacobian does not change the end state.
    """
    n = y.shape[1]
    y_out = y.clone()
    tangent_out = tangent.clone() if tangent is not None else None
    status_out = torch.zeros(n, dtype=torch.int8, device=y.device)
    index = torch.arange(n, device=y.device)
    err_weights = tuple(b - e for b, e in zip(tableau.b, tableau.b_err, strict=True))
    inv_tol = torch.tensor(
        [1 / tolerance.position, 1 / tolerance.position, 1 / tolerance.slope, 1 / tolerance.slope],
        dtype=y.dtype,
        device=y.device,
    ).unsqueeze(1)
    exponent = -1.0 / tableau.order
    direction = torch.sign(z_end - z)
    h_size = torch.clamp(torch.abs(z_end - z), max=min(100.0, max_step))
    k1, dk1 = _first_stage(y, tangent, z, qop, field)
    status = torch.zeros(n, dtype=torch.int8, device=y.device)

    for _ in range(max_iterations):
        remaining = torch.abs(z_end - z)
        last = h_size >= remaining
        h = direction * torch.minimum(h_size, remaining)
        ks, dks = _stages(y, tangent, z, h, qop, field, tableau, k1, dk1)
        y_new = torch.addcmul(y, _combine(ks, tableau.b), h)
        err = torch.amax(torch.abs(_combine(ks, err_weights) * h) * inv_tol, dim=0)
        accept = err <= 1.0
        y = torch.where(accept, y_new, y)
        z = torch.where(accept, torch.where(last, z_end, z + h), z)
        if tangent is not None:
            tangent = torch.where(accept, tangent + _combine(dks, tableau.b) * h, tangent)
        if _fsal(tableau):
            k1 = torch.where(accept, ks[-1], k1)
            dk1 = torch.where(accept, dks[-1], dk1) if tangent is not None else None
        else:
            k1, dk1 = _first_stage(y, tangent, z, qop, field)
        factor = torch.clamp(0.9 * torch.pow(err.clamp(min=1e-12), exponent), 0.2, 5.0)
        h_size = torch.clamp(torch.abs(h) * factor, max=max_step)
        status = torch.where(accept, _limit_status(y, limits), status)

        finished = (z == z_end) | (status != TrackStatus.OK)
        n_finished = int(finished.sum().item())
        if n_finished == 0 or (n_finished < y.shape[1] and n_finished * 8 < y.shape[1]):
            continue
        y_out[:, index[finished]] = y[:, finished]
        if tangent is not None:
            tangent_out[..., index[finished]] = tangent[..., finished]
        status_out[index[finished]] = status[finished]
        keep = ~finished
        if not bool(keep.any()):
            return y_out, tangent_out, status_out
        y, z, z_end, qop, k1 = y[:, keep], z[keep], z_end[keep], qop[keep], k1[:, keep]
        if tangent is not None:
            tangent, dk1 = tangent[..., keep], dk1[..., keep]
        index, direction, h_size, status = index[keep], direction[keep], h_size[keep], status[keep]

    if index.numel():
        y_out[:, index] = y
        if tangent is not None:
            tangent_out[..., index] = tangent
        status_out[index] = torch.where(
            status == TrackStatus.OK, TrackStatus.STEP_LIMIT, status
        ).to(torch.int8)
    return y_out, tangent_out, status_out


def _fsal(tableau: Tableau) -> bool:
    """First Same As Last: the last stage is evaluated at the new state (true for DOPRI5)."""
    return tableau.c[-1] == 1.0 and tableau.a[-1] == tableau.b[: len(tableau.a[-1])]
