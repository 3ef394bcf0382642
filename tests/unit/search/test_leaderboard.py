"""The leaderboard: its files, the printed table and the closing summary."""

from __future__ import annotations

import json


def test_the_leaderboard_has_the_worst_validation_track(tmp_path):
    """Issue 15: the leaderboard's worst track (of the exported epoch, as its other figures),
    in its files and printed, and the closing summary's test-split P99 and worst."""
    from raytrack.search.leaderboard import (
        format_best,
        format_leaderboard,
        make_row,
        rank,
        write_leaderboard,
    )

    metrics = {"epoch": 2, "best_val_pos_mean_mm": 0.1, "best_val_pos_p95_mm": 0.2,
               "best_val_pos_p99_mm": 0.4, "best_val_pos_max_mm": 3.5,
               "best_val_slope_mean": 1e-4, "best_val_slope_p95": 2e-4}  # fmt: skip
    config = {"model": {"weight_count": 10, "macs_per_track": 20}}
    rows = rank([make_row("t_1", "small", "finished", metrics, config)])
    assert rows[0]["pos_max_mm"] == 3.5
    write_leaderboard(tmp_path, rows)
    header = (tmp_path / "leaderboard.csv").read_text().splitlines()[0]
    assert "pos_p99_mm,pos_max_mm," in header
    assert json.loads((tmp_path / "leaderboard.json").read_text())[0]["pos_max_mm"] == 3.5
    head, line = format_leaderboard(rows).splitlines()
    assert head.split()[-7:] == ["P99", "mm", "val", "worst", "mm", "val", "slope"]
    assert line.split()[-3:-1] == ["0.4000", "3.5000"]
    errors = {"tracks": 100, "pos_mean_mm": 0.11, "pos_p95_mm": 0.21, "pos_p99_mm": 0.42,
              "pos_max_mm": 3.25}  # fmt: skip
    report = {"model": errors, "straight_line": {**errors, "pos_max_mm": 99.0}}
    summary = format_best(rows[0], tmp_path, report)
    assert "P99 mm   worst mm" in summary
    assert f"{'model':<22} {0.11:10.4f} {0.21:10.4f} {0.42:10.4f} {3.25:10.4f}" in summary


def test_a_trial_without_a_time_is_off_the_time_front_and_printed_with_a_dash():
    """Issue 16: a pareto-time trial reports an infinite time until it is timed; its row records
    none, it is left off the time front (whatever its P95), and the printed leaderboard shows a
    dash."""
    from raytrack.search.leaderboard import format_leaderboard, make_row, pareto_front, rank

    config = {"model": {"weight_count": 10, "macs_per_track": 10}}
    timed = {"best_val_pos_p95_mm": 0.5, "inference_us_per_track": 2.0, "epoch": 3}
    untimed = {"best_val_pos_p95_mm": 0.1, "inference_us_per_track": float("inf"), "epoch": 3}
    rows = rank([make_row("a", "optuna", "finished", timed, config),
                 make_row("b", "optuna", "failed", untimed, config)])  # fmt: skip
    assert [r["inference_us_per_track"] for r in rows] == [None, 2.0]
    assert [r["trial_id"] for r in pareto_front(rows, "inference_us_per_track")] == ["a"]
    header, first, second = format_leaderboard(rows).splitlines()
    assert header.endswith("us/track") and first.endswith(" -") and second.endswith(" 2")
    plain = make_row("c", "optuna", "finished", {"best_val_pos_p95_mm": 0.5}, config)
    assert "inference_us_per_track" not in plain  # other objectives: no such column
    assert "us/track" not in format_leaderboard(rank([plain]))
