"""Load a generated dataset as train / validation / test splits, checked against its manifest.

Splits are made of whole shards (never the same track in two splits): the first shards train,
the next validate, the last test. Every shard is checked against the manifest (checksum,
schema, row count) before use; a damaged one raises :class:`DatasetError` naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raytrack.data.schema import (
    INPUT_COLUMNS,
    MANIFEST_NAME,
    SCHEMA,
    TARGET_COLUMNS,
    DatasetError,
    file_sha256,
    read_manifest,
)


@dataclass
class Split:
    """One split: a table of tracks and the shard files it came from."""

    name: str
    files: list[str]
    table: pa.Table

    def __len__(self) -> int:
        return self.table.num_rows

    def array(self, columns: tuple[str, ...]) -> np.ndarray:
        """(N, len(columns)) float64 array of the given columns."""
        if not columns:
            return np.empty((len(self), 0))
        return np.stack([self.table.column(c).to_numpy() for c in columns], axis=1)

    def inputs(self) -> np.ndarray:
        """(N, 7) ``[x, y, tx, ty, qop, z_start, z_end]``: mm, 1, 1, 1/MeV, mm, mm."""
        return self.array(INPUT_COLUMNS)

    def targets(self) -> np.ndarray:
        """(N, 4) ``[x_end, y_end, tx_end, ty_end]``: mm, 1, 1."""
        return self.array(TARGET_COLUMNS)


@dataclass
class ArraySplit:
    """A split held as (N, 7) inputs and (N, 4) targets: what trials share through Ray's object
    store (one copy per node, read without copying)."""

    name: str
    files: list[str]
    input_array: np.ndarray
    target_array: np.ndarray

    def __len__(self) -> int:
        return len(self.input_array)

    def inputs(self) -> np.ndarray:
        return self.input_array

    def targets(self) -> np.ndarray:
        return self.target_array


@dataclass
class DatasetSplits:
    train: Split | ArraySplit
    validation: Split | ArraySplit
    test: Split | ArraySplit
    manifest: dict[str, Any] = field(repr=False)

    @property
    def dataset_id(self) -> str:
        return self.manifest["dataset_id"]

    def as_arrays(self) -> DatasetSplits:
        """The same splits as NumPy arrays (for ``ray.put``)."""
        parts = {
            name: ArraySplit(name, split.files, split.inputs(), split.targets())
            for name, split in (
                ("train", self.train),
                ("validation", self.validation),
                ("test", self.test),
            )
        }
        return DatasetSplits(manifest=self.manifest, **parts)


def load(
    directory: str | Path, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
) -> DatasetSplits:
    """Load ``directory`` (made by ``python -m raytrack.generate``) split by shard.

    ``fractions`` are the train/validation/test shares of the shards; validation and test get
    at least one shard each, so a dataset needs at least 3 shards.
    """
    root = Path(directory)
    manifest = read_manifest(root)
    if manifest is None:
        raise DatasetError(f"{root / MANIFEST_NAME}: not found; is {root} a raytrack dataset?")
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
    splits = {
        key: Split(key, files, _read_shards(root, files, manifest)) for key, files in groups.items()
    }
    return DatasetSplits(manifest=manifest, **splits)


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


def _read_shards(root: Path, files: list[str], manifest: dict[str, Any]) -> pa.Table:
    return pa.concat_tables([_read_shard(root / name, manifest["shards"][name]) for name in files])


def _read_shard(path: Path, record: dict[str, Any]) -> pa.Table:
    if not path.exists():
        raise DatasetError(f"{path}: shard listed in the manifest is missing")
    if file_sha256(path) != record["sha256"]:
        raise DatasetError(
            f"{path}: checksum does not match the manifest (damaged or replaced shard)"
        )
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise DatasetError(f"{path}: unreadable Parquet ({err})") from None
    if not table.schema.remove_metadata().equals(SCHEMA):
        raise DatasetError(f"{path}: schema {table.schema.names} does not match the dataset schema")
    if table.num_rows != record["rows"]:
        raise DatasetError(f"{path}: {table.num_rows} rows, manifest says {record['rows']}")
    return table.replace_schema_metadata(None)
