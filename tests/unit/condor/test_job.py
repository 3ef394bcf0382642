"""What an HTCondor job was given: the slot, the ports, Ray's temp dir, the poll interval, the
cluster directory's token, and an environment that is not a job's."""

from __future__ import annotations

from pathlib import Path

import pytest

from raytrack.condor.job import (
    POLL_SECONDS,
    ClusterDir,
    plan_ports,
    poll_seconds,
    short_temp_dir,
    slot_from_env,
)

CLUSTER_ID = "4242"


def test_slot_comes_from_the_job_ads_not_the_host(tmp_path):
    machine = tmp_path / "machine.ad"
    machine.write_text('Cpus = 3\nMemory = 2048\nGPUs = 2\nName = "slot1@node"\n')
    job = tmp_path / "job.ad"
    job.write_text("RequestCpus = 8\nRequestMemory = 9999\n")
    env = {
        "_CONDOR_MACHINE_AD": str(machine),
        "_CONDOR_JOB_AD": str(job),
        "_CONDOR_AssignedGPUs": "GPU-b156e653,GPU-7a1c2f00",
        "_CONDOR_SCRATCH_DIR": "/s",
    }
    slot = slot_from_env(env)
    assert (slot.cpus, slot.memory_bytes, slot.gpus) == (3, 2048 * 1024**2, 2)
    assert slot_from_env({**env, "_CONDOR_AssignedGPUs": ""}).gpus == 0
    assert slot_from_env({"_CONDOR_JOB_AD": str(job)}).cpus == 8


def test_ports_come_from_the_site_range():
    ports = plan_ports({"_CONDOR_LOWPORT": "20000", "_CONDOR_HIGHPORT": "20199"}, head=True)
    assert ports["port"] == 20000
    assert all(20000 <= p <= 20199 for p in ports.values())
    assert len(set(ports.values())) == len(ports)
    with pytest.raises(SystemExit, match="too narrow"):
        plan_ports({"_CONDOR_LOWPORT": "20000", "_CONDOR_HIGHPORT": "20010"}, head=True)
    free = plan_ports({}, head=False)
    assert "port" not in free and len(set(free.values())) == len(free)


def test_temp_dir_is_short_enough_for_unix_sockets(tmp_path):
    deep = tmp_path / ("x" * 60)
    deep.mkdir()
    slot = slot_from_env({"_CONDOR_SCRATCH_DIR": str(deep)})
    temp = short_temp_dir(slot, CLUSTER_ID, "worker")
    assert len(str(temp)) + 70 < 107
    assert short_temp_dir(slot_from_env({"_CONDOR_SCRATCH_DIR": "/tmp/s"}), "1", "head") == Path(
        "/tmp/s/ray"
    )


def test_the_poll_interval_is_a_knob():
    assert poll_seconds({}) == POLL_SECONDS == 5.0
    assert poll_seconds({"RAYTRACK_POLL_SECONDS": "0.5"}) == 0.5
    for bad in ("0", "-1", "soon", "nan", "inf"):
        with pytest.raises(SystemExit, match="RAYTRACK_POLL_SECONDS"):
            poll_seconds({"RAYTRACK_POLL_SECONDS": bad})


def test_token_file_is_private(tmp_path):
    cluster = ClusterDir(tmp_path / "c")
    cluster.create_token()
    assert cluster.token.stat().st_mode & 0o777 == 0o600
    assert len(cluster.token.read_text()) == 64
