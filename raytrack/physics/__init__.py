"""The physics: units, magnetic field models and Runge-Kutta propagation of track states, and
the on-axis field tables and transports the models' physics bases stand on
(:mod:`raytrack.physics.field_integrals` names the modules).

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
