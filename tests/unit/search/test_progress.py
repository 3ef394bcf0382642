"""The live table of a running search."""

from __future__ import annotations

import sys


class FakeTrial:
    def __init__(self, trial_id: str, status: str, preset: str, result: dict | None = None):
        self.trial_id, self.status, self.config = trial_id, status, {"preset": preset}
        self.last_result = result or {}


def test_live_table_is_compact_redrawn_on_a_terminal_and_survives_pickling(monkeypatch):
    import io
    import pickle

    from raytrack.search import progress
    from raytrack.search.trial import TrialSettings

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    settings = TrialSettings(max_epochs=10, time_budget=None, seed=0, device="cpu", cpus=1)
    table = pickle.loads(pickle.dumps(progress.LiveTable(settings)))  # as --resume restores it
    done = {
        "epoch": 10,
        "train_status": "finished",
        "name": "deep",
        "weight_count": 232836,
        "best_val_pos_mean_mm": 0.0123,
        "best_val_pos_p95_mm": 0.0456,
    }
    trials = [FakeTrial("a_00000", "RUNNING", "large", {"epoch": 3, "best_val_pos_p95_mm": 0.5}),
              FakeTrial("a_00001", "TERMINATED", "deep", done),
              FakeTrial("a_00002", "PENDING", "wide")]  # fmt: skip
    log = io.StringIO()
    monkeypatch.setattr(sys, "stdout", log)
    table.on_step_end(iteration=1, trials=trials)
    lines = log.getvalue().splitlines()
    assert lines[0].split() == ["trial", "name", "status", "epoch", "val", "mean", "mm", "val",
                                "P95", "mm", "weights"]  # fmt: skip
    assert lines[1].split()[:5] == ["a_00000", "large", "running", "3/10", "-"]
    assert lines[2].split() == ["a_00001", "deep", "finished", "10/10", "0.0123", "0.0456",
                                "232836"]  # fmt: skip
    assert lines[3].split()[:3] == ["a_00002", "wide", "pending"]
    assert "best so far deep (a_00001), val P95 0.0456 mm" in lines[4]
    trials[0].last_result = {"epoch": 4}
    table.on_step_end(iteration=2, trials=trials)
    table.on_experiment_end(trials=trials)
    assert log.getvalue().count("trial ") == 1  # a log: not again within LOG_INTERVAL_S
    screen = Terminal()
    monkeypatch.setattr(sys, "stdout", screen)
    table = progress.LiveTable(settings)
    table.on_step_end(iteration=1, trials=trials)
    table.on_experiment_end(trials=trials)
    assert screen.getvalue().count("\x1b[5F\x1b[J") == 1  # the last table overwrote the first
