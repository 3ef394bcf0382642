"""Fields and small maps shared by the tests of the field models and the map files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from raytrack.physics.fields import DipoleField, Field
from raytrack.physics.grid_files import write_table


def field_at(field, x, y, z) -> np.ndarray:
    """(..., 3) array of field values at NumPy positions."""
    return np.stack(field(np.asarray(x, float), np.asarray(y, float), np.asarray(z, float)), -1)


# A table of the default dipole over a small grid (9 x 7 x 21 nodes).
XS = np.arange(-400.0, 401.0, 100.0)  # 9
YS = np.arange(-300.0, 301.0, 100.0)  # 7
ZS = np.arange(3000.0, 7001.0, 200.0)  # 21


def write_dipole_table(directory: Path) -> Path:
    path = directory / "dipole_T.txt"
    write_table(DipoleField(), path, XS, YS, ZS, field_unit="T")
    return path


class SymmetricField(Field):
    """Non-zero Bx, By, Bz with the dipole's symmetries: Bx odd in x and y, By even in both,
    Bz even in x and odd in y (what LHCb's mirrored quadrant files rely on)."""

    def evaluate(self, x, y, z):
        g = torch.exp(-(((z - 1000.0) / 800.0) ** 2))
        bx = 2e-6 * x * y * g
        by = -1.0 * g + 1e-6 * x * x - 2e-6 * y * y
        bz = 1e-3 * y * (1.0 + 1e-4 * x * x) * (z - 1000.0) / 800.0 * g
        return bx, by, bz


QUAD = {"dx": 100.0, "dy": 50.0, "dz": 250.0, "nx": 4, "ny": 3, "nz": 5, "z_offset": -500.0}
