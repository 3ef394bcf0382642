"""The report page: HTML of the figures, the leaderboard, the best model's numbers and the
table beside the integrator. Everything here renders what it is given; reading the experiment
and computing happen in :mod:`raytrack.report.experiment` and :mod:`raytrack.report.best`,
drawing in :mod:`raytrack.report.figures`."""

from __future__ import annotations

import base64
import html
import time
from pathlib import Path
from typing import Any

from raytrack.evaluate.summary import bin_rows, layers_text, worst_track_lines
from raytrack.report.best import BestModel
from raytrack.report.experiment import Experiment

STYLE = """
body { font-family: sans-serif; margin: 1.5em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.85em; color: #555; }
table { border-collapse: collapse; font-size: 0.8em; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
th { background: #f2f2f2; } td.text { text-align: left; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; }
.note { color: #a33; }
"""


TEXT_CELL = ' class="text"'


def document(title: str, parts: list[str]) -> str:
    """The whole page: ``parts`` (HTML) in order, under the page title ``title``."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )


def heading(experiment: Experiment, state: str) -> str:
    """The page's heading: the experiment, its data set, search and state, when written."""
    options = experiment.options
    return (
        f"<h1>raytrack experiment {html.escape(experiment.path.name)}</h1>\n"
        f"<p>data: {html.escape(experiment.dataset)}<br>search: {html.escape(options['search'])}"
        f", objective {html.escape(options['objective'])}, at most {options['max_epochs']} "
        f"epochs a trial; {len(experiment.rows)} trials ({html.escape(state)})<br>"
        f"written {time.strftime('%Y-%m-%d %H:%M:%S')} from {html.escape(str(experiment.path))}"
        "</p>"
    )


def note(text: str) -> str:
    """A paragraph that says what the page cannot show."""
    return f'<p class="note">{html.escape(text)}</p>'


def figure(path: Path, caption: str) -> str:
    """The PNG at ``path``, embedded, with its caption and file name."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    alt = html.escape(caption, quote=True)
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{alt}" '
        f'data-file="{html.escape(path.name)}"><figcaption>{html.escape(caption)} '
        f"(<code>{html.escape(path.name)}</code>)</figcaption></figure>"
    )


#: Leaderboard columns of the page: (header with unit, row key, format)
TABLE = (
    ("#", "rank", "{}"),
    ("name", "name", "{}"),
    ("trial", "trial_id", "{}"),
    ("status", "status", "{}"),
    ("hidden layers", None, None),
    ("weights [count]", "weight_count", "{:,}"),
    ("multiply-adds per track [count]", "macs_per_track", "{:,}"),
    ("inference time per track [us]", "inference_us_per_track", "{:.3g}"),
    ("epochs", "epochs", "{}"),
    ("exported epoch", "best_epoch", "{}"),
    ("val mean [mm]", "pos_mean_mm", "{:.4f}"),
    ("val P95 [mm]", "pos_p95_mm", "{:.4f}"),
    ("val P99 [mm]", "pos_p99_mm", "{:.4f}"),
    ("val worst [mm]", "pos_max_mm", "{:.4f}"),
    ("val slope mean [1]", "slope_mean", "{:.2e}"),
    ("val slope P95 [1]", "slope_p95", "{:.2e}"),
    ("training time [s]", "seconds", "{:.0f}"),
)


def leaderboard_table(rows: list[dict[str, Any]]) -> str:
    """The leaderboard's rows in the columns of :data:`TABLE`."""
    numeric = {key for _, key, fmt in TABLE if fmt and fmt != "{}"} | {"rank"}
    head = "".join(f"<th>{html.escape(h)}</th>" for h, _, _ in TABLE)
    body = []
    for row in rows:
        cells = []
        for _, key, fmt in TABLE:
            if key is None:
                text = hidden_layers(row.get("config", {}).get("model", {}))
            else:
                value = row.get(key)
                text = "-" if value is None else fmt.format(value)
            cells.append(f"<td{'' if key in numeric else TEXT_CELL}>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def hidden_layers(model: dict[str, Any]) -> str:
    """A model's hidden layers and activation, ``64-64 silu``; ``-`` when not known."""
    return layers_text(model.get("hidden", []), model.get("activation"))


def best_summary(best: BestModel) -> str:
    """The best model's test-split errors beside the straight line's, its worst track and its
    errors in bins (:func:`bins_table`)."""
    report = best.report
    lines = []
    for label, key in (("model", "model"), ("straight line", "straight_line")):
        r = report[key]
        lines.append(
            f'<tr><td class="text">{label}</td><td>{r["pos_mean_mm"]:.4f}</td>'
            f"<td>{r['pos_p95_mm']:.4f}</td><td>{r['pos_p99_mm']:.4f}</td>"
            f"<td>{r['pos_max_mm']:.4f}</td></tr>"
        )
    worst = "<br>".join(html.escape(line) for line in worst_track_lines(report["worst_tracks"][0]))
    return (
        f"<p>{html.escape(best.row['name'])} ({html.escape(best.row['trial_id'])}), evaluated "
        f"from {html.escape(best.source)} on the {len(best.truth):,} tracks of the test split "
        "(never seen in training or selection).</p><table><thead><tr><th></th><th>mean [mm]</th>"
        "<th>P95 [mm]</th><th>P99 [mm]</th><th>worst [mm]</th></tr></thead><tbody>"
        f"{''.join(lines)}</tbody></table>"
        f"<p>{worst}</p>" + bins_table(report)
    )


def bins_table(report: dict[str, Any]) -> str:
    """The test split's position errors in the bins of :func:`raytrack.evaluate.bin_rows`."""
    keys = ("pos_mean_mm", "pos_p95_mm", "pos_p99_mm", "pos_max_mm",
            "straight_line_pos_mean_mm", "straight_line_pos_p95_mm")  # fmt: skip
    headings = ["mean [mm]", "P95 [mm]", "P99 [mm]", "worst [mm]", "straight line mean [mm]",
                "straight line P95 [mm]"]  # fmt: skip
    if "base" in report:  # what the network adds: the model beside its physics base alone
        keys += ("base_pos_mean_mm", "base_pos_p95_mm", "base_pos_p99_mm", "base_pos_max_mm")
        headings += ["base alone mean [mm]", "base P95 [mm]", "base P99 [mm]", "base worst [mm]"]
    body = []
    for label, row in bin_rows(report):
        if row is None:
            body.append(f'<tr><td class="text" colspan="{len(keys) + 2}">'
                        f"{html.escape(label)}</td></tr>")  # fmt: skip
            continue
        cells = "".join(f"<td>{row[k]:.4f}</td>" for k in keys)
        body.append(f'<tr><td class="text">{html.escape(label)}</td><td>{row["tracks"]:,}</td>'
                    f"{cells}</tr>")  # fmt: skip
    head = "".join(f"<th>{h}</th>" for h in ("bin (|x|, |y|: at mid-leg)", "tracks", *headings))
    return (
        "<p>Test position error in bins of momentum, leg length and where the track is across "
        "the aperture (|x| and |y| at the middle of the leg, from its start and true end "
        "states):</p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


def commands(lines: list[str]) -> str:
    """Commands to copy, one a line."""
    return "<pre>" + html.escape("\n".join(lines)) + "</pre>"


#: The equal-accuracy table's columns (header, whether the cell is text)
EQUAL_ACCURACY = (
    ("#", False), ("name", True), ("trial", True), ("val mean [mm]", False),
    ("val P95 [mm]", False), ("inference [us/track]", False),
    ("integrator at least as accurate (mean and P95)", True), ("its mean [mm]", False),
    ("its P95 [mm]", False), ("its time [us/track]", False),
    ("x RK (its time / the trial's)", False),
)  # fmt: skip


def equal_accuracy_table(
    pairs: list[tuple[dict[str, Any], dict[str, Any], bool]],
) -> str:
    """Each timed trial (a leaderboard row) beside the fastest integrator setting at least as
    accurate in mean and P95, or the most accurate one when none is (``False``), and how many
    times faster than it the trial is; "" without a pair."""
    body = []
    for row, setting, qualifies in pairs:
        us = row["inference_us_per_track"]
        label = setting["label"] if qualifies else f"none as accurate; the most: {setting['label']}"
        cells = [str(row["rank"]), row["name"], row["trial_id"], f"{row['pos_mean_mm']:.4g}",
                 f"{row['pos_p95_mm']:.4g}", f"{us:.3g}", label, f"{setting['mean_mm']:.3g}",
                 f"{setting['p95_mm']:.3g}", f"{setting['us_per_track']:.3g}",
                 f"{setting['us_per_track'] / us:.3g}"]  # fmt: skip
        tds = [
            f"<td{TEXT_CELL if text else ''}>{html.escape(cell)}</td>"
            for cell, (_, text) in zip(cells, EQUAL_ACCURACY, strict=True)
        ]
        body.append("<tr>" + "".join(tds) + "</tr>")
    if not body:
        return ""
    head = "".join(f"<th>{html.escape(h)}</th>" for h, _ in EQUAL_ACCURACY)
    return (
        f'<table class="equal-accuracy"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}'
        "</tbody></table><p>The trials' errors are on the validation split, the integrator's on "
        "its sample of it (against an integration 1000 times tighter); x RK above 1: the trial "
        "is faster than the integrator at its accuracy.</p>"
    )
