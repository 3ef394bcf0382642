"""Field-map files (raytrack/physics/grid_files.py): tables in text and .npz, LHCb's quadrant
.cdf files, and the errors that name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from raytrack.physics.fields import DipoleField, Field, GridField
from raytrack.physics.grid_files import GridData, read_table, write_cdf_quadrants, write_table

from .fieldmaps import QUAD, XS, YS, ZS, SymmetricField, field_at

RNG = np.random.default_rng(20240607)


def test_grid_files_read_arrays_that_the_grid_field_wraps(dipole_table):
    # grid_files knows formats only (it sits below fields.py): it returns arrays, not a field.
    data = read_table(dipole_table, field_unit="T")
    assert isinstance(data, GridData) and data.shape == (9, 7, 21)
    grid = GridField.from_data(data)
    assert grid.fingerprint() == GridField.from_table(dipole_table, field_unit="T").fingerprint()


def test_table_gauss_cm_npz_and_shuffled_rows_agree(dipole_table, tmp_path):
    want = GridField.from_table(dipole_table, field_unit="T").values
    gauss = write_table(DipoleField(), tmp_path / "g.txt", XS, YS, ZS, field_unit="gauss")
    assert "in gauss" in gauss.read_text().splitlines()[0]
    np.testing.assert_allclose(
        GridField.from_table(gauss, "gauss").values, want, rtol=1e-13, atol=1e-16
    )
    np.testing.assert_allclose(
        GridField.from_table(gauss, "G").values, want, rtol=1e-13, atol=1e-16
    )

    cm = write_table(DipoleField(), tmp_path / "cm.txt", XS, YS, ZS, "T", length_unit="cm")
    grid_cm = GridField.from_table(cm, "T", length_unit="cm")
    assert grid_cm.origin == pytest.approx((-400.0, -300.0, 3000.0))
    assert grid_cm.spacing == pytest.approx((100.0, 100.0, 200.0))
    np.testing.assert_allclose(grid_cm.values, want, atol=1e-14)

    npz = write_table(DipoleField(), tmp_path / "t.npz", XS, YS, ZS, field_unit="T")
    grid_npz = GridField.from_table(npz, "T")
    assert grid_npz.source["format"] == "npz"
    np.testing.assert_array_equal(grid_npz.values, want)

    # npz with named columns, rows shuffled; and comma-separated text, shuffled, no header.
    rows = np.load(npz)["table"][RNG.permutation(9 * 7 * 21)]
    named = tmp_path / "named.npz"
    np.savez(named, **{c: rows[:, k] for k, c in enumerate(("x", "y", "z", "Bx", "By", "Bz"))})
    np.testing.assert_array_equal(GridField.from_table(named, "T").values, want)
    csv = tmp_path / "t.csv"
    csv.write_text("# a comment\n" + "\n".join(",".join(repr(float(v)) for v in r) for r in rows))
    np.testing.assert_array_equal(GridField.from_table(csv, "T").values, want)


def _write_rows(path: Path, rows: np.ndarray) -> Path:
    path.write_text(
        "x y z Bx By Bz\n" + "\n".join(" ".join(repr(float(v)) for v in r) for r in rows)
    )
    return path


def _small_rows() -> np.ndarray:
    x, y, z = np.meshgrid([0.0, 10.0, 20.0], [0.0, 5.0], [0.0, 1.0, 2.0], indexing="ij")
    x, y, z = x.ravel(), y.ravel(), z.ravel()
    return np.column_stack((x, y, z, x + y, y * z, np.ones_like(x)))


def test_table_errors_name_the_file_and_option(tmp_path):
    good = _write_rows(tmp_path / "good.txt", _small_rows())
    assert GridField.from_table(good, "T").shape == (3, 2, 3)
    with pytest.raises(ValueError, match=r"good\.txt.*field_unit.*'mT'.*T, tesla, gauss, G"):
        GridField.from_table(good, "mT")
    with pytest.raises(ValueError, match=r"good\.txt.*field_unit.*required"):
        GridField.from_table(good, None)
    with pytest.raises(ValueError, match=r"good\.txt.*length_unit.*'inch'.*mm, cm, m"):
        GridField.from_table(good, "T", length_unit="inch")
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        GridField.from_table(tmp_path / "missing.txt", "T")

    rows = _small_rows()
    rows[rows[:, 0] == 20.0, 0] = 25.0  # x levels 0, 10, 25
    with pytest.raises(ValueError, match=r"irregular\.txt.*not equally spaced"):
        GridField.from_table(_write_rows(tmp_path / "irregular.txt", rows), "T")
    rows = _small_rows()
    with pytest.raises(ValueError, match=r"dup\.txt.*more than once"):
        GridField.from_table(_write_rows(tmp_path / "dup.txt", np.vstack((rows, rows[:1]))), "T")
    with pytest.raises(ValueError, match=r"hole\.txt.*missing"):
        GridField.from_table(_write_rows(tmp_path / "hole.txt", rows[1:]), "T")
    with pytest.raises(ValueError, match=r"cols\.txt.*6 columns"):
        GridField.from_table(_write_rows(tmp_path / "cols.txt", rows[:, :5]), "T")
    bad = tmp_path / "word.txt"
    bad.write_text("x y z Bx By Bz\n0 0 0 1 2 3\n0 0 1 1 two 3\n")
    with pytest.raises(ValueError, match=r"word\.txt.*numbers"):
        GridField.from_table(bad, "T")
    nan = rows.copy()
    nan[3, 4] = np.nan
    with pytest.raises(ValueError, match=r"nan\.txt.*non-finite"):
        GridField.from_table(_write_rows(tmp_path / "nan.txt", nan), "T")
    npz = tmp_path / "two.npz"
    np.savez(npz, a=rows, b=rows)
    with pytest.raises(ValueError, match=r"two\.npz.*found arrays \['a', 'b'\]"):
        GridField.from_table(npz, "T")


class LopsidedField(Field):
    """No symmetry at all: the writer and reader must still be inverse to each other."""

    def evaluate(self, x, y, z):
        return 1e-3 * x + 2e-3 * y + 0.1, -1e-3 * x * y / 100 + 1e-4 * z, 1e-5 * (x + 3 * y) * z


def _full_nodes():
    xs = np.arange(-300.0, 301.0, 100.0)
    ys = np.arange(-100.0, 101.0, 50.0)
    zs = -500.0 + 250.0 * np.arange(5)
    return np.meshgrid(xs, ys, zs, indexing="ij")


def test_cdf_round_trip_symmetric_field(tmp_path):
    field = SymmetricField()
    paths = write_cdf_quadrants(field, tmp_path, "up", **QUAD)
    assert [p.name for p in paths] == [f"field.v5r0.c{k}.up.cdf" for k in (1, 2, 3, 4)]
    # Mirrored frames: for a field with the dipole's symmetries the four files hold the same data.
    data = [p.read_text().split("GEOMETRY")[1] for p in paths]
    assert data[0] == data[1] == data[2] == data[3]

    grid = GridField.from_cdf_quadrants([str(p) for p in paths])
    assert grid.shape == (7, 5, 5)
    assert grid.origin == (-300.0, -100.0, -500.0)
    assert grid.spacing == (100.0, 50.0, 250.0)
    assert grid.source["files"][3] == "field.v5r0.c4.up.cdf"
    x, y, z = _full_nodes()
    want = field_at(field, x, y, z)
    np.testing.assert_allclose(grid.values, want, rtol=1e-14, atol=1e-16)
    # The signs really differ between quadrants: check them at one z in each quadrant.
    iz = 3  # z = 250 mm: (z - 1000) < 0, so Bz has the sign of -y
    for ix, iy, sx, sy in ((6, 4, 1, 1), (0, 4, -1, 1), (6, 0, 1, -1), (0, 0, -1, -1)):
        bx, by, bz = grid.values[ix, iy, iz]
        assert np.sign(bx) == sx * sy and by < 0 and np.sign(bz) == -sy


def test_cdf_round_trip_any_field(tmp_path):
    field = LopsidedField()
    grid = GridField.from_cdf_quadrants(write_cdf_quadrants(field, tmp_path, **QUAD))
    x, y, z = _full_nodes()
    np.testing.assert_allclose(grid.values, field_at(field, x, y, z), rtol=1e-14, atol=1e-16)
    # The node values interpolate: evaluating the grid at its nodes returns them.
    np.testing.assert_allclose(field_at(grid, x, y, z), grid.values, rtol=1e-14, atol=1e-16)


def _cdf_text(rows, geometry="10 10 10 2 2 2 -5", npar=None, geometry_tag="GEOMETRY") -> str:
    npar = 7 + 3 * len(rows) if npar is None else npar
    lines = [
        "Header of a hand-written quadrant file",
        f"PARAMETER {npar}",
        "some other header line",
        geometry_tag,
        "# dx dy dz nx ny nz zOffset",
        geometry,
        "# Bx By Bz",
    ]
    lines += [" ".join(str(v) for v in r) for r in rows]
    return "\n".join(lines) + "\n"


def _write_quadrants(tmp_path: Path, texts: list[str]) -> list[str]:
    paths = []
    for k, text in enumerate(texts, start=1):
        path = tmp_path / f"field.v5r0.c{k}.down.cdf"
        path.write_text(text)
        paths.append(str(path))
    return paths


def test_cdf_sign_rules_overlap_and_units_by_hand(tmp_path):
    # nx = ny = nz = 2, spacing 10 cm, zOffset -5 cm. File k stores the constant
    # (100k + 1, 100k + 2, 100k + 3) gauss in its own frame. File 1 also has lines that the
    # reader must skip, as LHCb's does: a comment, and lines with 2 and 4 tokens.
    texts = [_cdf_text([(100 * k + 1, 100 * k + 2, 100 * k + 3)] * 8) for k in (1, 2, 3, 4)]
    skipped = "# Bx By Bz\n# another comment\nnot data\n9 9 9 9\n"
    texts[0] = texts[0].replace("# Bx By Bz\n", skipped)
    grid = GridField.from_cdf_quadrants(_write_quadrants(tmp_path, texts))
    assert grid.shape == (3, 3, 2)
    assert grid.origin == (-100.0, -100.0, -50.0)  # cm -> mm
    assert grid.spacing == (100.0, 100.0, 100.0)
    g = 1e-4  # tesla per gauss
    c1 = np.array([101, 102, 103]) * g  # (+x, +y): as is
    c2 = np.array([-201, 202, 203]) * g  # (-x, +y): Bx negated
    c3 = np.array([-301, 302, -303]) * g  # (+x, -y): Bx and Bz negated
    c4 = np.array([401, 402, -403]) * g  # (-x, -y): Bz negated
    # [ix, iy] with x, y = -100, 0, +100 mm. On the axes the later file in c4, c2, c3, c1 wins.
    expected = {
        (0, 0): c4,
        (0, 1): c2,
        (0, 2): c2,
        (1, 0): c3,
        (1, 1): c1,
        (1, 2): c1,
        (2, 0): c3,
        (2, 1): c1,
        (2, 2): c1,
    }
    for (ix, iy), b in expected.items():
        for iz in (0, 1):
            np.testing.assert_allclose(grid.values[ix, iy, iz], b, rtol=1e-15)
    bx, by, bz = grid(np.array(-100.0), np.array(100.0), np.array(50.0))
    assert (bx, by, bz) == pytest.approx(tuple(c2), rel=1e-15)


def test_cdf_data_order_x_fastest(tmp_path):
    # nx = 3, ny = 2, nz = 2: line n of every file holds Bx = n gauss.
    rows = [(n, 0, 0) for n in range(12)]
    text = _cdf_text(rows, geometry="10 10 10 3 2 2 0")
    grid = GridField.from_cdf_quadrants(_write_quadrants(tmp_path, [text] * 4))
    assert grid.shape == (5, 3, 2)
    for ix in range(3):
        for iy in range(2):
            for iz in range(2):
                n = ix + 3 * iy + 6 * iz
                assert grid.values[2 + ix, 1 + iy, iz, 0] == pytest.approx(n * 1e-4, rel=1e-15)


def test_cdf_errors_name_the_file(tmp_path):
    good = _cdf_text([(1, 2, 3)] * 8)
    cases = {
        "count": (_cdf_text([(1, 2, 3)] * 7), "wrong count of numbers"),
        "npar": (_cdf_text([(1, 2, 3)] * 8, npar=30), "PARAMETER says 30"),
        "nogeom": (_cdf_text([(1, 2, 3)] * 8, geometry_tag="# no geometry"), "GEOMETRY"),
        "nopar": (good.replace("PARAMETER", "Number of"), "PARAMETER"),
        "word": (_cdf_text([(1, 2, 3)] * 7 + [(1, "x", 3)]), "non-numeric"),
        "geomline": (_cdf_text([(1, 2, 3)] * 8, geometry="10 10 10 2 2"), "bad GEOMETRY line"),
    }
    for name, (text, message) in cases.items():
        sub = tmp_path / name
        sub.mkdir()
        paths = _write_quadrants(sub, [good, good, text, good])
        with pytest.raises(ValueError, match=message) as info:
            GridField.from_cdf_quadrants(paths)
        assert paths[2] in str(info.value), name

    other = _cdf_text([(1, 2, 3)] * 8, geometry="20 10 10 2 2 2 -5")
    paths = _write_quadrants(tmp_path, [good, other, good, good])
    with pytest.raises(ValueError, match="differs") as info:
        GridField.from_cdf_quadrants(paths)
    assert paths[1] in str(info.value)
    with pytest.raises(ValueError, match="four quadrant files"):
        GridField.from_cdf_quadrants(paths[:3])
    with pytest.raises(FileNotFoundError, match="nowhere.cdf"):
        GridField.from_cdf_quadrants(paths[:3] + [str(tmp_path / "nowhere.cdf")])
