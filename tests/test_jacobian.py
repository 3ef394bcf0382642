"""Transport Jacobians: the integrator's (variational equations) against finite differences."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

from raytrack.data.phase_space import load_phase_space
from raytrack.physics import DipoleField, GridField, Tolerance, TrackStatus, propagate
from raytrack.physics.fields import Field
from raytrack.physics.propagate import JACOBIAN_MAX_STEP_MM, MAX_STEP_MM

#: The reference: central differences of an integration 1e4 times tighter, steps of 1e-2 mm,
#: 1e-5 in slope (docs/physics.md section 2b) and 1e-3 relative in q/p: on a short leg far out in
#: the field's tails the bending is ~1e-11 mm per 1e-5 of q/p, which float64 rounding of
#: positions of ~1 m cannot resolve; the bending is so close to linear in q/p that the larger
#: step costs nothing in truncation (2e-6 of a few per cent non-linearity at 2 GeV).
TIGHT = Tolerance(Tolerance().position / 1e4, Tolerance().slope / 1e4)
FD_STEPS = (1e-2, 1e-2, 1e-5, 1e-5)


def phase_space_legs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """States of the default phase space on random legs in [0, 14000] mm, both directions."""
    rng = np.random.default_rng(seed)
    sample = load_phase_space("default").sample(rng, n)
    states = np.stack([sample[k] for k in ("x", "y", "tx", "ty", "qop")], axis=1)
    return states, rng.uniform(0.0, 14000.0, n), rng.uniform(0.0, 14000.0, n)


def finite_difference_jacobian(states, z0, z1, field: Field) -> np.ndarray:
    jac = np.zeros((len(states), 5, 5))
    for column in range(5):
        step = FD_STEPS[column] if column < 4 else 1e-3 * np.abs(states[:, 4])
        shift = np.zeros_like(states)
        shift[:, column] = step
        plus = propagate(states + shift, z0, z1, field, tolerance=TIGHT, max_step=100.0)
        minus = propagate(states - shift, z0, z1, field, tolerance=TIGHT, max_step=100.0)
        jac[:, :, column] = (plus - minus) / (2 * np.asarray(step))[..., None]
    return jac


def column_errors(jac: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(N, 5) relative error of each column: |J_col - ref_col| / |ref_col|."""
    return np.linalg.norm(jac - reference, axis=1) / np.linalg.norm(reference, axis=1)


def test_jacobian_matches_finite_differences_of_a_tighter_integration():
    states, z0, z1 = phase_space_legs(300, seed=11)
    end, status, jac = propagate(
        states, z0, z1, DipoleField(), return_status=True, return_jacobian=True
    )
    ok = status == TrackStatus.OK
    assert ok.sum() > 280 and (z1 < z0).sum() > 100  # both directions
    errors = column_errors(
        jac[ok], finite_difference_jacobian(states[ok], z0[ok], z1[ok], DipoleField())
    )
    assert errors.max(axis=0).max() < 1e-5, errors.max(axis=0)
    assert np.all(jac[ok, 4] == [0, 0, 0, 0, 1])
    # The magnet really enters: d x_end / d qop is large on legs across it.
    across = ok & (np.minimum(z0, z1) < 3000) & (np.maximum(z0, z1) > 7000)
    assert np.median(np.abs(jac[across, 0, 4])) > 1e5


def test_tensor_in_tensor_out_with_the_same_jacobian():
    states, z0, z1 = phase_space_legs(100, seed=12)
    end, jac = propagate(states, z0, z1, DipoleField(), return_jacobian=True)
    t_end, t_jac = propagate(
        torch.from_numpy(states),
        torch.from_numpy(z0),
        torch.from_numpy(z1),
        DipoleField(),
        return_jacobian=True,
    )
    assert isinstance(jac, np.ndarray) and jac.shape == (100, 5, 5)
    assert isinstance(t_jac, torch.Tensor) and t_jac.dtype == torch.float64
    assert np.allclose(t_jac.numpy(), jac, rtol=1e-12, atol=0, equal_nan=True)
    reference = finite_difference_jacobian(states, z0, z1, DipoleField())
    assert np.nanmax(column_errors(t_jac.numpy(), reference)) < 1e-5


def test_asking_for_the_jacobian_does_not_change_the_end_state():
    states, z0, z1 = phase_space_legs(500, seed=13)
    cap = JACOBIAN_MAX_STEP_MM
    plain = propagate(states, z0, z1, DipoleField(), max_step=cap)
    with_jacobian, _ = propagate(states, z0, z1, DipoleField(), return_jacobian=True)
    assert np.array_equal(plain, with_jacobian, equal_nan=True)
    # Plain propagation takes longer steps by default, within the integrator's 1 micrometre.
    assert MAX_STEP_MM > JACOBIAN_MAX_STEP_MM
    default = propagate(states, z0, z1, DipoleField())
    ok = np.isfinite(plain[:, 0])
    assert not np.array_equal(default[ok], plain[ok])
    assert np.abs(default[ok, :2] - plain[ok, :2]).max() < 1e-3
    assert np.abs(default[ok, 2:4] - plain[ok, 2:4]).max() < 1e-6


def test_straight_line_jacobian_outside_any_field():
    from raytrack.physics import UniformField

    states, z0, z1 = phase_space_legs(50, seed=14)
    _, jac = propagate(states, z0, z1, UniformField(), return_jacobian=True)
    expected = np.broadcast_to(np.eye(5), (50, 5, 5)).copy()
    expected[:, 0, 2] = expected[:, 1, 3] = z1 - z0
    assert np.allclose(jac, expected, rtol=0, atol=1e-9)


def test_flagged_tracks_get_nan_jacobian_rows():
    states = np.array([[0.0, 0.0, 0.1, 0.0, 1e-4], [4990.0, 0.0, 0.5, 0.0, 1e-4]])
    end, status, jac = propagate(
        states, 0.0, 9000.0, DipoleField(), return_status=True, return_jacobian=True
    )
    assert status.tolist() == [TrackStatus.OK, TrackStatus.LEFT_VOLUME]
    assert np.isfinite(jac[0]).all() and np.isnan(jac[1]).all()


@pytest.mark.parametrize("method", ["rk4", "dopri5"])
def test_fixed_steps_carry_the_jacobian_too(method):
    states, z0, z1 = phase_space_legs(40, seed=15)
    _, jac = propagate(states, z0, z1, DipoleField(), method=method, step=5.0, return_jacobian=True)
    reference = finite_difference_jacobian(states, z0, z1, DipoleField())
    assert np.nanmax(column_errors(jac, reference)) < 1e-4


def test_grid_field_gradient_is_the_interpolants():
    """Fields without a closed-form gradient are differentiated in forward mode (exactly)."""
    zs = np.arange(0.0, 14001.0, 200.0)
    xs = ys = np.arange(-1000.0, 1001.0, 200.0)
    gx, gy, gz = np.meshgrid(xs, ys, zs, indexing="ij")
    values = np.stack(DipoleField()(gx, gy, gz), axis=-1)
    grid = GridField(values, (xs[0], ys[0], zs[0]), (200.0, 200.0, 200.0))
    x = torch.tensor([123.0, -456.0]), torch.tensor([77.0, -310.0]), torch.tensor([4321.0, 6100.0])
    x = tuple(v.double() for v in x)
    d_dx, d_dy = grid.gradient(*x)
    for axis, derivative in ((0, d_dx), (1, d_dy)):
        shifted = [v.clone() for v in x]
        shifted[axis] += 1e-3
        up = grid.evaluate(*shifted)
        shifted[axis] -= 2e-3
        down = grid.evaluate(*shifted)
        for component in range(3):
            central = (up[component] - down[component]) / 2e-3
            assert torch.allclose(derivative[component], central, rtol=1e-6, atol=1e-12)


# -- the models' Jacobian ------------------------------------------------------------------


def model_inputs(n: int, seed: int) -> torch.Tensor:
    states, z0, z1 = phase_space_legs(n, seed)
    z1[:3] = z0[:3]  # zero-length legs too
    return torch.from_numpy(np.column_stack([states, z0, z1]))


def autograd_jacobian(model, inputs: torch.Tensor) -> torch.Tensor:
    """(N, 4, 5) by torch's own forward-mode autodiff, the reference."""
    full = torch.func.jacfwd(model)(inputs)  # (N, 4, N, 7): rows are independent
    rows = torch.arange(len(inputs))
    return full[rows, :, rows, :5]


@pytest.fixture(scope="module")
def dipole_axis():
    from raytrack.data.axis import profile_for

    return profile_for(DipoleField(), load_phase_space("default"))


def scrambled_model(config, axis, seed: int = 0, gain: float = 2.0):
    """A model whose network really contributes: random weights (times ``gain``), its
    normalisation fitted to true end states, no training needed."""
    from raytrack.models.mlp import Normalisation, TrackMLP

    torch.manual_seed(seed)
    model = TrackMLP(config, axis=axis).eval()
    inputs = model_inputs(300, seed)
    truth = propagate(inputs[:, :5], inputs[:, 5], inputs[:, 6], DipoleField())[:, :4]
    kept = torch.isfinite(truth).all(1)  # tracks that leave the volume have no end state
    features, encoded = model.encode(inputs[kept], truth[kept])
    model.set_normalisation(Normalisation.fit(features.numpy(), encoded.numpy()))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(gain)
    return model


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


# -- Jacobian-matching (Sobolev) training ----------------------------------------------------


def jacobian_training_data(n: int, seed: int):
    inputs = model_inputs(n, seed).numpy()
    end, status, jac = propagate(
        inputs[:, :5],
        inputs[:, 5],
        inputs[:, 6],
        DipoleField(),
        return_status=True,
        return_jacobian=True,
    )
    ok = status == TrackStatus.OK
    return inputs[ok].astype(np.float32), end[ok, :4], jac[ok, :4]


def test_jacobian_weight_needs_the_jacobians():
    from raytrack.models.mlp import ModelConfig
    from raytrack.models.training import TrainConfig, train_model

    inputs, truth, _ = jacobian_training_data(50, seed=18)
    with pytest.raises(ValueError, match="jacobian_weight.*--jacobian"):
        train_model(
            ModelConfig(hidden=(8,)),
            TrainConfig(epochs=1, jacobian_weight=1.0),
            (inputs, truth),
            (inputs, truth),
            axis=None,
        )


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


def test_training_with_jacobian_weight_adds_the_term(dipole_axis):
    from raytrack.models.mlp import ModelConfig
    from raytrack.models.training import TrainConfig, train_model

    train = jacobian_training_data(400, seed=22)
    losses = {}
    for weight in (0.0, 1e4):
        result = train_model(
            ModelConfig(hidden=(8, 8)),
            TrainConfig(epochs=2, jacobian_weight=weight),
            train[:2],
            train[:2],
            axis=dipole_axis,
            jacobians=train[2],
        )
        assert result.status == "finished"
        losses[weight] = result.history[0]["train_loss"]
    assert losses[1e4] > losses[0.0]  # same seed and batches: the extra term is in the loss


def test_train_cli_trains_with_the_datasets_jacobians(
    ray_cluster, classic_dataset, tmp_path, capsys
):
    from raytrack.data.pipeline import generate_dataset
    from raytrack.data.shards import DatasetSpec
    from raytrack.train import main as train_main

    data = tmp_path / "data"
    spec = DatasetSpec(
        samples=600,
        shards=3,
        seed=23,
        phase_space=load_phase_space("default"),
        field=DipoleField(),
        jacobian=True,
    )
    generate_dataset(spec, data, log=lambda _: None)
    common = ["--preset", "trigger", "--epochs", "1", "--jacobian-weight", "100"]
    refused = tmp_path / "refused"
    assert train_main(["--data", str(classic_dataset), "--out", str(refused), *common]) == 1
    assert "--jacobian" in capsys.readouterr().err
    assert not refused.exists()  # refused before anything was written
    run = tmp_path / "run"
    assert train_main(["--data", str(data), "--out", str(run), *common]) == 0
    assert json.loads((run / "run.json").read_text())["train"]["jacobian_weight"] == 100.0
    three_readers_agree_on_the_jacobian(run, tmp_path)


def three_readers_agree_on_the_jacobian(run: Path, work: Path) -> None:
    """model_jacobian.onnx, the torch model and the trigger header (g++) of a trained run give
    the same Jacobian to float32 tolerance (each element against its column's largest)."""
    from test_header_export import run_header

    from raytrack.export import onnx_predict_with_jacobian
    from raytrack.export.cli import main as export_main
    from raytrack.models.jacobian import forward_with_jacobian
    from raytrack.models.training import load_checkpoint, model_from_checkpoint

    model = model_from_checkpoint(load_checkpoint(run / "checkpoint.pt"))
    inputs = model_inputs(300, seed=24).numpy().astype(np.float32)
    with torch.no_grad():
        end, jac = (
            t.double().numpy() for t in forward_with_jacobian(model, torch.from_numpy(inputs))
        )
    onnx_end, onnx_jac = onnx_predict_with_jacobian(run / "model_jacobian.onnx", inputs)
    assert export_main([str(run), "--header", str(work / "model.h")]) == 0
    header_end, _, header_jac = run_header(
        work / "model.h", "raytrack_model", {"all": inputs}, work
    )
    scale = np.abs(jac).max(axis=0) + 1e-30
    for name, got in (("onnx", onnx_jac), ("header", header_jac)):
        assert np.max(np.abs(got - jac) / scale) < 1e-4, name
    for got in (onnx_end, header_end):
        assert np.max(np.abs(got - end) / (np.abs(end).max(axis=0))) < 1e-4


def test_jacobian_weight_is_a_search_space_parameter(tmp_path):
    from raytrack.search.space import load_search_space

    text = (Path(__file__).parents[1] / "search_spaces" / "default.toml").read_text()
    text += '\n[params.jacobian_weight]\ntype = "float"\nlow = 1.0\nhigh = 10000.0\nlog = true\n'
    path = tmp_path / "sobolev.toml"
    path.write_text(text)
    space = load_search_space(str(path))
    study = optuna.create_study(sampler=space.sampler(seed=0))
    trial = study.ask()
    space.define_by_run(trial)
    _, train = space.to_configs(trial.params)
    assert 1.0 <= train["jacobian_weight"] <= 10000.0
