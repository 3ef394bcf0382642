"""Which trials fit a trigger header: the leaderboard's column, in its files and printed, and
the closing summary's advice."""

from __future__ import annotations

import json

from raytrack.export.header_data import weights_that_fit
from raytrack.models.checkpoints import CHECKPOINT_FORMAT, save_checkpoint
from raytrack.models.mlp import ModelConfig, TrackMLP
from raytrack.models.presets import SEARCH_PRESETS, load_presets
from raytrack.search.leaderboard import format_leaderboard, make_row, rank, write_leaderboard
from raytrack.search.trigger import bin_model, fits_trigger_header, trigger_summary

#: The straight line on the 7 inputs: no field tables, so only the network fills the memory.
LINE = {"base": "line", "inputs": "state", "target": "residual_qop"}


def checkpoint(path, config: ModelConfig):
    """A checkpoint file of a model of ``config`` (untrained: its shapes are what counts)."""
    state = TrackMLP(config).state_dict()
    save_checkpoint(path, {"format": CHECKPOINT_FORMAT, "model_config": config.to_dict(),
                           "best_state": state, "model_state": state})  # fmt: skip
    return path


def row(trial: str, p95: float, fits: bool | None) -> dict:
    config = {"model": {"weight_count": 10, "macs_per_track": 10}}
    made = make_row(trial, "optuna", "finished", {"best_val_pos_p95_mm": p95}, config)
    return {**made, "fits_trigger_header": fits}


def test_which_trials_fit_is_the_header_exports_own_check(tmp_path):
    """Issue 25, item 10: the quick search's best model could never become a trigger header
    (every preset is far above 64 KB), and nothing said so."""
    small = ModelConfig(hidden=(32, 32), **LINE)
    assert fits_trigger_header(checkpoint(tmp_path / "small.pt", small), small.weight_count)
    big = ModelConfig(hidden=(1364,), **LINE)  # its weights fit 64 KB, its normalisation not
    assert 4 * big.weight_count <= 65536
    assert fits_trigger_header(checkpoint(tmp_path / "big.pt", big), big.weight_count) is False
    for name in SEARCH_PRESETS:  # judged by their weights alone, no checkpoint read
        assert fits_trigger_header(None, load_presets()[name].weight_count) is False
    assert fits_trigger_header(None, small.weight_count) is None  # no model to tell


def test_the_leaderboard_says_which_trials_fit(tmp_path):
    rows = rank([row("a", 0.1, False), row("b", 0.2, True), row("c", 0.3, None)])
    write_leaderboard(tmp_path, rows)
    stored = json.loads((tmp_path / "leaderboard.json").read_text())
    assert [r["fits_trigger_header"] for r in stored] == [False, True, None]
    csv = (tmp_path / "leaderboard.csv").read_text().splitlines()
    column = csv[0].split(",").index("fits_trigger_header")
    assert [line.split(",")[column] for line in csv[1:]] == ["False", "True", ""]
    head, *lines = format_leaderboard(rows).splitlines()
    at = head.split().index("header")
    assert [line.split()[at] for line in lines] == ["no", "yes", "-"]


def test_the_summary_says_how_to_search_for_a_model_that_fits(tmp_path):
    big = ModelConfig(hidden=(1364,), **LINE)
    model = bin_model(checkpoint(tmp_path / "big.pt", big))
    none_fit = rank([row("a", 0.1, False), row("b", 0.2, False)])
    line = trigger_summary(none_fit, model, "presets", tmp_path)
    most = weights_that_fit(model)
    assert f"python -m raytrack.tune --search optuna --max-weights {most}" in line
    assert "no trial fits CUDA's 64 KB of constant memory" in line
    second = trigger_summary(rank([row("a", 0.1, False), row("b", 0.2, True)]), model, "all", None)
    assert "the best that does is optuna (b, rank 2, val P95 0.2000 mm" in second
    best = trigger_summary(rank([row("a", 0.1, True)]), model, "optuna", tmp_path / "best")
    assert f"python -m raytrack.export {tmp_path / 'best'} --header OUT.h" in best
