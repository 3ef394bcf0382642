"""One shard (raytrack/data/shards.py): the tracks it keeps and those it drops."""

from __future__ import annotations

from raytrack.data import load_phase_space
from raytrack.data.shards import DatasetSpec, write_shard
from raytrack.physics import DipoleField


def test_dropped_tracks_are_counted_by_reason(tmp_path):
    space = load_phase_space("default")
    wide = dict(
        space.source, x={"distribution": "uniform", "low": 4000.0, "high": 4990.0}, name="edge"
    )
    from raytrack.data.phase_space import parse_phase_space

    spec = DatasetSpec(
        samples=200, shards=1, seed=1, phase_space=parse_phase_space(wide), field=DipoleField()
    )
    (tmp_path / "d").mkdir()
    record = write_shard(spec, 0, tmp_path / "d")
    assert record["rows"] == 200
    assert record["dropped"]["LEFT_VOLUME"] > 10
