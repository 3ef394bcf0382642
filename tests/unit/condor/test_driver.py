"""The head's driver command: resumed when the head runs again, read with the search's parser,
refused before Ray starts."""

from __future__ import annotations

import pytest

from raytrack import condor_bootstrap
from raytrack.condor.driver import DriverError, driver_command
from raytrack.condor.job import ClusterDir


def test_driver_resumes_the_experiment_when_the_head_runs_again(tmp_path):
    settings = {
        "driver": "python -m raytrack.tune --search presets --address auto",
        "cluster_id": "99",
        "storage": str(tmp_path),
    }
    first = driver_command(settings)
    assert f"--storage {tmp_path} --name condor-99" in first and "--resume" not in first
    (tmp_path / "condor-99").mkdir()
    (tmp_path / "condor-99" / "experiment.json").write_text("{}")
    assert driver_command(settings).endswith("--resume")
    custom = {**settings, "driver": "python -m raytrack.generate --samples 10 --out x"}
    assert driver_command(custom) == custom["driver"]
    named = {**settings, "driver": "python -m raytrack.tune --resume --name old --address auto"}
    assert driver_command(named).endswith(f"--storage {tmp_path}")  # resumes in shared storage


def test_driver_is_read_with_the_search_parser(tmp_path):
    """Issue 17: --name=X, --stor X and a path holding "--name" are what raytrack.tune reads."""
    settings = {"cluster_id": "99", "storage": str(tmp_path / "shared")}
    tune = "python -m raytrack.tune --search presets --address auto"

    def command(extra: str) -> str:
        return driver_command({**settings, "driver": f"{tune} {extra}"})

    assert command("--name=myexp") == f"{tune} --name=myexp --storage {tmp_path}/shared"
    assert command("--storage=/eos/x").endswith("--storage=/eos/x --name condor-99")
    assert command("--stor /eos/x --nam e1").endswith("--nam e1")  # argparse's abbreviations
    data = "--data /data/--name/x"
    assert command(data) == f"{tune} {data} --storage {tmp_path}/shared --name condor-99"
    (tmp_path / "eos" / "myexp").mkdir(parents=True)
    (tmp_path / "eos" / "myexp" / "experiment.json").write_text("{}")
    assert command(f"--storage={tmp_path}/eos --name=myexp").endswith("--name=myexp --resume")
    with pytest.raises(DriverError, match="invalid choice: 'bogus'"):
        command("--search bogus")
    with pytest.raises(DriverError, match="shell operators"):
        command("--name x | tee log")
    assert command("--name 'a | b'").endswith("--name 'a | b' --storage " + f"{tmp_path}/shared")
    # Operators before the search are the user's (the simulated allocation's driver has some).
    prefixed = driver_command({**settings, "driver": f"cd /x && echo go > log && {tune}"})
    assert (
        prefixed == f"cd /x && echo go > log && {tune} --storage {tmp_path}/shared --name condor-99"
    )


def test_a_driver_the_search_refuses_stops_the_head_before_ray_starts(tmp_path, monkeypatch):
    def no_ray(*args, **kwargs):
        raise AssertionError("Ray started for a driver that cannot run")

    monkeypatch.setattr(condor_bootstrap, "ray_start", no_ray)
    env = {
        "RAYTRACK_CLUSTER_DIR": str(tmp_path / "cluster"),
        "RAYTRACK_CLUSTER_ID": "7",
        "RAYTRACK_NODE_IP": "127.0.0.1",
        "RAYTRACK_MIN_WORKERS": "3",
        "RAYTRACK_DRIVER": "python -m raytrack.tune --max-epochs zero --address auto",
    }
    assert condor_bootstrap.run_head(env) == 2
    cluster = ClusterDir(tmp_path / "cluster")
    assert cluster.finished_normally() and not cluster.address.exists()  # the workers leave
