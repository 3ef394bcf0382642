"""ray_bootstrap.sh outside an HTCondor job."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from raytrack.condor.job import DEFAULT_DRIVER, OUTSIDE_CONDOR, missing_condor_environment

REPO = Path(__file__).resolve().parents[3]
BOOTSTRAP = REPO / "condor" / "ray_bootstrap.sh"


def test_run_by_hand_it_refuses_and_names_what_a_job_would_set(tmp_path):
    """Issue 25, item 12: run by hand, the head fell back to 1 CPU, the cluster "local" and the
    default driver (a presets search on 200,000 generated tracks) without a word."""
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path)}
    for role in ("head", "worker"):
        done = subprocess.run(
            [str(BOOTSTRAP), role], cwd=tmp_path, env=env, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        err = done.stderr.strip()
        assert len(err.splitlines()) == 1 and err.startswith(f"error: ray_bootstrap.sh {role} ")
        for name in ("_CONDOR_MACHINE_AD", "_CONDOR_JOB_AD", "RAYTRACK_CLUSTER_ID", OUTSIDE_CONDOR):
            assert name in err, name
        assert ("RAYTRACK_DRIVER" in err) == (role == "head")  # a worker runs no driver
    assert list(tmp_path.iterdir()) == []  # nothing started, nothing written


def test_a_jobs_environment_or_the_knob_lets_it_run(tmp_path):
    ad = tmp_path / "machine.ad"
    ad.write_text("Cpus = 4\nMemory = 2048\n")
    job = {"_CONDOR_MACHINE_AD": str(ad), "RAYTRACK_CLUSTER_ID": "7", "RAYTRACK_DRIVER": "true"}
    assert missing_condor_environment(job, "head") == []
    job_ad = tmp_path / "job.ad"
    job_ad.write_text("ClusterId = 1234\nRequestCpus = 2\n")
    assert missing_condor_environment({"_CONDOR_JOB_AD": str(job_ad)}, "worker") == []
    assert missing_condor_environment({OUTSIDE_CONDOR: "1"}, "head") == []
    missing = missing_condor_environment({OUTSIDE_CONDOR: "0"}, "head")
    assert len(missing) == 3 and DEFAULT_DRIVER in missing[2]
