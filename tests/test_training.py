"""Models and training: modes, normalisation, NaN handling, resume, reproducibility, CLI."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from raytrack.data import load, load_phase_space
from raytrack.data.axis import profile_for
from raytrack.models import ModelConfig, TrackMLP, get_preset, load_presets
from raytrack.models.metrics import evaluation_report
from raytrack.models.training import (
    TrainConfig,
    load_checkpoint,
    model_from_checkpoint,
    train_model,
)
from raytrack.physics import DipoleField
from raytrack.run.directory import RunSpec, predict
from raytrack.run.pipeline import train_run

REPO = Path(__file__).resolve().parents[1]
TINY = get_preset("tiny")
QUICK = TrainConfig(epochs=40, batch_size=128, lr=3e-3, warmup_epochs=1, patience=100)
# The on-axis profile the classic_dataset fixture's manifest records (same field and legs).
CLASSIC_AXIS = profile_for(DipoleField(), load_phase_space("classic"))


def fit(config, settings, train, validation, **options):
    """train_model on a classic-leg split (the physics formulations read its field tables)."""
    return train_model(config, settings, train, validation, axis=CLASSIC_AXIS, **options)


@pytest.fixture(scope="module")
def splits(classic_dataset):
    s = load(classic_dataset)
    return (s.train.inputs(), s.train.targets()), (s.validation.inputs(), s.validation.targets()), s


def test_presets_are_the_earlier_five_plus_three():
    presets = load_presets()
    assert {k: list(v.hidden) for k, v in presets.items()} == {
        "tiny": [64, 64],
        "small": [128, 128, 64],
        "large": [512, 512, 256, 128],
        "xlarge": [1024, 512, 256, 128],
        "deep": [256, 256, 256, 256, 128],
        "ultra": [1024, 1024, 512, 256, 128],
        "wide": [2048, 1024, 512, 256],
        "trigger": [74, 74, 44],
    }
    # The GPU-trigger preset fits 64 KB of constant memory with its field tables.
    assert presets["trigger"].weight_count <= 16384


def test_weight_count_and_multiply_adds():
    config = get_preset("small")
    model = TrackMLP(config, axis=CLASSIC_AXIS)
    assert config.weight_count == sum(p.numel() for p in model.parameters())
    assert config.n_features == 14  # the physics inputs
    assert config.macs_per_track == 14 * 128 + 128 * 128 + 128 * 64 + 64 * 4


@pytest.mark.parametrize(
    "target,fraction", [("residual_qop", 0.02), ("residual", 0.1), ("raw", 0.2)]
)
def test_every_target_mode_learns_and_returns_physical_units(splits, target, fraction):
    train, validation, s = splits
    config = dataclasses.replace(TINY, target=target)
    result = fit(config, QUICK, train, validation)
    assert result.status == "finished"
    report = evaluation_report(
        s.test.inputs(), s.test.targets(), predict(result.model, s.test.inputs())
    )
    # 40 short epochs on 2400 tracks: each mode is far better than the straight line.
    assert report["model"]["pos_mean_mm"] < fraction * report["straight_line"]["pos_mean_mm"]


def test_residual_beats_raw_on_the_same_budget(splits):
    train, validation, s = splits
    errors = {}
    for target in ("residual_qop", "raw"):
        result = fit(dataclasses.replace(TINY, target=target), QUICK, train, validation)
        predicted = predict(result.model, s.test.inputs())
        errors[target] = evaluation_report(s.test.inputs(), s.test.targets(), predicted)["model"]
    assert errors["residual_qop"]["pos_mean_mm"] < errors["raw"]["pos_mean_mm"]


def test_constant_inputs_do_not_break_the_normalisation(splits):
    train, validation, _ = splits
    assert np.ptp(train[0][:, 5]) == 0  # the classic leg: z_start and z_end are constant
    result = fit(TINY, dataclasses.replace(QUICK, epochs=1), train, validation)
    norm = result.model.normalisation()
    assert norm.input_std[5] == 1.0 and norm.input_std[6] == 1.0
    assert np.isfinite(predict(result.model, validation[0])).all()


def test_a_diverging_run_fails_cleanly(splits):
    train, validation, _ = splits
    poisoned = (train[0], train[1].copy())
    poisoned[1][::7, 0] = np.inf  # a broken target poisons the loss
    seen = []
    result = fit(TINY, QUICK, poisoned, validation, callback=lambda m, c: seen.append(m))
    assert result.status == "failed" and "non-finite" in result.reason
    assert seen[-1]["failed"] == 1.0
    huge_lr = dataclasses.replace(QUICK, lr=1e12, grad_clip=1e30, warmup_epochs=0)
    assert fit(TINY, huge_lr, train, validation).status == "failed"


def test_reproducible_on_cpu_for_a_fixed_seed(splits):
    train, validation, _ = splits
    one = fit(TINY, dataclasses.replace(QUICK, epochs=2), train, validation)
    two = fit(TINY, dataclasses.replace(QUICK, epochs=2), train, validation)
    assert [h["val_loss"] for h in one.history] == [h["val_loss"] for h in two.history]
    for a, b in zip(one.model.state_dict().values(), two.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_the_last_epoch_says_why_training_ends(splits):
    """Issue 17: the callback learns with the last epoch that it is the last (a Tune trial
    reports it as its last result instead of repeating it); the history stays as it was."""
    train, validation, _ = splits
    seen = []
    done = fit(TINY, dataclasses.replace(QUICK, epochs=2), train, validation,
               callback=lambda m, c: seen.append(m.get("train_status")))  # fmt: skip
    assert seen == [None, "finished"] and "train_status" not in done.history[-1]
    seen.clear()
    budget = dataclasses.replace(QUICK, epochs=5, time_budget=1e-6)
    done = fit(TINY, budget, train, validation,
               callback=lambda m, c: seen.append(m.get("train_status")))  # fmt: skip
    assert seen == ["time_budget"] and done.status == "time_budget"


class StopTrainingError(Exception):
    pass


def test_resume_from_checkpoint_equals_an_uninterrupted_run(splits, tmp_path):
    train, validation, _ = splits
    config = dataclasses.replace(QUICK, epochs=4)
    straight = fit(TINY, config, train, validation, checkpoint_dir=tmp_path / "a")

    def stop_after_two(metrics, checkpoint):
        if metrics["epoch"] == 2:
            raise StopTrainingError

    with pytest.raises(StopTrainingError):
        fit(TINY, config, train, validation, checkpoint_dir=tmp_path / "b", callback=stop_after_two)
    state = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 2 and state["status"] == ""
    resumed = fit(TINY, config, train, validation, checkpoint_dir=tmp_path / "b")
    assert [h["val_loss"] for h in resumed.history] == [h["val_loss"] for h in straight.history]
    for a, b in zip(
        resumed.model.state_dict().values(), straight.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    # A finished run is not trained further when started again.
    again = fit(TINY, config, train, validation, checkpoint_dir=tmp_path / "b")
    assert again.epochs_run == 4 and again.status == "finished"


def test_checkpoints_load_with_weights_only(splits, tmp_path):
    train, validation, _ = splits
    fit(TINY, dataclasses.replace(QUICK, epochs=1), train, validation, checkpoint_dir=tmp_path)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    model = model_from_checkpoint(state)
    assert isinstance(model, TrackMLP)


def test_momentum_binned_report(splits):
    train, validation, s = splits
    result = fit(TINY, QUICK, train, validation)
    report = evaluation_report(
        s.test.inputs(), s.test.targets(), predict(result.model, s.test.inputs())
    )
    bins = report["momentum_bins"]
    assert [b["p_low_gev"] for b in bins] == [2.0, 5.0, 10.0, 20.0, 50.0]
    assert sum(b["model"]["tracks"] for b in bins) == len(s.test)
    for row in bins:
        assert row["model"]["pos_mean_mm"] < row["straight_line"]["pos_mean_mm"]
        assert set(row["model"]["bias"]) == {"x", "y", "tx", "ty"}
    # Stiff tracks bend less: the straight line is better at high momentum.
    assert bins[-1]["straight_line"]["pos_mean_mm"] < bins[0]["straight_line"]["pos_mean_mm"]


def test_validation_keeps_the_worst_track_and_resumes_checkpoints_without_it(splits, tmp_path):
    """Issue 15: every epoch's validation has its worst track (the leaderboard's worst, through
    best_val_pos_max_mm); a checkpoint written before it was kept still resumes."""
    train, validation, _ = splits
    config = dataclasses.replace(QUICK, epochs=2)
    seen = []
    done = fit(TINY, dataclasses.replace(config, epochs=1), train, validation,
               checkpoint_dir=tmp_path, callback=lambda m, c: seen.append(m))  # fmt: skip
    first = done.history[0]
    assert first["val_pos_p99_mm"] <= first["val_pos_max_mm"] == seen[0]["best_val_pos_max_mm"]
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    for metrics in (state["best"], *state["history"]):
        del metrics["val_pos_max_mm"]
    state["status"] = ""  # an older run, interrupted after its first epoch
    torch.save(state, tmp_path / "checkpoint.pt")
    seen.clear()
    resumed = fit(TINY, config, train, validation, checkpoint_dir=tmp_path,
                  callback=lambda m, c: seen.append(m))  # fmt: skip
    assert resumed.epochs_run == 2 and seen[0]["val_pos_max_mm"] > 0
    assert "best_val_pos_max_mm" in seen[0]  # NaN when the older best epoch is still the best


def test_binned_report_names_the_tails_and_bins_by_mid_leg_position(capsys, parabolic_tracks):
    """Issue 15: P99 and the worst track in every bin, bins by |x| and |y| at mid-leg, and the
    worst tracks named by their start state and leg."""
    from raytrack.evaluate import X_MID_BINS_MM, binned_report, print_summary
    from raytrack.models.metrics import mid_leg_position, position_errors

    rng = np.random.default_rng(5)
    n = 3000
    inputs = parabolic_tracks.starts(rng, n, 1500, 1200)
    dz = inputs[:, 6] - inputs[:, 5]
    # A constant curvature per track (a parabola in x and in y): the cubic's mid-leg is exact.
    bend = rng.uniform(-2e-5, 2e-5, (n, 2))
    truth = parabolic_tracks.ends(inputs, bend)
    mid_true = inputs[:, :2] + inputs[:, 2:4] * (dz / 2)[:, None] + bend * (dz**2 / 8)[:, None]
    np.testing.assert_allclose(mid_leg_position(inputs, truth), mid_true, atol=1e-6)
    predicted = truth + rng.lognormal(-4, 1, truth.shape)
    worst = 1234
    predicted[worst, 0] += 50.0  # one track far off
    report = binned_report(inputs, truth, predicted, (3000.0, 7000.0))
    errors = position_errors(predicted, truth)
    for key in ("dz_bins", "x_mid_bins", "y_mid_bins", "region_bins"):
        rows = report[key]
        assert sum(r["tracks"] for r in rows) == n, key
        for r in rows:
            assert r["pos_mean_mm"] <= r["pos_p95_mm"] <= r["pos_p99_mm"] <= r["pos_max_mm"], key
        assert max(r["pos_max_mm"] for r in rows) == errors[worst], key
    mid_x = np.abs(mid_true[:, 0])
    for r in report["x_mid_bins"]:
        high = np.inf if r["x_mid_high_mm"] is None else r["x_mid_high_mm"]
        inside = (mid_x >= r["x_mid_low_mm"]) & (mid_x < high)
        assert r["tracks"] == inside.sum() and r["pos_max_mm"] == errors[inside].max()
    assert [r["x_mid_low_mm"] for r in report["x_mid_bins"]] == list(X_MID_BINS_MM[:-1])
    named = report["worst_tracks"]
    assert len(named) == 10 and named[0]["row"] == worst
    assert [t["pos_error_mm"] for t in named] == sorted(errors, reverse=True)[:10]
    start = named[0]["start"]
    assert [start[k] for k in ("x_mm", "y_mm", "tx", "ty", "qop_per_mev", "z_start_mm",
                               "z_end_mm")] == list(inputs[worst])  # fmt: skip
    assert named[0]["truth"]["x_mm"] == truth[worst, 0]
    assert named[0]["predicted"]["x_mm"] == predicted[worst, 0]
    assert named[0]["mid_leg_mm"]["x"] == pytest.approx(mid_true[worst, 0])
    json.dumps(report)  # report.json holds it as it is
    print_summary(report)
    printed = capsys.readouterr().out
    assert f"worst track: {errors[worst]:.4f} mm off" in printed
    assert f"start x {inputs[worst, 0]:.1f} mm, y {inputs[worst, 1]:.1f} mm" in printed
    assert "mid-leg |x| 0-250 mm" in printed and "mid-leg |y| 1000-1500 mm" in printed
    header = next(line for line in printed.splitlines() if "position error in bins" in line)
    assert "P99" in header.split() and "worst" in header.split()


def test_bad_configs_are_named():
    with pytest.raises(ValueError, match="activation"):
        ModelConfig(activation="swish2")
    with pytest.raises(ValueError, match="target"):
        ModelConfig(target="residuals")
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr=-1)
    with pytest.raises(ValueError, match="unknown training option"):
        TrainConfig.from_dict({"epochz": 3})


def test_run_directory_refuses_another_run(classic_dataset, tmp_path):
    spec = RunSpec(
        data_dir=str(classic_dataset),
        model=TINY,
        train=dataclasses.replace(QUICK, epochs=1),
        name="tiny",
    )
    train_run(tmp_path / "run", spec, evaluate=False, export=False)  # the checkpoint is enough
    other = dataclasses.replace(spec, model=get_preset("small"))
    with pytest.raises(ValueError, match="another model"):
        train_run(tmp_path / "run", other)


def test_train_and_evaluate_commands(classic_dataset, tmp_path, capsys):
    run_dir = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "raytrack.train",
        "--data",
        str(classic_dataset),
        "--preset",
        "tiny",
        "--out",
        str(run_dir),
        "--epochs",
        "3",
        "--threads",
        "1",
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "straight line" in done.stdout
    # issue 15: train's summary has the tails and the bins across the aperture
    for words in ("P99", "worst track:", "mid-leg |x| 0-250 mm", "mid-leg |y| 0-250 mm"):
        assert words in done.stdout, words
    for name in (
        "run.json",
        "checkpoint.pt",
        "history.json",
        "model.onnx",
        "model.bin",
        "metadata.json",
        "evaluation/report.json",
        "evaluation/learning_curves.png",
        "evaluation/error_histograms.png",
        "evaluation/error_vs_momentum.png",
        "evaluation/error_vs_dz.png",
        "evaluation/error_vs_x_mid.png",
        "evaluation/error_vs_y_mid.png",
    ):
        assert (run_dir / name).exists(), name
    metadata = json.loads((run_dir / "metadata.json").read_text())
    assert metadata["weight_count"] == TINY.weight_count
    assert metadata["dataset"]["dataset_id"] == load(classic_dataset).dataset_id
    assert metadata["architecture"]["layers"] == [14, 64, 64, 4]
    assert metadata["architecture"]["base"] == "path"
    assert len(metadata["normalisation"]["input_mean"]) == 14
    assert metadata["test_metrics"]["model"]["pos_mean_mm"] > 0
    assert len(json.loads((run_dir / "history.json").read_text())) == 3
    (run_dir / "evaluation" / "report.json").unlink()
    done = subprocess.run(
        [sys.executable, "-m", "raytrack.evaluate", str(run_dir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((run_dir / "evaluation" / "report.json").read_text())
    worst = report["worst_tracks"][0]
    assert worst["pos_error_mm"] == report["model"]["pos_max_mm"]
    for words in ("P99", f"worst track: {worst['pos_error_mm']:.4f} mm off", "mid-leg |x|",
                  "mid-leg |y|"):  # fmt: skip
        assert words in done.stdout, words
    assert report["x_mid_bins"] and report["y_mid_bins"]
    assert report["model"]["pos_mean_mm"] == pytest.approx(
        metadata["test_metrics"]["model"]["pos_mean_mm"]
    )
    # A directory that is no run: the command's own main (python -m ran it above), without
    # a third Python importing torch.
    from raytrack.evaluate import main as evaluate_main

    assert evaluate_main([str(tmp_path)]) == 1
    assert "not a raytrack run" in capsys.readouterr().err


def test_the_huber_loss_scales_targets_by_their_spread_without_the_outliers():
    from raytrack.models.mlp import Normalisation
    from raytrack.models.training import standardisation

    rng = np.random.default_rng(3)
    targets = rng.normal(0.0, 2.0, (20_000, 4))
    targets[:50, 0] = 1e4  # a quarter of a percent of tracks the base misses
    targets[:, 3] = 5.0  # a fixed column keeps its scale of 1
    norm = Normalisation.fit(np.zeros((20_000, 7)), targets)
    norm.target_std[3] = 1.0
    assert norm.target_std[0] > 100  # the full spread follows the outliers
    trimmed = standardisation(norm, torch.from_numpy(targets), "huber")
    spread, mean = trimmed.target_std, trimmed.target_mean
    assert 1.7 < spread[0] < 2.1 and 1.7 < spread[1] < 2.1 and spread[3] == 1.0
    assert abs(mean[0]) < 0.1 and norm.target_mean[0] > 20
    with pytest.raises(ValueError, match="loss"):
        TrainConfig(loss="l1")


def test_both_losses_train(splits):
    train, validation, _ = splits
    for loss in ("huber", "mse"):
        settings = dataclasses.replace(QUICK, epochs=2, loss=loss)
        result = fit(TINY, settings, train, validation)
        assert np.isfinite(result.history[-1]["val_loss"])
