"""The window-frame test map (raytrack/physics/synthetic_map.py): Maxwell, its figures, its files
in both formats, and ``python -m raytrack.generate --field`` on them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from raytrack.physics import GridField
from raytrack.physics.synthetic_map import (
    WindowFrameField,
    WindowFrameShape,
    grid_axes,
    main,
    sampled_grid,
)


def divergence_ratio(values: np.ndarray, h: float) -> float:
    """Largest |div B| by central differences at interior nodes, over the largest sum of the
    three terms' sizes (so a field whose terms do not cancel gives about 1)."""
    inner = (slice(1, -1),) * 3
    terms = []
    for axis in range(3):
        up = [slice(1, -1)] * 3
        down = [slice(1, -1)] * 3
        up[axis], down[axis] = slice(2, None), slice(None, -2)
        terms.append((values[(*up, axis)] - values[(*down, axis)]) / (2 * h))
    assert terms[0].shape == values[(*inner, 0)].shape
    div = terms[0] + terms[1] + terms[2]
    scale = np.abs(terms[0]) + np.abs(terms[1]) + np.abs(terms[2])
    return float(np.abs(div).max() / scale.max())


class WithoutOffPlaneBy(WindowFrameField):
    """The map with By = b off the midplane too: not divergence-free (a guard for the test)."""

    def evaluate(self, x, y, z):
        bx, _, bz = super().evaluate(x, y, z)
        return bx, super().evaluate(x, 0 * y, z)[1], bz


def test_the_sampled_field_is_divergence_free():
    region = {"half_x": 3000.0, "half_y": 2000.0, "z_range": (0.0, 12000.0)}
    ratio = divergence_ratio(sampled_grid(**region).values, 100.0)
    assert ratio < 0.01  # central differences' own error on 100 mm: 0.3 %
    wrong = divergence_ratio(sampled_grid(WithoutOffPlaneBy(), **region).values, 100.0)
    assert wrong > 0.3


def test_fall_off_across_the_aperture_and_the_profile_along_z():
    field = WindowFrameField()
    x = np.array([0.0, 1000.0, 2000.0, 3000.0])
    for z in (4000.0, 5000.0, 6000.0):
        b = field.midplane(x, np.full(4, z))
        fall = 1 - b[1:] / b[0]
        np.testing.assert_allclose(fall, [0.04, 0.15, 0.28], atol=0.01)
    z = np.linspace(-500.0, 14500.0, 15001)
    on_axis = field.midplane(np.zeros_like(z), z)
    integral_t_m = np.trapezoid(on_axis, z) / 1000.0
    assert -4.5 < integral_t_m < -4.0  # LHCb: about 4 T m over a 10 m track
    assert -1.05 < on_axis.min() < -0.9
    # Asymmetric: the exit fringe is longer than the entrance fringe.
    half = on_axis.min() / 2
    inside = np.flatnonzero(on_axis < half)
    peak = int(np.argmin(on_axis))
    assert z[inside[-1]] - z[peak] > z[peak] - z[inside[0]]
    # Smooth: By changes by at most 6e-4 T per mm on the axis (scales of 1-2 m).
    assert np.abs(np.diff(on_axis) / np.diff(z)).max() < 6e-4


def test_the_field_up_is_the_field_down_reversed():
    x, y, z = np.array([800.0]), np.array([-600.0]), np.array([3100.0])
    down = np.array(WindowFrameField()(x, y, z))
    up = np.array(WindowFrameField(polarity="up")(x, y, z))
    np.testing.assert_array_equal(up, -down)
    assert np.all(down != 0)
    with pytest.raises(ValueError, match="polarity"):
        WindowFrameField(polarity="sideways")
    with pytest.raises(ValueError, match="positive"):
        WindowFrameField(WindowFrameShape(w_in=0.0))


def test_the_table_and_the_quadrant_files_read_back_as_the_analytic_field(tmp_path, capsys):
    assert main([str(tmp_path), "--spacing", "500"]) == 0
    out = capsys.readouterr().out
    assert "--field-unit T" in out and "field.v5r0.c4.down.cdf" in out
    table = GridField.from_table(tmp_path / "window_frame.down.npz", field_unit="T")
    cdf = GridField.from_cdf_quadrants(
        [tmp_path / f"field.v5r0.c{k}.down.cdf" for k in (1, 2, 3, 4)]
    )
    xs, ys, zs = grid_axes(spacing=500.0)
    assert table.shape == cdf.shape == (len(xs), len(ys), len(zs)) == (17, 13, 31)
    assert table.origin == cdf.origin == (-4000.0, -3000.0, -500.0)
    assert table.spacing == cdf.spacing == (500.0, 500.0, 500.0)
    x, y, z = np.meshgrid(xs, ys, zs, indexing="ij")
    analytic = np.stack(WindowFrameField()(x, y, z), axis=-1)
    np.testing.assert_array_equal(table.values, analytic)  # .npz: float64 as computed
    np.testing.assert_allclose(cdf.values, analytic, rtol=1e-14, atol=1e-18)  # via gauss text
    assert main([str(tmp_path / "bad"), "--spacing", "700"]) == 1
    assert "must divide" in capsys.readouterr().err


def test_an_output_directory_that_cannot_be_written_is_named_in_one_line(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    assert main([str(blocker / "maps"), "--spacing", "500"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: OUT_DIR {blocker / 'maps'}: ") and err.count("\n") == 1
    assert "Errno" not in err and not (blocker / "maps").exists()


def test_generate_accepts_the_map_in_both_formats(ray_cluster, tmp_path):
    import pyarrow.parquet as pq

    from raytrack import generate
    from raytrack.physics.synthetic_map import write_maps

    written = write_maps(tmp_path / "map", spacing=500.0)
    fields = {
        "table": [str(written["table"]), "--field-unit", "T"],
        "cdf": [str(p) for p in written["cdf"]],
    }
    ends = {}
    for name, field in fields.items():
        out = tmp_path / name
        args = ["--samples", "20", "--shards", "1", "--workers", "1", "--out", str(out)]
        assert generate.main([*args, "--field", *field, "--address", ray_cluster]) == 0
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["field"]["description"]["type"] == "grid"
        table = pq.read_table(next(out.glob("shard-*.parquet")))
        ends[name] = np.stack([table[c].to_numpy() for c in ("x_end", "y_end", "tx", "tx_end")])
    # The same map read from either format (the cdf's in gauss, to 1e-16): the same tracks, to
    # rounding for most; a last-bit difference can move a step of the integrator past a cell
    # face, where the interpolated field has a kink, which costs up to about 1 micrometre.
    difference = np.abs(ends["table"] - ends["cdf"])
    assert np.median(difference) < 1e-9
    assert difference[:2].max() < 0.01
    assert np.abs(ends["table"][3] - ends["table"][2]).min() > 0  # the tracks bend
