"""python -m raytrack.generate: the command line, resume after kill -9, and the options it
refuses."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from raytrack import generate
from raytrack.data import load, load_phase_space
from raytrack.data.schema import file_sha256
from raytrack.data.shards import DatasetSpec, write_shard
from raytrack.files import TEMPORARY_SUFFIX
from raytrack.physics import DipoleField

from .commands import exit_code, refuse_to_start

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, address: str | None = None, **popen) -> subprocess.Popen:
    command = [sys.executable, "-m", "raytrack.generate", *args]
    if address:
        command += ["--address", address]
    return subprocess.Popen(
        command,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        **popen,
    )


def test_resume_after_kill_equals_an_uninterrupted_run(ray_cluster, tmp_path):
    out = tmp_path / "killed"
    args = [
        "--samples",
        "160000",
        "--shards",
        "16",
        "--seed",
        "3",
        "--workers",
        "1",
        "--out",
        str(out),
    ]
    process = run_cli(*args, address=ray_cluster)
    manifest_path = out / "manifest.json"
    deadline = time.time() + 120
    recorded = 0
    while time.time() < deadline and process.poll() is None:
        if manifest_path.exists():
            recorded = len(json.loads(manifest_path.read_text())["shards"])
            if recorded >= 2:
                break
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    manifest = json.loads(manifest_path.read_text())
    assert 2 <= len(manifest["shards"]) < 16 and not manifest["complete"], "the kill came too late"
    # A straggling temporary file from the killed run must not survive or count.
    (out / f".shard-00015-of-00016.parquet.junk_123{TEMPORARY_SUFFIX}").write_bytes(b"partial")

    resumed = run_cli(*args, address=ray_cluster)
    stdout, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr
    assert "resuming" in stdout
    final = json.loads(manifest_path.read_text())
    assert final["complete"] and len(final["shards"]) == 16
    assert not [p for p in out.iterdir() if p.name.endswith(TEMPORARY_SUFFIX)]
    spec = DatasetSpec(
        samples=160000,
        shards=16,
        seed=3,
        phase_space=load_phase_space("default"),
        field=DipoleField(),
    )
    assert final["dataset_id"] == spec.dataset_id
    (tmp_path / "reference").mkdir()
    for index in (0, 9, 15):  # shards made before the kill, in the resumed run, and last
        reference = write_shard(spec, index, tmp_path / "reference")
        assert final["shards"][spec.shard_name(index)]["sha256"] == reference["sha256"]
    for name, record in final["shards"].items():
        assert file_sha256(out / name) == record["sha256"]


def test_cli_generates_a_dataset(ray_cluster, tmp_path, capsys):
    # In this process, on the session's Ray (python -m raytrack.generate itself runs in the
    # resume test above).
    out = tmp_path / "cli"
    args = ["--samples", "300", "--shards", "3", "--phase-space", "classic", "--out", str(out)]
    returncode = generate.main([*args, "--address", ray_cluster])
    stdout, stderr = capsys.readouterr()
    assert returncode == 0, stderr
    assert "300 tracks in 3 shards" in stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["parameters"]["phase_space"] == "classic"
    assert len(load(out).train) == 100


@pytest.mark.parametrize(
    "args,message",
    [
        (["--phase-space", "nonsense"], "unknown phase space"),
        (["--field", "map.txt"], "--field-unit"),
        (["--shards", "0"], "--shards"),
        (["--device", "tpu"], "--device"),
    ],
)
def test_cli_bad_options_are_named(tmp_path, capsys, args, message):
    # In this process: the options are refused before Ray or any work starts.
    returncode = generate.main(["--samples", "10", "--out", str(tmp_path / "x"), *args])
    stderr = capsys.readouterr().err
    assert returncode == 1
    assert message in stderr
    assert not (tmp_path / "x" / "manifest.json").exists()


def test_generate_cli_option():
    from raytrack.generate import build_parser, spec_from_args

    args = build_parser().parse_args(["--samples", "10", "--out", "x", "--jacobian"])
    assert spec_from_args(args).jacobian is True
    args = build_parser().parse_args(["--samples", "10", "--out", "x"])
    assert spec_from_args(args).jacobian is False
    assert dataclasses.replace(spec_from_args(args), jacobian=True).dataset_id != (
        spec_from_args(args).dataset_id
    )


@pytest.mark.parametrize(
    "field",
    [[], ["--field", "default"], ["--field", *(f"field.v5r0.c{k}.down.cdf" for k in range(1, 5))]],
)
def test_field_unit_without_a_table_is_refused_in_one_line(tmp_path, capsys, field):
    out = tmp_path / "x"
    args = ["--samples", "10", "--out", str(out), "--field-unit", "T", *field]
    assert generate.main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --field-unit ") and err.count("\n") == 1
    assert not out.exists()


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


def test_generate_on_cuda_with_a_cpu_only_torch_is_named(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: False)
    out = tmp_path / "d"
    assert generate.main(["--samples", "30", "--out", str(out), "--device", "cuda"]) == 1
    assert "--device cuda: this torch" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("workers", ["-3", "0"])
def test_generate_refuses_workers_below_one(workers, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("raytrack.generate.generate_dataset", refuse_to_start)
    out = tmp_path / "d"
    assert exit_code(generate.main, ["--samples", "30", "--out", str(out), "--workers", workers])
    assert f"argument --workers: must be at least 1, got {workers}" in capsys.readouterr().err
    assert not out.exists()
