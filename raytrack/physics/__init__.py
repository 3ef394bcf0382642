"""The physics: units, magnetic field models and Runge-Kutta propagation of track states, and
the pieces the models' physics bases stand on: the on-axis field profile
(:mod:`~raytrack.physics.axis_profile`), its torch look-ups (:mod:`~raytrack.physics.axis_lookup`),
the transports (:mod:`~raytrack.physics.transports`) and the ``path`` base's node count
(:mod:`~raytrack.physics.path_nodes`).

>>> from raytrack.physics import propagate, DipoleField, UniformField, GridField
"""

from raytrack.physics.fields import DipoleField, Field, GridField, UniformField, field_from_spec
from raytrack.physics.propagate import Limits, Tolerance, TrackStatus, propagate
from raytrack.physics.units import KAPPA

__all__ = [
    "KAPPA",
    "DipoleField",
    "Field",
    "GridField",
    "Limits",
    "Tolerance",
    "TrackStatus",
    "UniformField",
    "field_from_spec",
    "propagate",
]
