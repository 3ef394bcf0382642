"""The leaderboard of an experiment: one row per trial, the Pareto front, the printed table."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from raytrack.files import replacing, write_json_atomic

COLUMNS = (
    "rank", "name", "trial_id", "status", "weight_count", "macs_per_track",
    "inference_us_per_track", "fits_trigger_header", "epochs", "best_epoch",
    "pos_mean_mm", "pos_p95_mm", "pos_p99_mm", "pos_max_mm", "slope_mean", "slope_p95",
    "seconds", "config",
)  # fmt: skip
#: Leaderboard column <- reported metric (of the weights a trial would export: its best epoch).
METRIC_COLUMNS = {
    "pos_mean_mm": "best_val_pos_mean_mm",
    "pos_p95_mm": "best_val_pos_p95_mm",
    "pos_p99_mm": "best_val_pos_p99_mm",
    "pos_max_mm": "best_val_pos_max_mm",  # the worst validation track
    "slope_mean": "best_val_slope_mean",
    "slope_p95": "best_val_slope_p95",
}


def tune_trial_status(metrics: dict[str, Any], errored: bool, max_epochs: int) -> str:
    """The status of a trial Tune no longer runs, from its last result as Tune holds it:
    ``interrupted`` when the search was stopped (Ctrl-C) before the trial ended, which
    ``--resume`` continues, else :func:`trial_status`.

    Tune marks ``done`` the last result of a trial that returned or that its scheduler (ASHA)
    stopped, not that of one it stopped because the search was interrupted. (A trial's
    ``result.json`` never holds that mark of a trial that returned: read from there, a trial is
    judged by :func:`trial_status` alone.)
    """
    ended = metrics.get("done") or metrics.get("train_done") or metrics.get("train_status")
    if not errored and not ended and not metrics.get("infeasible") and not metrics.get("failed"):
        return "interrupted"
    return trial_status(metrics, errored, max_epochs)


def trial_status(metrics: dict[str, Any], errored: bool, max_epochs: int) -> str:
    """finished / early_stopped / time_budget / stopped_by_asha / failed / infeasible / error."""
    if errored:
        return "error"
    if metrics.get("infeasible"):
        return "infeasible"
    if metrics.get("failed"):
        return "failed"
    if metrics.get("train_status"):
        return str(metrics["train_status"])
    if metrics.get("epoch", 0) >= max_epochs:
        return "finished"
    return "stopped_by_asha" if metrics else "not_started"


def make_row(
    trial_id: str, name: str, status: str, metrics: dict[str, Any], config: dict[str, Any]
) -> dict[str, Any]:
    row = {
        "name": name,
        "trial_id": trial_id,
        "status": status,
        "config": config,
        "weight_count": config["model"]["weight_count"],
        "macs_per_track": config["model"]["macs_per_track"],
        "epochs": int(metrics.get("epoch", 0)),
        # the epoch whose weights the trial exports and whose figures the row shows
        "best_epoch": int(metrics["best_epoch"]) if "best_epoch" in metrics else None,
        "seconds": metrics.get("seconds", 0.0),
    }
    for column, metric in METRIC_COLUMNS.items():
        value = metrics.get(metric, math.inf)
        row[column] = value if isinstance(value, int | float) and math.isfinite(value) else None
    if "inference_us_per_track" in metrics:  # --objective pareto-time (raytrack.search.timing)
        value = metrics["inference_us_per_track"]
        finite = isinstance(value, int | float) and math.isfinite(value)
        row["inference_us_per_track"] = value if finite else None
    return row


def rank(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sorted by P95 position error (trials without one last), with a rank column."""
    ordered = sorted(
        rows, key=lambda r: (r["pos_p95_mm"] is None, r["pos_p95_mm"] or 0.0, r["trial_id"])
    )
    return [{"rank": i + 1, **row} for i, row in enumerate(ordered)]


def pareto_front(rows: list[dict[str, Any]], cost: str) -> list[dict[str, Any]]:
    """Rows that no other row beats in both P95 position error and ``cost`` (weights, MACs or
    inference time; rows without it are left out)."""
    scored = [r for r in rows if r["pos_p95_mm"] is not None and r.get(cost) is not None]
    front = []
    for row in scored:
        dominated = any(
            other["pos_p95_mm"] <= row["pos_p95_mm"]
            and other[cost] <= row[cost]
            and (other["pos_p95_mm"] < row["pos_p95_mm"] or other[cost] < row[cost])
            for other in scored
        )
        if not dominated:
            front.append(row)
    return sorted(front, key=lambda r: r[cost])


def write_leaderboard(
    directory: Path, rows: list[dict[str, Any]], stem: str = "leaderboard"
) -> None:
    """``stem``.json (full rows) and ``stem``.csv (config as a JSON string) in ``directory``."""
    write_json_atomic(directory / f"{stem}.json", rows)
    with replacing(directory / f"{stem}.csv") as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {
                    **{k: row.get(k) for k in COLUMNS},
                    "config": json.dumps(row["config"], sort_keys=True),
                }
            )


def format_leaderboard(rows: list[dict[str, Any]]) -> str:
    """The printed table: its figures are the validation split's (``val``), of each trial's
    exported epoch; ``header``: whether the trial's model fits a trigger header (a dash: no
    model to tell)."""

    def mm(value):
        return f"{value:12.4f}" if value is not None else f"{'-':>12}"

    def fits(value):
        return {True: "yes", False: "no"}.get(value, "-")

    lines = [
        f"{'#':>3} {'name':<9} {'trial':<14} {'status':<15} {'weights':>9} {'header':>6} "
        f"{'epochs':>6} {'val mean mm':>12} {'val P95 mm':>12} {'val P99 mm':>12} "
        f"{'val worst mm':>12} {'val slope':>10}"
    ]
    for r in rows:
        slope = f"{r['slope_mean']:10.2e}" if r["slope_mean"] is not None else f"{'-':>10}"
        lines.append(
            f"{r['rank']:>3} {r['name']:<9} {r['trial_id']:<14} {r['status']:<15} "
            f"{r['weight_count']:>9} {fits(r.get('fits_trigger_header')):>6} {r['epochs']:>6} "
            f"{mm(r['pos_mean_mm'])} {mm(r['pos_p95_mm'])} {mm(r['pos_p99_mm'])} "
            f"{mm(r.get('pos_max_mm'))} {slope}"
        )
    if any("inference_us_per_track" in r for r in rows):  # --objective pareto-time
        lines = _with_time(lines, rows)
    return "\n".join(lines)


def _with_time(lines: list[str], rows: list[dict[str, Any]]) -> list[str]:
    """The printed leaderboard with a last column: ONNX Runtime's time per track, one thread."""
    times = [r.get("inference_us_per_track") for r in rows]
    cells = [f"{t:9.3g}" if t is not None else f"{'-':>9}" for t in times]
    return [f"{lines[0]} {'us/track':>9}"] + [
        f"{line} {cell}" for line, cell in zip(lines[1:], cells, strict=True)
    ]


def format_best(row: dict[str, Any], out: Path, report: dict[str, Any] | None) -> str:
    """The closing summary: the best trial, its test-split errors beside the straight line's,
    and where its exports are."""
    lines = [
        f"best: {row['name']} ({row['trial_id']}, {row['status']}), "
        f"validation P95 {row['pos_p95_mm']:.4f} mm"
    ]
    if report is not None:
        tracks = report["model"]["tracks"]
        lines.append(
            f"  test split ({tracks} tracks)  {'mean mm':>10} {'P95 mm':>10} {'P99 mm':>10} "
            f"{'worst mm':>10}"
        )
        for label, key in (("model", "model"), ("straight line", "straight_line")):
            errors = report[key]
            lines.append(
                f"    {label:<22} {errors['pos_mean_mm']:10.4f} {errors['pos_p95_mm']:10.4f} "
                f"{errors['pos_p99_mm']:10.4f} {errors['pos_max_mm']:10.4f}"
            )
    lines.append(
        f"  exports in {out}: model.onnx, model_jacobian.onnx, model.bin, metadata.json; "
        "evaluation/ (report.json, plots)"
    )
    return "\n".join(lines)
