"""A dataset with the Jacobian columns, generated once for the tests that read it."""

from __future__ import annotations

import pytest

from raytrack.data.pipeline import generate_dataset

from .datasets import quiet, spec_of


@pytest.fixture(scope="session")
def jacobian_dataset(ray_cluster, tmp_path_factory):
    """1500 default-phase-space tracks with the Jacobian, 5 shards (300 test tracks)."""
    out = tmp_path_factory.mktemp("jacobian")
    generate_dataset(spec_of(1500, 5, jacobian=True), out, log=quiet)
    return out
