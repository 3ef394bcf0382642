"""The on-disk dataset format: columns, shard names, manifest, checksums, atomic writes.

A dataset directory holds ``manifest.json`` and one Parquet file per shard,
``shard-00003-of-00010.parquet``. Every column is float64; units are those of the physics
module (mm, slopes, 1/MeV). A dataset generated with ``--jacobian`` has 20 more columns,
``J_<out>_<in>`` = d out_end / d in_start (the transport Jacobian, docs/physics.md section
2b) for out in x, y, tx, ty and in in x, y, tx, ty, qop, in row-major order (reshape to
(N, 4, 5)).
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

#: The Jacobian's rows (end coordinates) and columns (start coordinates); the qop row,
#: (0, 0, 0, 0, 1), is not stored.
JACOBIAN_OUTPUTS = ("x", "y", "tx", "ty")
JACOBIAN_INPUTS = ("x", "y", "tx", "ty", "qop")
#: ``J_<out>_<in>`` in row-major (out, in) order: ``rows.reshape(N, 4, 5)[:, a, b]`` is
#: d JACOBIAN_OUTPUTS[a]_end / d JACOBIAN_INPUTS[b]_start.
JACOBIAN_COLUMNS = tuple(f"J_{o}_{i}" for o in JACOBIAN_OUTPUTS for i in JACOBIAN_INPUTS)
_STATE_UNITS = {"x": "mm", "y": "mm", "tx": "1", "ty": "1", "qop": "1/MeV"}


def _ratio_unit(numerator: str, denominator: str) -> str:
    """The unit of d numerator / d denominator: mm/mm -> 1, mm/(1/MeV) -> mm MeV, ..."""
    if numerator == denominator:
        return "1"
    if denominator == "1":
        return numerator
    if denominator == "1/MeV":
        return "MeV" if numerator == "1" else f"{numerator} MeV"
    return f"1/{denominator}" if numerator == "1" else f"{numerator}/{denominator}"


JACOBIAN_UNITS = {
    f"J_{o}_{i}": _ratio_unit(_STATE_UNITS[o], _STATE_UNITS[i])
    for o in JACOBIAN_OUTPUTS
    for i in JACOBIAN_INPUTS
}
JACOBIAN_SCHEMA = pa.schema([(name, pa.float64()) for name in COLUMNS + JACOBIAN_COLUMNS])


def dataset_columns(jacobian: bool) -> tuple[str, ...]:
    """The columns of a dataset with or without the Jacobian."""
    return COLUMNS + JACOBIAN_COLUMNS if jacobian else COLUMNS


def dataset_schema(jacobian: bool) -> pa.Schema:
    return JACOBIAN_SCHEMA if jacobian else SCHEMA


def dataset_units(jacobian: bool) -> dict[str, str]:
    return {**UNITS, **JACOBIAN_UNITS} if jacobian else dict(UNITS)


def has_jacobian(manifest: dict[str, Any]) -> bool:
    """Whether a dataset (its manifest) was generated with ``--jacobian``."""
    return bool(manifest.get("identity", {}).get("jacobian", False))


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


# What the code that reads a manifest relies on, with the JSON type each key must have.
MANIFEST_KEYS = {"dataset_id": str, "identity": dict, "shards": dict, "complete": bool}
IDENTITY_KEYS = {"samples": int, "shards": int}
SHARD_RECORD_KEYS = {"index": int, "rows": int, "sha256": str, "dropped": dict}


def read_manifest(directory: Path) -> dict[str, Any] | None:
    """The manifest of ``directory``, ``None`` when it has none; a :class:`DatasetError`
    naming the file and what is wrong when it cannot be used."""
    path = directory / MANIFEST_NAME
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path}: not UTF-8 text (byte {err.start}); not a manifest") from None
    except json.JSONDecodeError as err:
        raise DatasetError(f"{path}: not valid JSON ({err})") from None
    except OSError as err:
        raise DatasetError(f"{path}: cannot be read ({err.strerror})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != "raytrack-dataset":
        raise DatasetError(f"{path}: not a raytrack dataset manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DatasetError(
            f"{path}: format version {manifest.get('format_version')!r}, "
            f"this raytrack reads {FORMAT_VERSION}"
        )
    problems = _wrong_keys(manifest, MANIFEST_KEYS, "")
    if not problems:
        problems += _wrong_keys(manifest["identity"], IDENTITY_KEYS, "identity.")
        for name, record in manifest["shards"].items():
            problems += _wrong_keys(record, SHARD_RECORD_KEYS, f"shards.{name}.")
    if problems:
        raise DatasetError(f"{path}: damaged manifest: {'; '.join(problems[:3])}")
    return manifest


def _wrong_keys(data: Any, wanted: dict[str, type], prefix: str) -> list[str]:
    """What is missing from ``data`` or has the wrong type, as 'KEY is missing' phrases."""
    if not isinstance(data, dict):
        return [f"{prefix.rstrip('.')} is not an object"]
    problems = []
    for key, kind in wanted.items():
        if key not in data:
            problems.append(f"{prefix}{key} is missing")
        elif not isinstance(data[key], kind) or (kind is int and isinstance(data[key], bool)):
            problems.append(f"{prefix}{key} is not {_JSON_NAMES[kind]}")
    return problems


_JSON_NAMES = {str: "a string", dict: "an object", bool: "true or false", int: "an integer"}
