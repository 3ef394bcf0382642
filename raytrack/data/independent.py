"""Fresh tracks for an independent accuracy measurement: never in the dataset, tighter truth.

A dataset's shard ``i`` draws its tracks from ``default_rng([seed, i])`` for ``i < shards``; the
shard indices from ``shards`` on are streams the dataset never used. Tracks drawn there from the
same phase space and propagated through the same field with a tolerance 100 times tighter are
tracks no model trained on the dataset has seen, with a truth independent of the one it learned.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from raytrack.data.manifest_field import analytic_field
from raytrack.data.phase_space import parse_phase_space
from raytrack.data.schema import COLUMNS, DatasetError
from raytrack.data.shards import DatasetSpec, generate_shard
from raytrack.physics import Tolerance

#: How much tighter than the dataset's integration the independent truth is.
TIGHTER = 100.0


def independent_tracks(manifest: dict[str, Any], count: int, where: str) -> np.ndarray:
    """(count, 11) float64 rows in COLUMNS order: fresh tracks of the dataset's phase space."""
    identity = manifest["identity"]
    field = analytic_field(manifest["field"]["description"])
    if field is None:
        raise DatasetError(
            f"{where}: the dataset's field is a map; independent tracks need the field itself "
            "(evaluate on a dataset generated for the purpose with --data instead)"
        )
    integrator = identity["integrator"]
    spec = DatasetSpec(
        samples=count * identity["shards"],
        shards=identity["shards"],
        seed=identity["seed"],
        phase_space=parse_phase_space(identity["phase_space"], where),
        field=field,
        tolerance=Tolerance(
            position=integrator["tolerance_mm"] / TIGHTER,
            slope=integrator["tolerance_slope"] / TIGHTER,
        ),
    )
    table, _ = generate_shard(spec, identity["shards"])  # the first index the dataset never used
    return np.stack([table.column(c).to_numpy() for c in COLUMNS], axis=1)
