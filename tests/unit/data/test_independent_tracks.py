"""Fresh tracks for the independent accuracy measurement (raytrack.data.independent)."""

from __future__ import annotations

import numpy as np

from raytrack.data import load
from raytrack.data.independent import independent_tracks


def test_independent_tracks_are_new_and_truer(default_dataset):
    variable_legs = load(default_dataset)
    rows = independent_tracks(variable_legs.manifest, 300, "m")
    assert rows.shape == (300, 11)
    seen = np.concatenate([variable_legs.train.inputs(), variable_legs.test.inputs()]).astype(
        np.float32
    )
    assert not np.isin(rows[:, 0].astype(np.float32), seen[:, 0]).any()
