"""Writing files under temporary names: a name no user's file can have."""

from __future__ import annotations

from raytrack.files import is_temporary, replacing


def test_temporary_names_cannot_be_a_users(tmp_path):
    final = tmp_path / "shard-00000-of-00003.parquet"
    with replacing(final) as tmp:
        assert is_temporary(tmp)
        assert tmp.name.startswith(f".{final.name}.")
    for name in (".notes.tmp", ".shard-00000-of-00003.parquet.abcdefgh.tmp", "x.raytrack-partial"):
        assert not is_temporary(tmp_path / name), name
