"""Physics-informed formulations on variable legs (raytrack.models.formulation): what the model
learns, what it needs and what its state keeps."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from raytrack.data import load
from raytrack.models import ModelConfig, TrackMLP, get_preset
from raytrack.models.metrics import position_errors
from raytrack.models.training import train_model
from raytrack.run.directory import predict

from .common import SHORT, model_inputs


@pytest.fixture(scope="module")
def variable_legs(default_dataset):
    return load(default_dataset)


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


def test_a_physics_model_needs_the_field_and_carries_it(dipole_axis):
    with pytest.raises(ValueError, match="on-axis field"):
        TrackMLP(ModelConfig())
    TrackMLP(ModelConfig(base="line", inputs="state"))  # needs none
    model = TrackMLP(ModelConfig(), axis=dipole_axis)
    again = TrackMLP.from_state(ModelConfig(), model.state_dict())
    x = model_inputs(50, seed=30).float()
    assert torch.equal(model(x), again(x))


def test_a_model_saved_with_another_number_of_quadrature_nodes_keeps_it(dipole_axis):
    """A model saved with 6 nodes (main's default for a few hours of December 2026) loads with
    its own 6, and computes what a 6-node base computes."""
    from raytrack.physics.transports import expansion_transport, gauss_legendre

    config = ModelConfig(base="expansion")
    model = TrackMLP(config, axis=dipole_axis)
    assert model.formulation.quadrature_nodes.shape == (8,)
    state = model.state_dict()
    nodes, weights = gauss_legendre(6)
    state["formulation.quadrature_nodes"], state["formulation.quadrature_weights"] = nodes, weights
    other = TrackMLP.from_state(config, state)
    assert torch.equal(other.formulation.quadrature_nodes, nodes)
    x = model_inputs(50, seed=31)
    _, base, _ = other.prepare(x)
    expected = expansion_transport(x, other.formulation.tables(), nodes, weights)
    assert torch.equal(base, expected)
    assert not torch.equal(base, model.prepare(x)[1])  # 8 nodes give another base


def test_path_models_keep_their_x_tables_and_older_states_load(dipole_axis):
    """A path model on a field with x dependence keeps its x tables through its state; a state
    saved before the path base existed (no x tables, no passes) loads as it was."""
    from raytrack.bench.common import axis_of
    from raytrack.physics.synthetic_map import WindowFrameField

    x = model_inputs(50, seed=32).float()
    axis = axis_of("default", WindowFrameField())
    model = TrackMLP(ModelConfig(), axis=axis, path_nodes=10)
    assert model.formulation.x_values.shape == (2 * axis.x_degree, len(axis.by))
    again = TrackMLP.from_state(ModelConfig(), model.state_dict())
    assert again.formulation.quadrature_nodes.shape == (10,)
    assert torch.equal(model(x), again(x))
    config = ModelConfig(base="expansion")
    older = TrackMLP(config, axis=dipole_axis)
    state = older.state_dict()
    for name in ("x_values", "x_grid", "path_passes"):
        del state["formulation." + name]
    assert torch.equal(TrackMLP.from_state(config, state)(x), older(x))
