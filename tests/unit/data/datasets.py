"""Small dataset specs shared by the data tests."""

from __future__ import annotations

from pathlib import Path

from raytrack.data import load_phase_space
from raytrack.data.shards import DatasetSpec
from raytrack.physics import DipoleField


def small_spec(samples=900, shards=3, seed=7, phase_space="default") -> DatasetSpec:
    return DatasetSpec(
        samples=samples,
        shards=shards,
        seed=seed,
        phase_space=load_phase_space(phase_space),
        field=DipoleField(),
    )


def spec_of(samples: int, shards: int, jacobian: bool, seed: int = 21) -> DatasetSpec:
    return DatasetSpec(
        samples=samples,
        shards=shards,
        seed=seed,
        phase_space=load_phase_space("default"),
        field=DipoleField(),
        jacobian=jacobian,
    )


def shard_bytes(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.glob("shard-*.parquet"))}


def quiet(_message: str) -> None:
    pass
