"""Magnetic field models.

Every field is a callable ``field(x, y, z) -> (bx, by, bz)``:

* positions ``x, y, z`` in **mm**, field components in **tesla**;
* vectorised over any shape; NumPy arrays in give NumPy arrays out, torch tensors in give
  tensors out on the same device (the integrator calls fields with float64 tensors).

Each field also has ``describe()``: a JSON-able dict that identifies it, which the dataset
manifest stores and hashes so that data made with different fields never mix.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import torch

# The file formats sit below the models: grid_files reads arrays, GridField wraps them.
from raytrack.physics.grid_files import GridData, read_cdf_quadrants, read_table

Array = np.ndarray | torch.Tensor

# Gaussian fit of By(0, 0, z) to the LHCb map, "down" polarity (docs/physics.md section 3).
LHCB_DIPOLE_B0_T = -1.0182
LHCB_DIPOLE_Z0_MM = 5007.0
LHCB_DIPOLE_SIGMA_MM = 1744.0

POLARITIES = {"down": 1.0, "up": -1.0}


class Field:
    """Base class: converts NumPy input to torch, evaluates, converts back."""

    def __call__(self, x: Array, y: Array, z: Array) -> tuple[Array, Array, Array]:
        if isinstance(x, torch.Tensor):
            return self.evaluate(x, y, z)
        tx, ty, tz = (torch.as_tensor(np.asarray(v, dtype=np.float64)) for v in (x, y, z))
        return tuple(b.numpy() for b in self.evaluate(tx, ty, tz))  # type: ignore[return-value]

    def evaluate(
        self, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def gradient(
        self, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor
    ) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        """``(dB/dx, dB/dy)``, each ``(dbx, dby, dbz)`` in tesla/mm, at tensor positions.

        The transport Jacobian needs the field's transverse derivatives (z is the integration
        variable, never differentiated). This default differentiates :meth:`evaluate` in
        forward mode, so it is exact for any field written in torch (a grid's trilinear
        interpolant included); fields with a closed form override it.
        """
        import torch.autograd.forward_ad as forward_ad

        derivatives = []
        for axis in (0, 1):
            with forward_ad.dual_level():
                xy = [x, y]
                xy[axis] = forward_ad.make_dual(xy[axis], torch.ones_like(xy[axis]))
                components = self.evaluate(xy[0], xy[1], z)
                tangents = (forward_ad.unpack_dual(b).tangent for b in components)
                derivatives.append(tuple(torch.zeros_like(x) if t is None else t for t in tangents))
        return derivatives[0], derivatives[1]

    def evaluate_with_gradient(self, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor):
        """``(evaluate(x, y, z), gradient(x, y, z))``: one call, so that a field whose two
        share work (the dipole's profile) does it once on the integrator's Jacobian path."""
        return self.evaluate(x, y, z), self.gradient(x, y, z)

    def describe(self) -> dict[str, Any]:
        raise NotImplementedError

    def fingerprint(self) -> str:
        """A short hash of ``describe()``: equal fields give equal fingerprints."""
        text = json.dumps(self.describe(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class UniformField(Field):
    """A constant field (tesla). Used to check the integrator against the exact helix."""

    def __init__(self, bx: float = 0.0, by: float = 0.0, bz: float = 0.0) -> None:
        self.b = (float(bx), float(by), float(bz))

    def evaluate(self, x, y, z):
        return tuple(torch.full_like(x, b) for b in self.b)  # type: ignore[return-value]

    def gradient(self, x, y, z):
        zero = torch.zeros_like(x)
        return (zero, zero, zero), (zero, zero, zero)

    def describe(self) -> dict[str, Any]:
        return {"type": "uniform", "b_tesla": list(self.b)}


class DipoleField(Field):
    """The default field: a Gaussian By profile fitted to the LHCb dipole map.

    On the symmetry plane (y = 0) ``By = f(z) = B0 exp(-(z - z0)^2 / (2 sigma^2))``.
    Off the plane, to second order in y (docs/physics.md section 3)::

        Bx = 0,   By = f(z) - y^2/2 f''(z),   Bz = y f'(z)

    so that div B = -y f'' + y f'' = 0 exactly and curl B = (y^2/2 f''', 0, 0) is of second
    order in y. ``polarity="up"`` flips every component (reversing the magnet current).
    """

    def __init__(
        self,
        b0: float = LHCB_DIPOLE_B0_T,
        z0: float = LHCB_DIPOLE_Z0_MM,
        sigma: float = LHCB_DIPOLE_SIGMA_MM,
        polarity: str = "down",
    ) -> None:
        if polarity not in POLARITIES:
            raise ValueError(f"polarity must be one of {sorted(POLARITIES)}, got {polarity!r}")
        if sigma <= 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        self.b0, self.z0, self.sigma, self.polarity = float(b0), float(z0), float(sigma), polarity

    def evaluate(self, x, y, z):
        return self._field(y, *self._profile(z))

    def gradient(self, x, y, z):
        return self._gradient(y, *self._profile(z))

    def evaluate_with_gradient(self, x, y, z):
        profile = self._profile(z)  # one exp for both
        return self._field(y, *profile), self._gradient(y, *profile)

    def _profile(self, z):
        """f, f' and f'' of the on-axis profile at z."""
        inv_s2 = 1.0 / (self.sigma * self.sigma)
        u = z - self.z0
        f = (POLARITIES[self.polarity] * self.b0) * torch.exp((-0.5 * inv_s2) * u * u)
        f1 = -inv_s2 * u * f  # f'(z)
        f2 = (inv_s2 * inv_s2 * u * u - inv_s2) * f  # f''(z)
        return f, f1, f2

    @staticmethod
    def _field(y, f, f1, f2):
        by = f - 0.5 * y * y * f2
        bz = y * f1
        return torch.zeros_like(by), by, bz

    @staticmethod
    def _gradient(y, f, f1, f2):
        # By = f - y^2/2 f'', Bz = y f': no x dependence; dBy/dy = -y f'', dBz/dy = f'.
        zero = torch.zeros_like(f)
        return (zero, zero, zero), (zero, -y * f2, f1)

    def describe(self) -> dict[str, Any]:
        return {
            "type": "dipole",
            "b0_tesla": self.b0,
            "z0_mm": self.z0,
            "sigma_mm": self.sigma,
            "polarity": self.polarity,
        }


class GridField(Field):
    """Trilinear interpolation on a regular grid.

    ``values`` has shape ``(nx, ny, nz, 3)`` in tesla, at points ``origin + index * spacing``
    (mm). **Outside the grid the field is zero**: a track leaving the map sees no field, as in
    LHCb's own grid service. Load maps with :meth:`from_cdf_quadrants` (LHCb's four quadrant
    files) or :meth:`from_table` (one text or ``.npz`` table with columns x y z Bx By Bz).
    """

    def __init__(
        self,
        values: np.ndarray,
        origin: tuple[float, float, float],
        spacing: tuple[float, float, float],
        source: dict[str, Any] | None = None,
    ) -> None:
        values = np.ascontiguousarray(values, dtype=np.float64)
        if values.ndim != 4 or values.shape[3] != 3 or min(values.shape[:3]) < 2:
            raise ValueError(
                f"grid values must have shape (nx>=2, ny>=2, nz>=2, 3), got {values.shape}"
            )
        if min(spacing) <= 0:
            raise ValueError(f"grid spacing must be positive, got {spacing}")
        self.values = values
        self.origin = tuple(float(v) for v in origin)
        self.spacing = tuple(float(v) for v in spacing)
        self.source = source or {}
        self._digest = hashlib.sha256(values.tobytes()).hexdigest()[:16]
        self._on_device: dict[str, torch.Tensor] = {}

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.values.shape[:3]  # type: ignore[return-value]

    def _table(self, device: torch.device) -> torch.Tensor:
        # Flattened (nx*ny*nz, 3) copy per device, made once, so gathers stay on the device.
        key = str(device)
        if key not in self._on_device:
            self._on_device[key] = torch.from_numpy(self.values.reshape(-1, 3)).to(device)
        return self._on_device[key]

    def evaluate(self, x, y, z):
        shape = x.shape
        table = self._table(x.device)
        nx, ny, nz = self.shape
        cell_index, weights, inside = [], [], None
        for coord, o, d, n in zip((x, y, z), self.origin, self.spacing, self.shape, strict=True):
            u = (coord.reshape(-1) - o) / d
            ok = (u >= 0) & (u <= n - 1)
            inside = ok if inside is None else inside & ok
            # nan_to_num: a NaN position must not become a garbage gather index (IndexError on
            # CPU, device-side assert on CUDA); its weight stays NaN, so its field is NaN.
            i0 = torch.clamp(torch.floor(torch.nan_to_num(u, nan=0.0)), 0, n - 2)
            weights.append(torch.clamp(u - i0, 0.0, 1.0))
            cell_index.append(i0.to(torch.int64))
        ix, iy, iz = cell_index
        wx, wy, wz = weights
        base = (ix * ny + iy) * nz + iz
        out = torch.zeros(base.shape[0], 3, dtype=table.dtype, device=table.device)
        for cx in (0, 1):
            fx = wx if cx else 1.0 - wx
            for cy in (0, 1):
                fy = wy if cy else 1.0 - wy
                for cz in (0, 1):
                    fz = wz if cz else 1.0 - wz
                    corner = table[base + (cx * ny + cy) * nz + cz]
                    out += (fx * fy * fz).unsqueeze(1) * corner
        out *= inside.unsqueeze(1)
        return tuple(out[:, k].reshape(shape) for k in range(3))  # type: ignore[return-value]

    def describe(self) -> dict[str, Any]:
        return {
            "type": "grid",
            "shape": list(self.shape),
            "origin_mm": list(self.origin),
            "spacing_mm": list(self.spacing),
            "values_sha256": self._digest,
            "source": self.source,
        }

    # ------------------------------------------------------------------ loaders
    @classmethod
    def from_table(cls, path: str, field_unit: str, length_unit: str = "mm") -> GridField:
        """Load one table with columns ``x y z Bx By Bz`` (text or ``.npz``).

        ``field_unit`` is required ("T" or "gauss"): copies of the LHCb map circulate in both.
        ``length_unit`` is "mm" (default), "cm" or "m". Rows may come in any order but must
        cover a full regular grid.
        """
        return cls.from_data(read_table(path, field_unit=field_unit, length_unit=length_unit))

    @classmethod
    def from_cdf_quadrants(cls, paths: list[str] | tuple[str, ...]) -> GridField:
        """Assemble LHCb's four quadrant ``.cdf`` files (c1..c4, in that order)."""
        return cls.from_data(read_cdf_quadrants(list(paths)))

    @classmethod
    def from_data(cls, data: GridData) -> GridField:
        """The field of a map read by :mod:`raytrack.physics.grid_files`."""
        return cls(data.values, data.origin, data.spacing, source=data.source)


def field_from_spec(
    spec: list[str] | None, field_unit: str | None = None, polarity: str = "down"
) -> Field:
    """Build a field from command-line words: ``default``, four ``.cdf`` files or one table."""
    if not spec or spec == ["default"]:
        return DipoleField(polarity=polarity)
    if all(p.endswith(".cdf") for p in spec):
        if len(spec) != 4:
            raise ValueError(
                f"--field: LHCb maps come as four quadrant .cdf files, got {len(spec)}"
            )
        return GridField.from_cdf_quadrants(spec)
    if len(spec) != 1:
        raise ValueError(f"--field: expected 'default', four .cdf files or one table, got {spec}")
    if field_unit is None:
        raise ValueError(
            f"--field-unit is required for the table {spec[0]!r}: copies of the map exist in "
            "both tesla and gauss (use --field-unit T or --field-unit gauss)"
        )
    return GridField.from_table(spec[0], field_unit=field_unit)


__all__ = [
    "Field",
    "UniformField",
    "DipoleField",
    "GridField",
    "field_from_spec",
]
