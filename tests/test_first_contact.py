"""Issue 10, "First contact": what a new user meets on a first try, each path checked before
anything starts (no Ray, no training) so these tests stay fast."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from raytrack import generate, train
from raytrack.data import DatasetError, load
from raytrack.files import is_temporary, replacing


def refuse_to_start(*_args, **_kwargs):
    raise AssertionError("started work although the inputs were wrong")


# Item 1: the generator deletes only files it wrote itself.


def test_generate_keeps_a_users_hidden_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("raytrack.data.pipeline._run_shard_tasks", refuse_to_start)
    out = tmp_path / "d"
    out.mkdir()
    notes = out / ".notes.tmp"
    notes.write_text("mine")
    assert generate.main(["--samples", "30", "--shards", "3", "--out", str(out)]) == 1
    assert notes.read_text() == "mine"
    assert ".notes.tmp" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [".notes.tmp"]


def test_temporary_names_cannot_be_a_users(tmp_path):
    final = tmp_path / "shard-00000-of-00003.parquet"
    with replacing(final) as tmp:
        assert is_temporary(tmp)
        assert tmp.name.startswith(f".{final.name}.")
    for name in (".notes.tmp", ".shard-00000-of-00003.parquet.abcdefgh.tmp", "x.raytrack-partial"):
        assert not is_temporary(tmp_path / name), name


# Item 2 and 8: train validates everything before it writes anything.


def test_train_with_missing_data_writes_nothing(tmp_path, capsys):
    out = tmp_path / "R"
    code = train.main(["--data", str(tmp_path / "nonexistent"), "--out", str(out)])
    assert code == 1
    assert "nonexistent" in capsys.readouterr().err
    assert not out.exists()


def test_train_on_cuda_with_a_cpu_only_torch_is_named(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: False)
    out = tmp_path / "R"
    code = train.main(["--data", str(tmp_path / "data"), "--out", str(out), "--device", "cuda"])
    assert code == 1
    err = capsys.readouterr().err
    assert "--device cuda" in err and "CPU-only" in err
    assert not out.exists()


@pytest.mark.parametrize(
    "args,message",
    [
        (["--batch", "0"], "argument --batch: must be at least 1, got 0"),
        (["--lr", "-1"], "argument --lr: must be greater than 0"),
        (["--device", "tpu"], "--device tpu"),
    ],
)
def test_train_bad_options_are_named_and_write_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "R"
    try:
        code = train.main(["--data", str(tmp_path), "--out", str(out), *args])
    except SystemExit as exit_:  # argparse's own refusal
        code = exit_.code
    assert code in (1, 2)
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_generate_on_cuda_with_a_cpu_only_torch_is_named(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: False)
    out = tmp_path / "d"
    assert generate.main(["--samples", "30", "--out", str(out), "--device", "cuda"]) == 1
    assert "--device cuda: this torch" in capsys.readouterr().err
    assert not out.exists()


def test_generate_on_cuda_without_a_gpu_in_ray_is_refused(ray_cluster, tmp_path):
    import ray

    from raytrack.data import load_phase_space
    from raytrack.data.pipeline import generate_dataset
    from raytrack.data.shards import DatasetSpec
    from raytrack.physics import DipoleField

    if ray.cluster_resources().get("GPU"):
        pytest.skip("this Ray has a GPU")
    spec = DatasetSpec(30, 3, 0, load_phase_space("classic"), DipoleField(), device="cuda")
    with pytest.raises(ValueError, match="--device cuda: this Ray cluster has no GPU"):
        generate_dataset(spec, tmp_path / "d", log=lambda _: None)  # the tasks used to wait forever


# Item 9: a damaged manifest is named, with what is wrong.


def test_manifest_that_is_not_utf8_is_named(tmp_path):
    (tmp_path / "manifest.json").write_bytes(b'{"format": "raytrack-dataset\xff"}')
    with pytest.raises(DatasetError, match="manifest.json: not UTF-8"):
        load(tmp_path)


def test_manifest_with_missing_keys_is_named(tmp_path):
    manifest = {"format": "raytrack-dataset", "format_version": 1, "dataset_id": "x"}
    manifest |= {"shards": {"shard-00000-of-00003.parquet": {"index": 0}}, "complete": True}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError) as error:
        load(tmp_path)
    assert str(tmp_path / "manifest.json") in str(error.value)
    assert "identity is missing" in str(error.value)


def test_train_names_a_damaged_manifest(tmp_path, capsys):
    (tmp_path / "manifest.json").write_text('{"format": "raytrack-dataset", "format_version": 1}')
    assert train.main(["--data", str(tmp_path), "--out", str(tmp_path / "R")]) == 1
    err = capsys.readouterr().err
    assert f"{Path(tmp_path) / 'manifest.json'}: damaged manifest" in err
    assert not (tmp_path / "R").exists()


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


def parsers():
    import argparse

    from raytrack import bench, evaluate, tune

    def from_main(main, *args):
        captured = {}

        def parse_args(self, argv=None, namespace=None):
            captured.setdefault("parser", self)
            raise SystemExit(0)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(argparse.ArgumentParser, "parse_args", parse_args)
            with pytest.raises(SystemExit):
                main(list(args))
        return captured["parser"]

    bench_parser = from_main(bench.main)
    subcommands = next(a for a in bench_parser._actions if a.choices and a.dest == "command")
    yield from (generate.build_parser(), train.build_parser(), tune.build_parser())
    yield from_main(evaluate.main, "run")
    yield bench_parser
    yield from subcommands.choices.values()


def test_every_help_text_shows_its_default():
    import argparse

    for parser in parsers():
        formatter = parser._get_formatter()
        for action in parser._actions:
            nothing = any(action.default is n for n in (None, False, argparse.SUPPRESS))
            if not action.option_strings or nothing:
                continue
            text = formatter._expand_help(action)
            says = "(default" in text or text.startswith("default ")
            assert says, f"{parser.prog} {action.option_strings[0]}: {text!r}"
