"""Fixtures of the model tests: the classic dataset's splits, the default legs' field profile."""

from __future__ import annotations

import pytest

from raytrack.data import load, load_phase_space
from raytrack.physics import DipoleField


@pytest.fixture(scope="module")
def splits(classic_dataset):
    """(train, validation) as (inputs, targets) arrays, and the loaded splits."""
    s = load(classic_dataset)
    return (s.train.inputs(), s.train.targets()), (s.validation.inputs(), s.validation.targets()), s


@pytest.fixture(scope="module")
def dipole_axis():
    from raytrack.data.manifest_field import profile_for

    return profile_for(DipoleField(), load_phase_space("default"))
