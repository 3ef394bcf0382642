"""The loader (raytrack/data/loader.py): splits by shard, and the datasets it refuses."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from raytrack.data import DatasetError, load
from raytrack.data.pipeline import generate_dataset
from raytrack.data.schema import file_sha256

from .datasets import quiet, small_spec


def test_a_shard_with_another_schema_is_refused_by_the_loader(ray_cluster, tmp_path):
    spec = small_spec()
    out = tmp_path / "d"
    generate_dataset(spec, out, log=quiet)
    victim = out / spec.shard_name(2)
    table = pq.read_table(victim).drop_columns(["ty_end"])
    pq.write_table(table, victim)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["shards"][victim.name]["sha256"] = file_sha256(victim)  # even with a fixed checksum
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match=rf"{victim}.*schema"):
        load(out)


def test_loader_splits_by_shard(ray_cluster, tmp_path):
    spec = small_spec(samples=1000, shards=10)
    generate_dataset(spec, tmp_path / "d", log=quiet)
    splits = load(tmp_path / "d")
    assert [len(s.files) for s in (splits.train, splits.validation, splits.test)] == [8, 1, 1]
    assert not set(splits.train.files) & (set(splits.validation.files) | set(splits.test.files))
    assert len(splits.train) + len(splits.validation) + len(splits.test) == 1000
    assert splits.train.inputs().shape == (len(splits.train), 7)
    assert splits.test.targets().shape == (len(splits.test), 4)
    keys = {tuple(row) for row in splits.train.inputs()}
    assert not any(tuple(row) in keys for row in splits.test.inputs())
    assert splits.dataset_id == spec.dataset_id


def test_loader_refuses_incomplete_or_tiny_datasets(ray_cluster, tmp_path):
    generate_dataset(small_spec(samples=20, shards=2), tmp_path / "two", log=quiet)
    with pytest.raises(DatasetError, match="at least 3"):
        load(tmp_path / "two")
    manifest_path = tmp_path / "two" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["complete"] = False
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match="incomplete"):
        load(tmp_path / "two")
    with pytest.raises(DatasetError, match="not found"):
        load(tmp_path / "nowhere")


def test_manifest_that_is_not_utf8_is_named(tmp_path):
    (tmp_path / "manifest.json").write_bytes(b'{"format": "raytrack-dataset\xff"}')
    with pytest.raises(DatasetError, match="manifest.json: not UTF-8"):
        load(tmp_path)


def test_manifest_with_missing_keys_is_named(tmp_path):
    manifest = {"format": "raytrack-dataset", "format_version": 1, "dataset_id": "x"}
    manifest |= {"shards": {"shard-00000-of-00003.parquet": {"index": 0}}, "complete": True}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError) as error:
        load(tmp_path)
    assert str(tmp_path / "manifest.json") in str(error.value)
    assert "identity is missing" in str(error.value)
