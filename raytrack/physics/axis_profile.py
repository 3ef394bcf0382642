"""The on-axis field profile: ``By(0, 0, z)`` tabulated with its running integrals, and the
midplane's x dependence fitted at the same nodes (docs/physics.md sections 2a and 2c).

This module owns the profile as a concept: :class:`AxisProfile` fits it from a field, builds
its integrals from By samples, and writes and reads the plain-data record a dataset's
manifest keeps (``to_dict`` / ``from_dict``). Which field a dataset's manifest records, and
the z range its profile covers, is :mod:`raytrack.data.manifest_field`'s; reading the tables
in torch is :mod:`raytrack.physics.axis_lookup`'s.

Two cumulative tables of the on-axis field turn a leg's bending into look-ups:

    F(z) = int By dz            (T mm)        H(z) = int F dz            (T mm^2)

The node values of F come from By by a fourth-order rule; those of H are the exact integral of
F's cubic Hermite interpolant (F' = By, H' = F). A field map is taken as samples of a smooth
field: the profile passes a cubic spline through its By, and through the x fit, at the map's
own z nodes (why: docs/physics.md section 2c). Manifests written before keep their record,
By linear between the map's nodes and derivatives smoothed over its grid.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from raytrack.physics.fields import Field, GridField

#: Node spacing of the tables, mm: a divisor of LHCb's 100 mm map grid.
DEFAULT_SPACING_MM = 20.0
RULES = ("linear", "smooth")
#: The midplane field's x dependence, ``b(x, z) - b(0, z)`` with ``b = By(x, 0, z)``, is fitted at
#: each table node by a polynomial of this degree in ``u = x / x_scale`` (no constant term; how
#: closely it fits the test map: docs/physics.md section 5).
X_DEGREE = 8
#: x samples of that fit, mm (LHCb's map grid).
X_SAMPLE_SPACING_MM = 100.0
#: Half width of the fit, mm, for an analytic field (a map: its own grid's, up to this).
X_SCALE_MM = 4000.0
#: A field whose midplane deviates from its axis by less than this fraction of its peak has no
#: x dependence to fit (the default dipole: exactly none), and its models carry no x tables.
X_DEPENDENCE_FLOOR = 1e-6
#: The off-plane dz derivatives of a profile recorded with a map's grid (a manifest written
#: before the spline, ``derivatives_smoothed_over_mm``) come from its tables smoothed over this
#: many grid spacings (:func:`smoothed_over`).
SMOOTHING_GRIDS = 2


@dataclass(frozen=True)
class AxisProfile:
    """``By(0, 0, z)`` at ``z_first + i * spacing`` (tesla) and its running integrals."""

    z_first: float  # mm
    spacing: float  # mm
    by: np.ndarray  # (n,) T
    f: np.ndarray  # (n,) T mm, F(z_first) = 0
    h: np.ndarray  # (n,) T mm^2, H(z_first) = 0
    rule: str = "smooth"  # how F was integrated from By (see from_by)
    #: The midplane's x dependence (see :func:`fit_x_dependence`): (n, D) polynomial
    #: coefficients (T) in ``u = x / x_scale`` at the same z nodes, D = 0 for none.
    x_coefficients: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 0)))
    x_scale: float = X_SCALE_MM  # mm
    #: 0, or the z grid spacing (mm) of a map whose manifest predates the spline: the off-plane
    #: terms' dz derivatives are then taken from the tables smoothed over it
    #: (:func:`smoothed_over`).
    grid_mm: float = 0.0

    @property
    def x_degree(self) -> int:
        """D: 0 when the field has no x dependence (its models carry no x tables)."""
        return int(self.x_coefficients.shape[1]) if self.x_coefficients.size else 0

    @property
    def z_last(self) -> float:
        return self.z_first + self.spacing * (len(self.by) - 1)

    @classmethod
    def from_field(
        cls, field: Field, z_min: float, z_max: float, spacing: float = DEFAULT_SPACING_MM
    ) -> AxisProfile:
        """Tabulate ``field`` on the axis over [z_min, z_max] (widened to whole nodes)."""
        if not z_max > z_min or spacing <= 0:
            raise ValueError(f"need z_min < z_max and spacing > 0, got {z_min}, {z_max}, {spacing}")
        first = np.floor(z_min / spacing) * spacing
        count = int(np.ceil((z_max - first) / spacing)) + 1
        nodes = first + spacing * np.arange(count)
        scale = x_scale_of(field)
        if isinstance(field, GridField):
            by, coefficients = _splined_through_grid(field, nodes, scale)
        else:
            by, coefficients = _on_axis_by(field, nodes), fit_x_dependence(field, nodes, scale)
        profile = cls.from_by(first, spacing, by, "smooth")
        return dataclasses.replace(profile, x_coefficients=coefficients, x_scale=scale)

    @classmethod
    def from_by(
        cls, z_first: float, spacing: float, by: np.ndarray, rule: str = "smooth"
    ) -> AxisProfile:
        """From By samples alone (what the manifest keeps), integrated by ``rule``:

        * ``"linear"``: By linear between nodes (a trilinear map's own, as manifests written
          before the spline record it): the trapezoid rule, exact.
        * ``"smooth"``: a smooth field (analytic, or a map's spline): the trapezoid rule with
          its Euler-Maclaurin end correction (dBy/dz by central differences), fourth order
          (what the plain trapezoid would miss: docs/physics.md section 5).
        """
        if rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
        by = np.asarray(by, dtype=np.float64)
        f = np.concatenate(([0.0], np.cumsum(spacing / 2 * (by[:-1] + by[1:]))))
        if rule == "smooth":
            slope = np.gradient(by, spacing)
            f = f + spacing**2 / 12 * (slope[0] - slope)
        return cls(float(z_first), float(spacing), by, f, _integrate_hermite(f, by, spacing), rule)

    @classmethod
    def from_tables(cls, z_first: float, spacing: float, tables: np.ndarray) -> AxisProfile:
        """From the (4, n) rows of :meth:`tables` as a model stores them (a model's x tables
        come back with its state: ``Formulation._load_from_state_dict``)."""
        tables = np.asarray(tables, dtype=np.float64)
        return cls(float(z_first), float(spacing), tables[0], tables[2], tables[3])

    def to_dict(self) -> dict[str, Any]:
        """Plain data for a manifest: the integrals are rebuilt from By on reading."""
        data: dict[str, Any] = {
            "z_first_mm": self.z_first,
            "spacing_mm": self.spacing,
            "by_between_nodes": self.rule,
            "by_tesla": self.by.tolist(),
        }
        if self.grid_mm:
            data["derivatives_smoothed_over_mm"] = self.grid_mm
        if self.x_degree:
            data["midplane_x"] = {
                "x_scale_mm": self.x_scale,
                "degree": self.x_degree,
                "coefficients_tesla": self.x_coefficients.tolist(),
            }
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AxisProfile:
        profile = cls.from_by(
            data["z_first_mm"], data["spacing_mm"], data["by_tesla"], data["by_between_nodes"]
        )
        grid = float(data.get("derivatives_smoothed_over_mm", 0.0))
        profile = dataclasses.replace(profile, grid_mm=grid)
        x = data.get("midplane_x")  # absent: no x dependence, or a manifest without the fit
        if not x:
            return profile
        coefficients = np.asarray(x["coefficients_tesla"], dtype=np.float64)
        if coefficients.shape != (len(profile.by), x["degree"]):
            raise ValueError(
                f"midplane_x.coefficients_tesla has shape {coefficients.shape}, "
                f"expected ({len(profile.by)}, {x['degree']})"
            )
        return dataclasses.replace(
            profile, x_coefficients=coefficients, x_scale=float(x["x_scale_mm"])
        )

    def half_maximum_extent(self) -> tuple[float, float]:
        """Where |By| on the axis is at least half its peak, mm: "inside the magnet" for the
        evaluation's leg regions (the default dipole's: docs/physics.md section 3).

        The two crossings are interpolated linearly between the table's nodes, so the extent
        does not move by up to a node spacing (20 mm) with where the nodes happen to lie."""
        level = 0.5 * np.abs(self.by).max()
        strong = np.flatnonzero(np.abs(self.by) >= level)
        first, last = strong[0], strong[-1]
        return self._crossing(first - 1, first, level), self._crossing(last + 1, last, level)

    def _crossing(self, outside: int, inside: int, level: float) -> float:
        """z between two neighbouring nodes where |By| passes ``level`` (the inside node's z
        when the table ends there)."""
        z_inside = self.z_first + self.spacing * inside
        if not 0 <= outside < len(self.by):
            return float(z_inside)
        b_out, b_in = abs(self.by[outside]), abs(self.by[inside])
        fraction = (b_in - level) / (b_in - b_out)
        return float(z_inside + (outside - inside) * self.spacing * fraction)

    def tables(self, dtype=torch.float64, device=None) -> torch.Tensor:
        """(4, n) tensor: rows By, dBy/dz (central differences; of By smoothed over a map's
        grid), F, H (what a model keeps)."""
        rows = np.stack([self.by, self._derivative(self.by), self.f, self.h])
        return torch.tensor(rows, dtype=dtype, device=device)

    def x_tables(self, dtype=torch.float64, device=None) -> torch.Tensor:
        """(2D, n) tensor: the D coefficients of the midplane's x dependence (T), then their
        dz derivatives (central differences, T / mm); (0, n) without x dependence."""
        c = self.x_coefficients
        if not self.x_degree:
            return torch.zeros(0, len(self.by), dtype=dtype, device=device)
        rows = np.concatenate((c.T, self._derivative(c).T))
        return torch.tensor(rows, dtype=dtype, device=device)

    def _derivative(self, values: np.ndarray) -> np.ndarray:
        """d/dz of (n, ...) values at the nodes: central differences, of the values smoothed
        over the grid of a map (:func:`smoothed_over`)."""
        width = int(round(SMOOTHING_GRIDS * self.grid_mm / self.spacing))
        return np.gradient(smoothed_over(values, width), self.spacing, axis=0)


def smoothed_over(values: np.ndarray, width: int) -> np.ndarray:
    """(n, ...) values averaged twice over ``width`` node intervals (a trapezoid box each
    time), along the first axis; unchanged for a width below 2.

    A trilinear map is linear in z between its grid nodes: its dz derivative jumps there and
    its second derivative is a row of spikes, which the off-plane terms (``y dBy/dz``,
    ``y^2/2 d2By/dz2``) would alias at the quadrature nodes (see :data:`SMOOTHING_GRIDS`).
    Twice boxed, the profile is twice differentiable."""
    if width < 2:
        return values
    box = np.full(width + 1, 1.0 / width)
    box[[0, -1]] = 0.5 / width
    out = np.asarray(values, dtype=np.float64)
    for _ in range(2):
        # Padded by odd reflection: a linear trend at the tables' ends stays linear.
        before = 2 * out[:1] - out[width // 2 : 0 : -1]
        after = 2 * out[-1:] - out[-2 : -2 - (width - width // 2) : -1]
        padded = np.concatenate((before, out, after))
        out = np.apply_along_axis(lambda column: np.convolve(column, box, "valid"), 0, padded)
    return out


def x_scale_of(field: Field) -> float:
    """Half width of the x dependence's fit, mm: a map's own (the smaller side of its grid),
    at most :data:`X_SCALE_MM`."""
    if isinstance(field, GridField):
        first = field.origin[0]
        last = first + field.spacing[0] * (field.shape[0] - 1)
        return float(min(X_SCALE_MM, -first, last))
    return X_SCALE_MM


def fit_x_dependence(field: Field, z: np.ndarray, x_scale: float) -> np.ndarray:
    """(len(z), D) coefficients c of ``b(x, z) - b(0, z) = sum_p c_p (x / x_scale)^p``,
    p = 1..D, fitted by least squares to the midplane field ``b = By(x, 0, z)`` at x every
    :data:`X_SAMPLE_SPACING_MM` over [-x_scale, x_scale]; (len(z), 0) when the deviation
    stays below :data:`X_DEPENDENCE_FLOOR` of the peak field (no x dependence)."""
    if x_scale <= 0:
        return np.zeros((len(z), 0))
    count = 2 * int(np.ceil(x_scale / X_SAMPLE_SPACING_MM)) + 1
    u = np.linspace(-1.0, 1.0, count)
    xt, zt = np.meshgrid(u * x_scale, np.asarray(z, dtype=np.float64), indexing="ij")
    by = field.evaluate(*(torch.as_tensor(v) for v in (xt, np.zeros_like(xt), zt)))[1]
    b = by.numpy().astype(np.float64)  # (x, z)
    deviation = b - _on_axis_by(field, z)[None, :]
    if np.abs(deviation).max() <= X_DEPENDENCE_FLOOR * max(np.abs(b).max(), 1e-300):
        return np.zeros((len(z), 0))
    powers = u[:, None] ** np.arange(1, X_DEGREE + 1)[None, :]
    coefficients, *_ = np.linalg.lstsq(powers, deviation, rcond=None)
    return np.ascontiguousarray(coefficients.T)


def _splined_through_grid(
    field: GridField, nodes: np.ndarray, x_scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """By on the axis and the x fit's coefficients at ``nodes``: cubic splines through their
    values at the map's own z nodes, zero beyond the map (as its field).

    Between its nodes a trilinear map is biased against the smooth field it samples, by
    ``-h^2/12`` of the second derivative along each axis on average; off the grid's node lines
    the three biases cancel for a field free of sources (its Laplacian is zero), so the tracks
    see the smooth field on average, while the axis, a node line in x and y, keeps the z bias
    alone. The spline gives the base the smooth field (docs/physics.md section 2c)."""
    # Deferred on purpose: scipy costs every process that imports the physics half a second,
    # and only a map's profile needs it.
    from scipy.interpolate import CubicSpline

    z_grid = field.origin[2] + field.spacing[2] * np.arange(field.shape[2])
    inside = (nodes >= z_grid[0]) & (nodes <= z_grid[-1])
    samples = np.column_stack(
        (_on_axis_by(field, z_grid), fit_x_dependence(field, z_grid, x_scale))
    )
    splined = np.zeros((len(nodes), samples.shape[1]))
    splined[inside] = CubicSpline(z_grid, samples, axis=0)(nodes[inside])
    return splined[:, 0], np.ascontiguousarray(splined[:, 1:])


def _on_axis_by(field: Field, z: np.ndarray) -> np.ndarray:
    zt = torch.as_tensor(z, dtype=torch.float64)
    zero = torch.zeros_like(zt)
    return field.evaluate(zero, zero, zt)[1].numpy().astype(np.float64)


def _integrate_hermite(f: np.ndarray, by: np.ndarray, spacing: float) -> np.ndarray:
    """H at the nodes: the exact integral of the Hermite cubic through (F, By) on each interval."""
    steps = spacing / 2 * (f[:-1] + f[1:]) + spacing**2 / 12 * (by[:-1] - by[1:])
    return np.concatenate(([0.0], np.cumsum(steps)))
