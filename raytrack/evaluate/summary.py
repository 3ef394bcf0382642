"""A report of the evaluation as text: the summary ``python -m raytrack.evaluate`` and
``python -m raytrack.train`` print, and the labelled bins and worst track that the experiment
report shows too."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from raytrack.data.schema import JACOBIAN_INPUTS, JACOBIAN_OUTPUTS


def print_summary(report: dict[str, Any]) -> None:
    """The model's, its base's alone (when the report has it) and the straight line's errors,
    the worst track, the errors in every bin and, when the report has one, the Jacobian
    section, on stdout."""
    print(
        f"{'':15} {'mean mm':>9} {'median':>9} {'P95':>9} {'P99':>9} {'worst':>9} "
        f"{'slope mean':>11}"
    )
    rows = (("model", "model"), ("base alone", "base"), ("straight line", "straight_line"))
    for label, key in ((label, key) for label, key in rows if key in report):
        r = report[key]
        print(
            f"{label:15} {r['pos_mean_mm']:9.4f} {r['pos_median_mm']:9.4f} {r['pos_p95_mm']:9.4f} "
            f"{r['pos_p99_mm']:9.4f} {r['pos_max_mm']:9.4f} {r['slope_mean']:11.2e}"
        )
    if report.get("worst_tracks"):
        print_worst_track(report["worst_tracks"][0], len(report["worst_tracks"]))
    print(
        f"{'position error in bins':28} {'tracks':>7} {'mean mm':>9} {'P95':>9} {'P99':>9} "
        f"{'worst':>9} {'line mean':>10} {'line P95':>9}"
        + (f" {'base mean':>10} {'base P95':>9} {'base P99':>9}" if "base" in report else "")
    )
    for label, row in bin_rows(report):
        if row is None:  # a heading
            print(f"  {label}")
            continue
        print(
            f"  {label:26} {row['tracks']:7d} {row['pos_mean_mm']:9.4f} {row['pos_p95_mm']:9.4f} "
            f"{row['pos_p99_mm']:9.4f} {row['pos_max_mm']:9.4f} "
            f"{row['straight_line_pos_mean_mm']:10.4f} {row['straight_line_pos_p95_mm']:9.4f}"
            + _base_cells(row)
        )
    if isinstance(report.get("jacobian"), dict):
        print_jacobian_summary(report["jacobian"])


def _base_cells(row: dict[str, Any]) -> str:
    """The base's mean, P95 and P99 of a bin row, when the report has the base."""
    if "base_pos_mean_mm" not in row:
        return ""
    return (
        f" {row['base_pos_mean_mm']:10.4f} {row['base_pos_p95_mm']:9.4f}"
        f" {row['base_pos_p99_mm']:9.4f}"
    )


def layers_text(hidden: Sequence[int], activation: str | None = None) -> str:
    """A network's hidden layers and activation, ``64-64 silu``; ``-`` without layers."""
    text = "-".join(str(w) for w in hidden) or "-"
    return text + (f" {activation}" if activation else "")


def bin_rows(report: dict[str, Any]) -> list[tuple[str, dict[str, Any] | None]]:
    """Every bin of ``report`` as (label, row), a row with the keys of
    :meth:`raytrack.evaluate.bins._Errors.tails`: momentum, |dz|, |x| and |y| at mid-leg, then
    the leg regions under a heading (label, None). Kinds of bins a report lacks are left out."""
    rows: list[tuple[str, dict[str, Any] | None]] = []
    for row in report["momentum_bins"]:
        model, line = row["model"], row["straight_line"]
        cells = {
            **{k: model[k] for k in ("tracks", "pos_mean_mm", "pos_p95_mm", "pos_p99_mm",
                                     "pos_max_mm")},
            "straight_line_pos_mean_mm": line["pos_mean_mm"],
            "straight_line_pos_p95_mm": line["pos_p95_mm"],
        }  # fmt: skip
        if "base" in row:
            for k in ("pos_mean_mm", "pos_p95_mm", "pos_p99_mm", "pos_max_mm"):
                cells[f"base_{k}"] = row["base"][k]
        rows.append((momentum_bin_label(row), cells))
    complete = [r for r in report.get("dz_bins", []) if "pos_max_mm" in r]
    rows += [(f"|dz| {r['dz_low_mm']:g}-{r['dz_high_mm']:g} mm", r) for r in complete]
    for name in ("x", "y"):
        for r in report.get(f"{name}_mid_bins", []):
            high = r[f"{name}_mid_high_mm"]
            high = "inf" if high is None else f"{high:g}"
            rows.append((f"mid-leg |{name}| {r[f'{name}_mid_low_mm']:g}-{high} mm", r))
    regions = [r for r in report.get("region_bins", []) if "pos_max_mm" in r]
    if regions:
        z_in, z_out = report["magnet_extent_mm"]
        rows.append((f"legs against the magnet (z {z_in:.0f} -> {z_out:.0f} mm, |By| >= half "
                     "its peak):", None))  # fmt: skip
        rows += [(r["region"], r) for r in regions]
    return rows


def worst_track_lines(track: dict[str, Any]) -> list[str]:
    """The worst track of a report (a row of ``worst_tracks``) in five lines of text."""
    start, true, pred = track["start"], track["truth"], track["predicted"]
    region = f", {track['region']}" if track.get("region") else ""

    def state(s):
        return f"x {s['x_mm']:.1f} mm, y {s['y_mm']:.1f} mm, tx {s['tx']:.4f}, ty {s['ty']:.4f}"

    return [
        f"worst track: {track['pos_error_mm']:.4f} mm off (straight line "
        f"{track['straight_line_pos_error_mm']:.1f} mm), p {track['p_gev']:.2f} GeV, charge "
        f"{track['charge']:+d} (row {track['row']})",
        f"leg z {start['z_start_mm']:.0f} -> {start['z_end_mm']:.0f} mm{region}; mid-leg x "
        f"{track['mid_leg_mm']['x']:.0f} mm, y {track['mid_leg_mm']['y']:.0f} mm",
        f"start {state(start)}, q/p {start['qop_per_mev']:.4e}/MeV",
        f"end, true {state(true)}",
        f"end, predicted {state(pred)}",
    ]


def print_worst_track(track: dict[str, Any], named: int) -> None:
    lines = worst_track_lines(track)
    print(lines[0])
    for line in lines[1:]:
        print(f"  {line}")
    print(f"  (report.json's worst_tracks names the {named} worst)")


def momentum_bin_label(row: dict[str, Any]) -> str:
    """``p 2-5 GeV``, ``p 100-inf GeV``: a momentum bin of the report, as printed."""
    high = "inf" if row["p_high_gev"] is None else f"{row['p_high_gev']:g}"
    return f"p {row['p_low_gev']:g}-{high} GeV"


def print_jacobian_summary(report: dict[str, Any]) -> None:
    """The ``jacobian`` section: per-element relative error, propagated 1-sigma by momentum."""
    sigma = report["start_sigma"]
    print(
        f"Jacobian d end / d start against the integrator's, {report['tracks']} test tracks "
        f"({report['source']}):"
    )
    print(
        "  per element |J_model - J_RK| / (|J_RK| + 1 % of sigma_end / sigma_start): P95 (median)"
    )
    print("  " + f"{'':8}" + "".join(f"{'d/d ' + i:>21}" for i in JACOBIAN_INPUTS))
    for o in JACOBIAN_OUTPUTS:
        cells = (report["element_relative_error"][f"J_{o}_{i}"] for i in JACOBIAN_INPUTS)
        print("  " + f"{o + '_end':8}" + "".join(
            f"{c['p95']:>11.2e} ({c['median']:.1e})" for c in cells
        ))  # fmt: skip
    rk = report["rk_sigma_median"]
    print(
        f"  propagated 1-sigma sqrt(diag(J C J^T)), uncorrelated start sigma_x = sigma_y = "
        f"{sigma['x_mm']:g} mm, sigma_tx = sigma_ty = {sigma['tx']:g},\n  sigma_qop = "
        f"{sigma['qop_relative']:g} |qop| (RK's median: sigma_x {rk['x_mm']:.3g} mm, sigma_y "
        f"{rk['y_mm']:.3g} mm):"
    )

    print(
        f"  {'|sigma/sigma_RK - 1|':<20} {'x median':>9} {'x P95':>9} {'y median':>9} "
        f"{'y P95':>9} {'line x P95':>11} {'line y P95':>11} {'tracks':>7}"
    )
    rows = [("all", report["tracks"], report)]
    for row in report["momentum_bins"]:
        rows.append((momentum_bin_label(row), row["tracks"], row))
    for label, tracks, row in rows:
        x, y = row["sigma_relative_error"]["x"], row["sigma_relative_error"]["y"]
        line = row["straight_line_sigma_relative_error"]
        print(
            f"  {label:<20} {x['median']:9.2e} {x['p95']:9.2e} {y['median']:9.2e} "
            f"{y['p95']:9.2e} {line['x']['p95']:11.2e} {line['y']['p95']:11.2e} {tracks:7d}"
        )
