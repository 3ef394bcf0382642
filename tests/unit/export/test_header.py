"""The GPU-trigger header (raytrack.export.header, docs/trigger_header.md) and model.bin's C++
reader against torch: predictions to float32 tolerance, transport Jacobians d (x, y, tx, ty)_end
/ d (x, y, tx, ty, qop) against forward-mode derivatives of the torch model in float64
(``torch.func.jvp``), relative to each element's largest magnitude in a batch; the header's
exact constants, two models in one translation unit, and the 64 KB refusal.

Models are built without training; the path base is tested on the default dipole (no x tables)
and on the window-frame map (x tables, which the header keeps as a host array for device global
memory).
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from raytrack.export import INCLUDE_DIR, write_model_bin
from raytrack.export.cli import main as export_main
from raytrack.export.header import check_namespace, header_source, write_header
from raytrack.export.header_data import (
    CONSTANT_MEMORY_BYTES,
    ConstantData,
    ConstantMemoryError,
    constant_data,
)
from raytrack.export.model_bin import BinModel
from raytrack.models.mlp import TrackMLP
from raytrack.physics.axis_profile import AxisProfile

from .drivers import (
    build,
    build_headers,
    run_built_header,
    run_header,
    run_header_batches,
    run_mlp_driver,
)
from .header_helpers import (
    FORMULATIONS,
    IGNORE_JIT_WARNING,
    JACOBIAN_RTOL,
    case_id,
    check_against_torch,
    draw_tracks,
    jacobian_error,
    make_model,
    torch_jacobian,
    track_groups,
)
from .helpers import AXIS, MAP_AXIS, assert_groups_match, mismatch, torch_predict

pytestmark = IGNORE_JIT_WARNING


# --- (1) raytrack_mlp.hpp: forward_with_jacobian ------------------------------------------------


@pytest.mark.parametrize("case", FORMULATIONS, ids=case_id)
def test_model_bin_reader_jacobian_matches_torch(case, mlp_driver: Path, tmp_path: Path) -> None:
    seed = FORMULATIONS.index(case)
    model = make_model(*case, seed=seed)
    groups = track_groups(seed=20 * seed)
    out, out2, jac = run_mlp_driver(mlp_driver, model, groups, tmp_path)
    np.testing.assert_array_equal(out2, out)  # the dual numbers' values are forward()'s
    check_against_torch(model, groups, out, jac, JACOBIAN_RTOL["mlp.hpp"], case_id(case))


# --- (2) the trigger header against torch -------------------------------------------------------


HEADER_CASES = [(case, "float32") for case in FORMULATIONS] + [(FORMULATIONS[0], "float64")]
#: The float64 headers compared with the reader bit for bit.
BIT_CASES = ("expansion", "path", "path-map")


def bit_case_model(case: str) -> TrackMLP:
    formulation = FORMULATIONS[0] if case == "expansion" else FORMULATIONS[3]
    return make_model(*formulation, seed=9, axis=MAP_AXIS if case == "path-map" else AXIS)


@dataclass(frozen=True)
class Built:
    """A header of the shared program: its index there, its model, what write_header
    returned and the header file."""

    index: int
    model: TrackMLP
    data: ConstantData
    path: Path


@pytest.fixture(scope="module")
def compiled_headers(tmp_path_factory) -> tuple[Path, dict]:
    """The headers of HEADER_CASES', BIT_CASES' and the map test's models in one program (one
    compile instead of one a header): returns it and, per case, its :class:`Built`."""
    work = tmp_path_factory.mktemp("headers")
    specs = [
        (case, make_model(*case[0], seed=10 + k), case[1]) for k, case in enumerate(HEADER_CASES)
    ]
    specs += [(case, bit_case_model(case), "float64") for case in BIT_CASES]
    on_map = make_model(*FORMULATIONS[3], seed=31, axis=MAP_AXIS)
    specs += [(("map", precision), on_map, precision) for precision in ("float32", "float64")]
    headers, cases = [], {}
    for k, (key, model, precision) in enumerate(specs):
        path, namespace = work / f"h{k}.h", f"tracking::mlp{k}"
        data = write_header(BinModel.from_torch(model), path, namespace, precision)
        cases[key] = Built(k, model, data, path)
        headers.append((path, namespace))
    return build_headers(headers, work), cases


@pytest.mark.parametrize("case", HEADER_CASES, ids=lambda c: f"{case_id(c[0])}-{c[1]}")
def test_header_matches_torch(case, compiled_headers, tmp_path: Path) -> None:
    formulation, precision = case
    seed = 10 + HEADER_CASES.index(case)
    exe, cases = compiled_headers
    model = cases[case].model
    groups = track_groups(seed=20 * seed)
    out, out2, jac = run_built_header(exe, cases[case].index, groups, tmp_path)
    np.testing.assert_array_equal(out2, out)  # predict_with_jacobian's outputs are predict's
    what = f"header {case_id(formulation)} {precision}"
    check_against_torch(model, groups, out, jac, JACOBIAN_RTOL[precision], what)


def test_every_headers_predict_batch_matches_torch(compiled_headers, tmp_path: Path) -> None:
    """predict_batch of every header (each base, both precisions, the map), built for this CPU:
    its blocks (the path and line bases in float, the others one track a call) give what torch
    gives, within the float32 tolerance, on legs of every kind."""
    _, cases = compiled_headers
    built = list(cases.items())
    groups = track_groups(seed=77)
    headers = [(b.path, f"tracking::mlp{b.index}") for _, b in built]
    outputs = run_header_batches(headers, groups, tmp_path)
    inputs = np.concatenate(list(groups.values()))
    for (key, b), got in zip(built, outputs, strict=True):
        ref = torch_predict(b.model, inputs)
        assert_groups_match(got, ref, groups, f"header {key} predict_batch")


def test_path_on_a_map_in_the_reader_and_both_headers(
    compiled_headers, mlp_driver: Path, tmp_path: Path
) -> None:
    """The path base on the window-frame map (x tables): raytrack_mlp.hpp's forward and
    Jacobian, and the float32 and float64 headers (x tables as a host array, read by the
    two-argument forms) against torch."""
    exe, cases = compiled_headers
    model = cases["map", "float32"].model
    groups = track_groups(seed=310)
    out, out2, jac = run_mlp_driver(mlp_driver, model, groups, tmp_path)
    np.testing.assert_array_equal(out2, out)
    check_against_torch(model, groups, out, jac, JACOBIAN_RTOL["mlp.hpp"], "mlp.hpp map")
    for precision in ("float32", "float64"):
        built = cases["map", precision]
        size = 4 if precision == "float32" else 8
        rows = 3 if precision == "float32" else 2  # float32: the derivatives' errors too
        assert built.data.field_tables == size * rows * 8 * len(MAP_AXIS.by)
        assert (
            f"constexpr int kFieldTableBytes = {built.data.field_tables};" in built.path.read_text()
        )
        out, out2, jac = run_built_header(exe, built.index, groups, tmp_path)
        np.testing.assert_array_equal(out2, out)
        what = f"header map {precision}"
        check_against_torch(model, groups, out, jac, JACOBIAN_RTOL[precision], what)


def test_path_on_a_grid_map_keeps_its_smoothed_dby_in_two_floats(tmp_path: Path) -> None:
    """A map profile as a manifest written before the spline records it (the window-frame
    map's 100 mm grid, derivatives smoothed over it): its dBy/dz table is of By smoothed over
    the grid, not By's central differences, so the float32 header keeps that row with its
    rounding error (d2By is a difference of neighbours) and still matches torch."""
    from raytrack.export.header_data import TABLE_ROWS
    from raytrack.physics.synthetic_map import sampled_grid

    record = AxisProfile.from_field(sampled_grid(), -500.0, 14500.0).to_dict()
    axis = AxisProfile.from_dict({**record, "derivatives_smoothed_over_mm": 100.0})
    model = make_model(*FORMULATIONS[3], seed=41, axis=axis)
    data = write_header(BinModel.from_torch(model), tmp_path / "grid.h", "grid")
    assert data.table_rows == 7 and data.field_tables == 4 * 3 * 8 * len(axis.by)
    assert TABLE_ROWS["dby_lo"] in (tmp_path / "grid.h").read_text()
    groups = track_groups(seed=410)
    out, out2, jac = run_header(tmp_path / "grid.h", "grid", groups, tmp_path)
    np.testing.assert_array_equal(out2, out)
    check_against_torch(model, groups, out, jac, JACOBIAN_RTOL["float32"], "header grid map")


@pytest.mark.parametrize("case", BIT_CASES)
def test_float64_header_is_the_model_bin_reader_bit_for_bit(
    case: str, compiled_headers, mlp_driver: Path, tmp_path: Path
) -> None:
    """Both run the same "raytrack core" code: with the formulation in double, the header's
    predictions and Jacobians are raytrack_mlp.hpp's, bit for bit (the path base's integration
    matrix too: the header's, written by Python, and the one the reader computes on loading
    are the same operations in the same order)."""
    exe, cases = compiled_headers
    groups = track_groups(seed=90, n=100)
    reader = run_mlp_driver(mlp_driver, cases[case].model, groups, tmp_path)
    header = run_built_header(exe, cases[case].index, groups, tmp_path)
    for got, expected in zip(header, reader, strict=True):
        np.testing.assert_array_equal(got, expected)


def test_jacobian_comparison_sees_a_wrong_base(tmp_path: Path) -> None:
    """Negative control: the same weights relabelled axial (the expansion base without its
    off-plane field) fail the Jacobian comparison of the expansion model."""
    model = make_model(*FORMULATIONS[0], seed=3)
    wrong = BinModel.from_torch(model)
    wrong.base = "axial"
    write_header(wrong, tmp_path / "model.h", "wrong")
    groups = {"any": draw_tracks(300, 5)}
    _, _, jac = run_header(tmp_path / "model.h", "wrong", groups, tmp_path)
    ref = torch_jacobian(model, groups["any"])
    assert jacobian_error(jac, ref).max() > 100 * JACOBIAN_RTOL["float32"]


def array_values(text: str, name: str) -> np.ndarray:
    """The numbers of one of the header's array macros (RAYTRACK_MODEL_<NS>_<NAME>): the
    lines after its #define, up to the first that does not continue it."""
    lines = iter(text.splitlines())
    for line in lines:
        if re.fullmatch(rf"#define RAYTRACK_MODEL_\w+_{name} \\", line):
            break
    else:
        raise AssertionError(f"no array macro {name}")
    numbers = []
    for line in lines:
        numbers += line.rstrip("\\").replace(",", " ").split()
        if not line.endswith("\\"):
            break
    return np.array([float(v.rstrip("f")) for v in numbers])


def test_header_constants_are_exact_and_sized_as_declared() -> None:
    """Every weight and normalisation number reads back bit for bit (float32), the tables in
    the chosen precision; kConstantBytes is what the arrays hold."""
    model = BinModel.from_torch(make_model(*FORMULATIONS[0], seed=4))
    for precision, dtype in (("float32", np.float32), ("float64", np.float64)):
        text = header_source(model, "m", precision)
        expected = [model.input_mean, model.input_std, model.target_mean, model.target_std]
        for w, b in zip(model.weights, model.biases, strict=True):
            expected += [w.ravel(), b]
        net = array_values(text, "NET").astype(np.float32)
        np.testing.assert_array_equal(net, np.concatenate(expected).astype(np.float32))
        tables = array_values(text, "TABLES").astype(dtype)
        quadrature = array_values(text, "QUADRATURE").astype(dtype)
        nodes = np.concatenate([model.quadrature_nodes, model.quadrature_weights])
        if precision == "float64":
            np.testing.assert_array_equal(tables, model.axis_values.ravel())
            np.testing.assert_array_equal(quadrature, nodes)
        else:  # rows By, F, H, then the rounding errors of By, F, H: hi + lo is the float64
            by, _, f, h = model.axis_values
            pairs = tables.astype(np.float64).reshape(2, 3, -1)
            np.testing.assert_array_equal(pairs[0], np.stack([by, f, h]).astype(np.float32))
            np.testing.assert_allclose(pairs.sum(0), np.stack([by, f, h]), rtol=2e-14, atol=0)
            pairs = quadrature.astype(np.float64).reshape(2, -1)
            np.testing.assert_allclose(pairs.sum(0), nodes, rtol=1e-14, atol=0)
        size = 4 * len(net) + np.dtype(dtype).itemsize * (len(tables) + len(quadrature))
        assert f"constexpr int kConstantBytes = {size};" in text
        assert constant_data(model, precision).total == size
        assert "__constant__" in text and "std::" not in text.split("raytrack core: end")[1]
    # The expansion base is the only one that reads dBy/dz (in float32 from By and its error):
    # the others keep By, F, H and the errors of F and H.
    axial = BinModel.from_torch(make_model("axial", "physics", "residual", 2.0, "relu"))
    tables = array_values(header_source(axial, "m"), "TABLES").astype(np.float32)
    np.testing.assert_array_equal(
        tables[: 3 * 751], axial.axis_values[[0, 2, 3]].ravel().astype(np.float32)
    )
    assert len(tables) == 5 * 751


def test_two_models_and_the_reader_in_one_translation_unit(tmp_path: Path) -> None:
    """Headers of two models (their namespaces apart) and raytrack_mlp.hpp compile together,
    warning-free, and keep their own numbers."""
    first = make_model(*FORMULATIONS[0], seed=5)
    second = make_model(*FORMULATIONS[1], seed=6)
    write_header(BinModel.from_torch(first), tmp_path / "first.h", "first")
    write_header(BinModel.from_torch(second), tmp_path / "second.h", "team::second", "float64")
    track = draw_tracks(1, 8)[0]
    source = f"""
#include "raytrack_mlp.hpp"
#include "first.h"
#include "second.h"
#include "first.h"
#include <cstdio>
int main() {{
  const float in[7] = {{{", ".join(f"{v!r}f" for v in track.tolist())}}};
  float a[4], b[4], jac[20];
  first::predict(in, a);
  team::second::predict_with_jacobian(in, b, jac);
  std::printf("%.9g %.9g %.9g %.9g %.9g %.9g %.9g %.9g\\n", a[0], a[1], a[2], a[3],
              b[0], b[1], b[2], b[3]);
  return 0;
}}
"""
    exe = build(source, tmp_path, "two", f"-I{INCLUDE_DIR}", f"-I{tmp_path}", "-Wconversion")
    got = np.array(subprocess.run([str(exe)], capture_output=True, text=True).stdout.split())
    got = got.astype(np.float64).astype(np.float32).reshape(2, 4)
    assert mismatch(got[:1], torch_predict(first, track[None])) <= 1.0
    assert mismatch(got[1:], torch_predict(second, track[None])) <= 1.0


# --- (3) the 64 KB limit -------------------------------------------------------------------------


def test_a_model_over_64_kb_is_refused(tmp_path: Path, capsys) -> None:
    """Line/state models: (120, 120) hidden holds 63944 bytes and is written; (128, 120) holds
    68040 and is refused, naming both sizes, writing nothing; the CLI says so and fails."""
    fits = BinModel.from_torch(make_model("line", "state", "residual", 0.0, "relu", (120, 120)))
    assert constant_data(fits).total == 4 * (2 * 7 + 8 + 7 * 120 + 120 + 120 * 121 + 4 * 121)
    assert constant_data(fits).total == 63944 <= CONSTANT_MEMORY_BYTES
    write_header(fits, tmp_path / "fits.h")
    assert (tmp_path / "fits.h").is_file()

    model = make_model("line", "state", "residual", 0.0, "relu", (128, 120))
    too_big = BinModel.from_torch(model)
    (tmp_path / "big.h").write_text("// an older header\n")
    with pytest.raises(ConstantMemoryError, match=r"68040 bytes, more than the 65536 bytes"):
        write_header(too_big, tmp_path / "big.h", origin="the big model")
    assert (tmp_path / "big.h").read_text() == "// an older header\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.h", "fits.h"]  # no temporaries

    # The default formulation's tables count too: 5 x 751 ... 6 x 751 floats beside the weights
    # (By, F, H and their rounding errors), and the quadrature's nodes and weights with theirs.
    with_tables = BinModel.from_torch(make_model(*FORMULATIONS[0], hidden=(120, 112)))
    data = constant_data(with_tables)
    assert data.tables == 4 * 6 * 751 and data.quadrature == 4 * 32
    with pytest.raises(ConstantMemoryError, match=f"{data.total} bytes.*field tables 18024 bytes"):
        header_source(with_tables)
    # In float64 a model that fits in float32 may not.
    mid = BinModel.from_torch(make_model(*FORMULATIONS[0], hidden=(96, 96)))
    assert constant_data(mid).total <= CONSTANT_MEMORY_BYTES
    with pytest.raises(ConstantMemoryError, match="--precision float32"):
        header_source(mid, precision="float64")

    write_model_bin(model, tmp_path / "big.bin")
    code = export_main([str(tmp_path / "big.bin"), "--header", str(tmp_path / "out.h")])
    assert code == 1 and not (tmp_path / "out.h").exists()
    assert "68040 bytes, more than the 65536 bytes" in capsys.readouterr().err


def test_refusal_says_what_would_fit(tmp_path: Path, capsys) -> None:
    """Issue 17 item 13: a preset's model (all five are over 64 KB) is refused with what fits:
    the trigger preset and tune's --max-weights at this formulation's bound (11810 weights and
    biases for the default one in float32, 10308 in float64: docs/trigger_header.md's table)."""
    from raytrack.models.presets import get_preset

    large = make_model(*FORMULATIONS[0], hidden=get_preset("large").hidden)
    write_model_bin(large, tmp_path / "large.bin")
    args = [str(tmp_path / "large.bin"), "--header", str(tmp_path / "large.h")]
    assert export_main(args) == 1
    err = capsys.readouterr().err
    assert "at most 11810 weights and biases fit" in err
    trigger = get_preset("trigger").weight_count
    assert f"`python -m raytrack.train --preset trigger` ({trigger} weights)" in err
    assert "`python -m raytrack.tune --max-weights 11810`" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "large.h").exists()
    # In float64 the bound is lower; the trigger preset is named only where it fits under it.
    with pytest.raises(ConstantMemoryError) as refused:
        header_source(BinModel.from_torch(large), precision="float64")
    message = str(refused.value)
    assert "--max-weights 10308" in message
    assert ("--preset trigger" in message) == (trigger <= 10308)


def test_namespaces_are_checked() -> None:
    for good in ("raytrack_model", "lhcb::trigger::mlp", "_x1", "core", "my::raytrack"):
        assert check_namespace(good) == good
    for bad in ("1model", "a b", "a::", "::a", "namespace", "std", "a__b", "_Model", "a-b", ""):
        with pytest.raises(ValueError, match="not a usable C\\+\\+ namespace"):
            check_namespace(bad)
    for taken in ("raytrack", "raytrack::core", "raytrack::models"):
        with pytest.raises(ValueError, match="raytrack_mlp.hpp's"):
            check_namespace(taken)
