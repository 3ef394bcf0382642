"""python -m raytrack.evaluate's Jacobian report, on a tiny run trained on the Jacobian dataset
of this package's conftest (kept beside the data tests to share that dataset)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from raytrack.data import load
from raytrack.data.pipeline import generate_dataset
from raytrack.data.schema import JACOBIAN_COLUMNS

from .datasets import quiet, spec_of


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
    from raytrack.models.train_config import TrainConfig
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
