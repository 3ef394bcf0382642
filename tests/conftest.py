"""Shared fixtures: one local Ray instance for the whole test session, small datasets."""

from __future__ import annotations

import os

import pytest
import torch

# Keep tests predictable on 2-core CI machines.
torch.set_num_threads(1)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="session")
def ray_cluster():
    """A local 2-CPU Ray instance shared by every test that needs Ray; yields its address."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
