"""How many nodes the path base takes on a field (raytrack/physics/path_nodes.py)."""

from __future__ import annotations

import torch

from raytrack.physics import DipoleField
from raytrack.physics.path_nodes import choose_path_nodes
from raytrack.physics.synthetic_map import WindowFrameField

from .tracks import path_tables, random_tracks


def test_path_nodes_follow_the_field():
    inputs = torch.from_numpy(random_tracks(2000, seed=8))
    assert choose_path_nodes(path_tables(DipoleField()), inputs) == 8
    # The window frame's fringes are sharper than the Gaussian dipole's: more nodes.
    assert choose_path_nodes(path_tables(WindowFrameField()), inputs) >= 10
