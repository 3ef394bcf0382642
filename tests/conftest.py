"""Shared fixtures: one local Ray instance for the whole test session, small datasets, and
tracks on parabolas for the report tests."""

from __future__ import annotations

import os

import numpy as np
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


class ParabolicTracks:
    """Tracks of known end states without an integrator: each on a parabola (a constant
    curvature in x and in y), so positions and slopes anywhere along the leg are exact."""

    @staticmethod
    def starts(rng, n: int, half_x: float, half_y: float) -> np.ndarray:
        """(n, 7) inputs: x, y within +-half_x, +-half_y mm, slopes and q/p of the default phase
        space, z from 0-4000 mm to 4000-14000 mm."""
        return np.column_stack([
            rng.uniform(-half_x, half_x, n), rng.uniform(-half_y, half_y, n),
            rng.uniform(-0.3, 0.3, n), rng.uniform(-0.25, 0.25, n),
            rng.choice([-1, 1], n) / rng.uniform(2e3, 1e5, n),
            rng.uniform(0, 4000, n), rng.uniform(4000, 14000, n),
        ])  # fmt: skip

    @staticmethod
    def ends(inputs: np.ndarray, bend: np.ndarray) -> np.ndarray:
        """(n, 4) end states of the inputs' tracks with curvatures ``bend`` (n, 2), 1/mm."""
        dz = (inputs[:, 6] - inputs[:, 5])[:, None]
        positions = inputs[:, :2] + inputs[:, 2:4] * dz + bend * dz**2 / 2
        return np.column_stack([positions, inputs[:, 2:4] + bend * dz])


@pytest.fixture
def parabolic_tracks() -> type[ParabolicTracks]:
    return ParabolicTracks
