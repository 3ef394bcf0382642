"""Issue 10, "First contact": what a new user meets on a first try, each path checked before
anything starts (no Ray, no training) so these tests stay fast."""

from __future__ import annotations

import pytest


def refuse_to_start(*_args, **_kwargs):
    raise AssertionError("started work although the inputs were wrong")


# Item 1: the generator deletes only files it wrote itself.


# Item 2 and 8: train validates everything before it writes anything.


# Item 9: a damaged manifest is named, with what is wrong.


# Items 5, 10, 11: tune checks its inputs, in its own options' words, before Ray starts.


@pytest.fixture
def no_ray(monkeypatch):
    """tune with Ray's start replaced by a failure: a test passes only if tune stops before."""
    monkeypatch.setattr("raytrack.tune.start_ray", refuse_to_start)
    monkeypatch.setattr("raytrack.cluster.ray.init", refuse_to_start)


def tune_main(*args: str) -> int:
    from raytrack import tune

    try:
        return tune.main(list(args))
    except SystemExit as exit_:  # argparse's own refusal
        return int(exit_.code)


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


# Item 6: a trial that no node can hold is refused before any trial starts.


def test_trials_that_need_a_missing_gpu_are_refused(ray_cluster, tmp_path):
    from raytrack.search.experiment import ExperimentOptions, check_trials_fit

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


# Items 7 and 17: the dashboard takes a free port, a pinned busy one is named, and the token's
# place is printed beside the URL.


@pytest.fixture
def listening():
    """A port on 127.0.0.1 held by another server."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    yield server.getsockname()[1]
    server.close()


class FakeContext:
    def __init__(self, port: int):
        self.dashboard_url = f"127.0.0.1:{port}"


def test_dashboard_takes_the_next_free_port_when_8265_is_taken(monkeypatch, capsys):
    import socket

    from raytrack.cluster import port_is_free

    started = {}

    def fake_init(**kwargs):
        started.update(kwargs)
        return FakeContext(kwargs["dashboard_port"])

    monkeypatch.setattr("raytrack.cluster.ray.is_initialized", lambda: False)
    monkeypatch.setattr("raytrack.cluster.ray.init", fake_init)
    monkeypatch.setattr("raytrack.tune.ray.is_initialized", lambda: False)
    with socket.socket() as server:  # 8265 taken (already, or by this test)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            server.bind(("127.0.0.1", 8265))
            server.listen()
        except OSError:
            pass
        from raytrack import tune

        tune.start_ray(tune.build_parser().parse_args([]))
        port = started["dashboard_port"]
        assert port != 8265 and port_is_free("127.0.0.1", port)
    assert f"Ray dashboard: http://127.0.0.1:{port}" in capsys.readouterr().out


def test_a_pinned_busy_dashboard_port_is_named(listening, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr("raytrack.cluster.ray.is_initialized", lambda: False)
    monkeypatch.setattr("raytrack.tune.ray.is_initialized", lambda: False)
    monkeypatch.setattr("raytrack.cluster.ray.init", refuse_to_start)
    code = tune_main("--dashboard-port", str(listening), "--storage", str(tmp_path))
    assert code == 1
    err = capsys.readouterr().err
    assert f"--dashboard-port {listening}: 127.0.0.1:{listening} is in use" in err


def test_dashboard_notice_says_where_the_token_is(monkeypatch, tmp_path):
    from raytrack.cluster import dashboard_notice

    url = "http://127.0.0.1:8265"
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")  # what ray.init sets for a local instance
    monkeypatch.setenv("HOME", str(tmp_path))
    assert f"token is in {tmp_path / '.ray' / 'auth_token'}" in dashboard_notice(url)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", "/etc/ray/token")
    assert "token is in /etc/ray/token" in dashboard_notice(url)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert dashboard_notice(url) == f"Ray dashboard: {url}"
    assert dashboard_notice(None) == "Ray dashboard: not running"


# Item 18: every option with a default says it in --help.
