"""Deployment exports: model.bin (NumPy and C++ readers) and ONNX reproduce the torch model.

Every model has non-square layers and non-trivial normalisation, so a transposed weight matrix
or a forgotten standardisation cannot hide; a negative control shows that a column-major weight
matrix (the bug of an earlier export, physics.md section 6) is caught.
"""

from __future__ import annotations

import math
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from raytrack.export import (
    INCLUDE_DIR,
    export_onnx,
    onnx_predict,
    read_model_bin,
    write_model_bin,
)
from raytrack.export.model_bin import erf
from raytrack.models.mlp import (
    ModelConfig,
    Normalisation,
    TrackMLP,
    straight_line,
)

ACTIVATIONS = ("relu", "silu", "gelu", "tanh")
TARGETS = ("raw", "residual", "residual_qop")
SHAPES = ((16, 8), (24, 12, 6))
CASES = [(h, a, t) for h in SHAPES for a in ACTIVATIONS for t in TARGETS]
ONNX_CASES = [
    ((16, 8), "relu", "raw"),
    ((24, 12, 6), "silu", "residual"),
    ((16, 8), "gelu", "residual_qop"),
    ((24, 12, 6), "tanh", "residual_qop"),
]
# Typical size of the (encoded) target per mode: raw end states, residuals, residual / qop.
TARGET_SCALE = {
    "raw": np.array([800.0, 700.0, 0.3, 0.25]),
    "residual": np.array([60.0, 5.0, 0.1, 0.005]),
    "residual_qop": np.array([3e5, 2e4, 300.0, 10.0]),
}

# --- models, tracks and tolerances -------------------------------------------------------------


def case_id(case) -> str:
    hidden, activation, target = case
    return f"{'x'.join(map(str, hidden))}-{activation}-{target}"


def random_normalisation(rng: np.random.Generator, target: str) -> Normalisation:
    """Random but plausible means and standard deviations (none of them 0 or 1)."""
    scale = np.array([500.0, 400.0, 0.15, 0.12, 2e-4, 300.0, 800.0])
    shift = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 3000.0, 7000.0])
    tscale = TARGET_SCALE[target]
    return Normalisation(
        input_mean=shift + scale * rng.uniform(-0.2, 0.2, 7),
        input_std=scale * rng.uniform(0.7, 1.4, 7),
        target_mean=tscale * rng.uniform(-0.3, 0.3, 4),
        target_std=tscale * rng.uniform(0.5, 1.5, 4),
    )


def make_model(hidden, activation: str, target: str, seed: int = 0, dropout=0.0) -> TrackMLP:
    """A TrackMLP in eval mode with random weights and biases and random normalisation."""
    rng = np.random.default_rng(seed)
    config = ModelConfig(hidden=hidden, activation=activation, target=target, dropout=dropout)
    model = TrackMLP(config, random_normalisation(rng, target))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.linear_layers():
            fan_in = layer.weight.shape[1]
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) * 1.5 / fan_in**0.5)
            layer.bias.copy_(torch.randn(layer.bias.shape, generator=gen) * 0.5)
    return model.eval()


def draw_tracks(n: int, seed: int = 1, variable_z: bool = False) -> np.ndarray:
    """(n, 7) float32 states like real tracks at the magnet entrance."""
    rng = np.random.default_rng(seed)
    p = np.exp(rng.uniform(np.log(2000.0), np.log(100000.0), n))
    qop = rng.choice([-1.0, 1.0], n) / p
    z0 = rng.uniform(2500.0, 3500.0, n) if variable_z else np.full(n, 3000.0)
    z1 = rng.uniform(6000.0, 9000.0, n) if variable_z else np.full(n, 7000.0)
    cols = [
        rng.uniform(-900.0, 900.0, n),
        rng.uniform(-750.0, 750.0, n),
        rng.uniform(-0.3, 0.3, n),
        rng.uniform(-0.25, 0.25, n),
        qop,
        z0,
        z1,
    ]
    return np.stack(cols, axis=1).astype(np.float32)


def torch_predict(model: TrackMLP, inputs: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(inputs)).numpy()


def mismatch(got: np.ndarray, ref: np.ndarray) -> float:
    """Largest error in units of the float32 tolerance (<= 1 passes).

    Tolerance per element: rtol 1e-5 of the value plus 1e-5 of the column's largest magnitude
    (x_end ~ 2000 mm carries absolute float32 rounding a small tx_end cannot have).
    """
    assert got.shape == ref.shape, (got.shape, ref.shape)
    atol = 1e-5 * np.abs(ref).max(axis=0) + 1e-30
    return float(np.max(np.abs(got.astype(np.float64) - ref) / (atol + 1e-5 * np.abs(ref))))


def assert_matches(got: np.ndarray, ref: np.ndarray, what: str) -> None:
    assert np.all(np.isfinite(got)), f"{what}: non-finite outputs"
    err = mismatch(got, ref)
    assert err <= 1.0, f"{what}: error is {err:.3g} x the float32 tolerance"


def both_input_sets() -> list[np.ndarray]:
    return [draw_tracks(500, seed=1), draw_tracks(500, seed=2, variable_z=True)]


# --- (a) the NumPy reader ----------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_numpy_reader_matches_torch(case, tmp_path: Path) -> None:
    model = make_model(*case, seed=CASES.index(case))
    write_model_bin(model, tmp_path / "model.bin")
    loaded = read_model_bin(tmp_path / "model.bin")
    assert loaded.n_layers == len(case[0]) + 1
    assert loaded.weight_count == model.config.weight_count
    for inputs in both_input_sets():
        assert_matches(loaded.forward(inputs), torch_predict(model, inputs), case_id(case))


def test_numpy_reader_ignores_dropout_like_eval_mode(tmp_path: Path) -> None:
    model = make_model((16, 8), "silu", "residual_qop", seed=5, dropout=0.2)
    write_model_bin(model, tmp_path / "model.bin")
    inputs = draw_tracks(300)
    assert_matches(
        read_model_bin(tmp_path / "model.bin").forward(inputs),
        torch_predict(model, inputs),
        "dropout",
    )


def test_erf_is_exact_to_float64_precision() -> None:
    xs = np.concatenate([np.linspace(-12.0, 12.0, 20001), [0.0, -0.0, 2.999999, 3.0, 40.0]])
    ref = np.array([math.erf(v) for v in xs])
    assert np.max(np.abs(erf(xs) - ref)) < 1e-12


def test_write_is_atomic_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    model = make_model((16, 8), "relu", "residual", seed=3)
    (tmp_path / "model.bin").write_bytes(b"old content")
    write_model_bin(model, tmp_path / "model.bin")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin"]
    assert (tmp_path / "model.bin").stat().st_size == 1356  # the worked example in the spec
    read_model_bin(tmp_path / "model.bin")


# --- the written layout, parsed straight from the spec (independent of the reader) -------------


def spec_layout(data: bytes) -> dict:
    """Parse model.bin with struct, following docs/model_bin.md literally."""
    magic = data[0:8]
    version, endian, dtype, act, target, n_in, n_out, n_layers = struct.unpack_from("<8I", data, 8)
    dims = struct.unpack_from(f"<{2 * n_layers}I", data, 40)
    shapes = list(zip(dims[0::2], dims[1::2], strict=True))
    offset = 40 + 8 * n_layers
    norm = np.frombuffer(data, "<f4", 22, offset)
    offset += 88
    layers = []
    for rows, cols in shapes:
        w_off = offset
        weight = np.frombuffer(data, "<f4", rows * cols, offset)
        offset += 4 * rows * cols
        bias = np.frombuffer(data, "<f4", rows, offset)
        offset += 4 * rows
        layers.append((w_off, rows, cols, weight, bias))
    (crc,) = struct.unpack_from("<I", data, offset)
    return dict(
        magic=magic, header=(version, endian, dtype, act, target, n_in, n_out, n_layers),
        norm=norm, layers=layers, crc=crc, end=offset + 4,
    )  # fmt: skip


def test_layout_follows_the_spec_byte_by_byte(tmp_path: Path) -> None:
    model = make_model((24, 12, 6), "gelu", "residual_qop", seed=7)
    write_model_bin(model, tmp_path / "model.bin")
    data = (tmp_path / "model.bin").read_bytes()
    spec = spec_layout(data)
    assert spec["magic"] == b"RTRKMLP\0"
    assert data[12:16] == bytes([4, 3, 2, 1])  # 0x01020304 little-endian
    assert spec["header"] == (1, 0x01020304, 1, 3, 2, 7, 4, 4)
    assert spec["end"] == len(data)
    assert spec["crc"] == zlib.crc32(data[:-4])
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


# --- (d) negative control: a column-major matrix is caught ------------------------------------


def transpose_layer_in_file(path: Path, layer: int) -> None:
    """Rewrite one weight matrix column-major (the old bug), keeping the file otherwise valid."""
    data = bytearray(path.read_bytes())
    w_off, rows, cols, weight, _ = spec_layout(bytes(data))["layers"][layer]
    column_major = weight.reshape(rows, cols).T.astype("<f4").tobytes()
    data[w_off : w_off + 4 * rows * cols] = column_major
    data[-4:] = struct.pack("<I", zlib.crc32(bytes(data[:-4])))
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("target", TARGETS)
def test_transposed_weights_are_caught(target: str, tmp_path: Path) -> None:
    model = make_model((16, 8), "silu", target, seed=11)
    path = tmp_path / "model.bin"
    write_model_bin(model, path)
    inputs = draw_tracks(500)
    ref = torch_predict(model, inputs)
    assert_matches(read_model_bin(path).forward(inputs), ref, "before transposing")
    for layer in range(3):
        write_model_bin(model, path)
        transpose_layer_in_file(path, layer)
        got = read_model_bin(path).forward(inputs)  # still loads: shapes and CRC are valid
        assert mismatch(got, ref) > 100.0, f"transposed layer {layer} went unnoticed"


# --- (b) ONNX -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def onnx_models(tmp_path_factory) -> dict:
    """Each ONNX case exported once: case -> (model, path)."""
    out = {}
    for case in ONNX_CASES:
        path = tmp_path_factory.mktemp(case_id(case)) / "model.onnx"
        model = make_model(*case, seed=100 + ONNX_CASES.index(case))
        export_onnx(model, path)
        out[case] = (model, path)
    return out


@pytest.mark.parametrize("case", ONNX_CASES, ids=case_id)
def test_onnx_matches_torch(case, onnx_models) -> None:
    model, path = onnx_models[case]
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.onnx"]  # self-contained
    for inputs in both_input_sets():
        got = onnx_predict(path, inputs, intra_op_num_threads=1)
        assert_matches(got, torch_predict(model, inputs), f"onnx {case_id(case)}")


def test_onnx_graph_has_named_dynamic_batch(onnx_models) -> None:
    import onnx

    model, path = onnx_models[ONNX_CASES[2]]
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["state"]
    assert [o.name for o in graph.output] == ["state_end"]
    for value, width in ((graph.input[0], 7), (graph.output[0], 4)):
        dims = value.type.tensor_type.shape.dim
        assert dims[0].dim_param and not dims[0].dim_value  # symbolic batch
        assert dims[1].dim_value == width
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    inputs = draw_tracks(1000, variable_z=True)
    ref = torch_predict(model, inputs)
    assert onnx_predict(path, inputs[:1]).shape == (1, 4)
    assert_matches(onnx_predict(path, inputs[:1]), ref[:1], "onnx batch 1")
    assert_matches(onnx_predict(path, inputs), ref, "onnx batch 1000")


# --- (c) the C++ header -------------------------------------------------------------------------

CPP_MAIN = r"""
#include "raytrack_mlp.hpp"
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

// usage: predict model.bin inputs.f32 outputs.f32 n   (raw little-endian float32 files)
int main(int argc, char** argv) {
  if (argc != 5) { std::cerr << "usage: predict model.bin in out n\n"; return 64; }
  try {
    const raytrack::Mlp mlp = raytrack::load_mlp(argv[1]);
    const std::size_t n = std::stoul(argv[4]);
    std::vector<float> in(n * raytrack::Mlp::kInputs), out(n * raytrack::Mlp::kOutputs);
    std::ifstream fin(argv[2], std::ios::binary);
    fin.read(reinterpret_cast<char*>(in.data()), in.size() * sizeof(float));
    if (fin.gcount() != static_cast<std::streamsize>(in.size() * sizeof(float))) {
      std::cerr << argv[2] << ": short input file\n";
      return 65;
    }
    mlp.forward(in.data(), out.data(), n);
    std::ofstream fout(argv[3], std::ios::binary);
    fout.write(reinterpret_cast<const char*>(out.data()), out.size() * sizeof(float));
    std::cout << mlp.n_layers() << " " << mlp.weight_count() << "\n";
    return fout ? 0 : 66;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
"""


@pytest.fixture(scope="module")
def cpp_predict(tmp_path_factory) -> Path:
    """Compile the small C++ driver against raytrack_mlp.hpp once per module."""
    compiler = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if compiler is None:
        pytest.skip("no C++ compiler (c++, g++ or clang++) on PATH: cannot test the C++ header")
    if np.dtype("=f4").byteorder not in ("=", "<") or not np.little_endian:
        pytest.skip("the test driver exchanges native floats; this host is big-endian")
    build = tmp_path_factory.mktemp("cpp")
    (build / "predict.cpp").write_text(CPP_MAIN)
    exe = build / "predict"
    cmd = [compiler, "-std=c++17", "-O2", "-Wall", "-Wextra", "-Werror", f"-I{INCLUDE_DIR}"]
    result = subprocess.run(
        [*cmd, str(build / "predict.cpp"), "-o", str(exe)], capture_output=True, text=True
    )
    assert result.returncode == 0, f"compiling the C++ header failed:\n{result.stderr}"
    return exe


def run_cpp(exe: Path, model_path: Path, inputs: np.ndarray, work: Path):
    """Run the driver; returns (CompletedProcess, outputs or None)."""
    (work / "in.f32").write_bytes(inputs.astype("<f4").tobytes())
    out_path = work / "out.f32"
    out_path.unlink(missing_ok=True)
    args = [str(exe), str(model_path), str(work / "in.f32"), str(out_path), str(len(inputs))]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        return proc, None
    return proc, np.frombuffer(out_path.read_bytes(), "<f4").reshape(-1, 4)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_cpp_header_matches_torch(case, cpp_predict: Path, tmp_path: Path) -> None:
    model = make_model(*case, seed=CASES.index(case))
    write_model_bin(model, tmp_path / "model.bin")
    for inputs in both_input_sets():
        proc, got = run_cpp(cpp_predict, tmp_path / "model.bin", inputs, tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split() == [str(len(case[0]) + 1), str(model.config.weight_count)]
        assert_matches(got, torch_predict(model, inputs), f"C++ {case_id(case)}")


def test_cpp_header_catches_transposed_weights(cpp_predict: Path, tmp_path: Path) -> None:
    model = make_model((24, 12, 6), "gelu", "residual_qop", seed=12)
    path = tmp_path / "model.bin"
    write_model_bin(model, path)
    transpose_layer_in_file(path, 1)
    inputs = draw_tracks(500)
    proc, got = run_cpp(cpp_predict, path, inputs, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert mismatch(got, torch_predict(model, inputs)) > 100.0


# --- (e) bad files ------------------------------------------------------------------------------


def _with_crc(data: bytearray) -> bytes:
    data[-4:] = struct.pack("<I", zlib.crc32(bytes(data[:-4])))
    return bytes(data)


def _patch(offset: int, value: bytes, fix_crc: bool = True):
    def corrupt(data: bytes) -> bytes:
        out = bytearray(data)
        out[offset : offset + len(value)] = value
        return _with_crc(out) if fix_crc else bytes(out)

    return corrupt


CORRUPTIONS = {
    "wrong-magic": (_patch(0, b"ONNXMLP\0"), "bad magic"),
    "version-2": (_patch(8, struct.pack("<I", 2)), "version"),
    "byte-swapped": (_patch(12, struct.pack(">I", 0x01020304)), "byte-swapped"),
    "unknown-activation": (_patch(20, struct.pack("<I", 9)), "activation code 9"),
    "layer-shape-chain": (_patch(40 + 8 + 4, struct.pack("<I", 15)), "layer 1"),
    "flipped-weight-byte": (_patch(200, b"\x5a", fix_crc=False), "checksum mismatch"),
    "truncated": (lambda d: d[:-10], "truncated"),
    "truncated-header": (lambda d: d[:20], "truncated"),
    "empty": (lambda d: b"", "truncated"),
    "trailing-bytes": (lambda d: d + b"\0\0\0\0", "trailing bytes"),
}


@pytest.fixture()
def valid_bin(tmp_path: Path) -> bytes:
    model = make_model((16, 8), "tanh", "residual", seed=21)
    write_model_bin(model, tmp_path / "valid.bin")
    return (tmp_path / "valid.bin").read_bytes()


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_bad_files_raise_clear_errors(name: str, valid_bin: bytes, tmp_path: Path) -> None:
    corrupt, message = CORRUPTIONS[name]
    path = tmp_path / f"{name}.bin"
    path.write_bytes(corrupt(valid_bin))
    with pytest.raises(ValueError, match=message) as info:
        read_model_bin(path)
    assert str(path) in str(info.value)


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


# --- (f) normalisation is baked in: exports take physical units --------------------------------


def test_exports_take_physical_units_with_fixed_legs(cpp_predict: Path, tmp_path: Path) -> None:
    """A normalisation fitted with fixed z_start/z_end (std set to 1): exports standardise."""
    inputs = draw_tracks(2000, seed=31)  # z_start = 3000, z_end = 7000 for every track
    phys = inputs.astype(np.float64)
    targets = straight_line(phys) + phys[:, 4:5] * np.array([2e5, 1e4, 100.0, 5.0])
    norm = Normalisation.fit(phys, targets, "residual_qop")
    np.testing.assert_array_equal(norm.input_std[5:], [1.0, 1.0])
    np.testing.assert_array_equal(norm.input_mean[5:], [3000.0, 7000.0])
    model = make_model((16, 8), "gelu", "residual_qop", seed=32)
    with torch.no_grad():
        for name in ("input_mean", "input_std", "target_mean", "target_std"):
            getattr(model, name).copy_(torch.as_tensor(getattr(norm, name)))
    ref = torch_predict(model, inputs)
    write_model_bin(model, tmp_path / "model.bin")
    export_onnx(model, tmp_path / "model.onnx")
    assert_matches(read_model_bin(tmp_path / "model.bin").forward(inputs), ref, "numpy")
    assert_matches(onnx_predict(tmp_path / "model.onnx", inputs), ref, "onnx")
    proc, got = run_cpp(cpp_predict, tmp_path / "model.bin", inputs, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert_matches(got, ref, "C++")
    # Control: the same weights without the input standardisation give something else entirely,
    # so the agreement above requires the exports to standardise physical inputs themselves.
    with torch.no_grad():
        unstandardised = model.decode(torch.from_numpy(inputs), model.net(torch.from_numpy(inputs)))
    assert mismatch(unstandardised.numpy(), ref) > 100.0
