"""Reading the on-axis tables in torch (docs/physics.md section 2a): By, dBy/dz, F and H at any z,
and the midplane's x dependence, for the transports and the models.

:class:`AxisTables` holds the tables of an :class:`~raytrack.physics.axis_profile.AxisProfile`
as a model keeps them; :meth:`AxisTables.at` reads them at z (any dtype and device; autograd
flows through): By and dBy/dz linear between nodes, F and H by cubic Hermite interpolation
(F' = By, H' = F), d2By/dz2 linear between its central differences at the nodes. Beyond the
tables By is taken as 0.

d2By/dz2 must be continuous: the off-plane field ``-y^2/2 d2By/dz2`` reaches tracks 3 m off the
midplane, and a d2By constant on each 20 mm interval puts a sawtooth in z into every path-base
prediction that no network can learn (docs/physics.md section 2c). The same holds for the second
dz derivative of the midplane's x coefficients. Models trained with a stepped rule keep it
(``continuous_curvature``, ``continuous_x_curvature`` False), so they compute what they were
trained with.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from raytrack.physics.axis_profile import X_SCALE_MM


@dataclass(frozen=True)
class AxisTables:
    """The (4, n) tables of :meth:`AxisProfile.tables` and where their nodes lie, and the
    (2D, n) tables of the midplane's x dependence (:meth:`AxisProfile.x_tables`; empty
    without).

    ``rows``, ``x_rows``: the tables as the look-ups read them (:func:`interval_rows`);
    computed from ``values`` and ``x_values`` when not given (a model keeps them as buffers,
    computed once).
    """

    values: torch.Tensor
    z_first: float
    spacing: float
    rows: torch.Tensor | None = None
    x_values: torch.Tensor | None = None
    x_scale: float = X_SCALE_MM
    x_rows: torch.Tensor | None = None
    continuous_curvature: bool = True
    continuous_x_curvature: bool = True

    @property
    def x_degree(self) -> int:
        return 0 if self.x_values is None else self.x_values.shape[0] // 2

    def at(self, z: torch.Tensor) -> AxisValues:
        """By, dBy/dz (linear between nodes), F and H (cubic Hermite) at z, any shape. Beyond
        the tables By is taken as 0: F stays at its end value and H grows linearly.

        One gather of each z's interval row (:func:`interval_rows`): the look-ups at the
        quadrature nodes are most of a small model's inference time."""
        rows = self.rows
        if rows is None:
            rows = axis_interval_rows(self.values, self.spacing, self.continuous_curvature)
        x_rows = self.x_rows
        if x_rows is None and self.x_degree:
            x_rows = x_interval_rows(self.x_values, self.spacing, self.continuous_x_curvature)
        t = (z - self.z_first) / self.spacing
        index = torch.clamp(torch.floor(t), 0, rows.shape[0] - 1)
        u = torch.clamp(t - index, 0.0, 1.0)
        outside = (t - index - u) * self.spacing  # signed distance past the end node
        midplane = (x_rows, self.x_scale, self.x_degree) if self.x_degree else None
        return AxisValues(rows, index.long(), u, outside, self.spacing, midplane)


def axis_interval_rows(values: torch.Tensor, spacing: float, continuous: bool) -> torch.Tensor:
    """The interval rows (:func:`interval_rows`) of the (4, n) axis tables, with
    ``continuous`` a fifth row, d2By/dz2 at the nodes (:func:`node_curvature`)."""
    if continuous:
        values = torch.cat((values, node_curvature(values[1], spacing).unsqueeze(0)))
    return interval_rows(values)


def x_interval_rows(x_values: torch.Tensor, spacing: float, continuous: bool) -> torch.Tensor:
    """The interval rows of the (2D, n) x tables, with ``continuous`` D more rows: the
    coefficients' second dz derivatives at the nodes (:func:`node_curvature` of the D
    derivative rows)."""
    if continuous:
        degree = x_values.shape[0] // 2
        x_values = torch.cat((x_values, node_curvature(x_values[degree:], spacing)))
    return interval_rows(x_values)


def node_curvature(dby: torch.Tensor, spacing: float) -> torch.Tensor:
    """d2By/dz2 at the nodes from the dBy/dz row (or any rows of dz derivatives, along the
    last axis): central differences, one-sided at the two ends (as ``np.gradient``, which made
    the dBy/dz row from By)."""
    inner = (dby[..., 2:] - dby[..., :-2]) / (2 * spacing)
    first = (dby[..., 1:2] - dby[..., :1]) / spacing
    last = (dby[..., -1:] - dby[..., -2:-1]) / spacing
    return torch.cat((first, inner, last), -1)


def interval_rows(values: torch.Tensor) -> torch.Tensor:
    """(n - 1, 2R) rows: the R rows of the (R, n) tables at the two nodes of each interval
    (``By, dBy/dz, F, H`` for the axis tables): what a look-up reads, in one gather."""
    return torch.cat((values[:, :-1], values[:, 1:])).T.contiguous()


class AxisValues:
    """The tables read at some z (:meth:`AxisTables.at`): each quantity is computed when first
    asked for, so that an exported graph holds only what a formulation uses."""

    def __init__(
        self,
        rows: torch.Tensor,
        index: torch.Tensor,
        u: torch.Tensor,
        outside: torch.Tensor,
        spacing: float,
        midplane: tuple[torch.Tensor, float, int] | None = None,
    ) -> None:
        # One gather of each z's row, (M, 8), then its columns: ONNX Runtime fuses the slices
        # into one split, where one gather per column costs more.
        self._c = _gather_columns(rows, index)
        self._width = rows.shape[1] // 2  # rows per node: 5 with d2By/dz2, 4 without
        self._index, self._u, self._outside, self._spacing = index, u, outside, spacing
        self._midplane = midplane

    @functools.cached_property
    def _basis(self) -> tuple[torch.Tensor, ...]:
        """The cubic Hermite basis at u, the two slope terms scaled to the node spacing."""
        u = self._u
        u2 = u * u
        u3 = u2 * u
        s = self._spacing
        return 2 * u3 - 3 * u2 + 1, (u3 - 2 * u2 + u) * s, -2 * u3 + 3 * u2, (u3 - u2) * s

    def _hermite(self, value: int, slope: int) -> torch.Tensor:
        b0, b1, b2, b3 = self._basis
        c = self._c
        w = self._width
        return b0 * c[value] + b1 * c[slope] + b2 * c[value + w] + b3 * c[slope + w]

    @functools.cached_property
    def f(self) -> torch.Tensor:
        """F = int By dz, T mm."""
        return self._hermite(2, 0)

    @functools.cached_property
    def h(self) -> torch.Tensor:
        """H = int F dz, T mm^2."""
        return self._hermite(3, 2) + self.f * self._outside

    @functools.cached_property
    def _inside(self) -> torch.Tensor:
        """1 between the tables' end nodes, 0 beyond them (where By is taken as 0)."""
        return (self._outside == 0).to(self._u.dtype)

    def _lerp(self, column: int) -> torch.Tensor:
        return self._c[column] * (1 - self._u) + self._c[column + self._width] * self._u

    @functools.cached_property
    def by(self) -> torch.Tensor:
        """By, T."""
        return self._lerp(0) * self._inside

    @functools.cached_property
    def dby(self) -> torch.Tensor:
        """dBy/dz, T / mm."""
        return self._lerp(1) * self._inside

    @functools.cached_property
    def d2by(self) -> torch.Tensor:
        """d2By/dz2, T / mm^2: linear between the nodes' values, or, for a model trained
        before (no fifth row), the slope of the dBy/dz interpolant (constant between nodes)."""
        if self._width == 5:
            return self._lerp(4) * self._inside
        return (self._c[5] - self._c[1]) / self._spacing * self._inside

    @property
    def has_x_dependence(self) -> bool:
        return self._midplane is not None

    @functools.cached_property
    def _x_coefficients(self) -> tuple[torch.Tensor, ...]:
        """The x polynomial's coefficient arrays at z, (..., D) each, zero beyond the tables:
        of ``d``; of ``dd/du`` and of ``x_scale^2 (d2d/dx2 + d2d/dz2)`` one and two powers
        down (their constant terms apart); of ``dd/dz``. The coefficients are linear in z
        between nodes, their first and second dz derivatives too (as By, dBy/dz, d2By/dz2),
        or, rows of a model with the stepped rule, the second derivatives the slopes of the
        first (constant between nodes)."""
        x_rows, x_scale, degree = self._midplane
        width = x_rows.shape[1] // 2  # rows per node: [c, dc/dz] (2D) or with d2c/dz2 (3D)
        gathered = torch.index_select(x_rows, 0, self._index.reshape(-1))
        gathered = gathered.reshape(*self._index.shape, 2 * width)
        u = self._u.unsqueeze(-1)
        inside = self._inside.unsqueeze(-1)
        # The coefficients and their dz derivatives in one lerp: the rows are the interval's
        # two nodes (interval_rows).
        both = (gathered[..., :width] * (1 - u) + gathered[..., width:] * u) * inside
        value, slope = both[..., :degree], both[..., degree : 2 * degree]
        if width == 3 * degree:
            curve = both[..., 2 * degree :]
        else:
            rise = gathered[..., width + degree :] - gathered[..., degree:width]
            curve = rise * inside * (1 / self._spacing)
        powers = torch.arange(1, degree + 1, dtype=value.dtype, device=value.device)
        zeros = value[..., :1] * 0.0
        # sum_p c_p u^p: d/du = c_1 + sum_q (q + 1) c_(q+1) u^q,
        # d2/du2 = 2 c_2 + sum_q (q + 2)(q + 1) c_(q+2) u^q.
        first = torch.cat((value[..., 1:] * powers[1:], zeros), -1)
        second = torch.cat((value[..., 2:] * (powers[2:] * powers[1:-1]), zeros, zeros), -1)
        laplacian = second * (1 / (x_scale * x_scale)) + curve
        return value, first, laplacian, slope, value[..., 0], 2 * value[..., 1]

    def midplane_terms(self, x) -> tuple:
        """What the midplane's x dependence ``d = b(x, z) - b(0, z)`` gives at x (same shape
        as z): ``(d, dd/dx, d2d/dx2 + d2d/dz2, dd/dz)`` (T, T/mm, T/mm^2, T/mm), zero beyond
        the tables. With them, Maxwell's equations to second order in y add to the on-axis
        field's expansion ``(0, -y^2/2 f'', y f')``::

            dBy = d - y^2/2 (d2d/dx2 + d2d/dz2),   Bx = y dd/dx,   dBz = y dd/dz

        ``d`` is the fitted polynomial in ``u = x / x_scale``, u clamped to [-1, 1]: each term
        is one product with the powers of u and a sum (few, wide operations: ONNX Runtime's
        cost is per operation)."""
        _, x_scale, _ = self._midplane
        value, first, laplacian, slope, first_0, second_0 = self._x_coefficients
        u = torch.clamp(x / x_scale, -1.0, 1.0)
        power = [u]  # u^1 .. u^D
        for _ in range(value.shape[-1] - 1):
            power.append(power[-1] * u)
        powers = torch.stack(power, -1)
        second_0 = second_0 * (1 / (x_scale * x_scale))
        return (
            (value * powers).sum(-1),
            ((first * powers).sum(-1) + first_0) * (1 / x_scale),
            (laplacian * powers).sum(-1) + second_0,
            (slope * powers).sum(-1),
        )


def _gather_columns(rows: torch.Tensor, index: torch.Tensor) -> list[torch.Tensor]:
    """The columns of ``rows`` at each index, each in the index's shape."""
    gathered = torch.index_select(rows, 0, index.reshape(-1)).T
    return [c.reshape(index.shape) for c in gathered.unbind(0)]
