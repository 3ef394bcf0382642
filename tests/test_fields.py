"""Field models (fields.py) and field-map files (grid_files.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from raytrack.physics.fields import (
    LHCB_DIPOLE_B0_T,
    LHCB_DIPOLE_SIGMA_MM,
    LHCB_DIPOLE_Z0_MM,
    DipoleField,
    Field,
    GridField,
    UniformField,
    field_from_spec,
)
from raytrack.physics.grid_files import GridData, read_table, write_cdf_quadrants, write_table

RNG = np.random.default_rng(20240607)


def _field(field, x, y, z) -> np.ndarray:
    """(..., 3) array of field values at NumPy positions."""
    return np.stack(field(np.asarray(x, float), np.asarray(y, float), np.asarray(z, float)), -1)


def _jacobian(field, x, y, z, h: float = 1.0) -> np.ndarray:
    """J[..., i, j] = d B_i / d x_j by central differences with step h (mm)."""
    cols = []
    for dx, dy, dz in ((h, 0, 0), (0, h, 0), (0, 0, h)):
        plus = _field(field, x + dx, y + dy, z + dz)
        minus = _field(field, x - dx, y - dy, z - dz)
        cols.append((plus - minus) / (2 * h))
    return np.stack(cols, -1)


def _curl(jac: np.ndarray) -> np.ndarray:
    return np.stack(
        (
            jac[..., 2, 1] - jac[..., 1, 2],
            jac[..., 0, 2] - jac[..., 2, 0],
            jac[..., 1, 0] - jac[..., 0, 1],
        ),
        -1,
    )


def _random_points(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        RNG.uniform(-2000, 2000, n),
        RNG.uniform(-2000, 2000, n),
        RNG.uniform(0, 14000, n),
    )


# ----------------------------------------------------------------------------- DipoleField
def test_dipole_divergence_is_zero():
    x, y, z = _random_points(2000)
    jac = _jacobian(DipoleField(), x, y, z)
    div = jac[..., 0, 0] + jac[..., 1, 1] + jac[..., 2, 2]
    # The two terms that cancel are each up to ~1e-3 T/mm here; the rest is FD truncation.
    assert np.abs(jac[..., 1, 1]).max() > 1e-4
    assert np.abs(div).max() < 1e-9


def test_dipole_on_axis_peak_is_b0():
    bx, by, bz = DipoleField()(np.array(0.0), np.array(0.0), np.array(LHCB_DIPOLE_Z0_MM))
    assert by == pytest.approx(-1.0182, abs=1e-12)
    assert LHCB_DIPOLE_B0_T == -1.0182
    assert bx == 0.0 and bz == 0.0


def test_dipole_curl_is_second_order_in_y():
    field = DipoleField()
    s, z0 = LHCB_DIPOLE_SIGMA_MM, LHCB_DIPOLE_Z0_MM
    x = RNG.uniform(-2000, 2000, 200)
    z = RNG.uniform(0, 14000, 200)
    # On the symmetry plane the curl vanishes.
    assert np.abs(_curl(_jacobian(field, x, 0.0 * x, z))).max() < 1e-10
    # Off it, curl = (y^2/2 f'''(z), 0, 0) with f''' = (3u/s^4 - u^3/s^6) f for a Gaussian f.
    u = z - z0
    f3 = (3 * u / s**4 - u**3 / s**6) * LHCB_DIPOLE_B0_T * np.exp(-0.5 * u * u / s**2)
    for y in (250.0, 500.0, 1000.0):
        curl = _curl(_jacobian(field, x, np.full_like(x, y), z))
        np.testing.assert_allclose(curl[:, 0], 0.5 * y * y * f3, rtol=1e-4, atol=1e-10)
        assert np.abs(curl[:, 1:]).max() < 1e-10
    # curl_x grows like y^2: doubling y multiplies it by 4.
    zz = np.array([z0 + 0.5 * s])
    c1 = _curl(_jacobian(field, np.zeros(1), np.full(1, 300.0), zz))[0, 0]
    c2 = _curl(_jacobian(field, np.zeros(1), np.full(1, 600.0), zz))[0, 0]
    assert c2 / c1 == pytest.approx(4.0, rel=1e-4)


def test_dipole_polarity_up_flips_every_component():
    x, y, z = _random_points(100)
    down = _field(DipoleField(polarity="down"), x, y, z)
    up = _field(DipoleField(polarity="up"), x, y, z)
    np.testing.assert_array_equal(up, -down)
    assert np.abs(down[:, 2]).max() > 0.1  # Bz is really there and really flipped
    with pytest.raises(ValueError, match="polarity"):
        DipoleField(polarity="sideways")


@pytest.mark.parametrize("field", [DipoleField(), UniformField(0.1, -0.2, 0.3)])
def test_numpy_and_torch_in_any_shape(field):
    x, y, z = (RNG.uniform(-1000, 1000, (3, 4)) for _ in range(3))
    z = z + 5000.0
    out_np = field(x, y, z)
    assert all(isinstance(b, np.ndarray) and b.shape == (3, 4) for b in out_np)
    out_t = field(*(torch.from_numpy(v) for v in (x, y, z)))
    assert all(isinstance(b, torch.Tensor) and b.shape == (3, 4) for b in out_t)
    for a, b in zip(out_np, out_t, strict=True):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-15, atol=0)


def test_uniform_field_is_constant_with_input_shape():
    field = UniformField(0.5, -1.0, 0.25)
    x = np.zeros((2, 5))
    bx, by, bz = field(x, x + 10.0, x - 3.0)
    for b, want in zip((bx, by, bz), (0.5, -1.0, 0.25), strict=True):
        assert b.shape == (2, 5)
        assert np.all(b == want)


# ----------------------------------------------------------------------------- tables
XS = np.arange(-400.0, 401.0, 100.0)  # 9
YS = np.arange(-300.0, 301.0, 100.0)  # 7
ZS = np.arange(3000.0, 7001.0, 200.0)  # 21


@pytest.fixture(scope="module")
def dipole_table(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("table") / "dipole_T.txt"
    write_table(DipoleField(), path, XS, YS, ZS, field_unit="T")
    return path


def _nodes():
    return np.meshgrid(XS, YS, ZS, indexing="ij")


def test_table_grid_exact_at_nodes_and_close_between(dipole_table):
    grid = GridField.from_table(dipole_table, field_unit="T")
    assert grid.shape == (9, 7, 21)
    assert grid.origin == (-400.0, -300.0, 3000.0)
    assert grid.spacing == (100.0, 100.0, 200.0)
    assert grid.source == {
        "file": "dipole_T.txt",
        "format": "text",
        "field_unit": "T",
        "length_unit": "mm",
    }
    x, y, z = _nodes()
    np.testing.assert_allclose(_field(grid, x, y, z), _field(DipoleField(), x, y, z), atol=1e-14)
    # Between nodes: trilinear error ~ h^2/8 |B''| (~2e-3 T for 200 mm in z), not more.
    px = RNG.uniform(-400, 400, 3000)
    py = RNG.uniform(-300, 300, 3000)
    pz = RNG.uniform(3000, 7000, 3000)
    err = np.abs(_field(grid, px, py, pz) - _field(DipoleField(), px, py, pz))
    assert 1e-5 < err.max() < 3e-3
    # Torch in -> torch out, same values.
    tb = grid(*(torch.from_numpy(v) for v in (px, py, pz)))
    np.testing.assert_allclose(torch.stack(tb, -1).numpy(), _field(grid, px, py, pz), atol=0)


def test_grid_files_read_arrays_that_the_grid_field_wraps(dipole_table):
    # grid_files knows formats only (it sits below fields.py): it returns arrays, not a field.
    data = read_table(dipole_table, field_unit="T")
    assert isinstance(data, GridData) and data.shape == (9, 7, 21)
    grid = GridField.from_data(data)
    assert grid.fingerprint() == GridField.from_table(dipole_table, field_unit="T").fingerprint()


def test_table_field_is_zero_outside_grid(dipole_table):
    grid = GridField.from_table(dipole_table, field_unit="tesla")
    x = np.array([-401.0, 401.0, 0.0, 0.0, 0.0, 0.0, 1e9, 0.0])
    y = np.array([0.0, 0.0, -300.5, 300.5, 0.0, 0.0, 0.0, 0.0])
    z = np.array([5000.0, 5000.0, 5000.0, 5000.0, 2999.0, 7001.0, 5000.0, 5000.0])
    b = _field(grid, x, y, z)
    assert np.all(b[:-1] == 0.0)
    assert b[-1, 1] != 0.0  # the last point is inside


def test_grid_nan_position_gives_nan_not_crash(dipole_table):
    # ny = 7 (odd): before the fix a NaN index wrapped to an out-of-range gather index.
    grid = GridField.from_table(dipole_table, field_unit="T")
    b = _field(grid, np.array([np.nan, 0.0]), np.array([0.0, 0.0]), np.array([5000.0, 5000.0]))
    assert np.isnan(b[0]).all() and np.isfinite(b[1]).all()


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


# ----------------------------------------------------------------------------- LHCb .cdf
class SymmetricField(Field):
    """Non-zero Bx, By, Bz with the dipole's symmetries: Bx odd in x and y, By even in both,
    Bz even in x and odd in y (what LHCb's mirrored quadrant files rely on)."""

    def evaluate(self, x, y, z):
        g = torch.exp(-(((z - 1000.0) / 800.0) ** 2))
        bx = 2e-6 * x * y * g
        by = -1.0 * g + 1e-6 * x * x - 2e-6 * y * y
        bz = 1e-3 * y * (1.0 + 1e-4 * x * x) * (z - 1000.0) / 800.0 * g
        return bx, by, bz


class LopsidedField(Field):
    """No symmetry at all: the writer and reader must still be inverse to each other."""

    def evaluate(self, x, y, z):
        return 1e-3 * x + 2e-3 * y + 0.1, -1e-3 * x * y / 100 + 1e-4 * z, 1e-5 * (x + 3 * y) * z


QUAD = {"dx": 100.0, "dy": 50.0, "dz": 250.0, "nx": 4, "ny": 3, "nz": 5, "z_offset": -500.0}


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
    want = _field(field, x, y, z)
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
    np.testing.assert_allclose(grid.values, _field(field, x, y, z), rtol=1e-14, atol=1e-16)
    # The node values interpolate: evaluating the grid at its nodes returns them.
    np.testing.assert_allclose(_field(grid, x, y, z), grid.values, rtol=1e-14, atol=1e-16)


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


# ----------------------------------------------------------------------------- field_from_spec
def test_field_from_spec(tmp_path, dipole_table):
    assert isinstance(field_from_spec(["default"]), DipoleField)
    assert isinstance(field_from_spec(None), DipoleField)
    assert field_from_spec(["default"], polarity="up").polarity == "up"
    with pytest.raises(ValueError, match="--field-unit"):
        field_from_spec([str(dipole_table)])
    grid = field_from_spec([str(dipole_table)], field_unit="T")
    assert isinstance(grid, GridField) and grid.shape == (9, 7, 21)
    with pytest.raises(ValueError, match="field_unit"):
        field_from_spec([str(dipole_table)], field_unit="kG")
    paths = [str(p) for p in write_cdf_quadrants(SymmetricField(), tmp_path, **QUAD)]
    assert field_from_spec(paths).shape == (7, 5, 5)
    with pytest.raises(ValueError, match="four quadrant"):
        field_from_spec(paths[:3])
