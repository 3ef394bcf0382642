"""Field-map files: reading them into arrays (:class:`GridData`) and sampling a field into them.

This module knows file formats only, not field models: it sits below ``fields.py``, whose
:meth:`GridField.from_table` and :meth:`GridField.from_cdf_quadrants` turn what it reads into a
field. The writers take any callable ``field(x, y, z) -> (bx, by, bz)``.

Two formats (docs/physics.md section 3):

* **LHCb quadrant files** (``field.v5r0.c1..c4.<polarity>.cdf``), as LHCb's
  ``MagneticFieldGridReader`` reads them: header lines up to one starting with ``P``
  (``PARAMETER npar``, npar = count of numbers in the file), then one starting with ``G``
  (GEOMETRY), then one starting with ``#``; the next line is ``dx dy dz nx ny nz zOffset``
  (cm); then lines ``Bx By Bz`` (gauss), x running fastest, then y, then z, each file in its
  quadrant's own mirrored frame. See :func:`read_cdf_quadrants` for the assembly.
* **One table** with columns ``x y z Bx By Bz``: text (whitespace- or comma-separated, ``#``
  comments, an optional non-numeric header line) or ``.npz``. The units must be given: copies
  of the LHCb map circulate in both tesla and gauss. See :func:`read_table`.

Everything returned is in raytrack's units: mm and tesla. ``source`` records file *names*
(not directories), so a map's fingerprint does not depend on where it is stored.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from raytrack.files import replacing, write_bytes_atomic
from raytrack.physics.units import FIELD_UNITS, GAUSS, LENGTH_UNITS, MM_PER_CM

PathLike = str | os.PathLike[str]
# Anything callable as field(x, y, z) -> (bx, by, bz) on NumPy arrays (mm in, tesla out).
FieldFunction = Callable[[np.ndarray, np.ndarray, np.ndarray], Sequence[Any]]
TABLE_COLUMNS = ("x", "y", "z", "Bx", "By", "Bz")

# Quadrant k (file c<k+1>): sign of the x and y positions, and sign applied to (Bx, By, Bz)
# to go between the file's mirrored frame and the global frame (docs/physics.md section 3).
_QUADRANT_POSITION_SIGNS = ((1, 1), (-1, 1), (1, -1), (-1, -1))
_QUADRANT_FIELD_SIGNS = ((1, 1, 1), (-1, 1, 1), (-1, 1, -1), (1, 1, -1))
# Overlapping axes: write in the order c4, c2, c3, c1 so that c1 wins, as LHCb does.
_QUADRANT_WRITE_ORDER = (3, 1, 2, 0)


@dataclass(frozen=True)
class GridData:
    """A field map as read from its files: ``values`` (nx, ny, nz, 3) in tesla at the points
    ``origin + index * spacing`` (mm), and ``source`` (file names, format, units) to describe it.
    """

    values: np.ndarray
    origin: tuple[float, float, float]
    spacing: tuple[float, float, float]
    source: dict[str, Any]

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.values.shape[:3]  # type: ignore[return-value]


# ----------------------------------------------------------------------------- helpers
def _unit_factor(path: PathLike, option: str, unit: str | None, table: dict[str, float]) -> float:
    """The factor for ``unit`` in ``table``, or a ValueError naming the file and the option."""
    allowed = ", ".join(table)
    if unit is None:
        raise ValueError(f"{path}: {option} is required; allowed values: {allowed}")
    if unit not in table:
        raise ValueError(f"{path}: unknown {option} {unit!r}; allowed values: {allowed}")
    return table[unit]


def _check_exists(path: PathLike) -> None:
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: field map file not found")


def _grid_axis(coords: np.ndarray, name: str, path: PathLike) -> tuple[np.ndarray, float, float]:
    """Grid indices, origin and spacing of one coordinate column of a regular grid."""
    levels = np.unique(coords)
    span = float(levels[-1] - levels[0])
    if levels.size > 1:  # merge values that differ only by rounding noise
        levels = levels[np.r_[True, np.diff(levels) > 1e-9 * span]]
    if levels.size < 2:
        raise ValueError(f"{path}: the grid needs at least 2 distinct {name} values, got {levels}")
    origin, spacing = float(levels[0]), span / (levels.size - 1)
    expected = origin + spacing * np.arange(levels.size)
    worst = int(np.argmax(np.abs(levels - expected)))
    if abs(levels[worst] - expected[worst]) > 1e-6 * spacing:
        raise ValueError(
            f"{path}: {name} values are not equally spaced (irregular grid): {levels.size} "
            f"values from {origin} to {levels[-1]}, but {name} = {levels[worst]} where "
            f"{expected[worst]} was expected"
        )
    index = np.rint((coords - origin) / spacing).astype(np.int64)
    if np.any(np.abs(coords - (origin + index * spacing)) > 1e-6 * spacing):
        raise ValueError(f"{path}: some {name} values lie off the regular grid")
    return index, origin, spacing


def _grid_from_rows(rows: np.ndarray, path: PathLike) -> tuple[np.ndarray, tuple, tuple]:
    """Values (nx, ny, nz, 3), origin and spacing from (M, 6) rows covering a full grid."""
    axes = [_grid_axis(rows[:, k], TABLE_COLUMNS[k], path) for k in range(3)]
    (ix, ox, sx), (iy, oy, sy), (iz, oz, sz) = axes
    shape = (int(ix.max()) + 1, int(iy.max()) + 1, int(iz.max()) + 1)
    flat = (ix * shape[1] + iy) * shape[2] + iz
    counts = np.bincount(flat, minlength=int(np.prod(shape)))
    for bad, what in ((counts > 1, "appears more than once"), (counts == 0, "is missing")):
        if bad.any():
            i, j, k = np.unravel_index(int(np.argmax(bad)), shape)
            point = (float(ox + i * sx), float(oy + j * sy), float(oz + k * sz))
            raise ValueError(
                f"{path}: grid point (x, y, z) = {point} {what} "
                f"({int(bad.sum())} such points on the {shape[0]}x{shape[1]}x{shape[2]} grid)"
            )
    values = np.empty((int(np.prod(shape)), 3))
    values[flat] = rows[:, 3:]
    return values.reshape(*shape, 3), (ox, oy, oz), (sx, sy, sz)


def _check_finite(array: np.ndarray, path: PathLike) -> None:
    if not np.isfinite(array).all():
        row = int(np.argmax(~np.isfinite(array).all(axis=-1)))
        raise ValueError(f"{path}: non-finite value (nan or inf) in data row {row}")


# ----------------------------------------------------------------------------- tables
def _load_text_rows(path: PathLike) -> np.ndarray:
    """(M, 6) numbers of a text table: commas or whitespace, ``#`` comments, optional header."""
    text = Path(path).read_text().replace(",", " ")
    lines = [s for s in (raw.strip() for raw in text.splitlines()) if s and not s.startswith("#")]
    if lines:
        try:
            [float(t) for t in lines[0].split()]
        except ValueError:
            lines = lines[1:]  # a header line such as "x y z Bx By Bz"
    if not lines:
        raise ValueError(f"{path}: no data rows in the table")
    try:
        rows = np.loadtxt(lines, dtype=np.float64, comments="#", ndmin=2)
    except ValueError as err:
        reason = str(err).split("; use `usecols`")[0]
        raise ValueError(
            f"{path}: cannot read the table as numbers ({reason}; rows counted from 0, "
            "after comments and the header line)"
        ) from None
    return rows


def _load_npz_rows(path: PathLike) -> np.ndarray:
    """(M, 6) numbers of an ``.npz`` table (see :func:`read_table` for the conventions)."""
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path}: not a readable .npz file: {err}") from None
    if isinstance(archive, np.ndarray):  # a plain .npy saved under an .npz name
        return _npz_table({"table": archive}, ["table"], path)
    with archive:
        return _npz_table(archive, list(archive.files), path)


def _npz_table(archive: Any, names: list[str], path: PathLike) -> np.ndarray:
    """The (M, 6) rows from the arrays ``names`` of an opened archive."""
    if "table" in names or len(names) == 1:
        key = "table" if "table" in names else names[0]
        rows = np.asarray(archive[key], dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != 6:
            raise ValueError(
                f"{path}: array {key!r} must have shape (M, 6) with columns "
                f"{' '.join(TABLE_COLUMNS)}, got {rows.shape}"
            )
        return rows
    if set(TABLE_COLUMNS) <= set(names):
        columns = [np.asarray(archive[c], dtype=np.float64).ravel() for c in TABLE_COLUMNS]
        if len({c.size for c in columns}) != 1:
            sizes = {c: a.size for c, a in zip(TABLE_COLUMNS, columns, strict=True)}
            raise ValueError(f"{path}: arrays {TABLE_COLUMNS} differ in size: {sizes}")
        return np.stack(columns, axis=1)
    raise ValueError(
        f"{path}: expected an array 'table' of shape (M, 6), a single (M, 6) array, or arrays "
        f"named {', '.join(TABLE_COLUMNS)}; found arrays {names}"
    )


def read_table(path: PathLike, field_unit: str, length_unit: str = "mm") -> GridData:
    """Read one table with columns ``x y z Bx By Bz`` (converted to mm and tesla).

    * Text: numbers separated by whitespace and/or commas; lines starting with ``#`` are
      comments; the first non-comment line is skipped if it is not numeric (a header).
    * ``.npz``: an array named ``table`` of shape (M, 6), or the file's only array if it has
      that shape, or six arrays named ``x``, ``y``, ``z``, ``Bx``, ``By``, ``Bz`` (any shape,
      equal sizes).

    ``field_unit`` is one of ``units.FIELD_UNITS`` (T, tesla, gauss, G) and ``length_unit`` one
    of ``units.LENGTH_UNITS`` (mm, cm, m). Rows may come in any order, but together they must
    cover a full regular grid, every point exactly once.
    """
    b_factor = _unit_factor(path, "field_unit (--field-unit)", field_unit, FIELD_UNITS)
    l_factor = _unit_factor(path, "length_unit", length_unit, LENGTH_UNITS)
    _check_exists(path)
    is_npz = str(path).lower().endswith(".npz")
    rows = _load_npz_rows(path) if is_npz else _load_text_rows(path)
    if rows.shape[1] != 6:
        raise ValueError(
            f"{path}: expected 6 columns ({' '.join(TABLE_COLUMNS)}), got {rows.shape[1]}"
        )
    _check_finite(rows, path)
    rows = rows * np.array([l_factor] * 3 + [b_factor] * 3)
    values, origin, spacing = _grid_from_rows(rows, path)
    source = {
        "file": Path(path).name,
        "format": "npz" if is_npz else "text",
        "field_unit": field_unit,
        "length_unit": length_unit,
    }
    return GridData(values, origin, spacing, source)


def _sample(field: FieldFunction, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Field values (..., 3) in tesla at NumPy positions in mm."""
    b = field(x, y, z)
    return np.stack([np.broadcast_to(np.asarray(c, dtype=np.float64), x.shape) for c in b], -1)


def write_table(
    field: FieldFunction,
    path: PathLike,
    xs: Sequence[float] | np.ndarray,
    ys: Sequence[float] | np.ndarray,
    zs: Sequence[float] | np.ndarray,
    field_unit: str,
    length_unit: str = "mm",
) -> Path:
    """Sample ``field`` on the grid ``xs x ys x zs`` (mm) and write it as a table.

    The file holds the columns ``x y z Bx By Bz`` in ``length_unit`` and ``field_unit``: text
    (a ``#`` comment naming the units, a header line, then one row per point, full float64
    precision) or, when ``path`` ends in ``.npz``, one array ``table`` of shape (M, 6).
    """
    b_factor = _unit_factor(path, "field_unit", field_unit, FIELD_UNITS)
    l_factor = _unit_factor(path, "length_unit", length_unit, LENGTH_UNITS)
    grid = np.meshgrid(*(np.asarray(v, dtype=np.float64) for v in (xs, ys, zs)), indexing="ij")
    x, y, z = (g.ravel() for g in grid)
    b = _sample(field, x, y, z)
    rows = np.column_stack((x / l_factor, y / l_factor, z / l_factor, b / b_factor))
    path = Path(path)
    if path.name.lower().endswith(".npz"):
        with replacing(path) as tmp, open(tmp, "wb") as handle:  # a handle: no ".npz" appended
            np.savez(handle, table=rows)
        return path
    header = f"# field map: x y z in {length_unit}, Bx By Bz in {field_unit}\n"
    header += " ".join(TABLE_COLUMNS) + "\n"
    write_bytes_atomic(path, (header + _format_rows(rows)).encode())
    return path


def _format_rows(rows: np.ndarray, fmt: str = "%.17g") -> str:
    """Rows of numbers as text lines, one C-level formatting call (fast for ~1e6 rows)."""
    if rows.size == 0:
        return ""
    line = " ".join([fmt] * rows.shape[1]) + "\n"
    return (line * rows.shape[0]) % tuple(rows.ravel().tolist())


# ----------------------------------------------------------------------------- LHCb .cdf
@dataclass(frozen=True)
class QuadrantGeometry:
    """The geometry line of a quadrant file, converted to mm."""

    dx: float
    dy: float
    dz: float
    nx: int
    ny: int
    nz: int
    z_offset: float

    def matches(self, other: QuadrantGeometry) -> bool:
        ints = (self.nx, self.ny, self.nz) == (other.nx, other.ny, other.nz)
        mine = (self.dx, self.dy, self.dz, self.z_offset)
        theirs = (other.dx, other.dy, other.dz, other.z_offset)
        return ints and bool(np.allclose(mine, theirs, rtol=1e-9, atol=1e-9))


def _skip_to(lines: list[str], start: int, prefix: str, what: str, path: PathLike) -> int:
    """Index of the first line at or after ``start`` beginning with ``prefix``."""
    for i in range(start, len(lines)):
        if lines[i].startswith(prefix):
            return i
    raise ValueError(f"{path}: no {what} line (a line starting with {prefix!r}) found")


def _parse_geometry(line: str, path: PathLike) -> QuadrantGeometry:
    tokens = line.split()
    try:
        if len(tokens) != 7:
            raise ValueError(f"expected 7 numbers, got {len(tokens)}")
        dx, dy, dz, z_offset = (float(tokens[i]) * MM_PER_CM for i in (0, 1, 2, 6))
        counts = [float(t) for t in tokens[3:6]]
        if any(c != int(c) or c < 2 for c in counts):
            raise ValueError("nx ny nz must be integers >= 2")
        if min(dx, dy, dz) <= 0:
            raise ValueError("dx dy dz must be positive")
    except ValueError as err:
        raise ValueError(
            f"{path}: bad GEOMETRY line {line.strip()!r} (want 'dx dy dz nx ny nz zOffset'): {err}"
        ) from None
    nx, ny, nz = (int(c) for c in counts)
    return QuadrantGeometry(dx, dy, dz, nx, ny, nz, z_offset)


def _read_field_lines(lines: list[str], path: PathLike) -> np.ndarray:
    """(n, 3) numbers of the ``Bx By Bz`` lines, skipping what LHCb's reader skips.

    Lines starting with ``#`` are comments and lines without exactly three tokens are ignored.
    Fast path: NumPy's parser, when every other line has three numbers (the usual case).
    """
    lines = [s for s in lines if not s.startswith("#")]
    if not lines:
        return np.empty((0, 3))
    try:
        b = np.loadtxt(lines, dtype=np.float64, comments=None, ndmin=2)
        if b.shape[1] == 3:
            return b
    except ValueError:
        pass  # odd lines or a bad number: sort it out token by token below
    tokens = [t for t in (s.split() for s in lines) if len(t) == 3]
    try:
        return np.array(tokens, dtype=np.float64).reshape(-1, 3)
    except ValueError as err:
        raise ValueError(f"{path}: non-numeric field value: {err}") from None


def _read_quadrant(path: PathLike) -> tuple[QuadrantGeometry, np.ndarray]:
    """Geometry (mm) and field (nx, ny, nz, 3) in tesla, in the file's own frame."""
    _check_exists(path)
    lines = Path(path).read_text().splitlines()
    p = _skip_to(lines, 0, "P", "PARAMETER", path)
    tokens = lines[p].split()
    try:
        npar = int(tokens[1])
    except (IndexError, ValueError):
        raise ValueError(
            f"{path}: bad PARAMETER line {lines[p]!r} (want 'PARAMETER npar')"
        ) from None
    g = _skip_to(lines, p + 1, "G", "GEOMETRY", path)
    c = _skip_to(lines, g + 1, "#", "'#' comment after GEOMETRY", path)
    if c + 1 >= len(lines):
        raise ValueError(f"{path}: file ends before the geometry line")
    geom = _parse_geometry(lines[c + 1], path)
    b = _read_field_lines(lines[c + 2 :], path)
    n_points = geom.nx * geom.ny * geom.nz
    if (npar - 7) % 3 or (npar - 7) // 3 != n_points or len(b) != n_points:
        raise ValueError(
            f"{path}: wrong count of numbers: PARAMETER says {npar} (= 7 + 3 x "
            f"{(npar - 7) / 3:g} field lines), the geometry {geom.nx}x{geom.ny}x{geom.nz} "
            f"needs {n_points} field lines (npar {7 + 3 * n_points}), the file has {len(b)}"
        )
    b = b * GAUSS
    _check_finite(b, path)
    # File order: x fastest, then y, then z -> index [iz, iy, ix] -> transpose to [ix, iy, iz].
    b = b.reshape(geom.nz, geom.ny, geom.nx, 3).transpose(2, 1, 0, 3)
    return geom, b


def read_cdf_quadrants(paths: Sequence[PathLike]) -> GridData:
    """Assemble LHCb's four quadrant files (c1, c2, c3, c4, in that order) into one grid.

    Each file holds nx x ny x nz points at ``(ix dx, iy dy, zOffset + iz dz)`` in its mirrored
    frame. The full grid has (2nx-1) x (2ny-1) x nz points with x in [-(nx-1)dx, (nx-1)dx], y
    likewise. c1 is (+x, +y) as is; c2 is (-x, +y) with Bx negated; c3 is (+x, -y) with Bx and
    Bz negated; c4 is (-x, -y) with Bz negated. On the axes where quadrants overlap the files
    are written in the order c4, c2, c3, c1, so c1's value wins, as in LHCb's
    MagneticFieldGridReader.
    """
    paths = list(paths)
    if len(paths) != 4:
        raise ValueError(
            f"expected four quadrant files (c1, c2, c3, c4), got {len(paths)}: {paths}"
        )
    quadrants = [_read_quadrant(p) for p in paths]
    geom = quadrants[0][0]
    for path, (other, _) in zip(paths[1:], quadrants[1:], strict=True):
        if not other.matches(geom):
            raise ValueError(f"{path}: geometry {other} differs from that of {paths[0]}: {geom}")
    nx, ny = geom.nx, geom.ny
    values = np.zeros((2 * nx - 1, 2 * ny - 1, geom.nz, 3))
    for k in _QUADRANT_WRITE_ORDER:
        (sx, sy), signs = _QUADRANT_POSITION_SIGNS[k], np.array(_QUADRANT_FIELD_SIGNS[k])
        ix = nx - 1 + sx * np.arange(nx)
        iy = ny - 1 + sy * np.arange(ny)
        values[ix[:, None], iy[None, :]] = quadrants[k][1] * signs
    origin = (-(nx - 1) * geom.dx, -(ny - 1) * geom.dy, geom.z_offset)
    source: dict[str, Any] = {
        "files": [Path(p).name for p in paths],
        "format": "lhcb-cdf-quadrants",
        "field_unit": "gauss",
        "length_unit": "cm",
    }
    return GridData(values, origin, (geom.dx, geom.dy, geom.dz), source)


def write_cdf_quadrants(
    field: FieldFunction,
    directory: PathLike,
    polarity_tag: str = "down",
    *,
    dx: float = 100.0,
    dy: float = 100.0,
    dz: float = 100.0,
    nx: int = 41,
    ny: int = 41,
    nz: int = 146,
    z_offset: float = -500.0,
) -> list[Path]:
    """Sample ``field`` on a quadrant grid and write the four LHCb ``.cdf`` files.

    Lengths in mm (written in cm), field in tesla (written in gauss). The defaults are the
    LHCb map's geometry (100 mm, 81 x 81 x 146 points in all, z from -500 mm). Each file gets
    its quadrant's mirrored-frame signs, so :func:`read_cdf_quadrants` gives back ``field`` at
    the grid nodes. Returns the paths ``field.v5r0.c1.<tag>.cdf`` ... ``c4`` in ``directory``.
    """
    if min(nx, ny, nz) < 2 or min(dx, dy, dz) <= 0:
        raise ValueError(f"need nx, ny, nz >= 2 and positive spacings, got {(dx, dy, dz)}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    zs = z_offset + dz * np.arange(nz)
    npar = 7 + 3 * nx * ny * nz
    geometry = " ".join(
        ["%.17g" % (v / MM_PER_CM) for v in (dx, dy, dz)]
        + [str(int(n)) for n in (nx, ny, nz)]
        + ["%.17g" % (z_offset / MM_PER_CM)]
    )
    paths = []
    for k, ((sx, sy), signs) in enumerate(
        zip(_QUADRANT_POSITION_SIGNS, _QUADRANT_FIELD_SIGNS, strict=True)
    ):
        # File order x fastest: meshgrid over (z, y, x) in "ij" order and ravel.
        z, y, x = np.meshgrid(zs, sy * dy * np.arange(ny), sx * dx * np.arange(nx), indexing="ij")
        b = _sample(field, x.ravel(), y.ravel(), z.ravel()) * np.array(signs) / GAUSS
        header = (
            f"Field map quadrant c{k + 1} ({polarity_tag}), written by raytrack\n"
            f"PARAMETER {npar}\n"
            "GEOMETRY\n"
            "# dx dy dz [cm] nx ny nz zOffset [cm]\n"
            f"{geometry}\n"
            "# Bx By Bz [gauss], x fastest, then y, then z\n"
        )
        path = directory / f"field.v5r0.c{k + 1}.{polarity_tag}.cdf"
        write_bytes_atomic(path, (header + _format_rows(b)).encode())
        paths.append(path)
    return paths


__all__ = [
    "GridData",
    "QuadrantGeometry",
    "read_cdf_quadrants",
    "read_table",
    "write_cdf_quadrants",
    "write_table",
]
