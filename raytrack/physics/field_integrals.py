"""The field-integral physics bases in one import (docs/physics.md sections 2a and 2c).

The pieces live in their own modules; this one re-exports the names the models, the exports and
the benchmarks use:

* :mod:`raytrack.physics.axis_profile`: the on-axis profile, its fit from a field (the
  midplane's x dependence included) and its manifest record (:class:`AxisProfile`).
* :mod:`raytrack.physics.axis_lookup`: reading its tables in torch (:class:`AxisTables`).
* :mod:`raytrack.physics.transports`: the field integrals and the ``kick``, ``axial``,
  ``expansion`` and ``path`` transports.
* :mod:`raytrack.physics.path_nodes`: how many nodes the ``path`` base takes on a field.
"""

from __future__ import annotations

from raytrack.physics.axis_lookup import AxisTables, AxisValues, interval_rows
from raytrack.physics.axis_profile import (
    DEFAULT_SPACING_MM,
    SMOOTHING_GRIDS,
    X_DEGREE,
    X_SCALE_MM,
    AxisProfile,
    fit_x_dependence,
    smoothed_over,
    x_scale_of,
)
from raytrack.physics.path_nodes import (
    PATH_NODE_CHOICES,
    PATH_NODE_REFERENCE,
    PATH_NODE_TOLERANCE_MM,
    choose_path_nodes,
)
from raytrack.physics.transports import (
    MIN_UZ_SQUARED,
    PATH_NODES,
    PATH_PASSES,
    QUADRATURE_NODES,
    Ends,
    axial_transport,
    expansion_transport,
    field_integrals,
    gauss_legendre,
    integration_matrix,
    kick_transport,
    leg_ends,
    path_transport,
)

__all__ = [
    "DEFAULT_SPACING_MM",
    "MIN_UZ_SQUARED",
    "PATH_NODES",
    "PATH_NODE_CHOICES",
    "PATH_NODE_REFERENCE",
    "PATH_NODE_TOLERANCE_MM",
    "PATH_PASSES",
    "QUADRATURE_NODES",
    "SMOOTHING_GRIDS",
    "X_DEGREE",
    "X_SCALE_MM",
    "AxisProfile",
    "AxisTables",
    "AxisValues",
    "Ends",
    "axial_transport",
    "choose_path_nodes",
    "expansion_transport",
    "field_integrals",
    "fit_x_dependence",
    "gauss_legendre",
    "integration_matrix",
    "interval_rows",
    "kick_transport",
    "leg_ends",
    "path_transport",
    "smoothed_over",
    "x_scale_of",
]
