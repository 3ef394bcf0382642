"""The on-disk dataset format: columns, shard names, manifest, checksums, atomic writes.

A dataset directory holds ``manifest.json`` and one Parquet file per shard,
``shard-00003-of-00010.parquet``. Every column is float64; units are those of the physics
module (mm, slopes, 1/MeV).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pyarrow as pa

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"

INPUT_COLUMNS = ("x", "y", "tx", "ty", "qop", "z_start", "z_end")
TARGET_COLUMNS = ("x_end", "y_end", "tx_end", "ty_end")
COLUMNS = INPUT_COLUMNS + TARGET_COLUMNS
SCHEMA = pa.schema([(name, pa.float64()) for name in COLUMNS])
UNITS = {
    "x": "mm",
    "y": "mm",
    "tx": "1",
    "ty": "1",
    "qop": "1/MeV",
    "z_start": "mm",
    "z_end": "mm",
    "x_end": "mm",
    "y_end": "mm",
    "tx_end": "1",
    "ty_end": "1",
}


class DatasetError(ValueError):
    """A dataset directory, manifest or shard is unusable; the message names the file."""


def shard_name(index: int, count: int) -> str:
    return f"shard-{index:05d}-of-{count:05d}.parquet"


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def canonical_hash(obj: Any) -> str:
    """SHA-256 of the canonical JSON form of a plain-data object."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def read_manifest(directory: Path) -> dict[str, Any] | None:
    path = directory / MANIFEST_NAME
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DatasetError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != "raytrack-dataset":
        raise DatasetError(f"{path}: not a raytrack dataset manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DatasetError(
            f"{path}: format version {manifest.get('format_version')!r}, "
            f"this raytrack reads {FORMAT_VERSION}"
        )
    return manifest
