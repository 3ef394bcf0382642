"""Datasets with the transport Jacobian (python -m raytrack.generate --jacobian): columns, units,
values, identity, the loader; and evaluate's Jacobian report on a tiny run."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from raytrack.data import DatasetError, load, load_phase_space
from raytrack.data.pipeline import generate_dataset
from raytrack.data.schema import (
    COLUMNS,
    INPUT_COLUMNS,
    JACOBIAN_COLUMNS,
    JACOBIAN_UNITS,
    TARGET_COLUMNS,
    UNITS,
)
from raytrack.data.shards import DatasetSpec, write_shard
from raytrack.physics import DipoleField, propagate


def quiet(_message: str) -> None:
    pass


def spec_of(samples: int, shards: int, jacobian: bool, seed: int = 21) -> DatasetSpec:
    return DatasetSpec(
        samples=samples,
        shards=shards,
        seed=seed,
        phase_space=load_phase_space("default"),
        field=DipoleField(),
        jacobian=jacobian,
    )


@pytest.fixture(scope="module")
def jacobian_dataset(ray_cluster, tmp_path_factory):
    """1500 default-phase-space tracks with the Jacobian, 5 shards (300 test tracks)."""
    out = tmp_path_factory.mktemp("jacobian")
    generate_dataset(spec_of(1500, 5, jacobian=True), out, log=quiet)
    return out


def test_columns_units_and_values(jacobian_dataset, tmp_path):
    manifest = json.loads((jacobian_dataset / "manifest.json").read_text())
    assert manifest["columns"] == list(COLUMNS + JACOBIAN_COLUMNS)
    assert manifest["jacobian"] is True and manifest["identity"]["jacobian"] is True
    assert manifest["units"]["J_x_qop"] == "mm MeV" and manifest["units"]["J_tx_qop"] == "MeV"
    assert manifest["units"]["J_x_tx"] == "mm" and manifest["units"]["J_tx_x"] == "1/mm"
    assert manifest["units"]["J_x_x"] == manifest["units"]["J_tx_ty"] == "1"
    assert manifest["units"] == {**UNITS, **JACOBIAN_UNITS}
    assert len(JACOBIAN_COLUMNS) == 20 and JACOBIAN_COLUMNS[:5] == (
        "J_x_x", "J_x_y", "J_x_tx", "J_x_ty", "J_x_qop",
    )  # fmt: skip
    table = pq.read_table(jacobian_dataset / spec_of(1500, 5, True).shard_name(0))
    assert table.column_names == list(COLUMNS + JACOBIAN_COLUMNS)
    assert all(str(t) == "double" for t in table.schema.types)

    splits = load(jacobian_dataset, dtype=np.float64, jacobian=True)
    assert splits.has_jacobian
    for split in (splits.train, splits.validation, splits.test):
        assert split.jacobians.shape == (len(split), 4, 5)
        assert split.jacobians.dtype == np.float64
    test = splits.test
    inputs = test.inputs()
    end, jac = propagate(
        inputs[:, :5], inputs[:, 5], inputs[:, 6], DipoleField(), return_jacobian=True
    )
    np.testing.assert_allclose(end[:, :4], test.targets(), rtol=0, atol=1e-9)
    # Per column (d end / d one start coordinate), relative to the column's size: equal to
    # rounding (a track's last bits depend on its place among its batch's vector lanes).
    scale = np.abs(jac[:, :4, :]).max(axis=1, keepdims=True)
    assert (np.abs(test.jacobians - jac[:, :4, :]) <= 1e-9 * scale).all()
    # float32 by default, as training loads it
    single = load(jacobian_dataset, jacobian=True, splits=("test",)).test.jacobians
    assert single.dtype == np.float32
    np.testing.assert_allclose(single, test.jacobians, rtol=1e-6, atol=0)
    # Without jacobian=True the Jacobian columns are not read; the rows are the same.
    plain_load = load(jacobian_dataset, dtype=np.float64, splits=("test",)).test
    assert plain_load.jacobians is None
    np.testing.assert_array_equal(plain_load.rows, test.rows)

    # The same tracks as the dataset without the Jacobian, whose plain propagation takes longer
    # steps (raytrack.physics.propagate.MAX_STEP_MM): the end states agree to the integrator's
    # 1 micrometre and 1e-6 in slope, the start states and legs exactly.
    plain = spec_of(1500, 5, jacobian=False)
    write_shard(plain, 0, tmp_path)
    plain_table = pq.read_table(tmp_path / plain.shard_name(0))
    assert plain_table.select(list(INPUT_COLUMNS)).equals(table.select(list(INPUT_COLUMNS)))
    difference = {k: np.abs(plain_table[k].to_numpy() - table[k].to_numpy()).max()
                  for k in TARGET_COLUMNS}  # fmt: skip
    assert difference["x_end"] < 1e-3 and difference["y_end"] < 1e-3
    assert difference["tx_end"] < 1e-6 and difference["ty_end"] < 1e-6


def test_plain_and_jacobian_datasets_never_mix_and_the_loader_says_what_is_missing(
    ray_cluster, tmp_path
):
    plain, with_jacobian = spec_of(30, 3, False, seed=4), spec_of(30, 3, True, seed=4)
    # A plain dataset's identity (and so its id) is what it was before the option existed.
    assert "jacobian" not in plain.identity() and with_jacobian.identity()["jacobian"] is True
    assert plain.dataset_id != with_jacobian.dataset_id
    out = tmp_path / "plain"
    generate_dataset(plain, out, log=quiet)
    with pytest.raises(DatasetError, match="different dataset.*jacobian"):
        generate_dataset(with_jacobian, out, log=quiet)
    with pytest.raises(DatasetError, match=rf"{out}.*no Jacobian columns.*--jacobian"):
        load(out, jacobian=True)
    assert load(out).test.jacobians is None
    # A manifest written before the option (no "jacobian" key) loads as before.
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["jacobian"] is False and manifest["columns"] == list(COLUMNS)
    del manifest["jacobian"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert len(load(out).train) == 10


def test_generate_cli_option():
    from raytrack.generate import build_parser, spec_from_args

    args = build_parser().parse_args(["--samples", "10", "--out", "x", "--jacobian"])
    assert spec_from_args(args).jacobian is True
    args = build_parser().parse_args(["--samples", "10", "--out", "x"])
    assert spec_from_args(args).jacobian is False
    assert dataclasses.replace(spec_from_args(args), jacobian=True).dataset_id != (
        spec_from_args(args).dataset_id
    )


# -- python -m raytrack.evaluate: the Jacobian report ------------------------------------------


def test_jacobian_report_definitions():
    from raytrack.evaluate import jacobian_report, start_sigmas, straight_line_jacobian

    rng = np.random.default_rng(0)
    inputs = np.zeros((200, 7))
    p_mev = np.exp(rng.uniform(np.log(2e3), np.log(1e5), 200))  # 2-100 GeV
    inputs[:, 4] = rng.choice([-1, 1], 200) / p_mev  # qop
    inputs[:, 6] = rng.uniform(100, 8000, 200)  # z_end; z_start 0
    rk = straight_line_jacobian(inputs)
    rk[:, 0, 4] = 2e6  # d x / d qop, mm MeV (docs/physics.md section 2b)
    same = jacobian_report(inputs, rk, rk)
    assert same["element_relative_error"]["J_x_qop"] == {"median": 0.0, "p95": 0.0}
    assert same["sigma_relative_error"]["x"]["p95"] == 0.0
    # An element that is 0 in RK: its error counts against 1 % of sigma_end / sigma_start.
    off = rk.copy()
    off[:, 1, 0] = 1e-3  # d y / d x
    report = jacobian_report(inputs, rk, off)
    sigma = start_sigmas(inputs)
    sigma_y = np.sqrt(sigma[:, 1] ** 2 + (rk[:, 1, 3] * sigma[:, 3]) ** 2)
    expected = 1e-3 / (0.01 * sigma_y / sigma[:, 0])
    assert report["element_relative_error"]["J_y_x"]["median"] == pytest.approx(np.median(expected))
    # The straight line misses d x / d qop: its propagated sigma_x is the line's in the report.
    line = jacobian_report(inputs, rk, straight_line_jacobian(inputs))
    assert line["sigma_relative_error"] == line["straight_line_sigma_relative_error"]
    assert line["sigma_relative_error"]["x"]["median"] > 0.01
    assert [b["p_low_gev"] for b in line["momentum_bins"]] == [2.0, 5.0, 10.0, 20.0, 50.0]
    assert sum(b["tracks"] for b in line["momentum_bins"]) == 200


@pytest.fixture(scope="module")
def jacobian_run(jacobian_dataset, tmp_path_factory):
    """A tiny model trained for 3 short epochs on the Jacobian dataset, with the export that
    ships its Jacobian, model_jacobian.onnx (the others are not needed here)."""
    from raytrack.export.onnx_export import export_jacobian_onnx
    from raytrack.models import get_preset
    from raytrack.models.training import TrainConfig
    from raytrack.run.directory import RunSpec
    from raytrack.run.pipeline import train_run

    run = tmp_path_factory.mktemp("jacobian-run") / "run"
    settings = TrainConfig(epochs=3, batch_size=128, lr=3e-3, warmup_epochs=1, patience=100)
    spec = RunSpec(
        data_dir=str(jacobian_dataset), model=get_preset("tiny"), train=settings, name="tiny"
    )
    result = train_run(run, spec, evaluate=False, export=False)
    export_jacobian_onnx(result.model.cpu().eval(), run / "model_jacobian.onnx")
    return run


def test_evaluate_reports_the_models_jacobian_against_the_integrators(jacobian_run, capsys):
    from raytrack import evaluate

    assert evaluate.main([str(jacobian_run)]) == 0
    out = capsys.readouterr().out
    assert "Jacobian d end / d start against the integrator's, 300 test tracks" in out
    assert "model_jacobian.onnx" in out and "p 2-5 GeV" in out
    assert "--jacobian" not in out  # no note: the dataset has the columns
    written = json.loads((jacobian_run / "evaluation" / "report.json").read_text())
    report = written["jacobian"]
    assert "_tracks" not in report and report["tracks"] == 300
    assert report["source"].endswith("model_jacobian.onnx")
    assert set(report["element_relative_error"]) == set(JACOBIAN_COLUMNS)
    assert report["start_sigma"]["qop_relative"] == 0.005
    # Even 3 epochs on 900 tracks (the physics base carries most of it) beat the straight line.
    for k in ("x", "y"):
        model, line = (
            report["sigma_relative_error"][k],
            report["straight_line_sigma_relative_error"][k],
        )
        assert model["p95"] < line["p95"]
    assert sum(b["tracks"] for b in report["momentum_bins"]) == 300
    assert (jacobian_run / "evaluation" / "jacobian.png").stat().st_size > 10_000

    # Without model_jacobian.onnx the checkpoint's model gives the same Jacobians in torch.
    test = load(json.loads((jacobian_run / "run.json").read_text())["data_dir"], dtype=np.float64,
                splits=("test",)).test  # fmt: skip
    shipped, source = evaluate.model_jacobians(jacobian_run, test.inputs())
    assert source.endswith("model_jacobian.onnx")
    (jacobian_run / "model_jacobian.onnx").rename(jacobian_run / "elsewhere.onnx")
    try:
        torch_jac, source = evaluate.model_jacobians(jacobian_run, test.inputs())
    finally:
        (jacobian_run / "elsewhere.onnx").rename(jacobian_run / "model_jacobian.onnx")
    assert "forward_with_jacobian" in source
    scale = np.abs(torch_jac).max(axis=1, keepdims=True)
    assert (np.abs(shipped - torch_jac) <= 1e-4 * scale + 1e-9).all()


def test_evaluate_on_a_dataset_without_jacobian_columns_says_what_it_needs(
    jacobian_run, ray_cluster, tmp_path, capsys
):
    from raytrack import evaluate

    plain = tmp_path / "plain"
    generate_dataset(spec_of(60, 3, jacobian=False, seed=5), plain, log=quiet)
    own = jacobian_run / "evaluation" / "report.json"
    own_text = own.read_text() if own.exists() else None
    assert evaluate.main([str(jacobian_run), "--data", str(plain)]) == 0
    out = capsys.readouterr().out
    assert "no Jacobian report" in out and "python -m raytrack.generate --jacobian" in out
    # Issue 17: beside the run's own evaluation, named after the dataset, never over it.
    assert f"wrote {jacobian_run / 'evaluation-plain'}" in out
    written = json.loads((jacobian_run / "evaluation-plain" / "report.json").read_text())
    assert "jacobian" not in written and written["model"]["tracks"] == 20
    assert (own.read_text() if own.exists() else None) == own_text
    data_dir = json.loads((jacobian_run / "run.json").read_text())["data_dir"]
    assert evaluate.evaluation_dir(jacobian_run, data_dir) == own.parent  # its own dataset
