"""What the search tests share: an experiment's options, raytrack.tune run as a user runs it
(and interrupted as a terminal's Ctrl-C does), and what an interrupted search must leave."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from raytrack.search.experiment_options import ExperimentOptions

REPO = Path(__file__).resolve().parents[3]


def tune_cli(*args: str, address: str, cwd: Path = REPO) -> subprocess.Popen:
    """python -m raytrack.tune in its own process group (a terminal's Ctrl-C signals a group),
    on this checkout's package from any ``cwd``."""
    command = [sys.executable, "-m", "raytrack.tune", *args, "--address", address]
    return subprocess.Popen(
        command,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def wait_for_ended_trials(process: subprocess.Popen, experiment: Path, count: int) -> None:
    """Until ``count`` trials of the running search have ended (their last result is written)."""
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        done = [
            d
            for d in experiment.glob("run_trial*/result.json")
            if '"train_done": 1.0' in d.read_text()
        ]
        if len(done) >= count:
            return
        time.sleep(0.2)
    assert process.poll() is None, "the search ended before it could be interrupted"


def ctrl_c(process: subprocess.Popen) -> str:
    """SIGINT to the process group, as a terminal's Ctrl-C; the output of the process."""
    os.killpg(process.pid, signal.SIGINT)
    output, _ = process.communicate(timeout=300)
    return output


def check_interrupted(
    output: str, code: int, experiment: Path, resume: str, trials: int
) -> list[dict]:
    """What an interrupted search leaves: exit status 130, no traceback, its leaderboard (trials
    that ended, and those stopped before their end marked interrupted), its report (best/ comes
    at the search's end), and raytrack's resume command in place of Ray's Python one. Returns
    the leaderboard."""
    assert code == 130, output[-3000:]
    assert "Traceback" not in output and "Tuner.restore" not in output, output[-3000:]
    assert f"to continue it: {resume}" in output
    rows = leaderboard(experiment)
    statuses = {r["status"] for r in rows}
    assert statuses <= {"finished", "interrupted"} and "finished" in statuses, statuses
    assert "interrupted" in statuses or len(rows) < trials  # it did not end on its own
    assert not (experiment / "best").exists()
    page = (experiment / "report" / "index.html").read_text()
    assert "interrupted: " in page and "its latest checkpoint" in page  # the best model
    return rows


def leaderboard(path: Path) -> list[dict]:
    return json.loads((path / "leaderboard.json").read_text())


def options(tmp_path: Path, data: Path, **changes) -> ExperimentOptions:
    settings = dict(
        search="presets",
        data_dir=str(data),
        storage=str(tmp_path),
        name="exp",
        max_epochs=2,
        grace_epochs=1,
    )
    return ExperimentOptions(**{**settings, **changes})


def quiet(_message: str) -> None:
    pass


def straight_line_space(tmp_path: Path) -> Path:
    """The default search space on the straight line and the 7 inputs: for tests of the search
    itself, where this formulation trains and exports fastest."""
    text = (REPO / "search_spaces" / "default.toml").read_text()
    text = text.replace('value = "path"', 'value = "line"')
    text = text.replace('value = "physics"', 'value = "state"')
    assert text.count('value = "line"') == 1 and text.count('value = "state"') == 1
    path = tmp_path / "line.toml"
    path.write_text(text)
    return path
