"""model.bin's writer and its two readers (NumPy: raytrack.export.model_bin; C++:
raytrack_mlp.hpp) and ONNX reproduce the torch model.

Every formulation (physics base x input set x target mode, leg_power 0 and 2) is exported and
evaluated by torch, ONNX Runtime, the NumPy reader and the C++ header on the same tracks: legs
of any length in both directions, short hops, legs that leave the field tables and a fixed leg;
the path base also on the window-frame test map's profile, whose midplane x dependence its model
carries as x tables. Negative controls show that a column-major weight matrix (the bug
docs/physics.md section 6 describes) and a wrong physics base are caught.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from raytrack.export import (
    export_onnx,
    export_onnx_pair,
    onnx_predict,
    onnx_predict_with_jacobian,
    read_model_bin,
    write_model_bin,
)
from raytrack.export.bin_layout import FORMAT_VERSION
from raytrack.export.model_bin import BinModel, parse_model_bin
from raytrack.models.mlp import TrackMLP
from raytrack.physics.axis_profile import X_DEGREE
from raytrack.physics.transports import PATH_PASSES

from .drivers import run_cpp
from .helpers import (
    AXIS,
    MAP_AXIS,
    assert_groups_match,
    assert_matches,
    draw_tracks,
    make_model,
    mismatch,
    spec_layout,
    spec_size,
    torch_predict,
    track_groups,
    with_crc,
)

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
# The cases that export ONNX are slow (the exporter traces and optimises the graph).
FORMULATION_PARAMS = [
    pytest.param(case, marks=pytest.mark.slow) if case[4] else case for case in FORMULATIONS
]
# Activations and depths, on the default formulation.
NETWORKS = [(h, a) for h in SHAPES for a in ACTIVATIONS]


def formulation_id(case) -> str:
    base, inputs, target, leg_power, with_onnx = case
    return f"{base}-{inputs}-{target}-L{leg_power:g}" + ("-onnx" if with_onnx else "")


def network_id(case) -> str:
    hidden, activation = case
    return f"{'x'.join(map(str, hidden))}-{activation}"


def formulation_model(case, seed: int) -> TrackMLP:
    base, inputs, target, leg_power, _ = case
    return make_model(
        (24, 12, 6), "silu", seed, base=base, inputs=inputs, target=target, leg_power=leg_power
    )


# --- (a) every formulation: torch, ONNX Runtime, NumPy and C++ agree ----------------------------


@pytest.mark.parametrize("case", FORMULATION_PARAMS, ids=formulation_id)
def test_every_reader_matches_torch(
    case, cpp_predict: Path, cpp_predict_native: Path, tmp_path: Path
) -> None:
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
    expected_stdout = [
        "4",
        str(model.config.weight_count),
        str(FORMAT_VERSION),
        str(model.config.n_features),
    ]
    assert proc.stdout.split() == expected_stdout
    assert_groups_match(got, ref, groups, f"C++ {what}")
    check_batches((cpp_predict, cpp_predict_native), tmp_path, inputs, ref, groups, what)

    if case[4]:
        export_onnx(model, tmp_path / "model.onnx")
        got = onnx_predict(tmp_path / "model.onnx", inputs, intra_op_num_threads=1)
        assert_groups_match(got, ref, groups, f"onnx {what}")


@pytest.mark.parametrize(
    "inputs",
    ["state", pytest.param("physics", marks=pytest.mark.slow)],  # physics: ONNX too
)
def test_path_base_on_a_map_every_reader_matches_torch(
    inputs: str, cpp_predict: Path, cpp_predict_native: Path, tmp_path: Path
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
    drivers = (cpp_predict, cpp_predict_native)
    check_batches(drivers, tmp_path, everywhere, ref, groups, f"map {inputs}")
    if inputs == "physics":  # the two files a run ships, from one trace (write_exports)
        export_onnx_pair(model, tmp_path / "model.onnx", tmp_path / "model_jacobian.onnx")
        got = onnx_predict(tmp_path / "model.onnx", everywhere, intra_op_num_threads=1)
        assert_groups_match(got, ref, groups, "onnx map")
        end, _ = onnx_predict_with_jacobian(tmp_path / "model_jacobian.onnx", everywhere)
        np.testing.assert_allclose(end, got, rtol=1e-6, atol=1e-4)  # one state_end, two graphs


def check_batches(drivers, work: Path, inputs, ref, groups: dict, what: str) -> None:
    """predict_batch of work/model.bin, by the portable and the native driver, against torch."""
    for exe, build in zip(drivers, ("portable", "native"), strict=True):
        proc, got = run_cpp(exe, work / "model.bin", inputs, work, batch=True)
        assert proc.returncode == 0, proc.stderr
        assert_groups_match(got, ref, groups, f"C++ predict_batch ({build}) {what}")


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
    assert rewritten.version == FORMAT_VERSION
    np.testing.assert_array_equal(rewritten.forward(inputs), loaded.forward(inputs))
    write_model_bin(model, tmp_path / "v2.bin")
    assert loaded.to_bytes() == (tmp_path / "v2.bin").read_bytes()


def stepped_curvature(model: TrackMLP) -> TrackMLP:
    """``model`` as a model saved before d2By/dz2 was continuous between the table nodes (its
    state without the flag), which model.bin versions 2 and 3 hold."""
    state = {k: v for k, v in model.state_dict().items() if "continuous_curvature" not in k}
    model.load_state_dict(state, strict=False)
    return model


def test_a_map_model_with_the_stepped_x_curvature_is_version_4(
    cpp_predict: Path, tmp_path: Path
) -> None:
    """A path model on a map saved when only d2By was continuous (its curvature rule 1) writes
    version 4, and both readers compute it with the stepped x rule, as torch does; with the
    current rule the same weights write version 5 and predict otherwise."""
    model = make_model((24, 12, 6), "silu", seed=62, axis=MAP_AXIS, base="path")
    groups = track_groups(seed=62)
    everywhere = np.concatenate(list(groups.values()))
    current = torch_predict(model, everywhere)
    write_model_bin(model, tmp_path / "v5.bin")
    assert read_model_bin(tmp_path / "v5.bin").version == FORMAT_VERSION == 5
    state = model.state_dict()
    state["formulation.continuous_curvature"] = torch.tensor(1)
    model.load_state_dict(state)
    ref = torch_predict(model, everywhere)
    assert np.abs(ref - current).max() > 1e-9  # the rules differ where tracks leave y = 0
    write_model_bin(model, tmp_path / "v4.bin")
    loaded = read_model_bin(tmp_path / "v4.bin")
    assert loaded.version == 4 and loaded.continuous_curvature
    assert not loaded.continuous_x_curvature
    assert_groups_match(loaded.forward(everywhere), ref, groups, "numpy, version 4")
    proc, got = run_cpp(cpp_predict, tmp_path / "v4.bin", everywhere, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[2] == "4"
    assert_groups_match(got, ref, groups, "C++, version 4")
    assert loaded.to_bytes() == (tmp_path / "v4.bin").read_bytes()


def version_2_bytes(current: bytes) -> bytes:
    """The version-2 file of a model that is not path (from its version-3 file): a 112-byte
    header, word 60 reserved 0 and six float64 (no x_scale, passes, reserved word)."""
    assert struct.unpack_from("<I", current, 40)[0] != 4 and current[112:128] == bytes(16)
    body = bytearray(current[:112] + current[128:-4])
    body[8:12] = struct.pack("<I", 2)
    return bytes(body) + struct.pack("<I", zlib.crc32(bytes(body)))


def test_version_2_files_still_read(cpp_predict: Path, tmp_path: Path) -> None:
    """A version-2 file (an expansion model, trained when d2By was constant between table
    nodes) reads in both readers as the same model, and rewrites as the version-3 file."""
    model = stepped_curvature(make_model((16, 8), "silu", seed=42, base="expansion"))
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
    path.write_bytes(with_crc(data))
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
    path.write_bytes(with_crc(data))


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
    path.write_bytes(with_crc(data))
    inputs = draw_tracks(500, seed=13, legs=legs)
    ref = torch_predict(model, inputs)
    assert mismatch(read_model_bin(path).forward(inputs), ref) > 10.0
    proc, got = run_cpp(cpp_predict, path, inputs, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert mismatch(got, ref) > 10.0


def test_writer_refuses_an_inconsistent_model() -> None:
    bin_model = BinModel.from_torch(make_model(seed=22))
    bin_model.axis_values = np.zeros((4, 0))
    with pytest.raises(ValueError, match="needs the field tables"):
        bin_model.to_bytes()


# --- (e) normalisation is baked in: exports take physical units --------------------------------


@pytest.mark.slow  # exports ONNX
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
