"""Issue 25: the epoch a trial exports is the one the search ranks, and every output names the
same one: its checkpoint (the run directory best/ is made of), the leaderboard and the report."""

from __future__ import annotations

import json
import re

from raytrack.models.checkpoints import load_checkpoint
from raytrack.report.experiment import read_experiment
from raytrack.report.figures import p95_against_epoch_figure
from raytrack.report.page import TABLE


def page_rows(page: str) -> dict[str, dict[str, str]]:
    """The report's leaderboard table: trial id -> {column header: cell text}."""
    table = page[page.index("<th>" + TABLE[0][0]) :]
    table = table[: table.index("</table>")]
    headers = [h for h, _, _ in TABLE]
    rows = {}
    for row in re.findall(r"<tr>(<td.*?)</tr>", table):
        cells = dict(zip(headers, re.findall(r"<td[^>]*>(.*?)</td>", row), strict=True))
        rows[cells["trial"]] = cells
    return rows


def test_every_output_names_the_epoch_of_the_lowest_validation_p95(optuna_search):
    options, rows = optuna_search
    page = page_rows((options.path / "report" / "index.html").read_text())
    reported = {r["trial_id"]: r for r in read_experiment(options.path).rows}
    for row in rows:
        (trial_dir,) = options.path.glob(f"run_trial_{row['trial_id']}_*")
        state = load_checkpoint(sorted(trial_dir.glob("checkpoint_*"))[-1] / "checkpoint.pt")
        p95 = {int(m["epoch"]): m["val_pos_p95_mm"] for m in state["history"]}
        chosen = min(p95, key=p95.get)  # the search's own metric picks the epoch
        assert state["best"]["epoch"] == row["best_epoch"] == chosen, row["trial_id"]
        assert state["best"]["val_pos_p95_mm"] == row["pos_p95_mm"] == p95[chosen]
        assert reported[row["trial_id"]]["best_epoch"] == chosen
        cells = page[row["trial_id"]]
        assert cells["exported epoch"] == str(chosen)
        assert cells["val P95 [mm]"] == f"{p95[chosen]:.4f}"
    best = options.path / "best"
    metadata = json.loads((best / "metadata.json").read_text())
    trial = json.loads((best / "trial.json").read_text())
    assert trial["trial_id"] == rows[0]["trial_id"]
    assert metadata["best_validation"]["epoch"] == rows[0]["best_epoch"]
    assert metadata["best_validation"]["val_pos_p95_mm"] == rows[0]["pos_p95_mm"]
    # The learning curves mark each trial's exported epoch on its curve.
    (ax,) = p95_against_epoch_figure(read_experiment(options.path)).axes
    stars = {(float(line.get_xdata()[0]), float(line.get_ydata()[0]))
             for line in ax.lines if line.get_marker() == "*"}  # fmt: skip
    assert stars == {(float(r["best_epoch"]), r["pos_p95_mm"]) for r in rows}
