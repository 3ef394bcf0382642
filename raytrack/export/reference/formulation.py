"""model.bin's formulation in float64 NumPy (docs/model_bin.md, "Formulation"): the field
tables read as the torch model reads them, the features of the physics input set and the five
bases (line, kick, axial, expansion, path).

A second implementation to test the export against: none of its arithmetic is shared with
``raytrack.physics.transports``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class AxisPoint:
    """By (T), dBy/dz (T/mm), F (T mm), H (T mm^2) and d2By/dz2 (T/mm^2) at some z, each an
    array; and where z lies (interval index, fraction u in it, inside the tables or not) for the
    x tables' look-up."""

    by: np.ndarray
    dby: np.ndarray
    f: np.ndarray
    h: np.ndarray
    d2by: np.ndarray
    index: np.ndarray
    u: np.ndarray
    inside: np.ndarray


@dataclass(frozen=True)
class Tables:
    """The (4, T) field tables and where their nodes lie, read like the torch model reads them."""

    values: np.ndarray
    z_first: float
    spacing: float
    min_uz_squared: float
    #: (2D, T): the midplane's x coefficients, then their dz derivatives; (0, T) for none.
    x_values: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    x_scale: float = 0.0
    #: d2By/dz2 linear between the nodes' central differences of dBy/dz (model.bin version 4);
    #: False: the slope of the dBy/dz interpolant, constant between nodes (version 3).
    continuous_curvature: bool = True
    #: The x coefficients' second dz derivatives likewise (version 5; False: version 4).
    continuous_x_curvature: bool = True

    def at(self, z: np.ndarray) -> AxisPoint:
        """Linear By and dBy/dz, cubic Hermite F (slope By) and H (slope F), d2By linear
        between its central differences at the nodes (or, ``continuous_curvature`` False, the
        slope of the dBy interpolant, constant on each interval); beyond the last node (or
        before the first) By = dBy = d2By = 0, F constant and H linear in z."""
        n = self.values.shape[1]
        t = (z - self.z_first) / self.spacing
        # A NaN z gives NaN values (through u), never an invalid index.
        index = np.clip(np.nan_to_num(np.floor(t)), 0, n - 2)
        u = np.clip(t - index, 0.0, 1.0)
        outside = (t - index - u) * self.spacing  # signed mm past the end node, else 0
        index = index.astype(np.int64)
        by, dby, f, h = self.values
        f_z = _hermite(f, by, index, u, self.spacing)
        h_z = _hermite(h, f, index, u, self.spacing) + f_z * outside
        inside = outside == 0
        return AxisPoint(
            by=np.where(inside, _lerp(by, index, u), 0.0),
            dby=np.where(inside, _lerp(dby, index, u), 0.0),
            f=f_z,
            h=h_z,
            d2by=np.where(inside, self._curvature(dby, index, u), 0.0),
            index=index,
            u=u,
            inside=inside,
        )

    @functools.cached_property
    def _node_curvature(self) -> np.ndarray:
        """d2By/dz2 at the nodes: the dBy/dz row's central differences (one-sided at the ends),
        computed once, not at every look-up."""
        return np.gradient(self.values[1], self.spacing)

    @functools.cached_property
    def _x_node_curvature(self) -> np.ndarray:
        """(D, T): the x coefficients' second dz derivatives at the nodes, central differences
        of their dz derivative rows."""
        degree = len(self.x_values) // 2
        return np.gradient(self.x_values[degree:], self.spacing, axis=1)

    def _curvature(self, dby: np.ndarray, index: np.ndarray, u: np.ndarray) -> np.ndarray:
        if self.continuous_curvature:
            return _lerp(self._node_curvature, index, u)
        return (dby[index + 1] - dby[index]) / self.spacing

    def midplane(self, at: AxisPoint, x: np.ndarray) -> tuple[np.ndarray, ...]:
        """The midplane's x dependence ``d = b(x, z) - b(0, z)`` at the look-up ``at`` and x:
        ``(d, dd/dx, d2d/dx2 + d2d/dz2, dd/dz)`` (docs/model_bin.md, step 2, path). The
        coefficients are linear in z between nodes, their dz derivatives too, the second dz
        derivatives linear between their central differences at the nodes (or, with
        ``continuous_x_curvature`` False, the slopes of the first, constant between nodes); d is
        their polynomial in u = clamp(x / x_scale, -1, 1); all zero beyond the tables."""
        degree = len(self.x_values) // 2
        i, w = at.index, at.u
        rows = self.x_values
        value = [_lerp(rows[p], i, w) for p in range(degree)]
        slope = [_lerp(rows[degree + p], i, w) for p in range(degree)]
        if self.continuous_x_curvature:
            curve = [_lerp(c, i, w) for c in self._x_node_curvature]
        else:
            curve = [(rows[degree + p][i + 1] - rows[degree + p][i]) / self.spacing
                     for p in range(degree)]  # fmt: skip
        u = np.clip(x / self.x_scale, -1.0, 1.0)
        d = _power_series(value, u, 1)
        d_du = _power_series([(p + 1) * c for p, c in enumerate(value)], u, 0)
        d2_du2 = _power_series([(p + 2) * (p + 1) * c for p, c in enumerate(value[1:])], u, 0)
        laplacian = d2_du2 / (self.x_scale * self.x_scale) + _power_series(curve, u, 1)
        inside = at.inside
        zero = 0.0
        return (
            np.where(inside, d, zero),
            np.where(inside, d_du / self.x_scale, zero),
            np.where(inside, laplacian, zero),
            np.where(inside, _power_series(slope, u, 1), zero),
        )


def _power_series(coefficients: list, u: np.ndarray, first: int) -> np.ndarray:
    """sum_p coefficients[p] u^(p + first), by Horner's rule (0 for no coefficients)."""
    total = np.zeros_like(u)
    for c in reversed(coefficients):
        total = total * u + c
    return total * u if first else total


def _lerp(values: np.ndarray, index: np.ndarray, u: np.ndarray) -> np.ndarray:
    return values[index] * (1 - u) + values[index + 1] * u


def _hermite(values, slopes, index, u, spacing) -> np.ndarray:
    v0, v1 = values[index], values[index + 1]
    d0, d1 = slopes[index] * spacing, slopes[index + 1] * spacing
    u2 = u * u
    u3 = u2 * u
    return (
        (2 * u3 - 3 * u2 + 1) * v0
        + (u3 - 2 * u2 + u) * d0
        + (-2 * u3 + 3 * u2) * v1
        + (u3 - u2) * d1
    )


def straight_line(inputs: np.ndarray) -> np.ndarray:
    """(N, 4) straight-line end states of (N, 7) inputs."""
    x, y, tx, ty, _, z0, z1 = inputs.T
    dz = z1 - z0
    return np.stack([x + tx * dz, y + ty * dz, tx, ty], 1)


def field_integrals(start: AxisPoint, end: AxisPoint, dz: np.ndarray) -> tuple[np.ndarray, ...]:
    """I1 = int By dz (T mm) and I2 = int (z1 - z) By dz (T mm^2) over the leg."""
    return end.f - start.f, end.h - start.h - start.f * dz


def base_prediction(
    base: str,
    inputs: np.ndarray,
    tables: Tables,
    quadrature: tuple[np.ndarray, np.ndarray],
    kappa: float,
    passes: int = 0,
) -> np.ndarray:
    """(N, 4) float64 base end states of (N, 7) float64 inputs."""
    if base == "line":
        return straight_line(inputs)
    if base == "kick":
        return _kick(inputs, tables, kappa)
    if base == "expansion":
        return _expansion(inputs, tables, quadrature, kappa)
    if base == "path":
        return _path(inputs, tables, quadrature, kappa, passes)
    return _axial(inputs, tables, quadrature, kappa)


def _kick(inputs: np.ndarray, tables: Tables, kappa: float) -> np.ndarray:
    x, y, tx, ty, qop, z0, z1 = inputs.T
    dz = z1 - z0
    i1, i2 = field_integrals(tables.at(z0), tables.at(z1), dz)
    k = kappa * qop * np.sqrt(1 + tx * tx + ty * ty)
    bend_x, bend_y = -k * (1 + tx * tx), -k * tx * ty
    return np.stack(
        (x + tx * dz + bend_x * i2, y + ty * dz + bend_y * i2, tx + bend_x * i1, ty + bend_y * i1),
        1,
    )


def _axial(inputs, tables: Tables, quadrature, kappa: float) -> np.ndarray:
    """Exact in the on-axis field: ux = tx / N changes by -kappa qop dF, uy is constant."""
    nodes, weights = quadrature
    x, y, tx, ty, qop, z0, z1 = inputs.T
    inv_n = 1 / np.sqrt(1 + tx * tx + ty * ty)
    ux0, uy = tx * inv_n, ty * inv_n
    kq = kappa * qop
    f0 = tables.at(z0).f
    dz = z1 - z0
    f_nodes = tables.at(z0[:, None] + dz[:, None] * nodes).f  # (N, K)
    ux_nodes = ux0[:, None] - kq[:, None] * (f_nodes - f0[:, None])
    tx_nodes, ty_nodes = _slopes(ux_nodes, uy[:, None], tables.min_uz_squared)
    tx1, ty1 = _slopes(ux0 - kq * (tables.at(z1).f - f0), uy, tables.min_uz_squared)
    return np.stack((x + dz * (tx_nodes @ weights), y + dz * (ty_nodes @ weights), tx1, ty1), 1)


def _slopes(ux: np.ndarray, uy: np.ndarray, min_uz_squared: float) -> tuple[np.ndarray, ...]:
    inv_uz = 1 / np.sqrt(np.maximum(1 - ux * ux - uy * uy, min_uz_squared))
    return ux * inv_uz, uy * inv_uz


def _expansion(inputs, tables: Tables, quadrature, kappa: float) -> np.ndarray:
    """The axial transport plus the off-plane field By = f - y^2/2 f'', Bz = y f' evaluated at
    the quadrature nodes of the on-axis trajectory (its slopes, and y with the kick's bending
    in y) and integrated to first order: d slope = int g dz, d position = int (z1 - z) g dz."""
    nodes, weights = quadrature
    x, y, tx, ty, qop, z0, z1 = inputs.T
    norm = np.sqrt(1 + tx * tx + ty * ty)
    ux0, uy = tx / norm, ty / norm
    kq = kappa * qop
    dz = z1 - z0
    start = tables.at(z0)
    z_nodes = z0[:, None] + dz[:, None] * nodes  # (N, K)
    at = tables.at(z_nodes)
    ux = ux0[:, None] - kq[:, None] * (at.f - start.f[:, None])
    uz2 = 1 - ux * ux - (uy * uy)[:, None]
    inv_uz = 1 / np.sqrt(np.maximum(uz2, tables.min_uz_squared))
    tx_k, ty_k = ux * inv_uz, uy[:, None] * inv_uz
    # y along the path: the straight line plus the kick's first-order bending in y.
    lever = at.h - start.h[:, None] - start.f[:, None] * (z_nodes - z0[:, None])
    bend_y = (kq * norm * tx * ty)[:, None]
    y_k = y[:, None] + ty[:, None] * (z_nodes - z0[:, None]) - bend_y * lever
    by_off, bz = -0.5 * y_k * y_k * at.d2by, y_k * at.dby
    k = kq[:, None] * inv_uz  # kappa qop N along the path (N = 1 / uz)
    dtx = k * (ty_k * bz - (1 + tx_k * tx_k) * by_off)
    dty = -k * (tx_k * ty_k * by_off + tx_k * bz)
    tx1, ty1 = _slopes(ux0 - kq * (tables.at(z1).f - start.f), uy, tables.min_uz_squared)
    lever_weights = weights * (1 - nodes)
    return np.stack(
        (
            x + dz * (tx_k @ weights) + dz * dz * (dtx @ lever_weights),
            y + dz * (ty_k @ weights) + dz * dz * (dty @ lever_weights),
            tx1 + dz * (dtx @ weights),
            ty1 + dz * (dty @ weights),
        ),
        1,
    )


def integration_matrix(nodes: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(K, K) S, ``sum_j S[k, j] g(t_j) = int_0^t_k g dt`` for polynomials g of degree below K:
    S[k, j] is the integral over [0, t_k] of the Lagrange basis polynomial L_j of the nodes,
    computed by the nodes' own Gauss-Legendre rule scaled to [0, t_k] (exact: L_j has degree
    K - 1), ``t_k sum_m w_m L_j(t_k t_m)``, with L_j in product form (no ill-conditioned
    Vandermonde matrix). The operations and their order are raytrack_mlp.hpp's
    (``integration_matrix``), so both give the same bits (the trigger header writes these)."""
    t = np.asarray(nodes, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    count = len(t)
    points = t[:, None] * t[None, :]  # (k, m): t_k t_m
    matrix = np.zeros((count, count))
    for j in range(count):
        basis = np.ones((count, count))  # (k, m): L_j(t_k t_m)
        for other in range(count):
            if other != j:
                basis = basis * ((points - t[other]) / (t[j] - t[other]))
        total = np.zeros(count)
        for m in range(count):  # in order, as the C++ loop sums
            total = total + w[m] * basis[:, m]
        matrix[:, j] = t * total
    return matrix


def _path(inputs, tables: Tables, quadrature, kappa: float, passes: int) -> np.ndarray:
    """The on-axis transport corrected for the whole field along the track's own path
    (docs/model_bin.md, step 2, path): in direction cosines, ux on the axis changes by exactly
    -kappa qop dF; ``passes`` times, the rest of the field (Maxwell's expansion to second order
    in y of the on-axis profile and of the midplane's x dependence) is evaluated at the nodes
    of the current path and integrated to every node, for the direction and the next path."""
    nodes, weights = quadrature
    integration = integration_matrix(nodes, weights)  # (K, K)
    x, y, tx, ty, qop, z0, z1 = inputs.T
    norm = np.sqrt(1 + tx * tx + ty * ty)
    ux0, uy0 = tx / norm, ty / norm
    kq = kappa * qop
    dz = z1 - z0
    run = nodes[:, None] * dz  # (K, N): z - z0 at the nodes
    start = tables.at(z0)
    at = tables.at(z0 + run)
    ux_axis = ux0 - kq * (at.f - start.f)
    uy_axis = uy0 + 0.0 * ux_axis
    bend = (kq * norm) * (at.h - start.h - start.f * run)
    x_k = x + tx * run - (1 + tx * tx) * bend
    y_k = y + ty * run - (tx * ty) * bend
    ux, uy = ux_axis, uy_axis
    gx = gy = np.zeros_like(ux)
    for step in range(passes):
        gx, gy = _off_axis_force(tables, at, x_k, y_k, ux, uy, kq)
        ux = ux_axis + dz * (integration @ gx)
        uy = uy_axis + dz * (integration @ gy)
        if step + 1 < passes:
            tx_k, ty_k = _slopes(ux, uy, tables.min_uz_squared)
            x_k = x + dz * (integration @ tx_k)
            y_k = y + dz * (integration @ ty_k)
    tx_k, ty_k = _slopes(ux, uy, tables.min_uz_squared)
    ux1 = ux0 - kq * (tables.at(z1).f - start.f) + dz * (weights @ gx)
    tx1, ty1 = _slopes(ux1, uy0 + dz * (weights @ gy), tables.min_uz_squared)
    return np.stack((x + dz * (weights @ tx_k), y + dz * (weights @ ty_k), tx1, ty1), 1)


def _off_axis_force(tables: Tables, at: AxisPoint, x, y, ux, uy, kq) -> tuple[np.ndarray, ...]:
    """d(ux, uy)/dz from the field beyond the on-axis By at the nodes' (x, y): By = -y^2/2 f'',
    Bz = y f' and, with x tables, dBy = d - y^2/2 (d_xx + d_zz), Bx = y d_x, dBz = y d_z."""
    inv_uz = 1 / np.sqrt(np.maximum(1 - ux * ux - uy * uy, tables.min_uz_squared))
    half_y2 = 0.5 * y * y
    by, bz = -half_y2 * at.d2by, y * at.dby
    if not len(tables.x_values):
        return -kq * (by - uy * bz * inv_uz), -kq * (ux * bz * inv_uz)
    deviation, d_dx, laplacian, d_dz = tables.midplane(at, x)
    by = by + deviation - half_y2 * laplacian
    bz = bz + y * d_dz
    return -kq * (by - uy * bz * inv_uz), kq * (y * d_dx - ux * bz * inv_uz)
