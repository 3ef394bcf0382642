"""One shard: sample start states, propagate them, keep the good tracks, write Parquet.

A shard's content depends only on (seed, shard index, phase space, field, device kind, and
whether it stores the Jacobian): its
random stream is ``numpy.random.default_rng([seed, index])`` and nothing about the run (worker
count, order of completion, machine size) enters it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from raytrack.data.phase_space import PhaseSpace
from raytrack.data.schema import (
    FORMAT_VERSION,
    JACOBIAN_COLUMNS,
    canonical_hash,
    dataset_columns,
    dataset_schema,
    file_sha256,
    shard_name,
)
from raytrack.files import replacing
from raytrack.physics import Field, Tolerance, TrackStatus, propagate

# Give up on a shard when fewer than 1 track in this many survives: the phase space is wrong.
MIN_SURVIVAL = 1 / 100


@dataclass(frozen=True)
class DatasetSpec:
    """Everything that determines a dataset's content."""

    samples: int
    shards: int
    seed: int
    phase_space: PhaseSpace
    field: Field
    device: str = "cpu"
    tolerance: Tolerance = field(default_factory=Tolerance)
    #: store the transport Jacobian as the 20 columns JACOBIAN_COLUMNS (``--jacobian``)
    jacobian: bool = False

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise ValueError(f"--samples must be at least 1, got {self.samples}")
        if not 1 <= self.shards <= self.samples:
            raise ValueError(
                f"--shards must be between 1 and --samples ({self.samples}), got {self.shards}"
            )
        if self.seed < 0:
            raise ValueError(f"--seed must be a non-negative integer, got {self.seed}")

    def identity(self) -> dict[str, Any]:
        """The plain-data description whose hash names the dataset (manifest 'dataset_id').

        A dataset with the Jacobian columns has ``"jacobian": true`` in it (so another id: the
        two never mix on resume); a plain one has no such key, so its id does not depend on
        whether this raytrack knows the option.
        """
        identity = {
            "format_version": FORMAT_VERSION,
            "samples": self.samples,
            "shards": self.shards,
            "seed": self.seed,
            "phase_space": self.phase_space.source,
            "field": self.field.describe(),
            # CPU and GPU agree to rounding, not to the last bit: keep them apart.
            "device": torch.device(self.device).type,
            "integrator": {
                "method": "dopri5",
                "tolerance_mm": self.tolerance.position,
                "tolerance_slope": self.tolerance.slope,
            },
        }
        if self.jacobian:
            identity["jacobian"] = True
        return identity

    @property
    def dataset_id(self) -> str:
        return canonical_hash(self.identity())[:20]

    def shard_rows(self, index: int) -> int:
        base, extra = divmod(self.samples, self.shards)
        return base + (1 if index < extra else 0)

    def shard_name(self, index: int) -> str:
        return shard_name(index, self.shards)


def generate_shard(spec: DatasetSpec, index: int) -> tuple[pa.Table, dict[str, int]]:
    """The tracks of shard ``index`` and how many were dropped, by reason.

    Tracks are drawn in batches and kept in draw order until the shard is full; a dropped
    track counts when it comes before the last kept one, so the counts are deterministic too.
    """
    rng = np.random.default_rng([spec.seed, index])
    need = spec.shard_rows(index)
    columns = dataset_columns(spec.jacobian)
    kept: list[dict[str, np.ndarray]] = []
    dropped: Counter[str] = Counter()
    drawn = 0
    while need > 0:
        batch = spec.phase_space.sample(rng, need + need // 8 + 16)
        end, status, jac = _propagate_batch(spec, batch)
        good_positions = np.flatnonzero(status == TrackStatus.OK)[:need]
        considered = good_positions[-1] + 1 if len(good_positions) == need else len(status)
        counts = np.bincount(status[:considered].astype(np.int64), minlength=len(TrackStatus))
        dropped.update({TrackStatus(c).name: int(n) for c, n in enumerate(counts) if c and n})
        kept.append(_rows(batch, end, jac, good_positions))
        need -= len(good_positions)
        drawn += considered
        if need > 0 and drawn * MIN_SURVIVAL > spec.shard_rows(index) - need + 1:
            raise ValueError(
                f"phase space {spec.phase_space.name!r}: {dict(dropped)} of {drawn} tracks dropped "
                "(left the field volume or the slope limits); check its ranges"
            )
    table = {name: np.concatenate([part[name] for part in kept]) for name in columns}
    return (
        pa.Table.from_pydict(table, schema=dataset_schema(spec.jacobian)),
        dict(sorted(dropped.items())),
    )


def _propagate_batch(
    spec: DatasetSpec, batch: dict[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(end states, status, Jacobians or None) of a batch. With the Jacobian, ``propagate`` caps
    its steps lower (:data:`raytrack.physics.propagate.JACOBIAN_MAX_STEP_MM`), so ``end`` agrees
    with a plain dataset's to the integrator's accuracy (1 micrometre), not bit for bit."""
    states = np.stack([batch[k] for k in ("x", "y", "tx", "ty", "qop")], axis=1)
    device = torch.device(spec.device)
    arrays = (states, batch["z_start"], batch["z_end"])
    if device.type != "cpu":
        arrays = tuple(torch.from_numpy(a).to(device) for a in arrays)
    result = propagate(
        *arrays,
        spec.field,
        tolerance=spec.tolerance,
        return_status=True,
        return_jacobian=spec.jacobian,
    )
    if device.type != "cpu":
        result = tuple(r.cpu().numpy() for r in result)
    end, status, jac = result if spec.jacobian else (*result, None)
    return end, status, jac


def _rows(
    batch: dict[str, np.ndarray], end: np.ndarray, jac: np.ndarray | None, keep: np.ndarray
) -> dict[str, np.ndarray]:
    rows = {name: batch[name][keep] for name in ("x", "y", "tx", "ty", "qop", "z_start", "z_end")}
    for k, name in enumerate(("x_end", "y_end", "tx_end", "ty_end")):
        rows[name] = end[keep, k]
    if jac is not None:  # the four stored rows of (N, 5, 5), row-major: J_x_x, J_x_y, ...
        flat = jac[keep, :4, :].reshape(len(keep), len(JACOBIAN_COLUMNS))
        for k, name in enumerate(JACOBIAN_COLUMNS):
            rows[name] = flat[:, k]
    return rows


def write_shard(spec: DatasetSpec, index: int, directory: Path) -> dict[str, Any]:
    """Generate shard ``index`` into ``directory`` (temporary name, then rename).

    Returns the shard's manifest record: file name, rows, SHA-256 and drop counts.
    """
    torch.set_num_threads(1)  # one task per core; also keeps results bit-identical
    table, dropped = generate_shard(spec, index)
    table = table.replace_schema_metadata(
        {"raytrack.dataset_id": spec.dataset_id, "raytrack.shard": str(index)}
    )
    final = directory / spec.shard_name(index)
    with replacing(final) as tmp:
        pq.write_table(table, tmp, compression="zstd")
        checksum = file_sha256(tmp)
    return {
        "index": index,
        "file": final.name,
        "rows": table.num_rows,
        "sha256": checksum,
        "dropped": dropped,
        # Bitwise reproducibility holds on one kind of machine only (docs/generate.md,
        # "Reproducible and resumable").
        "built_with": {
            "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        },
    }
