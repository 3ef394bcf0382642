"""Load a generated dataset as train / validation / test splits, checked against its manifest.

Splits are made of whole shards (never the same track in two splits): the first shards train,
the next validate, the last test. Every shard is checked against the manifest (checksum,
schema, row count) before use; a damaged one raises :class:`DatasetError` naming the file.

Memory: each split is one (N, 11) array, float32 by default (44 bytes a track), filled shard by
shard, so a load never holds more than one shard in float64. Float32 keeps positions to 0.25
micrometre at 4 m, far below what the models resolve; ``dtype=np.float64`` loads exact values.

A float32 load also keeps each split's ``bending``, the end state minus the straight line from
the start, taken in float64 before rounding (16 bytes a track): a training computes its targets
from it, because the float32 rounding of positions (a few 1e-5 mm) is what the target scaling
divides by q/p and a short leg's length, and would otherwise drown the residuals it learns
(docs/models.md, "Target precision").

A dataset generated with ``--jacobian`` also holds the transport Jacobian; ``jacobian=True``
loads it into each split's ``jacobians``, one (N, 4, 5) array of the same ``dtype`` (80 more
bytes a track in float32: enough for a training loss; an evaluation loads float64). Without it
those columns are not read, and a dataset without them loads as it always did.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raytrack.data.manifest_field import profile_from_manifest
from raytrack.data.schema import (
    COLUMNS,
    INPUT_COLUMNS,
    JACOBIAN_COLUMNS,
    JACOBIAN_INPUTS,
    JACOBIAN_OUTPUTS,
    MANIFEST_NAME,
    TARGET_COLUMNS,
    DatasetError,
    dataset_schema,
    file_sha256,
    has_jacobian,
    read_manifest,
)
from raytrack.physics.axis_profile import AxisProfile
from raytrack.physics.transports import straight_line


@dataclass
class Split:
    """One split: its tracks as one (N, 11) array in COLUMNS order, and its shard files.

    ``jacobians`` (loaded with ``load(..., jacobian=True)``, else None): (N, 4, 5),
    ``jacobians[i, a, b] = d [x, y, tx, ty]_end[a] / d [x, y, tx, ty, qop]_start[b]`` (units:
    mm/mm, mm, mm MeV for positions; 1/mm, 1, MeV for slopes).
    """

    name: str
    files: list[str]
    rows: np.ndarray
    jacobians: np.ndarray | None = None
    #: (N, 4) float32: end state minus the straight line from the start, from the float64
    #: columns; None when the rows are float64 (exact already).
    bending: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def inputs(self) -> np.ndarray:
        """(N, 7) ``[x, y, tx, ty, qop, z_start, z_end]``: mm, 1, 1, 1/MeV, mm, mm (a view)."""
        return self.rows[:, : len(INPUT_COLUMNS)]

    def targets(self) -> np.ndarray:
        """(N, 4) ``[x_end, y_end, tx_end, ty_end]``: mm, 1, 1 (a view)."""
        return self.rows[:, len(INPUT_COLUMNS) :]


@dataclass
class DatasetSplits:
    train: Split
    validation: Split
    test: Split
    manifest: dict[str, Any] = field(repr=False)
    root: str = ""

    @property
    def dataset_id(self) -> str:
        return self.manifest["dataset_id"]

    @property
    def manifest_path(self) -> Path:
        return Path(self.root) / MANIFEST_NAME

    def axis_profile(self) -> AxisProfile:
        """The on-axis field profile of the field the dataset was made with."""
        return profile_from_manifest(self.manifest, str(self.manifest_path))

    @property
    def has_jacobian(self) -> bool:
        """Whether the dataset holds the Jacobian columns (generated with ``--jacobian``)."""
        return has_jacobian(self.manifest)


def load(
    directory: str | Path,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    dtype: type = np.float32,
    splits: tuple[str, ...] = ("train", "validation", "test"),
    jacobian: bool = False,
) -> DatasetSplits:
    """Load ``directory`` (made by ``python -m raytrack.generate``) split by shard.

    ``fractions`` are the train/validation/test shares of the shards; validation and test get
    at least one shard each, so a dataset needs at least 3 shards. Splits not named in
    ``splits`` are left empty (an evaluation reads only the test split). ``jacobian``: also
    load each split's transport Jacobians (``Split.jacobians``, (N, 4, 5) in ``dtype``); a
    :class:`DatasetError` when the dataset was generated without ``--jacobian``.
    """
    root = Path(directory)
    manifest = read_manifest(root)
    if manifest is None:
        raise DatasetError(f"{root / MANIFEST_NAME}: not found; is {root} a raytrack dataset?")
    if jacobian and not has_jacobian(manifest):
        raise DatasetError(
            f"{root}: this dataset has no Jacobian columns (J_x_x ... J_ty_qop); generate it "
            "with python -m raytrack.generate --jacobian to load them (load(..., jacobian=True))"
        )
    if not manifest.get("complete"):
        count = manifest["identity"]["shards"]
        raise DatasetError(
            f"{root}: incomplete dataset ({len(manifest['shards'])} of {count} shards); "
            "run the same generate command again to finish it"
        )
    names = sorted(manifest["shards"], key=lambda name: manifest["shards"][name]["index"])
    n_train, n_val, n_test = _split_counts(len(names), fractions, root)
    groups = {
        "train": names[:n_train],
        "validation": names[n_train : n_train + n_val],
        "test": names[n_train + n_val :],
    }
    parts = {
        key: Split(
            key, files, *_read_rows(root, files if key in splits else [], manifest, dtype, jacobian)
        )
        for key, files in groups.items()
    }
    return DatasetSplits(manifest=manifest, root=str(root), **parts)


def _split_counts(
    count: int, fractions: tuple[float, float, float], root: Path
) -> tuple[int, int, int]:
    if len(fractions) != 3 or min(fractions) < 0 or not np.isclose(sum(fractions), 1.0):
        raise ValueError(
            f"fractions must be three non-negative shares summing to 1, got {fractions}"
        )
    if count < 3:
        raise DatasetError(
            f"{root}: {count} shard(s); a train/validation/test split needs at least 3"
        )
    n_val = max(1, round(count * fractions[1]))
    n_test = max(1, round(count * fractions[2]))
    n_train = count - n_val - n_test
    if n_train < 1:
        raise DatasetError(
            f"{root}: {count} shards leave none for training with fractions {fractions}"
        )
    return n_train, n_val, n_test


def _read_rows(
    root: Path, files: list[str], manifest: dict[str, Any], dtype, jacobian: bool
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """The shards' rows in one preallocated array, converted shard by shard, with
    ``jacobian`` their Jacobians in another, (N, 4, 5), and below float64 their bending."""
    count = sum(manifest["shards"][name]["rows"] for name in files)
    rows = np.empty((count, len(COLUMNS)), dtype)
    jacobians = np.empty((count, len(JACOBIAN_COLUMNS)), dtype) if jacobian else None
    bending = np.empty((count, len(TARGET_COLUMNS)), dtype) if dtype != np.float64 else None
    wanted = COLUMNS + JACOBIAN_COLUMNS if jacobian else COLUMNS
    schema = dataset_schema(has_jacobian(manifest))
    start = 0
    for name in files:
        table = _read_shard(root / name, manifest["shards"][name], schema, wanted)
        stop = start + table.num_rows
        for k, column in enumerate(COLUMNS):
            rows[start:stop, k] = table.column(column).to_numpy()
        if bending is not None:
            bending[start:stop] = _bending(table)
        if jacobians is not None:
            for k, column in enumerate(JACOBIAN_COLUMNS):
                jacobians[start:stop, k] = table.column(column).to_numpy()
        start = stop
        del table
    pa.default_memory_pool().release_unused()  # Arrow keeps freed buffers otherwise
    if jacobians is not None:
        jacobians = jacobians.reshape(count, len(JACOBIAN_OUTPUTS), len(JACOBIAN_INPUTS))
    return rows, jacobians, bending


def _bending(table: pa.Table) -> np.ndarray:
    """(N, 4) float64 end state minus the straight line from the start, of one shard."""
    start = np.stack([table.column(c).to_numpy() for c in INPUT_COLUMNS], 1)
    end = np.stack([table.column(c).to_numpy() for c in TARGET_COLUMNS], 1)
    return end - straight_line(start)


def _read_shard(
    path: Path, record: dict[str, Any], schema: pa.Schema, columns: tuple[str, ...]
) -> pa.Table:
    """The shard's ``columns``, after checking it against its manifest record and ``schema``
    (the dataset's whole schema: a shard must have every column, read or not)."""
    if not path.exists():
        raise DatasetError(f"{path}: shard listed in the manifest is missing")
    if file_sha256(path) != record["sha256"]:
        raise DatasetError(
            f"{path}: checksum does not match the manifest (damaged or replaced shard)"
        )
    try:
        if not pq.read_schema(path).remove_metadata().equals(schema):
            names = pq.read_schema(path).names
            raise DatasetError(f"{path}: schema {names} does not match the dataset schema")
        table = pq.read_table(path, columns=list(columns))
    except (pa.ArrowInvalid, OSError) as err:
        raise DatasetError(f"{path}: unreadable Parquet ({err})") from None
    if table.num_rows != record["rows"]:
        raise DatasetError(f"{path}: {table.num_rows} rows, manifest says {record['rows']}")
    return table.replace_schema_metadata(None)
