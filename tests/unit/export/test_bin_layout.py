"""model.bin's layout and validation (raytrack.export.bin_layout, docs/model_bin.md): the
written bytes parsed straight from the spec, independently of the readers, and bad files that
both readers (NumPy and raytrack_mlp.hpp) refuse with a message naming the file."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from raytrack.export import read_model_bin, write_model_bin
from raytrack.models.formulation import MIN_LEG_M
from raytrack.physics.axis_profile import X_DEGREE
from raytrack.physics.transports import MIN_UZ_SQUARED, PATH_NODES, PATH_PASSES, QUADRATURE_NODES
from raytrack.physics.units import KAPPA

from .drivers import run_cpp
from .helpers import AXIS, MAP_AXIS, draw_tracks, make_model, spec_layout, with_crc


def test_layout_follows_the_spec_byte_by_byte(tmp_path: Path) -> None:
    model = make_model((24, 12, 6), "gelu", seed=7, base="axial", target="residual", leg_power=1.5)
    write_model_bin(model, tmp_path / "model.bin")
    data = (tmp_path / "model.bin").read_bytes()
    spec = spec_layout(data)
    assert spec["magic"] == b"RTRKMLP\0"
    assert data[12:16] == bytes([4, 3, 2, 1])  # 0x01020304 little-endian
    n_table = len(AXIS.by)
    # version, endian, dtype, gelu, residual, 7, 4, L; axial, physics, F, K, T, D
    assert spec["header"] == (
        5,
        0x01020304,
        1,
        3,
        1,
        7,
        4,
        4,
        2,
        1,
        14,
        QUADRATURE_NODES,
        n_table,
        0,
    )
    assert spec["numbers"] == (
        1.5, KAPPA, MIN_UZ_SQUARED, MIN_LEG_M, AXIS.z_first, AXIS.spacing, 0.0
    )  # fmt: skip
    assert spec["path_words"] == (0, 0)  # no passes (not the path base), reserved
    assert spec["end"] == len(data)
    assert spec["crc"] == zlib.crc32(data[:-4])
    form = model.formulation
    np.testing.assert_array_equal(spec["quadrature"][0], form.quadrature_nodes.numpy())
    np.testing.assert_array_equal(spec["quadrature"][1], form.quadrature_weights.numpy())
    np.testing.assert_array_equal(spec["tables"], form.axis_values.numpy())
    np.testing.assert_array_equal(spec["tables"][0], AXIS.by)  # rows By, dBy/dz, F, H
    np.testing.assert_array_equal(spec["tables"][2:], np.stack([AXIS.f, AXIS.h]))
    norm = model.normalisation()
    expected_norm = np.concatenate(
        [norm.input_mean, norm.input_std, norm.target_mean, norm.target_std]
    )
    np.testing.assert_array_equal(spec["norm"], expected_norm.astype(np.float32))
    for (_, rows, cols, weight, bias), layer in zip(
        spec["layers"], model.linear_layers(), strict=True
    ):
        w = layer.weight.detach().numpy()
        assert (rows, cols) == w.shape
        assert weight[1] == w[0, 1] and weight[cols] == w[1, 0]  # W[o][i] at o*cols + i
        np.testing.assert_array_equal(weight, w.ravel())
        np.testing.assert_array_equal(bias, layer.bias.detach().numpy())


def test_path_layout_on_a_map_follows_the_spec(tmp_path: Path) -> None:
    """Base code 4, K = 12 nodes, D = 8 at byte 60, x_scale at 112, passes at 120, and the 2D
    x tables after the axis tables: the coefficients of the fit, then their dz derivatives."""
    model = make_model(seed=8, axis=MAP_AXIS, base="path")
    write_model_bin(model, tmp_path / "model.bin")
    data = (tmp_path / "model.bin").read_bytes()
    spec = spec_layout(data)
    assert spec["header"][8:14] == (4, 1, 14, PATH_NODES, len(MAP_AXIS.by), X_DEGREE)
    assert spec["numbers"][6] == MAP_AXIS.x_scale == 4000.0
    assert spec["path_words"] == (PATH_PASSES, 0)
    assert spec["end"] == len(data) and spec["crc"] == zlib.crc32(data[:-4])
    np.testing.assert_array_equal(spec["x_tables"][:X_DEGREE], MAP_AXIS.x_coefficients.T)
    np.testing.assert_array_equal(spec["x_tables"], model.formulation.x_values.numpy())
    np.testing.assert_array_equal(spec["tables"][0], MAP_AXIS.by)


def test_straight_line_files_carry_no_tables(tmp_path: Path) -> None:
    """Tables and quadrature are written only when the formulation reads them."""
    for formulation, sizes in (
        (dict(base="line", inputs="state"), (0, 0)),
        (dict(base="kick", inputs="state"), (0, len(AXIS.by))),
        (dict(base="line", inputs="physics"), (0, len(AXIS.by))),
        (dict(base="expansion", inputs="state"), (QUADRATURE_NODES, len(AXIS.by))),
        (dict(base="path", inputs="state"), (PATH_NODES, len(AXIS.by))),
    ):
        write_model_bin(make_model(**formulation), tmp_path / "model.bin")
        header = spec_layout((tmp_path / "model.bin").read_bytes())["header"]
        assert header[11:13] == sizes, formulation


def _patch(offset: int, value: bytes, fix_crc: bool = True):
    def corrupt(data: bytes) -> bytes:
        out = bytearray(data)
        out[offset : offset + len(value)] = value
        return with_crc(out) if fix_crc else bytes(out)

    return corrupt


def _u32(value: int) -> bytes:
    return struct.pack("<I", value)


# name -> (corruption of a valid version-2 file, text both readers' messages contain)
CORRUPTIONS = {
    "wrong-magic": (_patch(0, b"ONNXMLP\0"), "bad magic"),
    "version-6": (_patch(8, _u32(6)), "version 6"),
    "version-0": (_patch(8, _u32(0)), "version 0"),
    "byte-swapped": (_patch(12, struct.pack(">I", 0x01020304)), "byte-swapped"),
    "unknown-activation": (_patch(20, _u32(9)), "activation code 9"),
    "unknown-base": (_patch(40, _u32(9)), "base code 9"),
    "unknown-input-set": (_patch(44, _u32(7)), "input set code 7"),
    "n-features": (_patch(48, _u32(9)), "n_features 9"),
    "no-quadrature": (_patch(52, _u32(0)), "needs quadrature nodes"),
    "no-tables": (_patch(56, _u32(1)), "needs the field tables"),
    "layer-shape-chain": (_patch(128 + 8 + 4, _u32(15)), "layer 1"),
    "no-passes": (_patch(120, _u32(0)), "needs 1 to 64 passes"),
    "reserved-word": (_patch(124, _u32(5)), "reserved header field"),
    "too-many-path-nodes": (_patch(52, _u32(40)), "at most 32 quadrature nodes"),
    "path-fields-on-expansion": (_patch(40, _u32(3)), "passes"),  # path -> expansion
    "flipped-table-byte": (_patch(1000, b"\x5a", fix_crc=False), "checksum mismatch"),
    "flipped-weight-byte": (_patch(-100, b"\x5a", fix_crc=False), "checksum mismatch"),
    "truncated": (lambda d: d[:-10], "truncated"),
    "truncated-header": (lambda d: d[:20], "truncated"),
    "truncated-formulation": (lambda d: d[:80], "truncated"),
    "empty": (lambda d: b"", "truncated"),
    "trailing-bytes": (lambda d: d + b"\0\0\0\0", "trailing bytes"),
}


@pytest.fixture(scope="module")
def valid_bin(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("valid") / "valid.bin"
    write_model_bin(make_model((16, 8), "tanh", seed=21), path)  # path, physics
    return path.read_bytes()


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_bad_files_raise_clear_errors(name: str, valid_bin: bytes, tmp_path: Path) -> None:
    corrupt, message = CORRUPTIONS[name]
    path = tmp_path / f"{name}.bin"
    path.write_bytes(corrupt(valid_bin))
    with pytest.raises(ValueError, match=message) as info:
        read_model_bin(path)
    assert str(path) in str(info.value)


def test_unknown_version_names_the_file_and_both_versions(valid_bin, tmp_path: Path) -> None:
    path = tmp_path / "future.bin"
    path.write_bytes(_patch(8, _u32(6))(valid_bin))
    with pytest.raises(ValueError) as info:
        read_model_bin(path)
    assert str(info.value) == (
        f"{path}: format version 6, this reader supports versions 1, 2, 3, 4, 5 (current 5)"
    )


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_cpp_loader_throws_on_bad_files(
    name: str, valid_bin: bytes, cpp_predict: Path, tmp_path: Path
) -> None:
    corrupt, message = CORRUPTIONS[name]
    path = tmp_path / f"{name}.bin"
    path.write_bytes(corrupt(valid_bin))
    proc, _ = run_cpp(cpp_predict, path, draw_tracks(3), tmp_path)
    assert proc.returncode == 1, proc.stdout
    assert str(path) in proc.stderr and message in proc.stderr, proc.stderr


def test_cpp_loader_reports_a_missing_file(cpp_predict: Path, tmp_path: Path) -> None:
    proc, _ = run_cpp(cpp_predict, tmp_path / "absent.bin", draw_tracks(3), tmp_path)
    assert proc.returncode == 1
    assert "absent.bin: cannot open" in proc.stderr
