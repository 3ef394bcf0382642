"""The on-axis field profile a dataset's manifest records (raytrack.data.manifest_field)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from raytrack.data import DatasetError, load
from raytrack.data.manifest_field import profile_from_manifest


def test_the_field_profile_comes_from_the_manifest_or_an_analytic_description(default_dataset):
    variable_legs = load(default_dataset)
    manifest = variable_legs.manifest
    recorded = profile_from_manifest(manifest, "m")
    older = copy.deepcopy(manifest)
    del older["field"]["axis_profile"]
    rebuilt = profile_from_manifest(older, "m")  # a dipole: rebuilt from its parameters
    assert np.allclose(rebuilt.f, recorded.f, rtol=0, atol=1e-9)
    older["field"]["description"] = {"type": "grid", "source": {"files": ["x.cdf"]}}
    with pytest.raises(DatasetError, match="generate the dataset again"):
        profile_from_manifest(older, "somewhere/manifest.json")
