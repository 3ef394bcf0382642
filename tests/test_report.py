"""Issue 11, "See the search": the experiment report in a real browser, the Optuna study on
disk, the report of an interrupted search, MLflow runs across a resume and the --mlflow option.

One small Optuna search on the session's Ray and classic dataset serves the tests here; the
MLflow runs of a real search are checked on the presets search of tests/test_tune.py (run with
--mlflow), which the suite runs anyway.
"""

from __future__ import annotations

import contextlib
import html
import json
import math
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from raytrack.search.experiment import STUDY_FILE, ExperimentOptions, run_experiment
from raytrack.search.tracking import local_uri

REPO = Path(__file__).resolve().parents[1]
FIGURES = (
    "p95_vs_weights.png",
    "p95_vs_macs.png",
    "p95_vs_epoch.png",
    "best_error_vs_momentum.png",
    "best_error_vs_dz.png",
    "best_error_vs_x_mid.png",
    "best_error_vs_y_mid.png",
)


def quiet(_message: str) -> None:
    pass


def search(tmp: Path, data: Path, **changes) -> tuple[ExperimentOptions, list[dict]]:
    settings = dict(search="presets", data_dir=str(data), storage=str(tmp), name="exp",
                    max_epochs=2, grace_epochs=1)  # fmt: skip
    options = ExperimentOptions(**{**settings, **changes})
    return options, run_experiment(options, log=quiet)


SMALL_SPACE = """
name = "small"
# The straight line on the 7 inputs: what is tested here is the search, and this formulation
# trains and exports fastest (no field tables in the graph).
[params.base]
type = "fixed"
value = "line"
[params.inputs]
type = "fixed"
value = "state"
[params.depth]
type = "int"
low = 2
high = 3
[params.width]
type = "int"
per_layer = true
low = 8
high = 48
[params.activation]
type = "categorical"
choices = ["relu", "silu"]
[params.lr]
type = "float"
low = 1e-3
high = 3e-3
log = true
"""


@pytest.fixture(scope="module")
def optuna_search(ray_cluster, classic_dataset, tmp_path_factory):
    """``python -m raytrack.tune --search optuna --num-samples 4 --max-epochs 3`` (ASHA), in a
    space of small models that train in a blink (3 epochs: more than the checkpoints kept)."""
    tmp = tmp_path_factory.mktemp("optuna")
    space = tmp / "small.toml"
    space.write_text(SMALL_SPACE)
    return search(
        tmp, classic_dataset, search="optuna", num_samples=4, space=str(space), max_epochs=3
    )


# -- MLflow ------------------------------------------------------------------------------------


@contextlib.contextmanager
def tracking_uri(uri: str):
    """mlflow.search_runs reads the global tracking URI (and sets MLFLOW_TRACKING_URI)."""
    import mlflow

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

    from raytrack.search.tracking import MlflowTracking
    from raytrack.search.trial import TrialSettings

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


def tune_main(*argv: str) -> int:
    from raytrack import tune

    try:
        return tune.main(list(argv))
    except SystemExit as exit_:
        return int(exit_.code)


def refuse_to_start(*_args, **_kwargs):
    raise AssertionError("started although --mlflow cannot work")


def test_mlflow_not_installed_is_named_before_anything_starts(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # importlib finds no mlflow
    monkeypatch.setattr("raytrack.tune.start_ray", refuse_to_start)
    assert tune_main("--mlflow", "--samples", "100", "--storage", str(tmp_path)) == 1
    err = capsys.readouterr().err
    assert "--mlflow: MLflow is not installed" in err and 'pip install -e ".[mlflow]"' in err
    assert list(tmp_path.iterdir()) == []


def test_mlflow_option_takes_a_uri_or_the_local_store(tmp_path, capsys):
    from raytrack.tune import build_parser, options_from_args

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
    assert tune_main("--resume", "--name", "old", "--storage", str(tmp_path), "--mlflow") == 1
    assert "was started without it" in capsys.readouterr().err


# -- what a search keeps -----------------------------------------------------------------------


def test_a_trial_keeps_two_checkpoints_the_latest_with_its_best_epoch(optuna_search):
    """Issue 17: Tune kept five checkpoints per trial (504 MB in the quick search). Two are
    kept; the latest, which --resume restores, also holds the best epoch's weights, which
    best/ exports."""
    from raytrack.models.training import load_checkpoint

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
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

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


# -- the report --------------------------------------------------------------------------------


def labelled_ticks(axis) -> list[float]:
    """Where ``axis`` shows a tick label (major or minor) inside its limits, once drawn."""
    axis.figure.canvas.draw()
    low, high = sorted(axis.get_view_interval())
    ticks = [*axis.get_major_ticks(), *axis.get_minor_ticks()]
    shown = [t for t in ticks if t.label1.get_visible() and t.label1.get_text()]
    return sorted(t.get_loc() for t in shown if low <= t.get_loc() <= high)


def check_log_axis(axis, values) -> None:
    """At least three labels, and every value between two of them (issue 17: two labels, and
    the curve below the lowest)."""
    labels = labelled_ticks(axis)
    assert len(labels) >= 3, labels
    assert labels[0] <= min(values) and max(values) <= labels[-1], (labels, min(values))


def test_learning_curves_of_the_report_tell_the_trials_apart(optuna_search):
    """Issue 17: p95_vs_epoch.png drew every trial in the same colour, named them with labels
    that overlapped, and had two labels on its log axis."""
    from raytrack.report import p95_against_cost_figure, p95_against_epoch_figure, read_experiment

    options, rows = optuna_search
    experiment = read_experiment(options.path)
    fig = p95_against_epoch_figure(experiment)
    (ax,) = fig.axes
    curves = [line for line in ax.lines if line.get_linestyle() == "-"]
    assert len(curves) == len({str(line.get_color()) for line in curves}) == len(rows) == 4
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    names = [r["trial_id"] if r["name"] == "optuna" else r["name"] for r in rows]
    expected = [f"{n} ({r['status']})" for n, r in zip(names, rows, strict=True)]
    assert legend == expected  # best first
    assert not ax.texts  # no labels beside the curves
    assert ax.get_title().startswith(f"{options.name}: ")
    check_log_axis(ax.yaxis, [p for t in experiment.trials for _, p in t.curve])
    for cost in ("weight_count", "macs_per_track"):
        (ax, *_) = p95_against_cost_figure(experiment, cost).axes
        check_log_axis(ax.yaxis, [r["pos_p95_mm"] for r in rows])


#: The integrator's curve of the search below: 6 of bench deploy's 33 settings, one round
CURVE_GRID = {"CURVE_TOLERANCES_MM": (0.01, 0.3, 3.0), "CURVE_STEP_CAPS_MM": (1000.0, math.inf),
              "CURVE_ROUNDS": 1}  # fmt: skip


@pytest.fixture(scope="module")
def pareto_time_search(ray_cluster, classic_dataset, tmp_path_factory):
    """``python -m raytrack.tune --search optuna --num-samples 3 --max-epochs 2 --objective
    pareto-time`` in the space of small models above; the integrator's curve on 6 settings
    (:data:`CURVE_GRID`). (Not the search above: a multi-objective study keeps no epochs for
    the dashboard, which a test there checks.)"""
    from raytrack.search import timing

    tmp = tmp_path_factory.mktemp("pareto-time")
    space = tmp / "small.toml"
    space.write_text(SMALL_SPACE)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in CURVE_GRID.items():
            patch.setattr(timing, name, value)
        return search(tmp, classic_dataset, search="optuna", num_samples=3, space=str(space),
                      objective="pareto-time")  # fmt: skip


def test_pareto_time_records_each_trials_inference_time(pareto_time_search):
    """Issue 16, --objective pareto-time: every trial's result carries its model's time per
    track (ONNX Runtime, one thread), the leaderboard and the Pareto front record it, and the
    front is one in time and P95."""
    import csv

    from raytrack.search.experiment import load_study

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


def test_the_time_figure_draws_the_integrators_curve_beside_the_trials(
    pareto_time_search, tmp_path
):
    """Issue 16: the report's figure against inference time draws the integrator's fastest
    setting at each accuracy, measured once by the driver on the validation tracks and kept in
    the experiment; the report is written again from the kept curve."""
    from raytrack.report import (
        INTEGRATOR_LABEL,
        p95_against_cost_figure,
        read_experiment,
        write_experiment_report,
    )
    from raytrack.search.timing import CURVE_FILE, TIME_METRIC, curve_front

    options, rows = pareto_time_search
    curve = json.loads((options.path / CURVE_FILE).read_text())
    settings = curve["settings"]
    assert len(settings) == 6 and curve["tracks"] > 0 and curve["batch"] == 4096
    assert {(s["tolerance_mm"], s["max_step_mm"]) for s in settings} == {
        (t, c) for t in (0.01, 0.3, 3.0) for c in (1000.0, None)
    }
    for s in settings:
        assert math.isfinite(s["us_per_track"]) and s["us_per_track"] > 0, s
        assert 0 < s["mean_mm"] <= s["p95_mm"], s
    by = {(s["tolerance_mm"], s["max_step_mm"]): s for s in settings}
    assert by[(0.01, None)]["p95_mm"] < by[(3.0, None)]["p95_mm"]  # tighter is more accurate
    front = curve_front(curve)
    assert front and [s["us_per_track"] for s in front] == sorted(s["us_per_track"] for s in front)

    experiment = read_experiment(options.path)
    fig = p95_against_cost_figure(experiment, TIME_METRIC, curve)
    (ax, *_) = fig.axes
    (line,) = [line for line in ax.lines if line.get_label() == INTEGRATOR_LABEL]
    assert list(line.get_xdata()) == [s["us_per_track"] for s in front]
    assert list(line.get_ydata()) == [s["p95_mm"] for s in front]
    assert line.get_marker() == "D" and line.get_drawstyle() == "steps-post"
    legend = ax.get_legend()
    assert INTEGRATOR_LABEL in [text.get_text() for text in legend.get_texts()]
    note = legend.get_title().get_text()
    assert f"measured on {curve['host']} at {curve['measured_at']}" in note
    trials = [(x, y) for c in ax.collections for x, y in c.get_offsets()]
    assert sorted(trials) == sorted((r[TIME_METRIC], r["pos_p95_mm"]) for r in rows)
    check_log_axis(ax.xaxis, [r[TIME_METRIC] for r in rows] + list(line.get_xdata()))
    check_log_axis(ax.yaxis, [r["pos_p95_mm"] for r in rows] + list(line.get_ydata()))
    page = (options.path / "report" / "index.html").read_text()
    assert 'data-file="p95_vs_time.png"' in page
    assert f"measured by the driver on {curve['host']}" in page

    copy = tmp_path / "exp"  # written again: the kept curve, not measured again
    shutil.copytree(options.path, copy)
    said: list[str] = []
    write_experiment_report(copy, log=said.append)
    assert (copy / CURVE_FILE).read_bytes() == (options.path / CURVE_FILE).read_bytes()
    assert not any("measuring" in line for line in said), said
    (copy / CURVE_FILE).unlink()  # an interrupted search does not wait for it
    write_experiment_report(copy, log=said.append, interrupted=True)
    assert not (copy / CURVE_FILE).exists()
    assert "is measured when the search ends" in (copy / "report" / "index.html").read_text()
    document = json.loads((copy / "experiment.json").read_text())  # its dataset gone:
    (copy / "experiment.json").write_text(json.dumps({**document, "data_dir": "gone"}))
    said.clear()
    write_experiment_report(copy, log=said.append)  # the report, without the curve
    assert any(f"{CURVE_FILE}) could not be measured" in line for line in said), said
    assert "could not be measured" in (copy / "report" / "index.html").read_text()


def test_each_timed_trial_faces_the_fastest_integrator_at_least_as_accurate(pareto_time_search):
    """Issue 16: the report's table puts each trial beside the fastest integrator setting whose
    mean and P95 are both at most the trial's (bench deploy's rule), and the ratio of times."""
    from raytrack.search.timing import CURVE_FILE, equal_accuracy

    options, rows = pareto_time_search
    curve = json.loads((options.path / CURVE_FILE).read_text())
    page = (options.path / "report" / "index.html").read_text()
    table = page[page.index('<table class="equal-accuracy">') :]
    table = table[: table.index("</table>")]
    assert table.count("<tr>") == 1 + len(rows)  # the header and every trial
    for row in rows:
        setting, qualifies = equal_accuracy(curve, row["pos_mean_mm"], row["pos_p95_mm"])
        kept = [s for s in curve["settings"] if s["mean_mm"] is not None]
        as_accurate = [
            s
            for s in kept
            if s["mean_mm"] <= row["pos_mean_mm"] and s["p95_mm"] <= row["pos_p95_mm"]
        ]
        assert qualifies == bool(as_accurate)
        if qualifies:
            assert setting["us_per_track"] == min(s["us_per_track"] for s in as_accurate)
        ratio = setting["us_per_track"] / row["inference_us_per_track"]
        cells = (f"<td>{row['inference_us_per_track']:.3g}</td>",
                 f'<td class="text">{html.escape(setting["label"])}</td>'
                 if qualifies else "none as accurate", f"<td>{ratio:.3g}</td></tr>")  # fmt: skip
        (line,) = [t for t in table.split("<tr>") if f">{row['trial_id']}<" in t]
        assert all(cell in line for cell in cells), (cells, line)


def test_equal_accuracy_is_bench_deploys_rule_on_a_kept_curve():
    """The fastest setting at least as accurate in mean and P95; when none is, the most
    accurate, and False; a setting that lost tracks never counts."""
    from raytrack.search.timing import equal_accuracy

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


def test_evaluation_figures_have_titles_and_labelled_log_axes(tmp_path):
    """Issue 17: evaluation/*.png had no titles; learning_curves.png's right panel had two
    labels with the curve below the lowest. Built from tracks and a history like a run's."""
    import numpy as np

    from raytrack.evaluate import (
        error_against_figure,
        histograms_figure,
        learning_curves_figure,
        log_tick_values,
        plot_context,
    )

    rng = np.random.default_rng(1)
    n = 400
    inputs = np.zeros((n, 7))
    inputs[:, 4] = rng.choice([-1, 1], n) / rng.uniform(2e3, 1e5, n)  # q/p [1/MeV]
    inputs[:, 6] = rng.uniform(100.0, 9000.0, n)
    truth = rng.normal(0, 100, (n, 4))
    predicted = truth + rng.lognormal(-3, 1.5, (n, 4))
    tracks = {"inputs": inputs, "truth": truth, "predicted": predicted}
    # the right panel of the learning curves: P95 0.152 -> 0.207 mm, mean 0.216 -> 0.203
    history = [{"epoch": 1, "train_loss": 0.99, "val_loss": 0.48, "val_pos_mean_mm": 0.216,
                "val_pos_p95_mm": 0.152},
               {"epoch": 2, "train_loss": 0.94, "val_loss": 0.46, "val_pos_mean_mm": 0.203,
                "val_pos_p95_mm": 0.207}]  # fmt: skip
    run = plot_context(tmp_path / "best" / "evaluation")
    assert run == "run best"
    figures = [
        histograms_figure(run, **tracks),
        error_against_figure(run, "momentum", **tracks),
        error_against_figure(run, "dz", **tracks),
        error_against_figure(run, "x_mid", **tracks),
        error_against_figure(run, "y_mid", **tracks),
        learning_curves_figure(run, history),
        learning_curves_figure(
            run, [dict(h, val_pos_p99_mm=p) for h, p in zip(history, (0.4, 0.5), strict=True)]
        ),
    ]
    for fig in figures:
        title = fig.get_suptitle() or fig.axes[0].get_title()
        assert title.startswith("run best: "), title
        assert all(ax.get_title() for ax in fig.axes)
        for ax in fig.axes:
            for axis in (ax.xaxis, ax.yaxis):
                if axis.get_scale() == "log" and ax.lines:
                    values = [v for line in ax.lines for v in line.get_data()[axis is ax.yaxis]]
                    check_log_axis(axis, values)
    # issue 15: P99 and the worst track beside mean and P95, and the bins across the aperture
    from raytrack.models.metrics import position_errors

    errors = position_errors(predicted, truth)
    marks = [line.get_label() for line in figures[0].axes[0].lines]
    assert [m.split()[1] for m in marks] == ["P95", "P99", "worst"]
    assert figures[0].axes[0].lines[2].get_xdata()[0] == errors.max()
    for fig in figures[1:5]:
        (ax,) = fig.axes
        assert [line.get_label() for line in ax.lines] == ["mean", "P95", "P99", "worst"]
        assert max(ax.lines[3].get_ydata()) == errors.max()
    assert figures[3].axes[0].get_xlabel() == "|x| at mid-leg [mm]"
    assert "|y| at the middle of the leg" in figures[4].axes[0].get_title()
    assert "P99" not in [t.get_text() for t in figures[5].axes[1].get_legend().get_texts()]
    assert "P99" in [t.get_text() for t in figures[6].axes[1].get_legend().get_texts()]
    for low, high in ((0.152, 0.216), (0.46, 1.0), (0.05, 3.0), (2.0, 95.0), (1e-5, 30.0),
                      (0.2, 0.2), (3e-4, 3e4), (0.1838, 2.045)):  # fmt: skip
        ticks = log_tick_values(low, high)
        assert 3 <= len(ticks) <= 12 and ticks[0] <= low and high <= ticks[-1], (low, ticks)


def test_best_model_section_has_the_tails_the_worst_track_and_the_mid_leg_bins(parabolic_tracks):
    """Issue 15: the report's best model, its P99 and worst, its worst track by name, its
    errors in bins across the aperture, and figures against |x| and |y| at mid-leg."""
    from types import SimpleNamespace

    import numpy as np

    from raytrack.models.metrics import position_errors
    from raytrack.report import BestModel, _best_summary, best_against_figure

    rng = np.random.default_rng(2)
    n = 500
    inputs = parabolic_tracks.starts(rng, n, 900, 750)
    bend = rng.uniform(-2e-5, 2e-5, (n, 1)) * [1.0, 0.1]  # a parabola, mostly in x
    truth = parabolic_tracks.ends(inputs, bend)
    predicted = truth + rng.lognormal(-4, 1, truth.shape)
    row = {"name": "small", "trial_id": "t_00001"}
    best = BestModel(row, "best/ (the exported weights)", inputs, truth, predicted)
    page = _best_summary(best)
    errors = position_errors(predicted, truth)
    worst = int(np.argmax(errors))
    assert "<th>P99 [mm]</th><th>worst [mm]</th>" in page
    assert f"<td>{np.percentile(errors, 99):.4f}</td><td>{errors.max():.4f}</td>" in page
    assert f"worst track: {errors[worst]:.4f} mm off" in page and f"(row {worst})" in page
    assert f"start x {inputs[worst, 0]:.1f} mm, y {inputs[worst, 1]:.1f} mm" in page
    assert "mid-leg |x| 0-250 mm" in page and "mid-leg |y| 500-750 mm" in page
    experiment = SimpleNamespace(path=Path("runs/exp"), dataset="default-600-seed0")
    for what, name in (("x_mid", "|x|"), ("y_mid", "|y|")):
        (ax,) = best_against_figure(experiment, best, what).axes
        assert ax.get_xlabel() == f"{name} at mid-leg [mm]"
        assert f"error against {name} at mid-leg" in ax.get_title()
        labels = [line.get_label() for line in ax.lines]
        assert labels == ["model: mean", "model: P95", "model: P99", "model: worst",
                          "straight line: mean", "straight line: P95"]  # fmt: skip
        assert max(ax.lines[3].get_ydata()) == errors.max()
        check_log_axis(ax.yaxis, [v for line in ax.lines for v in line.get_ydata()])


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail(
            "no chromium: this test opens the report in a real browser; install Debian's "
            "package (apt-get install chromium), as .ci/run does"
        )
    return found


def run_chromium(*args: str, profile: Path) -> str:
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               f"--user-data-dir={profile}", *args]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


PROBE = """<script>
window.addEventListener("load", () => {
  const states = Array.from(document.images).map(
    (img) => (img.complete && img.naturalWidth > 0 ? "loaded " : "broken ") + img.dataset.file);
  const out = document.createElement("pre");
  out.id = "image-probe";
  out.textContent = JSON.stringify(states);
  document.body.appendChild(out);
});
</script>"""


def images_in_chromium(index: Path, profile: Path) -> list[str]:
    """What a real browser makes of every <img> of the page: "loaded NAME" or "broken NAME"."""
    probe = index.with_name("probe.html")  # beside it: the page as it is, plus the probe
    probe.write_text(index.read_text().replace("</body>", PROBE + "</body>"))
    try:
        dom = run_chromium("--virtual-time-budget=10000", "--dump-dom", probe.as_uri(),
                           profile=profile)  # fmt: skip
    finally:
        probe.unlink()
    found = re.search(r'<pre id="image-probe">(.*?)</pre>', dom, re.S)
    assert found, dom[-2000:]
    return json.loads(found.group(1).replace("&quot;", '"'))


def test_report_images_load_in_headless_chromium(optuna_search, tmp_path):
    from PIL import Image

    options, rows = optuna_search
    report = options.path / "report"
    index = report / "index.html"
    page = index.read_text()
    assert "<table>" in page and all(r["trial_id"] in page for r in rows)
    for header in ("weights [count]", "val P95 [mm]", "training time [s]"):
        assert header in page  # the leaderboard with units
    # issue 15: the tails and the bins across the aperture, the best model's worst track named
    for words in ("val worst [mm]", "<th>P99 [mm]</th><th>worst [mm]</th>", "worst track: ",
                  "mid-leg |x| 0-250 mm", "mid-leg |y| 0-250 mm"):  # fmt: skip
        assert words in page, words
    assert images_in_chromium(index, tmp_path / "profile") == [f"loaded {f}" for f in FIGURES]
    dataset = Path(options.data_dir).name
    for name in FIGURES:  # titled with the experiment and the data set, labelled with units
        text = Image.open(report / name).text
        assert (
            text["Title"].startswith(f"{options.name}: ") and f"data: {dataset}" in text["Title"]
        ), name
        assert re.fullmatch(r"x axis: .*\[.+\]; y axis: .*\[mm\]", text["Description"]), name
    shot = tmp_path / "report.png"
    run_chromium(f"--screenshot={shot}", "--window-size=1200,2400", index.as_uri(),
                 profile=tmp_path / "profile")  # fmt: skip
    image = Image.open(shot).convert("L")
    assert image.size == (1200, 2400)
    assert len(set(image.getdata())) > 50  # figures and text, not a blank page
    if os.environ.get("RAYTRACK_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["RAYTRACK_KEEP_SCREENSHOT"])


def test_report_of_an_interrupted_search(optuna_search, tmp_path):
    """An interrupted search left no leaderboard, no best/ and no report; one trial was in the
    middle of its epochs. python -m raytrack.report writes the report from the trials' files."""
    options, rows = optuna_search
    experiment = tmp_path / "interrupted"
    shutil.copytree(options.path, experiment)
    for name in ("leaderboard.json", "leaderboard.csv"):
        (experiment / name).unlink()
    shutil.rmtree(experiment / "best")
    shutil.rmtree(experiment / "report")
    cut = next(p for p in experiment.glob("*/result.json") if len(p.read_text().splitlines()) > 1)
    first = cut.read_text().splitlines()[0]
    cut.write_text(first + "\n")  # still at its first epoch
    running = json.loads(first)["trial_id"]
    for snapshot in experiment.glob("experiment_state-*.json"):  # and running for Tune
        state = json.loads(snapshot.read_text())
        for entry in state["trial_data"]:
            trial = json.loads(entry[0])
            if trial["trial_id"] == running:
                entry[0] = json.dumps({**trial, "status": "RUNNING"})
        snapshot.write_text(json.dumps(state))
    done = subprocess.run([sys.executable, "-m", "raytrack.report", str(experiment)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    index = experiment / "report" / "index.html"
    assert done.stdout.strip() == f"wrote {index}"
    page = index.read_text()
    assert "in progress or interrupted: 3 of 4 trials ended" in page
    assert page.count('<td class="text">unfinished</td>') == 1
    assert "its latest checkpoint" in page  # the best model, from the best trial's checkpoint
    assert all(r["trial_id"] in page for r in rows)
    assert (experiment / STUDY_FILE).name in page  # the optuna-dashboard command
    assert images_in_chromium(index, tmp_path / "profile") == [f"loaded {f}" for f in FIGURES]


def test_report_of_a_directory_that_is_no_experiment(tmp_path, capsys):
    from raytrack.report import main

    assert main([str(tmp_path)]) == 1
    assert "not a raytrack experiment" in capsys.readouterr().err


def test_the_readme_shows_every_option_of_tune():
    from raytrack.tune import build_parser

    readme = (REPO / "README.md").read_text()
    usage = readme[readme.index("python -m raytrack.tune --search presets|optuna|all") :]
    usage = usage[: usage.index("```")]
    for action in build_parser()._actions:
        for option in action.option_strings:
            if option.startswith("--") and option != "--help":
                assert f"[{option}" in usage or f"{option} " in usage, option
