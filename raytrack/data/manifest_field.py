"""The field a dataset's manifest records (``field``): which profile a dataset gets, and
reading it back.

``python -m raytrack.generate`` tabulates ``By(0, 0, z)`` of its field over the phase space's z
range (plus a margin) and records it in the manifest (``field.axis_profile``), so a model
trained on the dataset carries the tables of exactly that field, whatever the field came from
(the default dipole or a map file that is not at hand at training time). A manifest without
the record gets the profile rebuilt from the field description when that is an analytic field
(dipole, uniform); for a map, the dataset must be generated again.

The profile itself, its fit and the record's layout belong to
:class:`raytrack.physics.axis_profile.AxisProfile`; this module decides its z range and finds it
in a manifest.
"""

from __future__ import annotations

from typing import Any

from raytrack.data.phase_space import PhaseSpace, parse_phase_space
from raytrack.data.schema import DatasetError
from raytrack.physics import DipoleField, Field, UniformField
from raytrack.physics.axis_profile import AxisProfile

#: Tables reach this far beyond the phase space's z range (mm): a model used a little outside
#: its training legs still reads the right field.
MARGIN_MM = 500.0


def z_range(phase_space: PhaseSpace) -> tuple[float, float]:
    """The z interval every leg of ``phase_space`` lies in, mm."""
    if phase_space.fixed_leg:
        ends = (phase_space.z_start, phase_space.z_end)
        return min(ends), max(ends)
    return phase_space.z_min, phase_space.z_max


def profile_for(field: Field, phase_space: PhaseSpace) -> AxisProfile:
    """The profile a dataset of ``phase_space`` through ``field`` records: over its z range
    and :data:`MARGIN_MM` beyond."""
    low, high = z_range(phase_space)
    return AxisProfile.from_field(field, low - MARGIN_MM, high + MARGIN_MM)


def profile_from_manifest(manifest: dict[str, Any], where: str) -> AxisProfile:
    """The recorded profile, or one rebuilt from an analytic field's description."""
    record = manifest.get("field", {})
    if "axis_profile" in record:
        try:
            return AxisProfile.from_dict(record["axis_profile"])
        except (KeyError, TypeError, ValueError) as err:
            raise DatasetError(f"{where}: field.axis_profile is damaged ({err})") from None
    field = analytic_field(record.get("description", {}))
    if field is None:
        raise DatasetError(
            f"{where}: the manifest has no on-axis field profile (made by an older raytrack) "
            "and its field is a map: generate the dataset again to train physics-based models"
        )
    definition = manifest.get("phase_space", {}).get("definition", {})
    return profile_for(field, parse_phase_space(definition, where))


def analytic_field(description: dict[str, Any]) -> Field | None:
    """The field a manifest's description names, when it is analytic (not a map)."""
    kind = description.get("type")
    if kind == "dipole":
        return DipoleField(
            description["b0_tesla"],
            description["z0_mm"],
            description["sigma_mm"],
            description["polarity"],
        )
    if kind == "uniform":
        return UniformField(*description["b_tesla"])
    return None
