"""Dataset generation on Ray Data: determinism, resume after kill -9, damage, mixing, loader."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from raytrack.data import DatasetError, load, load_phase_space
from raytrack.data.pipeline import generate_dataset
from raytrack.data.schema import COLUMNS, file_sha256
from raytrack.data.shards import DatasetSpec, write_shard
from raytrack.files import TEMPORARY_SUFFIX
from raytrack.physics import DipoleField, TrackStatus, propagate

REPO = Path(__file__).resolve().parents[1]


def small_spec(samples=900, shards=3, seed=7, phase_space="default") -> DatasetSpec:
    return DatasetSpec(
        samples=samples,
        shards=shards,
        seed=seed,
        phase_space=load_phase_space(phase_space),
        field=DipoleField(),
    )


def shard_bytes(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.glob("shard-*.parquet"))}


def quiet(_message: str) -> None:
    pass


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


def test_same_bytes_whatever_the_number_of_workers(ray_cluster, tmp_path):
    spec = small_spec()
    one = generate_dataset(spec, tmp_path / "one", workers=1, log=quiet)
    two = generate_dataset(spec, tmp_path / "two", workers=2, log=quiet)
    assert one["complete"] and two["complete"]
    assert one["shards"] == two["shards"]
    assert shard_bytes(tmp_path / "one") == shard_bytes(tmp_path / "two")
    # And outside Ray altogether, one shard at a time in this process.
    (tmp_path / "direct").mkdir()
    direct = [write_shard(spec, i, tmp_path / "direct")["sha256"] for i in range(spec.shards)]
    assert direct == [one["shards"][spec.shard_name(i)]["sha256"] for i in range(spec.shards)]


def test_content_is_the_propagated_tracks(ray_cluster, tmp_path):
    spec = small_spec(phase_space="classic")
    manifest = generate_dataset(spec, tmp_path / "d", log=quiet)
    table = pq.read_table(tmp_path / "d" / spec.shard_name(0))
    assert table.column_names == list(COLUMNS)
    assert all(str(t) == "double" for t in table.schema.types)
    data = {name: table.column(name).to_numpy() for name in COLUMNS}
    states = np.stack([data[k] for k in ("x", "y", "tx", "ty", "qop")], axis=1)
    end, status = propagate(
        states, data["z_start"], data["z_end"], DipoleField(), return_status=True
    )
    assert (status == TrackStatus.OK).all()
    # Equal to rounding, not bitwise: a track's last bits depend on where it falls among the
    # vector lanes of its batch (README, "Reproducible"); 1e-9 mm is far below the integrator's
    # 1 micrometre accuracy and far above rounding.
    stored = np.stack([data[k] for k in ("x_end", "y_end", "tx_end", "ty_end")], axis=1)
    np.testing.assert_allclose(end[:, :2], stored[:, :2], rtol=0, atol=1e-9)
    np.testing.assert_allclose(end[:, 2:4], stored[:, 2:4], rtol=0, atol=1e-12)
    assert sum(r["rows"] for r in manifest["shards"].values()) == spec.samples
    assert manifest["parameters"] == {} and manifest["field"]["description"]["type"] == "dipole"
    assert manifest["phase_space"]["name"] == "classic"


def test_dropped_tracks_are_counted_by_reason(tmp_path):
    space = load_phase_space("default")
    wide = dict(
        space.source, x={"distribution": "uniform", "low": 4000.0, "high": 4990.0}, name="edge"
    )
    from raytrack.data.phase_space import parse_phase_space

    spec = DatasetSpec(
        samples=200, shards=1, seed=1, phase_space=parse_phase_space(wide), field=DipoleField()
    )
    (tmp_path / "d").mkdir()
    record = write_shard(spec, 0, tmp_path / "d")
    assert record["rows"] == 200
    assert record["dropped"]["LEFT_VOLUME"] > 10


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


def test_a_damaged_shard_is_named_and_then_regenerated(ray_cluster, tmp_path):
    spec = small_spec()
    out = tmp_path / "d"
    generate_dataset(spec, out, log=quiet)
    victim = out / spec.shard_name(1)
    original = victim.read_bytes()
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0xFF
    victim.write_bytes(bytes(damaged))
    with pytest.raises(DatasetError, match=str(victim)):
        load(out)
    messages: list[str] = []
    generate_dataset(spec, out, log=messages.append)
    assert any(str(victim) in m and "checksum" in m for m in messages)
    assert victim.read_bytes() == original
    load(out)


def test_a_shard_with_another_schema_is_refused_by_the_loader(ray_cluster, tmp_path):
    spec = small_spec()
    out = tmp_path / "d"
    generate_dataset(spec, out, log=quiet)
    victim = out / spec.shard_name(2)
    table = pq.read_table(victim).drop_columns(["ty_end"])
    pq.write_table(table, victim)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["shards"][victim.name]["sha256"] = file_sha256(victim)  # even with a fixed checksum
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match=rf"{victim}.*schema"):
        load(out)


def test_refuses_to_mix_datasets(ray_cluster, tmp_path):
    out = tmp_path / "d"
    generate_dataset(small_spec(seed=1), out, log=quiet)
    before = shard_bytes(out)
    with pytest.raises(DatasetError, match="different dataset.*seed"):
        generate_dataset(small_spec(seed=2), out, log=quiet)
    with pytest.raises(DatasetError, match="different dataset.*phase_space"):
        generate_dataset(small_spec(seed=1, phase_space="classic"), out, log=quiet)
    assert shard_bytes(out) == before
    stranger = tmp_path / "other"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not empty"):
        generate_dataset(small_spec(), stranger, log=quiet)


def test_loader_splits_by_shard(ray_cluster, tmp_path):
    spec = small_spec(samples=1000, shards=10)
    generate_dataset(spec, tmp_path / "d", log=quiet)
    splits = load(tmp_path / "d")
    assert [len(s.files) for s in (splits.train, splits.validation, splits.test)] == [8, 1, 1]
    assert not set(splits.train.files) & (set(splits.validation.files) | set(splits.test.files))
    assert len(splits.train) + len(splits.validation) + len(splits.test) == 1000
    assert splits.train.inputs().shape == (len(splits.train), 7)
    assert splits.test.targets().shape == (len(splits.test), 4)
    keys = {tuple(row) for row in splits.train.inputs()}
    assert not any(tuple(row) in keys for row in splits.test.inputs())
    assert splits.dataset_id == spec.dataset_id


def test_loader_refuses_incomplete_or_tiny_datasets(ray_cluster, tmp_path):
    generate_dataset(small_spec(samples=20, shards=2), tmp_path / "two", log=quiet)
    with pytest.raises(DatasetError, match="at least 3"):
        load(tmp_path / "two")
    manifest_path = tmp_path / "two" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["complete"] = False
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match="incomplete"):
        load(tmp_path / "two")
    with pytest.raises(DatasetError, match="not found"):
        load(tmp_path / "nowhere")


def test_cli_generates_a_dataset(ray_cluster, tmp_path):
    out = tmp_path / "cli"
    process = run_cli(
        "--samples",
        "300",
        "--shards",
        "3",
        "--phase-space",
        "classic",
        "--out",
        str(out),
        address=ray_cluster,
    )
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
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
def test_cli_bad_options_are_named(tmp_path, args, message):
    process = run_cli("--samples", "10", "--out", str(tmp_path / "x"), *args)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1
    assert message in stderr
    assert not (tmp_path / "x" / "manifest.json").exists()
