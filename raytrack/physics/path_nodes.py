"""How many quadrature nodes the ``path`` base takes on a field (docs/physics.md section 2c).

The count a field needs depends on how sharp its fringes are: training picks it from the
dataset's own tracks with :func:`choose_path_nodes`, and the model keeps it. The candidates
and the tolerance, and what they give on the fields this project tried: docs/physics.md
section 5.
"""

from __future__ import annotations

import torch

from raytrack.physics.axis_lookup import AxisTables
from raytrack.physics.transports import (
    PATH_PASSES,
    gauss_legendre,
    integration_matrix,
    path_transport,
)

#: The candidates, the reference they are compared with, and the mean position difference (mm)
#: to it that the chosen count must stay within.
PATH_NODE_CHOICES = (8, 12, 16, 20, 24)
PATH_NODE_REFERENCE = 32
PATH_NODE_TOLERANCE_MM = 0.02


def choose_path_nodes(
    tables: AxisTables, inputs: torch.Tensor, passes: int = PATH_PASSES, sample: int = 10_000
) -> int:
    """The fewest of :data:`PATH_NODE_CHOICES` nodes whose :func:`path_transport` of (up to
    ``sample`` of) the (N, 7) ``inputs`` is within :data:`PATH_NODE_TOLERANCE_MM` mean position
    difference of :data:`PATH_NODE_REFERENCE` nodes' (the last choice when none is)."""
    inputs = inputs[:sample].double()

    def positions(count: int) -> torch.Tensor:
        nodes, weights = gauss_legendre(count)
        matrix = integration_matrix(nodes)
        return path_transport(inputs, tables, nodes, weights, matrix, passes=passes)[:, :2]

    reference = positions(PATH_NODE_REFERENCE)
    for count in PATH_NODE_CHOICES:
        difference = torch.linalg.vector_norm(positions(count) - reference, dim=1)
        if float(difference.mean()) <= PATH_NODE_TOLERANCE_MM:
            return count
    return PATH_NODE_CHOICES[-1]
