"""Re-exports :mod:`raytrack.data.manifest_field` (the field a dataset's manifest records) under
this module's name, for the importers that use it."""

from raytrack.data.manifest_field import (
    MARGIN_MM,
    analytic_field,
    profile_for,
    profile_from_manifest,
    z_range,
)

__all__ = ["MARGIN_MM", "analytic_field", "profile_for", "profile_from_manifest", "z_range"]
