"""Shared fixtures: one local Ray instance for the whole test session, small datasets."""

from __future__ import annotations

import os

import pytest
import torch

# Keep tests predictable on 2-core CI machines.
torch.set_num_threads(1)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Ray starts its worker processes at nice 15, so on a machine busy with other work they get a
# small share of the CPU and the tests that run Ray jobs slowed down 10-20 fold (generate's
# kill-and-resume: 9 s idle, 167 s with both cores busy; 18 s at nice 0). The tests' own
# workers, and those of the CLIs and `ray start` nodes they spawn, run at normal priority.
os.environ.setdefault("RAY_worker_niceness", "0")


@pytest.fixture(scope="session")
def ray_cluster():
    """A local 2-CPU Ray instance shared by every test that needs Ray; yields its address."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _dataset(tmp_path_factory, phase_space: str, samples: int, seed: int):
    from raytrack.data import load_phase_space
    from raytrack.data.pipeline import generate_dataset
    from raytrack.data.shards import DatasetSpec
    from raytrack.physics import DipoleField

    out = tmp_path_factory.mktemp(phase_space)
    spec = DatasetSpec(
        samples=samples,
        shards=5,
        seed=seed,
        phase_space=load_phase_space(phase_space),
        field=DipoleField(),
    )
    generate_dataset(spec, out, log=lambda _: None)
    return out


@pytest.fixture(scope="session")
def classic_dataset(ray_cluster, tmp_path_factory):
    """A tiny classic-leg dataset directory (4000 tracks, 5 shards) shared by the session."""
    return _dataset(tmp_path_factory, "classic", 4000, seed=11)


@pytest.fixture(scope="session")
def default_dataset(ray_cluster, tmp_path_factory):
    """A tiny default-phase-space dataset (variable legs; 6000 tracks, 5 shards)."""
    return _dataset(tmp_path_factory, "default", 6000, seed=12)
