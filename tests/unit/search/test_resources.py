"""What a search's trials ask of Ray: the notice at start, a trial's device."""

from __future__ import annotations

import pytest

from raytrack.search.resources import describe_resources

from .searches import options


def test_resource_settings(ray_cluster, tmp_path):
    cpu = options(tmp_path, tmp_path, cpus_per_trial=1)
    assert cpu.device == "cpu"
    assert "up to 2 trials at once" in describe_resources(cpu)
    shared_gpu = options(tmp_path, tmp_path, gpus_per_trial=0.25, cpus_per_trial=0.5)
    assert shared_gpu.device == "cuda"
    assert "0.25 GPU" in describe_resources(shared_gpu)
    with pytest.raises(ValueError, match="--gpus-per-trial"):
        options(tmp_path, tmp_path, gpus_per_trial=-1)
    with pytest.raises(ValueError, match="--objective"):
        options(tmp_path, tmp_path, objective="p50")
