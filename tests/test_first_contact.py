"""Issue 10, "First contact": what a new user meets on a first try, each path checked before
anything starts (no Ray, no training) so these tests stay fast."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from raytrack import generate, train
from raytrack.data import DatasetError, load
from raytrack.files import is_temporary, replacing


def refuse_to_start(*_args, **_kwargs):
    raise AssertionError("started work although the inputs were wrong")


# Item 1: the generator deletes only files it wrote itself.


def test_generate_keeps_a_users_hidden_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("raytrack.data.pipeline._run_shard_tasks", refuse_to_start)
    out = tmp_path / "d"
    out.mkdir()
    notes = out / ".notes.tmp"
    notes.write_text("mine")
    assert generate.main(["--samples", "30", "--shards", "3", "--out", str(out)]) == 1
    assert notes.read_text() == "mine"
    assert ".notes.tmp" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [".notes.tmp"]


def test_temporary_names_cannot_be_a_users(tmp_path):
    final = tmp_path / "shard-00000-of-00003.parquet"
    with replacing(final) as tmp:
        assert is_temporary(tmp)
        assert tmp.name.startswith(f".{final.name}.")
    for name in (".notes.tmp", ".shard-00000-of-00003.parquet.abcdefgh.tmp", "x.raytrack-partial"):
        assert not is_temporary(tmp_path / name), name


# Item 2 and 8: train validates everything before it writes anything.


def test_train_with_missing_data_writes_nothing(tmp_path, capsys):
    out = tmp_path / "R"
    code = train.main(["--data", str(tmp_path / "nonexistent"), "--out", str(out)])
    assert code == 1
    assert "nonexistent" in capsys.readouterr().err
    assert not out.exists()


def test_train_on_cuda_with_a_cpu_only_torch_is_named(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: False)
    out = tmp_path / "R"
    code = train.main(["--data", str(tmp_path / "data"), "--out", str(out), "--device", "cuda"])
    assert code == 1
    err = capsys.readouterr().err
    assert "--device cuda" in err and "CPU-only" in err
    assert not out.exists()


@pytest.mark.parametrize(
    "args,message",
    [
        (["--batch", "0"], "argument --batch: must be at least 1, got 0"),
        (["--lr", "-1"], "argument --lr: must be greater than 0"),
        (["--device", "tpu"], "--device tpu"),
    ],
)
def test_train_bad_options_are_named_and_write_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "R"
    try:
        code = train.main(["--data", str(tmp_path), "--out", str(out), *args])
    except SystemExit as exit_:  # argparse's own refusal
        code = exit_.code
    assert code in (1, 2)
    assert message in capsys.readouterr().err
    assert not out.exists()


# Item 9: a damaged manifest is named, with what is wrong.


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


def test_train_names_a_damaged_manifest(tmp_path, capsys):
    (tmp_path / "manifest.json").write_text('{"format": "raytrack-dataset", "format_version": 1}')
    assert train.main(["--data", str(tmp_path), "--out", str(tmp_path / "R")]) == 1
    err = capsys.readouterr().err
    assert f"{Path(tmp_path) / 'manifest.json'}: damaged manifest" in err
    assert not (tmp_path / "R").exists()
