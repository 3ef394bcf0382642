"""What a search keeps besides its report: MLflow runs across a resume and the --mlflow option,
the trials' checkpoints, the Optuna study on disk, each trial's inference time with
--objective pareto-time, bench deploy's equal-accuracy rule, and docs/tune.md's tune options.

The MLflow runs of a real search are checked on the presets search of
tests/unit/search/test_experiment.py (run with --mlflow), which the suite runs anyway.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import pickle
import sys
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from raytrack import tune
from raytrack.models.checkpoints import load_checkpoint
from raytrack.search.experiment_options import ExperimentOptions
from raytrack.search.layout import STUDY_FILE
from raytrack.search.study import load_study
from raytrack.search.timing import equal_accuracy
from raytrack.search.tracking import MlflowTracking, local_uri
from raytrack.search.trial import TrialSettings
from raytrack.tune import build_parser, options_from_args

from ..commands import exit_code, refuse_to_start

REPO = Path(__file__).resolve().parents[3]


@contextlib.contextmanager
def tracking_uri(uri: str):
    """mlflow.search_runs reads the global tracking URI (and sets MLFLOW_TRACKING_URI)."""
    import mlflow  # optional and slow to import: only where a test uses it

    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield mlflow
    finally:
        mlflow.set_tracking_uri(before)


class FakeTrial:
    def __init__(self, trial_id: str, preset: str):
        self.trial_id, self.config, self.status = trial_id, {"preset": preset}, "RUNNING"
        self.last_result: dict = {}


def test_a_resumed_search_continues_the_same_mlflow_runs(tmp_path):
    """--resume: a new driver unpickles the callback from Tune's state; trials that restart
    from a checkpoint repeat epochs, which their runs already hold."""
    import mlflow

    uri = local_uri(tmp_path / "exp")
    settings = TrialSettings(max_epochs=3, time_budget=None, seed=0, device="cpu", cpus=1)
    callback = MlflowTracking(uri, "exp", str(tmp_path / "exp"), settings)
    trials = [FakeTrial("t_00000", "tiny"), FakeTrial("t_00001", "small")]

    p95 = {1: 1.0, 2: 0.5, 3: 0.8}  # epoch 2 is the best: the weights a trial exports

    def epoch(cb, trial, n, **extra):
        best = min(p95[k] for k in range(1, n + 1))
        result = {"epoch": n, "val_pos_p95_mm": p95[n], "val_pos_mean_mm": p95[n] / 2,
                  "best_val_pos_p95_mm": best, "best_val_pos_mean_mm": best / 2,
                  "name": trial.config["preset"], **extra}  # fmt: skip
        trial.last_result = result
        cb.on_trial_result(iteration=n, trials=trials, trial=trial, result=result)

    for trial in trials:
        callback.on_trial_start(iteration=0, trials=trials, trial=trial)
        epoch(callback, trial, 1)
        epoch(callback, trial, 2)
    resumed = pickle.loads(pickle.dumps(callback))  # the driver was killed; --resume
    for trial in trials:
        resumed.on_trial_start(iteration=0, trials=trials, trial=trial)
        epoch(resumed, trial, 2)  # from the epoch-1 checkpoint: epoch 2 again
        epoch(resumed, trial, 3, train_done=1.0, train_status="finished")
        epoch(resumed, trial, 3, train_done=1.0, train_status="finished")  # the final report
        resumed.on_trial_complete(iteration=3, trials=trials, trial=trial)
    client = mlflow.MlflowClient(tracking_uri=uri)
    with tracking_uri(uri):
        runs = mlflow.search_runs(experiment_names=["exp"])
    assert sorted(runs["tags.raytrack.trial_id"]) == ["t_00000", "t_00001"]
    for run_id in runs["run_id"]:
        steps = [m.step for m in client.get_metric_history(run_id, "val_pos_p95_mm")]
        assert steps == [1, 2, 3]
        # Issue 17: the summary shows the exported epoch's figures (the leaderboard's) under
        # best_val_*, the last epoch's under val_*.
        summary = client.get_run(run_id).data.metrics
        assert summary["best_val_pos_p95_mm"] == 0.5 and summary["best_val_pos_mean_mm"] == 0.25
        assert summary["val_pos_p95_mm"] == 0.8
    assert set(runs["tags.status"]) == {"finished"}
    assert sorted(runs["params.name"]) == ["small", "tiny"]


def test_mlflow_not_installed_is_named_before_anything_starts(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # importlib finds no mlflow
    monkeypatch.setattr("raytrack.tune.start_ray", refuse_to_start)
    assert exit_code(tune.main, ["--mlflow", "--samples", "100", "--storage", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "--mlflow: MLflow is not installed" in err and 'pip install -e ".[mlflow]"' in err
    assert list(tmp_path.iterdir()) == []


def test_mlflow_option_takes_a_uri_or_the_local_store(tmp_path, capsys):
    def mlflow_of(*argv: str) -> str | None:
        args = build_parser().parse_args([*argv, "--storage", str(tmp_path), "--name", "n"])
        return options_from_args(args, str(tmp_path)).mlflow

    assert mlflow_of() is None
    assert mlflow_of("--mlflow") == f"sqlite:///{(tmp_path / 'n' / 'mlflow' / 'mlflow.db')}"
    assert mlflow_of("--mlflow", "http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    # a resumed experiment keeps its options: MLflow cannot be added to one started without it
    started = ExperimentOptions(search="presets", data_dir=str(tmp_path), storage=str(tmp_path),
                                name="old")  # fmt: skip
    started.path.mkdir()
    (started.path / "experiment.json").write_text(json.dumps(started.__dict__))
    assert (
        exit_code(tune.main, ["--resume", "--name", "old", "--storage", str(tmp_path), "--mlflow"])
        == 1
    )
    assert "was started without it" in capsys.readouterr().err


# -- what a search keeps -----------------------------------------------------------------------


def test_a_trial_keeps_two_checkpoints_the_latest_with_its_best_epoch(optuna_search):
    """Issue 17: Tune kept five checkpoints per trial (504 MB in the quick search). Two are
    kept; the latest, which --resume restores, also holds the best epoch's weights, which
    best/ exports."""
    options, rows = optuna_search
    assert any(r["epochs"] == 3 for r in rows)  # the first trial runs on, whatever ASHA says
    for row in rows:
        (trial_dir,) = options.path.glob(f"run_trial_{row['trial_id']}_*")
        checkpoints = sorted(trial_dir.glob("checkpoint_*"))
        assert len(checkpoints) == min(row["epochs"], 2), trial_dir.name
        state = load_checkpoint(checkpoints[-1] / "checkpoint.pt")
        assert state["epoch"] == row["epochs"]
        assert state["best"]["val_pos_p95_mm"] == row["pos_p95_mm"]
    best = load_checkpoint(options.path / "best" / "checkpoint.pt")
    assert best["best"]["val_pos_p95_mm"] == rows[0]["pos_p95_mm"]


# -- the Optuna study --------------------------------------------------------------------------


def test_optuna_study_file_opens_with_load_study_and_holds_every_trial(optuna_search):
    options, rows = optuna_search
    path = options.path / STUDY_FILE
    study = optuna.load_study(
        study_name=options.name, storage=JournalStorage(JournalFileBackend(str(path)))
    )
    assert len(study.trials) == len(rows) == 4
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    for trial in study.trials:  # the study's values are the leaderboard's
        (row,) = [r for r in rows if trial.params.items() <= r["config"]["params"].items()]
        assert trial.value == pytest.approx(row["pos_p95_mm"])
    assert len(study.trials[0].intermediate_values) >= 1  # the epochs, for the dashboard


def test_pareto_time_records_each_trials_inference_time(pareto_time_search):
    """Issue 16, --objective pareto-time: every trial's result carries its model's time per
    track (ONNX Runtime, one thread), the leaderboard and the Pareto front record it, and the
    front is one in time and P95."""
    options, rows = pareto_time_search
    for row in rows:
        us = row["inference_us_per_track"]
        assert isinstance(us, float) and math.isfinite(us) and us > 0, row
        (trial_dir,) = options.path.glob(f"run_trial_{row['trial_id']}_*")
        results = [json.loads(line) for line in (trial_dir / "result.json").open()]
        assert [r["inference_us_per_track"] for r in results] == [us] * len(results)
    with open(options.path / "leaderboard.csv", newline="") as handle:
        board = {r["trial_id"]: r for r in csv.DictReader(handle)}
    for row in rows:
        written = board[row["trial_id"]]["inference_us_per_track"]
        assert float(written) == row["inference_us_per_track"]
    for trial in load_study(options.path).trials:  # what the searcher was told
        (row,) = [r for r in rows if trial.params.items() <= r["config"]["params"].items()]
        assert trial.values == pytest.approx([row["pos_p95_mm"], row["inference_us_per_track"]])
    front = json.loads((options.path / "pareto.json").read_text())
    assert front and {r["trial_id"] for r in front} <= {r["trial_id"] for r in rows}
    times = [r["inference_us_per_track"] for r in front]
    p95 = [r["pos_p95_mm"] for r in front]
    assert times == sorted(times) and p95 == sorted(p95, reverse=True)
    for row in rows:  # every trial off the front is beaten by one on it in both
        if row["trial_id"] not in {r["trial_id"] for r in front}:
            assert any(
                f["inference_us_per_track"] <= row["inference_us_per_track"]
                and f["pos_p95_mm"] <= row["pos_p95_mm"]
                for f in front
            ), row["trial_id"]


def test_equal_accuracy_is_bench_deploys_rule_on_a_kept_curve():
    """The fastest setting at least as accurate in mean and P95; when none is, the most
    accurate, and False; a setting that lost tracks never counts."""

    def setting(tolerance, cap, mean, p95, us):
        return {"tolerance_mm": tolerance, "max_step_mm": cap, "label": f"{tolerance} {cap}",
                "mean_mm": mean, "p95_mm": p95, "us_per_track": us}  # fmt: skip

    lost = setting(0.1, 250.0, None, None, 0.5)  # lost tracks: never as accurate
    curve = {"settings": [setting(3.0, None, 0.2, 0.4, 2.0), setting(0.3, None, 0.02, 0.1, 2.5),
                          setting(1.0, 1000.0, 1e-4, 2e-4, 3.0), lost]}  # fmt: skip
    assert equal_accuracy(curve, 0.5, 0.5) == (curve["settings"][0], True)
    assert equal_accuracy(curve, 0.5, 0.3) == (curve["settings"][1], True)  # P95 decides
    assert equal_accuracy(curve, 0.01, 1.0) == (curve["settings"][2], True)  # so does the mean
    assert equal_accuracy(curve, 1e-5, 1e-5) == (curve["settings"][2], False)  # the most accurate
    assert equal_accuracy({"settings": [lost]}, 1.0, 1.0) == (None, False)


def test_the_readme_shows_every_option_of_tune():
    readme = (REPO / "docs" / "tune.md").read_text()
    usage = readme[readme.index("python -m raytrack.tune --search presets|optuna|all") :]
    usage = usage[: usage.index("```")]
    for action in build_parser()._actions:
        for option in action.option_strings:
            if option.startswith("--") and option != "--help":
                assert f"[{option}" in usage or f"{option} " in usage, option
