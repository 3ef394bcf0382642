"""Deployment exports: model.bin (NumPy and C++ readers) and ONNX reproduce the torch model.

Every formulation (physics base x input set x target mode, leg_power 0 and 2) is exported and
evaluated by torch, ONNX Runtime, the NumPy reader and the C++ header on the same tracks: legs
of any length in both directions, short hops, legs that leave the field tables and a fixed leg.
Models are built without training (random weights, the default dipole's on-axis profile, a
normalisation fitted on synthetic end states), so the tests are fast; the path base also on the
window-frame test map's profile, whose midplane x dependence its model carries as x tables.
Every model has non-square layers and non-trivial normalisation, so a transposed weight matrix
or a forgotten standardisation cannot hide; negative controls show that a column-major weight
matrix (the bug of an earlier export, docs/physics.md section 6) and a wrong physics base are
caught.
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
    export_onnx_pair,
    onnx_predict,
    onnx_predict_with_jacobian,
    read_model_bin,
    write_model_bin,
)
from raytrack.export.model_bin import BinModel, erf, parse_model_bin
from raytrack.models.formulation import MIN_LEG_M, Formulation
from raytrack.models.mlp import ModelConfig, Normalisation, TrackMLP
from raytrack.physics.field_integrals import (
    MIN_UZ_SQUARED,
    PATH_NODES,
    PATH_PASSES,
    QUADRATURE_NODES,
    X_DEGREE,
    AxisProfile,
)
from raytrack.physics.fields import DipoleField
from raytrack.physics.synthetic_map import WindowFrameField
from raytrack.physics.units import KAPPA

AXIS = AxisProfile.from_field(DipoleField(), -500.0, 14500.0)
#: The window-frame test map's profile (analytic): its midplane falls off with x, fitted by a
#: degree-8 polynomial at every table node (the path base's x tables).
MAP_AXIS = AxisProfile.from_field(WindowFrameField(), -500.0, 14500.0)
BASES = ("line", "kick", "axial", "expansion", "path")
INPUT_SETS = ("state", "physics")
TARGETS = ("raw", "residual", "residual_qop")
LEG_POWERS = (0.0, 2.0)
ACTIVATIONS = ("relu", "silu", "gelu", "tanh")
SHAPES = ((16, 8), (24, 12, 6))


# The formulations also exported to ONNX (an export takes seconds): every (base, inputs) once,
# every target but raw with both leg powers, every base with both; the default formulation first.
ONNX_CASES = {
    ("path", "physics", "residual_qop", 2.0),
    ("path", "state", "residual", 0.0),
    ("expansion", "physics", "residual_qop", 2.0),
    ("expansion", "state", "residual", 0.0),
    ("axial", "physics", "residual", 2.0),
    ("axial", "state", "residual_qop", 0.0),
    ("kick", "physics", "residual_qop", 2.0),
    ("kick", "state", "raw", 0.0),
    ("line", "state", "residual_qop", 2.0),
    ("line", "physics", "raw", 0.0),
}

# (base, inputs, target, leg_power, with_onnx)
FORMULATIONS = [
    (b, i, t, p, (b, i, t, p) in ONNX_CASES)
    for b in BASES
    for i in INPUT_SETS
    for t in TARGETS
    for p in LEG_POWERS
]
# Activations and depths, on the default formulation.
NETWORKS = [(h, a) for h in SHAPES for a in ACTIVATIONS]


def formulation_id(case) -> str:
    base, inputs, target, leg_power, with_onnx = case
    return f"{base}-{inputs}-{target}-L{leg_power:g}" + ("-onnx" if with_onnx else "")


def network_id(case) -> str:
    hidden, activation = case
    return f"{'x'.join(map(str, hidden))}-{activation}"


# --- tracks, models and tolerances -------------------------------------------------------------


def draw_tracks(n: int, seed: int = 1, legs: str = "any") -> np.ndarray:
    """(n, 7) float32 states like real tracks anywhere along the detector.

    legs: "any" (z_start, z_end in 0..14000 mm, either direction), "short" (25-250 mm hops,
    either direction, and a few zero-length legs), "beyond" (ends up to 1.5 m outside the field
    tables, which span -500..14500 mm) or "fixed" (3000 -> 7000 mm, the classic leg).
    """
    rng = np.random.default_rng(seed)
    p = np.exp(rng.uniform(np.log(2000.0), np.log(100000.0), n))
    qop = rng.choice([-1.0, 1.0], n) / p
    if legs == "fixed":
        z0, z1 = np.full(n, 3000.0), np.full(n, 7000.0)
    elif legs == "short":
        z0 = rng.uniform(0.0, 14000.0, n)
        z1 = z0 + rng.choice([-1.0, 1.0], n) * rng.uniform(25.0, 250.0, n)
        z1[:3] = z0[:3]
    else:
        lo, hi = (0.0, 14000.0) if legs == "any" else (-2000.0, 16000.0)
        z0, z1 = rng.uniform(lo, hi, n), rng.uniform(lo, hi, n)
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


LEG_GROUPS = ("any", "short", "beyond", "fixed")


def track_groups(n: int = 200, seed: int = 1) -> dict[str, np.ndarray]:
    """One batch per kind of leg: each is compared on its own, so that the tolerance of the
    10 m legs (scaled by their largest values) does not swallow the short hops' errors."""
    return {legs: draw_tracks(n, seed + k, legs) for k, legs in enumerate(LEG_GROUPS)}


def synthetic_truth(inputs: torch.Tensor, seed: int) -> torch.Tensor:
    """Plausible end states for fitting a normalisation: the expansion transport plus a residual
    that grows with q/p and the leg as a real one does (and is large enough to matter)."""
    inputs = inputs.double()
    base = Formulation("expansion", "state", "raw", 0.0, AXIS).base_prediction(inputs)
    leg = torch.abs(inputs[:, 6] - inputs[:, 5]) / 1000.0
    size = torch.stack((2.0 * leg**2, 2.0 * leg**2, 1e-3 * leg, 1e-3 * leg), 1)
    noise = torch.randn(inputs.shape[0], 4, dtype=torch.float64, generator=_gen(seed))
    return base + 1e4 * inputs[:, 4:5] * size * noise


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make_model(
    hidden=(16, 8),
    activation: str = "silu",
    seed: int = 0,
    dropout: float = 0.0,
    fit_on: np.ndarray | None = None,
    axis: AxisProfile = AXIS,
    **formulation,
) -> TrackMLP:
    """A TrackMLP in eval mode with random weights and biases and a normalisation fitted with
    ``Normalisation.fit`` on synthetic end states of ``fit_on`` (default: tracks of any leg).

    ``formulation``: ModelConfig's base / inputs / target / leg_power (defaults otherwise);
    ``axis``: the field profile (default: the default dipole's)."""
    config = ModelConfig(hidden=hidden, activation=activation, dropout=dropout, **formulation)
    model = TrackMLP(config, axis=axis)
    if fit_on is None:
        fit_on = np.concatenate([draw_tracks(1500, 1000 + seed), draw_tracks(500, seed, "short")])
    inputs = torch.from_numpy(fit_on)
    with torch.no_grad():
        features, encoded = model.encode(inputs, synthetic_truth(inputs, seed))
        model.set_normalisation(Normalisation.fit(features, encoded))
        gen = _gen(seed)
        for layer in model.linear_layers():
            fan_in = layer.weight.shape[1]
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) * 1.5 / fan_in**0.5)
            layer.bias.copy_(torch.randn(layer.bias.shape, generator=gen) * 0.5)
    return model.eval()


def formulation_model(case, seed: int) -> TrackMLP:
    base, inputs, target, leg_power, _ = case
    return make_model(
        (24, 12, 6), "silu", seed, base=base, inputs=inputs, target=target, leg_power=leg_power
    )


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
    assert np.all(np.isfinite(ref)), f"{what}: the torch reference is not finite"
    assert np.all(np.isfinite(got)), f"{what}: non-finite outputs"
    err = mismatch(got, ref)
    assert err <= 1.0, f"{what}: error is {err:.3g} x the float32 tolerance"


def assert_groups_match(got: np.ndarray, ref: np.ndarray, groups: dict, what: str) -> None:
    """``got`` and ``ref`` are the groups' tracks concatenated in order; compare each group."""
    start = 0
    for legs, tracks in groups.items():
        end = start + len(tracks)
        assert_matches(got[start:end], ref[start:end], f"{what}, {legs} legs")
        start = end


# --- the C++ driver ------------------------------------------------------------------------------

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
    std::cout << mlp.n_layers() << " " << mlp.weight_count() << " " << mlp.version << " "
              << mlp.n_features() << "\n";
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
    compiler = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if compiler is None:
        pytest.skip("no C++ compiler (g++, c++ or clang++) on PATH: cannot test the C++ header")
    if np.dtype("=f4").byteorder not in ("=", "<") or not np.little_endian:
        pytest.skip("the test driver exchanges native floats; this host is big-endian")
    build = tmp_path_factory.mktemp("cpp")
    (build / "predict.cpp").write_text(CPP_MAIN)
    exe = build / "predict"
    cmd = [compiler, "-std=c++17", "-O2", "-Wall", "-Wextra", "-Wpedantic", "-Werror"]
    cmd.append(f"-I{INCLUDE_DIR}")
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


# --- (a) every formulation: torch, ONNX Runtime, NumPy and C++ agree ----------------------------


@pytest.mark.parametrize("case", FORMULATIONS, ids=formulation_id)
def test_every_reader_matches_torch(case, cpp_predict: Path, tmp_path: Path) -> None:
    seed = FORMULATIONS.index(case)
    model = formulation_model(case, seed)
    groups = track_groups(seed=10 * seed)
    inputs = np.concatenate(list(groups.values()))
    ref = torch_predict(model, inputs)
    what = formulation_id(case)

    write_model_bin(model, tmp_path / "model.bin")
    loaded = read_model_bin(tmp_path / "model.bin")
    assert (loaded.base, loaded.inputs, loaded.target, loaded.leg_power) == case[:4]
    assert loaded.n_layers == 4 and loaded.weight_count == model.config.weight_count
    assert_groups_match(loaded.forward(inputs), ref, groups, f"numpy {what}")

    proc, got = run_cpp(cpp_predict, tmp_path / "model.bin", inputs, tmp_path)
    assert proc.returncode == 0, proc.stderr
    expected_stdout = ["4", str(model.config.weight_count), "3", str(model.config.n_features)]
    assert proc.stdout.split() == expected_stdout
    assert_groups_match(got, ref, groups, f"C++ {what}")

    if case[4]:
        export_onnx(model, tmp_path / "model.onnx")
        got = onnx_predict(tmp_path / "model.onnx", inputs, intra_op_num_threads=1)
        assert_groups_match(got, ref, groups, f"onnx {what}")


@pytest.mark.parametrize("inputs", INPUT_SETS)
def test_path_base_on_a_map_every_reader_matches_torch(
    inputs: str, cpp_predict: Path, tmp_path: Path
) -> None:
    """The path base on the window-frame map (x tables of degree 8 in the file): NumPy, C++ and
    (the default formulation) ONNX Runtime give what torch gives, on legs of every kind."""
    model = make_model((24, 12, 6), "silu", seed=61, axis=MAP_AXIS, base="path", inputs=inputs)
    assert model.formulation.x_values.shape == (2 * X_DEGREE, len(MAP_AXIS.by))
    groups = track_groups(seed=61)
    everywhere = np.concatenate(list(groups.values()))
    ref = torch_predict(model, everywhere)
    write_model_bin(model, tmp_path / "model.bin")
    loaded = read_model_bin(tmp_path / "model.bin")
    assert (loaded.x_degree, loaded.x_scale, loaded.passes) == (X_DEGREE, 4000.0, PATH_PASSES)
    np.testing.assert_array_equal(loaded.x_values, model.formulation.x_values.numpy())
    assert_groups_match(loaded.forward(everywhere), ref, groups, f"numpy map {inputs}")
    proc, got = run_cpp(cpp_predict, tmp_path / "model.bin", everywhere, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert_groups_match(got, ref, groups, f"C++ map {inputs}")
    if inputs == "physics":  # the two files a run ships, from one trace (write_exports)
        export_onnx_pair(model, tmp_path / "model.onnx", tmp_path / "model_jacobian.onnx")
        got = onnx_predict(tmp_path / "model.onnx", everywhere, intra_op_num_threads=1)
        assert_groups_match(got, ref, groups, "onnx map")
        end, _ = onnx_predict_with_jacobian(tmp_path / "model_jacobian.onnx", everywhere)
        np.testing.assert_allclose(end, got, rtol=1e-6, atol=1e-4)  # one state_end, two graphs


def test_every_formulation_and_leg_power_is_covered() -> None:
    """The grid is complete; ONNX sees every base and input set, and every base and every
    scaled target with both leg powers."""
    assert len(FORMULATIONS) == len(BASES) * len(INPUT_SETS) * len(TARGETS) * len(LEG_POWERS)
    exported = [case for case in FORMULATIONS if case[4]]
    assert len(exported) == len(ONNX_CASES)
    assert sorted(case[:2] for case in exported) == sorted({case[:2] for case in FORMULATIONS})
    for base in BASES:
        assert {case[3] for case in exported if case[0] == base} == set(LEG_POWERS), base
    for target in ("residual", "residual_qop"):
        assert {case[3] for case in exported if case[2] == target} == set(LEG_POWERS), target


@pytest.mark.parametrize("case", NETWORKS, ids=network_id)
def test_readers_match_torch_for_every_activation(case, cpp_predict: Path, tmp_path: Path) -> None:
    model = make_model(*case, seed=100 + NETWORKS.index(case))
    groups = track_groups(seed=7)
    inputs = np.concatenate(list(groups.values()))
    ref = torch_predict(model, inputs)
    write_model_bin(model, tmp_path / "model.bin")
    assert read_model_bin(tmp_path / "model.bin").n_layers == len(case[0]) + 1
    assert_groups_match(read_model_bin(tmp_path / "model.bin").forward(inputs), ref, groups, "np")
    proc, got = run_cpp(cpp_predict, tmp_path / "model.bin", inputs, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert_groups_match(got, ref, groups, f"C++ {network_id(case)}")


def test_numpy_reader_ignores_dropout_like_eval_mode(tmp_path: Path) -> None:
    model = make_model((16, 8), "silu", seed=5, dropout=0.2)
    write_model_bin(model, tmp_path / "model.bin")
    inputs = draw_tracks(300)
    assert_matches(
        read_model_bin(tmp_path / "model.bin").forward(inputs),
        torch_predict(model, inputs),
        "dropout",
    )


@pytest.mark.parametrize(
    "base, axis",
    [("path", AXIS), ("path", MAP_AXIS), ("expansion", AXIS)],
    ids=["path", "path-map", "expansion"],
)
def test_numpy_formulation_matches_torch_in_float64(base: str, axis: AxisProfile) -> None:
    """Features, base and scale agree with torch's to float64 rounding, not just float32
    (measured for the path base: 2e-12 mm on the default dipole, 3e-12 mm on the map)."""
    model = make_model(seed=3, axis=axis, base=base)  # physics, residual_qop, leg_power 2
    loaded = BinModel.from_torch(model)
    inputs = np.concatenate(list(track_groups(seed=3).values()))
    with torch.no_grad():
        expected = [t.numpy() for t in model.prepare(torch.from_numpy(inputs))]
    got_all = loaded.prepare(inputs.astype(np.float64))
    for got, ref, name in zip(got_all, expected, ("features", "base", "scale"), strict=True):
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-9, err_msg=name)


def test_erf_is_exact_to_float64_precision() -> None:
    xs = np.concatenate([np.linspace(-12.0, 12.0, 20001), [0.0, -0.0, 2.999999, 3.0, 40.0]])
    ref = np.array([math.erf(v) for v in xs])
    assert np.max(np.abs(erf(xs) - ref)) < 1e-12


def spec_size(hidden, n_features: int, n_quad: int, n_table: int, n_x: int = 0) -> int:
    """S = 128 + 8L + 8(2K + 4T + 2DT) + 4(2F + 8) + 4 sum(rows cols + rows) + 4
    (docs/model_bin.md)."""
    widths = (n_features, *hidden, 4)
    layers = sum(r * c + r for c, r in zip(widths[:-1], widths[1:], strict=True))
    return (
        128
        + 8 * (len(widths) - 1)
        + 8 * (2 * n_quad + 4 * n_table + 2 * n_x * n_table)
        + 4 * (2 * n_features + 8)
        + 4 * layers
        + 4
    )


def test_write_is_atomic_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    model = make_model((16, 8), "relu", seed=3, base="line", inputs="state", leg_power=0)
    (tmp_path / "model.bin").write_bytes(b"old content")
    write_model_bin(model, tmp_path / "model.bin")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin"]
    assert (tmp_path / "model.bin").stat().st_size == 1444  # the first worked example
    assert spec_size((16, 8), 7, 0, 0) == 1444
    read_model_bin(tmp_path / "model.bin")


def test_file_round_trips_byte_for_byte(tmp_path: Path) -> None:
    model = make_model(seed=4, base="expansion")
    write_model_bin(model, tmp_path / "model.bin")
    data = (tmp_path / "model.bin").read_bytes()
    assert len(data) == spec_size((16, 8), 14, 8, len(AXIS.by)) == 26108  # 2nd worked example
    assert parse_model_bin(data).to_bytes() == data
    # The third: the path base on the map, 12 nodes and 2 x 8 x tables.
    write_model_bin(make_model(seed=4, axis=MAP_AXIS), tmp_path / "map.bin")
    data = (tmp_path / "map.bin").read_bytes()
    assert len(data) == spec_size((16, 8), 14, 12, 751, 8) == 122300
    assert parse_model_bin(data).to_bytes() == data


# --- the written layout, parsed straight from the spec (independent of the reader) -------------


def spec_layout(data: bytes) -> dict:
    """Parse a version-3 model.bin with struct, following docs/model_bin.md literally."""
    magic = data[0:8]
    header = struct.unpack_from("<14I", data, 8)
    numbers = struct.unpack_from("<7d", data, 64)
    path_words = struct.unpack_from("<2I", data, 120)  # passes, reserved
    n_layers, n_features, n_quad, n_table = header[7], header[10], header[11], header[12]
    n_x = header[13]
    dims = struct.unpack_from(f"<{2 * n_layers}I", data, 128)
    shapes = list(zip(dims[0::2], dims[1::2], strict=True))
    offset = 128 + 8 * n_layers
    quadrature = np.frombuffer(data, "<f8", 2 * n_quad, offset).reshape(2, n_quad)
    offset += 16 * n_quad
    tables = np.frombuffer(data, "<f8", 4 * n_table, offset).reshape(4, n_table)
    offset += 32 * n_table
    x_tables = np.frombuffer(data, "<f8", 2 * n_x * n_table, offset).reshape(2 * n_x, n_table)
    offset += 16 * n_x * n_table
    norm = np.frombuffer(data, "<f4", 2 * n_features + 8, offset)
    offset += 4 * (2 * n_features + 8)
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
        magic=magic, header=header, numbers=numbers, path_words=path_words,
        quadrature=quadrature, tables=tables, x_tables=x_tables, norm=norm, layers=layers,
        crc=crc, end=offset + 4,
    )  # fmt: skip


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
        3,
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


# --- (b) version 1 files still read --------------------------------------------------------------


def version_1_bytes(model: TrackMLP) -> bytes:
    """The version-1 file of a straight-line, 7-input model, written from the version-1 spec:
    a 40-byte header, the shapes, 22 normalisation floats, the layers and the CRC."""
    config = model.config
    assert (config.base, config.inputs, config.leg_power) == ("line", "state", 0.0)
    activation = {"relu": 1, "silu": 2, "gelu": 3, "tanh": 4}[config.activation]
    target = {"raw": 0, "residual": 1, "residual_qop": 2}[config.target]
    layers = model.linear_layers()
    parts = [struct.pack("<8s8I", b"RTRKMLP\0", 1, 0x01020304, 1, activation, target, 7, 4, 3)]
    parts += [struct.pack("<2I", *layer.weight.shape) for layer in layers]
    norm = model.normalisation()
    for array in (norm.input_mean, norm.input_std, norm.target_mean, norm.target_std):
        parts.append(array.astype("<f4").tobytes())
    for layer in layers:
        parts.append(layer.weight.detach().numpy().astype("<f4").tobytes())
        parts.append(layer.bias.detach().numpy().astype("<f4").tobytes())
    body = b"".join(parts)
    return body + struct.pack("<I", zlib.crc32(body))


@pytest.mark.parametrize("target", TARGETS)
def test_version_1_files_still_read(target: str, cpp_predict: Path, tmp_path: Path) -> None:
    """A version-1 file is the straight-line formulation: both readers give what the torch
    model of that formulation gives, and rewriting it gives a version-2 file of the same model."""
    model = make_model(
        (16, 8), "gelu", seed=41, base="line", inputs="state", target=target, leg_power=0
    )
    path = tmp_path / "v1.bin"
    path.write_bytes(version_1_bytes(model))
    assert len(path.read_bytes()) == 1356  # the version-1 spec's worked example
    groups = track_groups(seed=41)
    inputs = np.concatenate(list(groups.values()))
    ref = torch_predict(model, inputs)

    loaded = read_model_bin(path)
    assert loaded.version == 1
    assert (loaded.base, loaded.inputs, loaded.leg_power, loaded.target) == (
        "line",
        "state",
        0.0,
        target,
    )
    assert_groups_match(loaded.forward(inputs), ref, groups, "numpy, version 1")
    proc, got = run_cpp(cpp_predict, path, inputs, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["3", str(model.config.weight_count), "1", "7"]
    assert_groups_match(got, ref, groups, "C++, version 1")

    rewritten = parse_model_bin(loaded.to_bytes())
    assert rewritten.version == 3
    np.testing.assert_array_equal(rewritten.forward(inputs), loaded.forward(inputs))
    write_model_bin(model, tmp_path / "v2.bin")
    assert loaded.to_bytes() == (tmp_path / "v2.bin").read_bytes()


def version_2_bytes(current: bytes) -> bytes:
    """The version-2 file of a model that is not path (from its version-3 file): a 112-byte
    header, word 60 reserved 0 and six float64 (no x_scale, passes, reserved word)."""
    assert struct.unpack_from("<I", current, 40)[0] != 4 and current[112:128] == bytes(16)
    body = bytearray(current[:112] + current[128:-4])
    body[8:12] = struct.pack("<I", 2)
    return bytes(body) + struct.pack("<I", zlib.crc32(bytes(body)))


def test_version_2_files_still_read(cpp_predict: Path, tmp_path: Path) -> None:
    """A version-2 file (an expansion model) reads in both readers as the same model, and
    rewrites as the version-3 file."""
    model = make_model((16, 8), "silu", seed=42, base="expansion")
    write_model_bin(model, tmp_path / "v3.bin")
    path = tmp_path / "v2.bin"
    path.write_bytes(version_2_bytes((tmp_path / "v3.bin").read_bytes()))
    groups = track_groups(100, seed=42)
    inputs = np.concatenate(list(groups.values()))
    ref = torch_predict(model, inputs)
    loaded = read_model_bin(path)
    assert (loaded.version, loaded.base, loaded.x_degree, loaded.passes) == (2, "expansion", 0, 0)
    assert_groups_match(loaded.forward(inputs), ref, groups, "numpy, version 2")
    proc, got = run_cpp(cpp_predict, path, inputs, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[2] == "2"
    assert_groups_match(got, ref, groups, "C++, version 2")
    assert loaded.to_bytes() == (tmp_path / "v3.bin").read_bytes()
    # Base code 4 is version 3's: a version-2 file with it is refused.
    data = bytearray(path.read_bytes())
    data[40:44] = struct.pack("<I", 4)
    path.write_bytes(_with_crc(data))
    with pytest.raises(ValueError, match="base code 4"):
        read_model_bin(path)
    proc, _ = run_cpp(cpp_predict, path, inputs[:3], tmp_path)
    assert proc.returncode == 1 and "base code 4" in proc.stderr


# --- (c) negative controls: a column-major matrix and a wrong base are caught -----------------


def transpose_layer_in_file(path: Path, layer: int) -> None:
    """Rewrite one weight matrix column-major (the old bug), keeping the file otherwise valid."""
    data = bytearray(path.read_bytes())
    w_off, rows, cols, weight, _ = spec_layout(bytes(data))["layers"][layer]
    column_major = weight.reshape(rows, cols).T.astype("<f4").tobytes()
    data[w_off : w_off + 4 * rows * cols] = column_major
    path.write_bytes(_with_crc(data))


@pytest.mark.parametrize("target", TARGETS)
def test_transposed_weights_are_caught(target: str, cpp_predict: Path, tmp_path: Path) -> None:
    model = make_model((16, 8), "silu", seed=11, target=target)
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
        proc, got = run_cpp(cpp_predict, path, inputs, tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert mismatch(got, ref) > 100.0, f"C++: transposed layer {layer} went unnoticed"


@pytest.mark.parametrize("legs", ("any", "short"))
def test_a_wrong_base_is_caught(legs: str, cpp_predict: Path, tmp_path: Path) -> None:
    """The comparison sees the physics: relabelling an expansion model as axial (dropping only
    the off-plane correction) fails it on long legs and on short hops alike."""
    model = make_model(seed=12, base="expansion")
    path = tmp_path / "model.bin"
    write_model_bin(model, path)
    data = bytearray(path.read_bytes())
    data[40:44] = struct.pack("<I", 2)  # base code 3 (expansion) -> 2 (axial)
    path.write_bytes(_with_crc(data))
    inputs = draw_tracks(500, seed=13, legs=legs)
    ref = torch_predict(model, inputs)
    assert mismatch(read_model_bin(path).forward(inputs), ref) > 10.0
    proc, got = run_cpp(cpp_predict, path, inputs, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert mismatch(got, ref) > 10.0


# --- (d) bad files ------------------------------------------------------------------------------


def _with_crc(data: bytearray) -> bytes:
    data[-4:] = struct.pack("<I", zlib.crc32(bytes(data[:-4])))
    return bytes(data)


def _patch(offset: int, value: bytes, fix_crc: bool = True):
    def corrupt(data: bytes) -> bytes:
        out = bytearray(data)
        out[offset : offset + len(value)] = value
        return _with_crc(out) if fix_crc else bytes(out)

    return corrupt


def _u32(value: int) -> bytes:
    return struct.pack("<I", value)


# name -> (corruption of a valid version-2 file, text both readers' messages contain)
CORRUPTIONS = {
    "wrong-magic": (_patch(0, b"ONNXMLP\0"), "bad magic"),
    "version-4": (_patch(8, _u32(4)), "version 4"),
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
    path.write_bytes(_patch(8, _u32(4))(valid_bin))
    with pytest.raises(ValueError) as info:
        read_model_bin(path)
    assert str(info.value) == (
        f"{path}: format version 4, this reader supports versions 1, 2, 3 (current 3)"
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


def test_writer_refuses_an_inconsistent_model() -> None:
    bin_model = BinModel.from_torch(make_model(seed=22))
    bin_model.axis_values = np.zeros((4, 0))
    with pytest.raises(ValueError, match="needs the field tables"):
        bin_model.to_bytes()


# --- (e) normalisation is baked in: exports take physical units --------------------------------


def test_exports_take_physical_units_with_fixed_legs(cpp_predict: Path, tmp_path: Path) -> None:
    """A normalisation fitted on one fixed leg: z_start, z_end, dz, I1 and I2 are constant
    columns (std set to 1), fixed features that the network receives as 0 (issue 16), and every
    export standardises physical inputs itself, on that leg and on any other."""
    inputs = draw_tracks(2000, seed=31, legs="fixed")
    model = make_model((16, 8), "gelu", seed=32, fit_on=inputs)
    norm = model.normalisation()
    np.testing.assert_array_equal(norm.input_std[5:10], np.ones(5))
    np.testing.assert_allclose(norm.input_mean[5:8], [3000.0, 7000.0, 4000.0])
    assert norm.input_fixed.tolist() == [False] * 5 + [True] * 5 + [False] * 4
    groups = {"training leg": inputs, **track_groups(100, seed=33)}
    everywhere = np.concatenate(list(groups.values()))
    ref = torch_predict(model, everywhere)
    write_model_bin(model, tmp_path / "model.bin")
    export_onnx(model, tmp_path / "model.onnx")
    # model.bin has no field for it: the first layer's columns of the fixed features are 0.
    first = read_model_bin(tmp_path / "model.bin").weights[0]
    assert not first[:, 5:10].any() and first[:, :5].all() and first[:, 10:].all()
    assert model.linear_layers()[0].weight[:, 5:10].abs().min() > 0  # the model's own weights
    loaded = read_model_bin(tmp_path / "model.bin")
    assert_groups_match(loaded.forward(everywhere), ref, groups, "numpy")
    assert_groups_match(onnx_predict(tmp_path / "model.onnx", everywhere), ref, groups, "onnx")
    proc, got = run_cpp(cpp_predict, tmp_path / "model.bin", everywhere, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert_groups_match(got, ref, groups, "C++")
    # The network ignores them: other weights on them change nothing, on any leg.
    with torch.no_grad():
        model.linear_layers()[0].weight[:, 5:10] *= -3.0
    np.testing.assert_array_equal(torch_predict(model, everywhere), ref)
    # Control: the same weights without the input standardisation give something else entirely,
    # so the agreement above requires the exports to standardise physical inputs themselves.
    with torch.no_grad():
        features, base, scale = model.prepare(torch.from_numpy(inputs))
        unstandardised = model.decode(base, scale, model.net(features.float()))
    assert mismatch(unstandardised.float().numpy(), ref[: len(inputs)]) > 100.0


def test_a_checkpoint_from_before_fixed_features_fixes_none() -> None:
    """A state without ``input_fixed`` (checkpoints before issue 16) loads as the model it was:
    no feature fixed, the network given every feature standardised."""
    inputs = draw_tracks(500, seed=34, legs="fixed")
    model = make_model((16, 8), "silu", seed=35, fit_on=inputs)
    state = model.state_dict()
    del state["input_fixed"]
    old = TrackMLP.from_state(model.config, state).eval()
    assert not old.input_fixed.any()
    tracks = draw_tracks(200, seed=36)
    with torch.no_grad():
        features, base, scale = old.prepare(torch.from_numpy(tracks))
        standardised = (features.float() - old.input_mean) / old.input_std
        before = old.decode(base, scale, old.net(standardised)).float()
    np.testing.assert_array_equal(torch_predict(old, tracks), before.numpy())


def test_cast_like_becomes_cast_and_onnx_runtime_loads_the_graph_silently(capfd) -> None:
    """The Jacobian's export (not optimised) kept CastLike nodes, on which ONNX Runtime printed
    "Could not find a CPU kernel and hence can't constant fold CastLike" at every session
    creation (issue 17): the export writes them as Casts, which compute the same."""
    import onnx
    import onnx_ir as ir
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from raytrack.export.onnx_export import cast_like_to_cast

    # the exporter's pattern (torch.arange of the Jacobian): constant int64 CastLike'd to the
    # type of another constant, then used with the input
    five = helper.make_tensor("", TensorProto.INT64, [], [5])
    zero = helper.make_tensor("", TensorProto.FLOAT, [], [0.0])
    nodes = [
        helper.make_node("Constant", [], ["five"], value=five),
        helper.make_node("Constant", [], ["like"], value=zero),
        helper.make_node("CastLike", ["five", "like"], ["five_f"]),
        helper.make_node("CastLike", ["x", "x"], ["x_same"]),  # a typed input as the target
        helper.make_node("Mul", ["x_same", "five_f"], ["y"]),
    ]
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])
    y_info = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])
    graph = helper.make_graph(nodes, "g", [x_info], [y_info])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model = ir.serde.deserialize_model(proto)
    assert cast_like_to_cast(model) == 2
    fixed = ir.serde.serialize_model(model)
    onnx.checker.check_model(fixed)
    assert [n.op_type for n in fixed.graph.node].count("CastLike") == 0
    x = np.array([1.5, -2.0], dtype=np.float32)
    capfd.readouterr()
    session = ort.InferenceSession(fixed.SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"x": x})
    assert capfd.readouterr().err == ""
    assert y.dtype == np.float32 and np.array_equal(y, x * 5)
