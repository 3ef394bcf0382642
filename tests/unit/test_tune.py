"""python -m raytrack.tune's command line: checks before Ray starts, --resume's options, and a
Ray that does not start."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from raytrack import tune
from raytrack.cluster import tagged_processes

from .commands import exit_code, refuse_to_start
from .search.searches import REPO, options


def test_bad_search_space_file_is_named_before_anything_starts(tmp_path):
    space = tmp_path / "bad.toml"
    space.write_text('[params.activation]\ntype = "categorical"\nchoices = ["swish"]\n')
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "raytrack.tune",
            "--search",
            "optuna",
            "--space",
            str(space),
            "--storage",
            str(tmp_path),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert str(space) in done.stderr and "activation" in done.stderr and "relu" in done.stderr


def test_resume_refuses_options_that_differ_from_the_experiments(tmp_path, capsys):
    """Issue 17: --resume with other options (more trials, a longer budget) is refused, naming
    them, before anything starts; the same options again (condor's head resumes with the whole
    command line) are not."""
    from raytrack.tune import main

    data = tmp_path / "no-data"  # a missing dataset ends a resume that gets past the options
    started = options(tmp_path, data, search="optuna", num_samples=8, max_epochs=6)
    started.path.mkdir()
    (started.path / "experiment.json").write_text(json.dumps(started.__dict__))
    resume = ["--resume", "--name", "exp", "--storage", str(tmp_path)]
    assert main([*resume, "--search", "optuna", "--num-samples", "12", "--max-epochs", "20"]) == 1
    err = capsys.readouterr().err
    assert "--num-samples 12 (it has 8), --max-epochs 20 (it has 6)" in err, err
    assert "--search" not in err
    assert main([*resume, "--num-samples", "8", "--max-epochs", "6", "--data", str(data)]) == 1
    err = capsys.readouterr().err
    assert "differ" not in err and str(data) in err, err


def test_resume_completes_the_dataset_tune_was_generating(tmp_path):
    """Ctrl-C while tune generates its default dataset (the experiment exists by then):
    --resume completes the dataset, its generation continuing where it stopped."""
    from raytrack.search.experiment_options import write_options
    from raytrack.tune import build_parser, plan_from_args

    data = tmp_path / "datasets" / "default-600-seed3"
    write_options(options(tmp_path, data, samples=600, phase_space="default", seed=3))
    data.mkdir(parents=True)  # no manifest of a complete dataset
    args = build_parser().parse_args(["--resume", "--name", "exp", "--storage", str(tmp_path)])
    plan = plan_from_args(args)
    assert plan.splits is None and plan.options.data_dir == str(data.resolve())
    spec = plan.dataset
    assert (spec.samples, spec.seed, spec.phase_space.name) == (600, 3, "default")


def test_resume_takes_pareto_time_as_the_experiment_started_with_it(tmp_path, capsys):
    """Issue 16: --objective pareto-time is an objective like the others: the parser takes it,
    --resume keeps it (given again, it is no change), and another objective is refused."""
    from raytrack.search.experiment_options import OBJECTIVES
    from raytrack.search.timing import TIME_METRIC
    from raytrack.tune import build_parser, changed_options, main

    assert OBJECTIVES["pareto-time"] == TIME_METRIC
    assert build_parser().parse_args(["--objective", "pareto-time"]).objective == "pareto-time"
    data = tmp_path / "no-data"  # a missing dataset ends a resume that gets past the options
    started = options(tmp_path, data, search="optuna", objective="pareto-time")
    started.path.mkdir()
    (started.path / "experiment.json").write_text(json.dumps(started.__dict__))
    resume = ["--resume", "--name", "exp", "--storage", str(tmp_path)]
    args = build_parser().parse_args([*resume, "--objective", "pareto-time"])
    assert changed_options(args, {"objective"}, started) == []
    assert main([*resume, "--objective", "pareto-time", "--data", str(data)]) == 1
    err = capsys.readouterr().err
    assert "differ" not in err and str(data) in err, err
    assert main([*resume, "--objective", "p95"]) == 1
    assert "--objective p95 (it has pareto-time)" in capsys.readouterr().err


def test_samples_and_phase_space_beside_data_are_refused(tmp_path, capsys):
    """Issue 25, item 6: --samples and --phase-space describe the dataset tune generates; beside
    --data they were silently ignored."""
    from raytrack.tune import main

    data = tmp_path / "data"  # never read: the options are refused before
    code = main(["--data", str(data), "--samples", "1000", "--phase-space", "classic",
                 "--storage", str(tmp_path)])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1, err
    assert err.startswith("error: --samples and --phase-space with --data")
    assert main(["--data", str(data), "--samples", "1000", "--storage", str(tmp_path)]) == 1
    assert "error: --samples with --data" in capsys.readouterr().err


def test_storage_on_a_kernel_filesystem_is_named_so(tmp_path, capsys):
    """Issue 25, item 11: --storage /proc/forbidden said "cannot be written in /proc: No such
    file or directory"."""
    from raytrack.tune import main

    assert main(["--storage", "/proc/forbidden"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --storage /proc/forbidden: cannot be written: /proc is the "
                          "kernel's proc filesystem"), err  # fmt: skip
    assert "No such file" not in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_a_ray_that_does_not_start_is_one_line_and_leaves_no_process(tmp_path):
    """Issue 25, item 2: a Ray start that failed was a traceback from raytrack/cluster.py. Here
    the port of Ray's GCS server is taken: tune --resume exits 1 with one line naming the cause,
    and no process it started is left."""
    from raytrack.search.experiment_options import write_options

    data = tmp_path / "datasets" / "default-600-seed3"  # generated once Ray runs: never here
    write_options(options(tmp_path, data, samples=600, phase_space="default", seed=3))
    mark = uuid.uuid4().hex  # every process the command starts inherits its environment
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        env = {**os.environ, "RAY_GCS_SERVER_PORT": str(taken.getsockname()[1]),
               "RAYTRACK_TEST_MARK": mark,
               # Ray's driver waits for the GCS that cannot start: a few seconds, not 20
               "RAY_NUM_REDIS_GET_RETRIES": "3", "RAY_py_gcs_connect_timeout_s": "1",
               "RAY_gcs_rpc_server_connect_timeout_s": "1"}  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-m", "raytrack.tune", "--resume", "--name", "exp",
             "--storage", str(tmp_path)],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    output = (done.stdout + done.stderr).strip()
    assert done.returncode == 1, output
    assert len(output.splitlines()) == 1 and output.startswith("error: Ray did not start: "), output
    assert "Failed to start GCS" in output and str(tmp_path / "exp" / "ray.log") in output
    assert tagged_processes(mark, variable="RAYTRACK_TEST_MARK") == []


@pytest.fixture
def no_ray(monkeypatch):
    """tune with Ray's start replaced by a failure: a test passes only if tune stops before."""
    monkeypatch.setattr("raytrack.tune.start_ray", refuse_to_start)
    monkeypatch.setattr("raytrack.cluster.ray.init", refuse_to_start)


def tune_main(*args: str) -> int:
    return exit_code(tune.main, list(args))


def test_tune_grace_epochs_above_max_epochs_is_named(tmp_path, no_ray, capsys):
    code = tune_main(
        "--search", "optuna", "--scheduler", "asha", "--max-epochs", "1", "--grace-epochs", "3",
        "--storage", str(tmp_path),
    )  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err
    assert "--grace-epochs 3 is more than --max-epochs 1" in err
    assert "AssertionError" not in err


def test_tune_max_epochs_below_the_default_grace_just_works(tmp_path):
    from raytrack import tune

    args = tune.build_parser().parse_args(
        ["--search", "optuna", "--max-epochs", "1", "--storage", str(tmp_path)]
    )
    options = tune.plan_from_args(args).options
    assert (options.scheduler, options.grace_epochs, options.max_epochs) == ("asha", 1, 1)


def test_tune_samples_error_speaks_tunes_options(tmp_path, no_ray, capsys):
    assert tune_main("--samples", "5", "--storage", str(tmp_path)) == 2
    err = capsys.readouterr().err
    assert "argument --samples: must be at least 10, got 5" in err
    assert "--shards" not in err


def test_tune_checks_data_before_starting_ray(tmp_path, no_ray, capsys):
    missing = tmp_path / "nonexistent"
    assert tune_main("--data", str(missing), "--storage", str(tmp_path)) == 1
    assert f"{missing / 'manifest.json'}: not found" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_tune_checks_a_resumed_experiment_before_starting_ray(tmp_path, no_ray, capsys):
    assert tune_main("--resume", "--name", "gone", "--storage", str(tmp_path)) == 1
    assert "no experiment to resume" in capsys.readouterr().err


def test_trials_that_need_a_missing_gpu_are_refused(ray_cluster, tmp_path):
    from raytrack.search.experiment_options import ExperimentOptions
    from raytrack.search.resources import check_trials_fit

    def options(**changes) -> ExperimentOptions:
        return ExperimentOptions(
            search="presets", data_dir=str(tmp_path), storage=str(tmp_path), name="x", **changes
        )

    check_trials_fit(options(cpus_per_trial=2))  # fits: returns at once
    with pytest.raises(ValueError, match="--gpus-per-trial 1: this Ray cluster has no GPU"):
        check_trials_fit(options(gpus_per_trial=1))
    with pytest.raises(ValueError, match="--cpus-per-trial 3: no node"):
        check_trials_fit(options(cpus_per_trial=3))
    said = []
    with pytest.raises(ValueError, match="after waiting 0 s for nodes to join"):
        check_trials_fit(options(gpus_per_trial=0.5), wait_s=0.2, poll_s=0.05, log=said.append)
    assert said and "waiting up to 0 s" in said[0]


def test_tune_gpus_per_trial_without_a_gpu_stops_before_any_trial(
    ray_cluster, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr("raytrack.search.experiment.run_experiment", refuse_to_start)
    code = tune_main("--gpus-per-trial", "1", "--samples", "100", "--storage", str(tmp_path))
    assert code == 1
    assert "--gpus-per-trial 1: this Ray cluster has no GPU" in capsys.readouterr().err
    assert not (tmp_path / "datasets").exists()  # not even the dataset was generated


def test_tune_dataset_of_a_phase_space_file_lies_under_storage(tmp_path):
    from raytrack import tune
    from raytrack.configs import shipped_file

    classic = shipped_file("phase space", "classic").read_text()
    first, second = tmp_path / "a" / "space.toml", tmp_path / "b" / "space.toml"
    for path, text in ((first, classic), (second, classic.replace("name = ", "name = 'b' #"))):
        path.parent.mkdir()
        path.write_text(text)
    storage = tmp_path / "runs"

    def data_dir(phase_space: Path) -> Path:
        argv = ["--storage", str(storage), "--samples", "2000", "--phase-space", str(phase_space)]
        return Path(tune.plan_from_args(tune.build_parser().parse_args(argv)).options.data_dir)

    mine = data_dir(first)
    assert mine.parent == storage / "datasets"
    assert re.fullmatch(r"space-[0-9a-f]{8}-2000-seed0", mine.name), mine.name
    assert data_dir(second) != mine  # same stem, another phase space: never one dataset
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "space.toml").write_text("# the same phase space\n" + classic)
    assert data_dir(tmp_path / "c" / "space.toml") == mine
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]  # nothing written
    assert data_dir(Path("classic")) == storage / "datasets" / "classic-2000-seed0"
