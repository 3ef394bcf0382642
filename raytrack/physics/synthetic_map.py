"""A field map of our own, with the features of a real one, to run the whole pipeline on a map.

LHCb's map is not distributed with raytrack. This module makes a stand-in with what a real map
has and the default Gaussian dipole lacks (docs/physics.md section 3): a **window-frame-like
dipole** whose midplane field ``b(x, z) = By(x, 0, z)`` is

* along z, a flat top with smooth, asymmetric fringes, ``h(z) = (tanh((z - z_in) / w_in) -
  tanh((z - z_out) / w_out)) / 2`` with edges at z 2900 and 7100 mm: the entrance fringe
  (1100 mm) is sharper than the exit fringe (1400 mm), as for a magnet whose aperture widens
  downstream; the field integral on the axis is ``b0 (z_out - z_in)``, -4.4 T m with the
  defaults (LHCb: about 4 T m over a 10 m track), the peak -0.98 T at z 4830 mm;
* across the aperture, falling off towards the coils, ``g(x) = 1 / (1 + (x / a)^2)`` with
  ``a = 4800 mm``: 4 % at x = 1 m, 15 % at 2 m, 28 % at 3 m (LHCb quotes a field integral
  that varies by up to 5 % over its acceptance);

``b = b0 g(x) h(z)``, and off the midplane the components Maxwell's equations give to second
order in y (docs/physics.md section 3), with ``L = d2/dx2 + d2/dz2``::

    Bx = y db/dx,   By = b - y^2/2 L(b),   Bz = y db/dz

divergence-free exactly (the derivatives are in closed form). Every scale is 1-2 m or more, so
the series stays tame over the pole gap.

**What it is not**: the LHCb map. Its numbers are plausible, not measured; its field is
separable in x and z (a real fall-off changes along the magnet) and has no x-y coupling beyond
the series, no coil ends, no iron saturation, and it is symmetric under x -> -x.

Sampled on a 100 mm grid, as LHCb's map is, over x in [-4000, 4000] mm, z in [-500, 14500] mm
and y in [-3000, 3000] mm (LHCb's map: y up to 4000 mm; 3000 covers nearly all of the default
phase space's tracks inside the field, docs/physics.md section 5, and off the midplane the
series grows as y^2): 81 x 61 x 151 points, a 36 MB ``.npz`` table and four 11 MB ``.cdf``
quadrant files. Outside the grid the field is zero, as for any map.

    python -m raytrack.physics.synthetic_map OUT_DIR [--polarity down] [--spacing 100]

writes ``OUT_DIR/window_frame.<polarity>.npz`` (use it with ``--field FILE --field-unit T``) and
``OUT_DIR/field.v5r0.c1..c4.<polarity>.cdf`` (``--field`` with the four files). ``--spacing``
sets the grid's spacing in mm (coarser: smaller files, a cruder map).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raytrack.cli import HelpFormatter, positive_float
from raytrack.files import check_writable
from raytrack.physics.fields import POLARITIES, Field, GridField
from raytrack.physics.grid_files import write_cdf_quadrants, write_table

#: The map's grid, mm: 100 mm spacing, x in [-4000, 4000], y in [-3000, 3000], z in [-500,
#: 14500] (module docstring).
SPACING_MM = 100.0
HALF_X_MM = 4000.0
HALF_Y_MM = 3000.0
Z_RANGE_MM = (-500.0, 14500.0)


@dataclass(frozen=True)
class WindowFrameShape:
    """The parameters of the window-frame dipole's midplane field (module docstring)."""

    b0: float = -1.05  # tesla: the flat top's level; negative as the default field's "down"
    z_in: float = 2900.0  # mm: half-way point of the entrance fringe
    z_out: float = 7100.0  # mm: half-way point of the exit fringe
    w_in: float = 1100.0  # mm: entrance fringe width (tanh scale)
    w_out: float = 1400.0  # mm: exit fringe width
    falloff: float = 4800.0  # mm: g(x) = 1 / (1 + (x / falloff)^2)


class WindowFrameField(Field):
    """The analytic window-frame dipole (module docstring); ``polarity="up"`` flips every
    component (reversing the magnet current), as for the default field."""

    def __init__(self, shape: WindowFrameShape = WindowFrameShape(), polarity: str = "down"):
        if polarity not in POLARITIES:
            raise ValueError(f"polarity must be one of {sorted(POLARITIES)}, got {polarity!r}")
        if min(shape.w_in, shape.w_out, shape.falloff) <= 0:
            raise ValueError(f"fringe widths and fall-off must be positive, got {shape}")
        self.shape, self.polarity = shape, polarity

    def _across(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """g, g', g'' of the fall-off across the aperture."""
        inv_a2 = 1.0 / self.shape.falloff**2
        g = 1.0 / (1.0 + x * x * inv_a2)
        g1 = -2.0 * inv_a2 * x * g * g
        g2 = -2.0 * inv_a2 * g * g + 8.0 * inv_a2 * inv_a2 * x * x * g * g * g
        return g, g1, g2

    def _along(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """h, h', h'' of the profile along z: the difference of two tanh edges, halved."""
        s = self.shape
        t_in = torch.tanh((z - s.z_in) / s.w_in)
        t_out = torch.tanh((z - s.z_out) / s.w_out)
        h = 0.5 * (t_in - t_out)
        h1 = 0.5 * ((1.0 - t_in * t_in) / s.w_in - (1.0 - t_out * t_out) / s.w_out)
        h2 = -(t_in * (1.0 - t_in * t_in)) / s.w_in**2 + t_out * (1.0 - t_out * t_out) / s.w_out**2
        return h, h1, h2

    def evaluate(self, x, y, z):
        b0 = POLARITIES[self.polarity] * self.shape.b0
        g, g1, g2 = self._across(x)
        h, h1, h2 = self._along(z)
        laplacian = g2 * h + g * h2  # L(b) / b0
        bx = b0 * y * g1 * h
        by = b0 * (g * h - 0.5 * y * y * laplacian)
        bz = b0 * y * g * h1
        return bx, by, bz

    def midplane(self, x, z):
        """``b(x, z) = By(x, 0, z)``, tesla, at NumPy positions in mm."""
        return self(np.asarray(x, dtype=np.float64), np.zeros(np.shape(x)), z)[1]

    def describe(self) -> dict[str, Any]:
        return {"type": "window-frame", **asdict(self.shape), "polarity": self.polarity}


def grid_axes(
    spacing: float = SPACING_MM,
    half_x: float = HALF_X_MM,
    half_y: float = HALF_Y_MM,
    z_range: tuple[float, float] = Z_RANGE_MM,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The grid's x, y and z nodes, mm (x and y symmetric about 0, as the quadrant files need)."""
    spans = (half_x, half_y, z_range[1] - z_range[0])
    counts = [span / spacing for span in spans]
    if any(c < 1 or abs(c - round(c)) > 1e-9 * c for c in counts):
        raise ValueError(
            f"the spacing {spacing:g} mm must divide the half-widths {half_x:g} and {half_y:g} mm "
            f"and the z range {spans[2]:g} mm"
        )
    nx, ny, nz = (round(c) for c in counts)
    return (
        spacing * np.arange(-nx, nx + 1),
        spacing * np.arange(-ny, ny + 1),
        z_range[0] + spacing * np.arange(nz + 1),
    )


def sampled_grid(field: Field | None = None, **axes: Any) -> GridField:
    """The map as read back from its files (the same numbers, a trilinear :class:`GridField`),
    built in memory: ``field`` (default: the window-frame dipole) at :func:`grid_axes` nodes."""
    field = field or WindowFrameField()
    xs, ys, zs = grid_axes(**axes)
    x, y, z = np.meshgrid(xs, ys, zs, indexing="ij")
    values = np.stack(field(x, y, z), axis=-1)
    spacing = (xs[1] - xs[0], ys[1] - ys[0], zs[1] - zs[0])
    return GridField(values, (xs[0], ys[0], zs[0]), spacing, source=field.describe())


def write_maps(
    out_dir: str | Path, polarity: str = "down", field: Field | None = None, **axes: Any
) -> dict[str, Any]:
    """Write the map as a table (``window_frame.<polarity>.npz``, tesla and mm) and as LHCb's four
    quadrant files (``field.v5r0.c1..c4.<polarity>.cdf``) in ``out_dir``. ``axes``: the grid
    (:func:`grid_axes`' options; tests use a coarse one). Returns ``{"table": path, "cdf":
    [four paths]}``."""
    field = field or WindowFrameField(polarity=polarity)
    xs, ys, zs = grid_axes(**axes)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = write_table(field, out / f"window_frame.{polarity}.npz", xs, ys, zs, field_unit="T")
    step = float(xs[1] - xs[0]), float(ys[1] - ys[0]), float(zs[1] - zs[0])
    cdf = write_cdf_quadrants(
        field,
        out,
        polarity,
        dx=step[0],
        dy=step[1],
        dz=step[2],
        nx=(len(xs) + 1) // 2,
        ny=(len(ys) + 1) // 2,
        nz=len(zs),
        z_offset=float(zs[0]),
    )
    return {"table": table, "cdf": cdf}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m raytrack.physics.synthetic_map",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("out_dir", metavar="OUT_DIR", help="directory to write the map files in")
    parser.add_argument(
        "--polarity",
        choices=sorted(POLARITIES),
        default="down",
        help="up flips every component (the file names carry it)",
    )
    parser.add_argument(
        "--spacing",
        type=positive_float,
        default=SPACING_MM,
        help="grid spacing in x, y and z, mm (it must divide 4000, 3000 and 15000)",
    )
    args = parser.parse_args(argv)
    try:
        check_writable(args.out_dir, "OUT_DIR")
        written = write_maps(args.out_dir, args.polarity, spacing=args.spacing)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # the directory went away or filled up while writing
        print(f"error: OUT_DIR {err.filename or args.out_dir}: {err.strerror}", file=sys.stderr)
        return 1
    cdf = " ".join(str(p) for p in written["cdf"])
    print(
        f"wrote the window-frame test map ({args.polarity}) in {args.out_dir}:\n"
        f"  as a table:      --field {written['table']} --field-unit T\n"
        f"  as LHCb's files: --field {cdf}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
