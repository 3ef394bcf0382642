"""The physics bases' transports: (N, 4) end states from (N, 7) inputs ``x, y, tx, ty, qop,
z_start, z_end`` through the on-axis tables (docs/physics.md sections 2a and 2c), in torch (any
dtype and device; autograd flows through them).

A model stands on one of five bases (``ModelConfig.base``): the straight line
(:func:`straight_line`, also what a dataset's bending is measured from) or one of the four
transports here, which read the tables of :mod:`raytrack.physics.axis_lookup`:

* :func:`kick_transport` (``kick``): the first-order kick of the field integrals
  (:func:`field_integrals`), slopes and field factor taken at the start.
* :func:`axial_transport` (``axial``): the exact motion in a field ``B = (0, By(z), 0)``. There
  the direction cosine ``ux = tx / N`` changes by exactly ``-KAPPA qop dF`` and ``uy = ty / N``
  stays constant, so the end slopes are closed-form and the positions are one Gauss-Legendre
  quadrature of ``ux / uz`` over the leg.
* :func:`expansion_transport` (``expansion``): that, plus the field off the symmetry plane that
  Maxwell's equations derive from the on-axis profile, integrated along the on-axis trajectory
  at the same quadrature nodes.
* :func:`path_transport` (``path``, the default): the on-axis transport corrected for the
  whole field, the midplane's x dependence included, along the track's own path, refined over
  a few passes. How many nodes it takes is :mod:`raytrack.physics.path_nodes`' choice.

How close each gets to the truth: docs/physics.md sections 2a, 2c and 5.

Over a leg z0 -> z1 (either direction) the field integrals are

    I1 = int_z0^z1 By dz            = F(z1) - F(z0)
    I2 = int_z0^z1 (z1 - z) By dz   = H(z1) - H(z0) - F(z0) (z1 - z0)
"""

from __future__ import annotations

import numpy as np
import torch

from raytrack.physics.axis_lookup import AxisTables, AxisValues
from raytrack.physics.units import KAPPA

#: Gauss-Legendre nodes of the integrals along the leg of the ``axial`` and ``expansion`` bases
#: (the choice among 5-16: docs/physics.md section 5). The count travels with a model: one
#: saved with another count keeps its own.
QUADRATURE_NODES = 8
#: The ``path`` base (:func:`path_transport`): quadrature nodes and passes along the path.
#: The node count a field needs depends on how sharp its fringes are; training picks it from
#: the dataset (:func:`raytrack.physics.path_nodes.choose_path_nodes`), PATH_NODES is the count
#: without that choice.
PATH_NODES = 12
PATH_PASSES = 3
#: ``1 - ux^2 - uy^2`` is kept above this (|slope| < 5) so that a track the tables bend past
#: 90 degrees gives a large but finite base, not NaN.
MIN_UZ_SQUARED = 0.04


def straight_line(inputs):
    """(N, 4) straight-line extrapolation of (N, 7) inputs; NumPy or torch."""
    x, y, tx, ty, _, z0, z1 = (inputs[:, k] for k in range(7))
    dz = z1 - z0
    stack = np.stack if isinstance(inputs, np.ndarray) else torch.stack
    return stack([x + tx * dz, y + ty * dz, tx, ty], 1)


def field_integrals(
    start: AxisValues, end: AxisValues, dz: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """I1 (T mm) and I2 (T mm^2) over legs from ``start`` to ``end`` (docs/physics.md
    section 2a)."""
    return end.f - start.f, end.h - start.h - start.f * dz


#: The tables read at the start and at the end of each leg, (N,) each.
Ends = tuple[AxisValues, AxisValues]


def leg_ends(inputs: torch.Tensor, tables: AxisTables) -> Ends:
    """The tables at each leg's start and end plane (looked up once per model call: the base
    and the physics features share them)."""
    return tables.at(inputs[:, 5]), tables.at(inputs[:, 6])


def kick_transport(
    inputs: torch.Tensor, tables: AxisTables, ends: Ends | None = None
) -> torch.Tensor:
    """(N, 4) end states from (N, 7) inputs by the first-order field-integral kick."""
    x, y, tx, ty, qop, z0, z1 = inputs.unbind(1)
    dz = z1 - z0
    i1, i2 = field_integrals(*(ends or leg_ends(inputs, tables)), dz)
    k = KAPPA * qop * torch.sqrt(1 + tx * tx + ty * ty)
    bend_x, bend_y = -k * (1 + tx * tx), -k * tx * ty
    return torch.stack(
        (x + tx * dz + bend_x * i2, y + ty * dz + bend_y * i2, tx + bend_x * i1, ty + bend_y * i1),
        dim=1,
    )


def gauss_legendre(count: int = QUADRATURE_NODES, dtype=torch.float64) -> tuple[torch.Tensor, ...]:
    """Nodes and weights of Gauss-Legendre quadrature on [0, 1]."""
    nodes, weights = np.polynomial.legendre.leggauss(count)
    return torch.tensor((nodes + 1) / 2, dtype=dtype), torch.tensor(weights / 2, dtype=dtype)


def axial_transport(
    inputs: torch.Tensor,
    tables: AxisTables,
    nodes: torch.Tensor,
    weights: torch.Tensor,
    ends: Ends | None = None,
) -> torch.Tensor:
    """(N, 4) end states from (N, 7) inputs, exact in the on-axis field ``(0, By(z), 0)``.

    ``nodes``, ``weights``: quadrature on [0, 1] (:func:`gauss_legendre`); ``ends``: the tables
    at the legs' ends when already looked up (:func:`leg_ends`).
    """
    x, y, tx, ty, qop, z0, z1 = inputs.unbind(1)
    start, end = ends or leg_ends(inputs, tables)
    inv_n = torch.rsqrt(1 + tx * tx + ty * ty)
    ux0, uy = tx * inv_n, ty * inv_n
    kq = KAPPA * qop
    dz = z1 - z0
    # Slopes along the leg at the quadrature nodes, (K, N), and at its end.
    f_nodes = tables.at(z0 + _col(nodes) * dz).f
    ux_nodes = ux0 - kq * (f_nodes - start.f)
    tx_nodes, ty_nodes = _slopes(ux_nodes, uy)
    tx1, ty1 = _slopes(ux0 - kq * (end.f - start.f), uy)
    return torch.stack(
        (
            x + dz * _quadrature(tx_nodes, weights),
            y + dz * _quadrature(ty_nodes, weights),
            tx1,
            ty1,
        ),
        dim=1,
    )


def _slopes(ux: torch.Tensor, uy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    inv_uz = torch.rsqrt(torch.clamp(1 - ux * ux - uy * uy, min=MIN_UZ_SQUARED))
    return ux * inv_uz, uy * inv_uz


def expansion_transport(
    inputs: torch.Tensor,
    tables: AxisTables,
    nodes: torch.Tensor,
    weights: torch.Tensor,
    ends: Ends | None = None,
) -> torch.Tensor:
    """The on-axis transport plus the field off the symmetry plane, integrated along it.

    Maxwell's equations fix the field near a mid-plane-symmetric magnet from its on-axis profile
    f(z) = By(0, 0, z), to second order in y (without its x dependence)::

        By = f - y^2/2 f'',   Bz = y f',   Bx = 0

    (exactly the default dipole). It ignores the midplane's x dependence (:func:`path_transport`
    reads it). The extra terms of the equations of motion are evaluated at
    the quadrature nodes of the on-axis trajectory (its slopes, and y with its first-order
    bending) and integrated to first order: ``d slope = int g dz``,
    ``d position = int (z1 - z) g dz`` (what it leaves: docs/physics.md section 2a).
    """
    x, y, tx, ty, qop, z0, z1 = inputs.unbind(1)
    start, end = ends or leg_ends(inputs, tables)
    norm = torch.sqrt(1 + tx * tx + ty * ty)
    ux0, uy = tx / norm, ty / norm
    kq = KAPPA * qop
    dz = z1 - z0
    run = _col(nodes) * dz  # z - z0 at the nodes, (K, N)
    at = tables.at(z0 + run)
    ux = ux0 - kq * (at.f - start.f)
    inv_uz = torch.rsqrt(torch.clamp(1 - ux * ux - uy * uy, min=MIN_UZ_SQUARED))
    tx_k, ty_k = ux * inv_uz, uy * inv_uz
    # y along the path: the straight line plus the kick's first-order bending in y.
    lever = at.h - start.h - start.f * run
    y_k = y + ty * run - (kq * norm * tx * ty) * lever
    by_off, bz = -0.5 * y_k * y_k * at.d2by, y_k * at.dby
    k = kq * inv_uz  # KAPPA qop N along the path (N = 1 / uz)
    dtx = k * (ty_k * bz - (1 + tx_k * tx_k) * by_off)
    dty = -k * (tx_k * ty_k * by_off + tx_k * bz)
    tx1, ty1 = _slopes(ux0 - kq * (end.f - start.f), uy)
    lever_weights = weights * (1 - nodes)
    return torch.stack(
        (
            x + dz * _quadrature(tx_k, weights) + dz * dz * _quadrature(dtx, lever_weights),
            y + dz * _quadrature(ty_k, weights) + dz * dz * _quadrature(dty, lever_weights),
            tx1 + dz * _quadrature(dtx, weights),
            ty1 + dz * _quadrature(dty, weights),
        ),
        dim=1,
    )


def integration_matrix(nodes: torch.Tensor) -> torch.Tensor:
    """(K, K) S with ``sum_j S[k, j] g(t_j) = int_0^t_k g dt`` for the nodes t on [0, 1]: exact
    for polynomials of degree below K (the integral of the interpolant through the nodes, as a
    Gauss collocation method uses it). Built in the Legendre basis, well conditioned at any K
    (the monomials' Vandermonde matrix is not beyond about 20 nodes)."""
    t = 2 * nodes.detach().cpu().numpy().astype(np.float64) - 1  # on [-1, 1]
    count = len(t)
    legendre = np.polynomial.legendre
    basis = legendre.legvander(t, count - 1)  # (K, K): P_m(t_k)
    integrals = np.stack(
        [legendre.legval(t, legendre.legint(np.eye(count)[m], lbnd=-1)) / 2 for m in range(count)],
        axis=1,
    )  # int_0^t_k P_m(2 s - 1) ds
    return torch.tensor(integrals @ np.linalg.inv(basis), dtype=nodes.dtype)


def path_transport(
    inputs: torch.Tensor,
    tables: AxisTables,
    nodes: torch.Tensor,
    weights: torch.Tensor,
    integration: torch.Tensor,
    ends: Ends | None = None,
    passes: int = PATH_PASSES,
) -> torch.Tensor:
    """The on-axis transport, corrected for the whole field along the track's own path.

    In direction cosines ``u`` the equations of motion are ``dux/dz = KAPPA qop (uy Bz / uz -
    By)`` and ``duy/dz = KAPPA qop (Bx - ux Bz / uz)``: the on-axis field's ``By`` changes ux
    by exactly ``-KAPPA qop dF`` whatever the slopes (:func:`axial_transport`), so the rest of
    the field, off the axis, is a correction ``du`` that barely depends on the slopes. Each
    pass evaluates that field at the quadrature nodes along the current path (Maxwell's
    expansion to second order in y of the on-axis profile and, when the tables carry it, of the
    midplane's x dependence: :meth:`AxisValues.midplane_terms`), integrates it to every node
    (``integration``: :func:`integration_matrix`) for ``du`` and the path's slopes, and the
    slopes to every node for the next path. The first path is the straight line plus the
    kick's first-order bending (what it leaves: docs/physics.md section 2c).
    """
    x, y, tx, ty, qop, z0, z1 = inputs.unbind(1)
    start, end = ends or leg_ends(inputs, tables)
    norm = torch.sqrt(1 + tx * tx + ty * ty)
    ux0, uy0 = tx / norm, ty / norm
    kq = KAPPA * qop
    dz = z1 - z0
    run = _col(nodes) * dz  # z - z0 at the nodes, (K, N)
    at = tables.at(z0 + run)
    ux_axis = ux0 - kq * (at.f - start.f)  # the exact on-axis direction at the nodes
    uy_axis = uy0 + 0.0 * ux_axis
    bend = (kq * norm) * (at.h - start.h - start.f * run)
    x_k = x + tx * run - (1 + tx * tx) * bend
    y_k = y + ty * run - (tx * ty) * bend
    ux, uy = ux_axis, uy_axis
    for step in range(passes):
        gx, gy = _off_axis_force(at, x_k, y_k, ux, uy, kq)
        ux = ux_axis + dz * _cumulative(gx, integration)
        uy = uy_axis + dz * _cumulative(gy, integration)
        if step + 1 < passes:
            tx_k, ty_k = _slopes(ux, uy)
            x_k = x + dz * _cumulative(tx_k, integration)
            y_k = y + dz * _cumulative(ty_k, integration)
    tx_k, ty_k = _slopes(ux, uy)
    ux1 = ux0 - kq * (end.f - start.f) + dz * _quadrature(gx, weights)
    tx1, ty1 = _slopes(ux1, uy0 + dz * _quadrature(gy, weights))
    return torch.stack(
        (
            x + dz * _quadrature(tx_k, weights),
            y + dz * _quadrature(ty_k, weights),
            tx1,
            ty1,
        ),
        dim=1,
    )


def _off_axis_force(at: AxisValues, x, y, ux, uy, kq) -> tuple:
    """d(ux, uy)/dz from the field beyond the on-axis ``By`` at the nodes' (x, y)."""
    inv_uz = torch.rsqrt(torch.clamp(1 - ux * ux - uy * uy, min=MIN_UZ_SQUARED))
    half_y2 = 0.5 * y * y
    by, bz = -half_y2 * at.d2by, y * at.dby
    if not at.has_x_dependence:
        return -kq * (by - uy * bz * inv_uz), -kq * (ux * bz * inv_uz)
    deviation, d_dx, laplacian, d_dz = at.midplane_terms(x)
    by = by + deviation - half_y2 * laplacian
    bz = bz + y * d_dz
    return -kq * (by - uy * bz * inv_uz), kq * (y * d_dx - ux * bz * inv_uz)


def _cumulative(values, integration: torch.Tensor):
    """(K, N) integrals from the leg's start to each node of (K, N) values at the nodes, over
    [0, 1]: one matrix product (a broadcast product and a sum would write K times the data)."""
    return torch.matmul(integration, values)


def _quadrature(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted sum over the nodes of (K, N) values: a product and a sum, not a matrix
    product, which is slow in float64 in ONNX Runtime."""
    return (values * _col(weights)).sum(0)


def _col(values: torch.Tensor) -> torch.Tensor:
    return values.unsqueeze(1)
