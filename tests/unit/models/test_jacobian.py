"""The models' transport Jacobian (raytrack.models.jacobian): exact for every formulation, in
its ONNX export, and the Jacobian-matching (Sobolev) term of the loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from .common import jacobian_training_data, model_inputs, scrambled_model


def autograd_jacobian(model, inputs: torch.Tensor) -> torch.Tensor:
    """(N, 4, 5) by torch's own forward-mode autodiff, the reference."""
    full = torch.func.jacfwd(model)(inputs)  # (N, 4, N, 7): rows are independent
    rows = torch.arange(len(inputs))
    return full[rows, :, rows, :5]


@pytest.mark.parametrize("activation", ["silu", "gelu", "tanh", "relu"])
def test_model_jacobian_is_exact_for_every_formulation(activation, dipole_axis):
    from raytrack.models.formulation import BASES, INPUT_SETS
    from raytrack.models.jacobian import forward_with_jacobian
    from raytrack.models.mlp import TARGET_MODES, ModelConfig

    inputs = model_inputs(40, seed=16)
    for base in BASES:
        for features in INPUT_SETS:
            for target in TARGET_MODES:
                config = ModelConfig(
                    hidden=(12, 12),
                    activation=activation,
                    base=base,
                    inputs=features,
                    target=target,
                    leg_power=1.5 if target != "raw" else 0.0,
                )
                model = scrambled_model(config, dipole_axis).double()
                end, jac = forward_with_jacobian(model, inputs)
                assert torch.equal(end, model(inputs))
                reference = autograd_jacobian(model, inputs)
                scale = reference.norm(dim=1, keepdim=True).clamp(min=1e-12)
                assert ((jac - reference).abs() / scale).max() < 1e-9, (base, features, target)


@pytest.mark.parametrize(
    "base,features,target",
    # the default formulation, and the straight line on the 7 inputs (no field tables); the
    # torch Jacobian the graph is traced from is checked for all 48 formulations above
    [("expansion", "physics", "residual_qop"), ("line", "state", "raw")],
)
@pytest.mark.slow  # an ONNX export each
def test_jacobian_onnx_matches_torch(base, features, target, dipole_axis, tmp_path):
    from raytrack.export import export_jacobian_onnx, onnx_predict_with_jacobian
    from raytrack.models.jacobian import forward_with_jacobian
    from raytrack.models.mlp import ModelConfig

    config = ModelConfig(hidden=(16, 16), base=base, inputs=features, target=target)
    model = scrambled_model(config, dipole_axis, gain=1.0)
    path = tmp_path / "model_jacobian.onnx"
    export_jacobian_onnx(model, path)
    inputs = model_inputs(500, seed=17).float()
    end, jac = onnx_predict_with_jacobian(path, inputs.numpy())
    assert end.shape == (500, 4) and jac.shape == (500, 4, 5) and jac.dtype == np.float32
    with torch.no_grad():
        torch_end, torch_jac = forward_with_jacobian(model, inputs)
    assert np.allclose(end, torch_end.numpy(), rtol=1e-5, atol=1e-3)
    # Float32 tolerance, relative to each Jacobian column's size.
    scale = np.linalg.norm(torch_jac.numpy(), axis=1, keepdims=True) + 1e-6
    assert np.max(np.abs(jac - torch_jac.numpy()) / scale) < 1e-4


def test_the_mismatch_vanishes_for_the_models_own_jacobian(dipole_axis):
    from raytrack.models.jacobian import forward_with_jacobian, standardised_with_jacobian_error
    from raytrack.models.mlp import ModelConfig

    model = scrambled_model(ModelConfig(hidden=(12, 12)), dipole_axis).double()
    inputs = model_inputs(60, seed=19)
    _, own = forward_with_jacobian(model, inputs)
    out, mismatch = standardised_with_jacobian_error(model, inputs, own.detach())
    assert mismatch.abs().max() < 1e-9
    _, off = standardised_with_jacobian_error(model, inputs, own.detach() * 1.01)
    assert off.abs().max() > 1e-6 and off.requires_grad


def test_the_jacobian_term_trains_the_models_jacobian(dipole_axis):
    """Gradient steps on the Jacobian term alone bring the model's Jacobian to the
    integrator's: the term is differentiable by the weights, through the tangents."""
    from raytrack.models.jacobian import standardised_with_jacobian_error
    from raytrack.models.mlp import ModelConfig

    inputs, _, jacobians = jacobian_training_data(300, seed=20)
    inputs, jacobians = torch.from_numpy(inputs), torch.from_numpy(jacobians)
    # The expansion base leaves the network a residual to carry (path's is near the data's
    # rounding, so a scrambled network there barely moves the Jacobian).
    config = ModelConfig(hidden=(16, 16), base="expansion")
    model = scrambled_model(config, dipole_axis, gain=3.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for _ in range(60):
        _, mismatch = standardised_with_jacobian_error(model, inputs, jacobians)
        loss = mismatch.pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(float(loss))
    assert history[-1] < 0.5 * history[0], history[::10]
