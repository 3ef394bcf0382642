"""python -m raytrack.tune's command line: checks before Ray starts, --resume's options, and a
Ray that does not start."""

from __future__ import annotations

import json
import subprocess
import sys

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
    from raytrack.search.experiment import write_options
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
    from raytrack.search.experiment import OBJECTIVES
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
