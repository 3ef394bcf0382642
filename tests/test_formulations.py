"""Physics-informed formulations on variable legs: what the model learns, what it needs, and the
independent accuracy measurement."""

from __future__ import annotations

import copy
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from raytrack.data import DatasetError, load
from raytrack.data.axis import profile_from_manifest
from raytrack.data.independent import independent_tracks
from raytrack.models import ModelConfig, TrackMLP, get_preset
from raytrack.models.metrics import position_errors
from raytrack.models.training import TrainConfig, model_from_checkpoint, train_model
from raytrack.run.directory import RunSpec, predict
from raytrack.run.pipeline import train_run

REPO = Path(__file__).resolve().parents[1]
SHORT = TrainConfig(epochs=12, batch_size=128, lr=3e-3, warmup_epochs=1, patience=100)


@pytest.fixture(scope="module")
def variable_legs(default_dataset):
    return load(default_dataset)


def test_loader_gives_float32_and_float64_on_request(default_dataset):
    assert load(default_dataset).train.inputs().dtype == np.float32
    exact = load(default_dataset, dtype=np.float64, splits=("test",))
    assert exact.test.targets().dtype == np.float64 and len(exact.train) == 0


def test_the_physics_base_beats_the_straight_line_base_on_variable_legs(variable_legs):
    s = variable_legs
    train, validation = (
        (s.train.inputs(), s.train.targets()),
        (
            s.validation.inputs(),
            s.validation.targets(),
        ),
    )
    tiny = get_preset("tiny")
    errors = {}
    for base, inputs in (("line", "state"), ("expansion", "physics")):
        config = dataclasses.replace(tiny, base=base, inputs=inputs)
        result = train_model(config, SHORT, train, validation, axis=s.axis_profile())
        predicted = predict(result.model, s.test.inputs())
        errors[base] = position_errors(predicted, s.test.targets().astype(np.float64))
    dz = np.abs(s.test.inputs()[:, 6] - s.test.inputs()[:, 5])
    short = dz < 250
    # Same network, data and budget: the physics formulation is far better, on short legs too.
    assert errors["expansion"].mean() < 0.1 * errors["line"].mean()
    assert errors["expansion"][short].mean() < 0.1 * errors["line"][short].mean()


def test_a_physics_model_needs_the_field_and_carries_it(variable_legs):
    with pytest.raises(ValueError, match="on-axis field"):
        TrackMLP(ModelConfig())
    TrackMLP(ModelConfig(base="line", inputs="state"))  # needs none
    model = TrackMLP(ModelConfig(), axis=variable_legs.axis_profile())
    again = TrackMLP.from_state(ModelConfig(), model.state_dict())
    x = torch.from_numpy(variable_legs.test.inputs()[:50])
    assert torch.equal(model(x), again(x))


def test_a_model_saved_with_another_number_of_quadrature_nodes_keeps_it(variable_legs):
    """A model saved with 6 nodes (main's default for a few hours of December 2026) loads with
    its own 6, and computes what a 6-node base computes."""
    from raytrack.physics.field_integrals import expansion_transport, gauss_legendre

    config = ModelConfig(base="expansion")
    model = TrackMLP(config, axis=variable_legs.axis_profile())
    assert model.formulation.quadrature_nodes.shape == (8,)
    state = model.state_dict()
    nodes, weights = gauss_legendre(6)
    state["formulation.quadrature_nodes"], state["formulation.quadrature_weights"] = nodes, weights
    other = TrackMLP.from_state(config, state)
    assert torch.equal(other.formulation.quadrature_nodes, nodes)
    x = torch.from_numpy(variable_legs.test.inputs()[:50]).double()
    _, base, _ = other.prepare(x)
    expected = expansion_transport(x, other.formulation.tables(), nodes, weights)
    assert torch.equal(base, expected)
    assert not torch.equal(base, model.prepare(x)[1])  # 8 nodes give another base


def test_checkpoints_of_an_older_format_are_refused_by_name():
    with pytest.raises(ValueError, match="older raytrack"):
        model_from_checkpoint({"format": "raytrack-checkpoint-1"})


def test_the_field_profile_comes_from_the_manifest_or_an_analytic_description(variable_legs):
    manifest = variable_legs.manifest
    recorded = profile_from_manifest(manifest, "m")
    older = copy.deepcopy(manifest)
    del older["field"]["axis_profile"]
    rebuilt = profile_from_manifest(older, "m")  # a dipole: rebuilt from its parameters
    assert np.allclose(rebuilt.f, recorded.f, rtol=0, atol=1e-9)
    older["field"]["description"] = {"type": "grid", "source": {"files": ["x.cdf"]}}
    with pytest.raises(DatasetError, match="generate the dataset again"):
        profile_from_manifest(older, "somewhere/manifest.json")


def test_independent_tracks_are_new_and_truer(variable_legs):
    rows = independent_tracks(variable_legs.manifest, 300, "m")
    assert rows.shape == (300, 11)
    seen = np.concatenate([variable_legs.train.inputs(), variable_legs.test.inputs()]).astype(
        np.float32
    )
    assert not np.isin(rows[:, 0].astype(np.float32), seen[:, 0]).any()


def test_evaluate_independent_measures_the_onnx_export(default_dataset, tmp_path):
    spec = RunSpec(
        data_dir=str(default_dataset),
        model=get_preset("tiny"),
        train=dataclasses.replace(SHORT, epochs=2),
        name="tiny",
    )
    train_run(tmp_path / "run", spec)
    report = json.loads((tmp_path / "run" / "evaluation" / "report.json").read_text())
    assert {row["region"] for row in report["region_bins"]} <= {
        "before",
        "inside",
        "after",
        "entering or leaving",
        "across",
    }
    done = subprocess.run(
        [sys.executable, "-m", "raytrack.evaluate", str(tmp_path / "run"), "--independent", "400"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "model.onnx on 400 fresh tracks" in done.stdout
    independent = json.loads((tmp_path / "run" / "evaluation" / "independent.json").read_text())
    assert independent["measured"].endswith("model.onnx")
    assert independent["model"]["tracks"] == 400
    assert sum(row["tracks"] for row in independent["region_bins"]) == 400


def test_path_models_keep_their_x_tables_and_older_states_load(variable_legs):
    """A path model on a field with x dependence keeps its x tables through its state; a state
    saved before the path base existed (no x tables, no passes) loads as it was."""
    from raytrack.bench.common import axis_of
    from raytrack.physics.synthetic_map import WindowFrameField

    x = torch.from_numpy(variable_legs.test.inputs()[:50])
    axis = axis_of("default", WindowFrameField())
    model = TrackMLP(ModelConfig(), axis=axis, path_nodes=10)
    assert model.formulation.x_values.shape == (2 * axis.x_degree, len(axis.by))
    again = TrackMLP.from_state(ModelConfig(), model.state_dict())
    assert again.formulation.quadrature_nodes.shape == (10,)
    assert torch.equal(model(x), again(x))
    config = ModelConfig(base="expansion")
    older = TrackMLP(config, axis=variable_legs.axis_profile())
    state = older.state_dict()
    for name in ("x_values", "x_grid", "path_passes"):
        del state["formulation." + name]
    assert torch.equal(TrackMLP.from_state(config, state)(x), older(x))
