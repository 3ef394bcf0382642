"""python -m raytrack.evaluate RUN_DIR [--data DIR]: the held-out report of a trained run.

RUN_DIR: a run of ``python -m raytrack.train``, a search's ``best/`` (``runs/NAME/best``), or one
of its Ray Tune trial directories (``runs/NAME/run_trial_...``, evaluated at its last checkpoint).
Writes ``RUN_DIR/evaluation/report.json`` (position and slope errors of the model and of the
straight line, overall and in momentum bins) and PNG plots: error histograms, error against
momentum, error against |dz|, learning curves.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from raytrack.cli import HelpFormatter, positive_int
from raytrack.data import DatasetError, load
from raytrack.data.independent import TIGHTER, independent_tracks
from raytrack.export.onnx_export import onnx_predict
from raytrack.files import write_json_atomic
from raytrack.models.metrics import (
    evaluation_report,
    momentum_gev,
    position_errors,
    slope_errors,
)
from raytrack.models.mlp import TrackMLP, straight_line
from raytrack.models.run import RUN_FILE, RunSpec, checkpoint_path, predict
from raytrack.models.training import load_checkpoint, model_from_checkpoint

DZ_BINS_MM = (0.0, 100.0, 300.0, 1000.0, 3000.0, 6000.0, 10000.0, 14000.0)


def evaluate_model(
    model: TrackMLP,
    inputs: np.ndarray,
    truth: np.ndarray,
    magnet: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """The report dict plus the per-track arrays the plots need (under ``_tracks``).

    ``magnet``: the z extent (mm) of the magnet for the leg-region bins (see
    :func:`leg_regions`), e.g. ``splits.axis_profile().half_maximum_extent()``.
    """
    predicted = predict(model, inputs)
    report = binned_report(inputs, truth, predicted, magnet)
    report["_tracks"] = {"inputs": inputs, "truth": truth, "predicted": predicted}
    return report


def binned_report(
    inputs: np.ndarray,
    truth: np.ndarray,
    predicted: np.ndarray,
    magnet: tuple[float, float] | None,
) -> dict[str, Any]:
    """Errors of ``predicted`` and of the straight line: overall, by momentum, by |dz| and, with
    the magnet's extent, by where the leg lies."""
    report = evaluation_report(inputs, truth, predicted)
    report["dz_bins"] = _dz_bins(inputs, truth, predicted)
    if magnet is not None:
        report["magnet_extent_mm"] = list(magnet)
        report["region_bins"] = _region_bins(inputs, truth, predicted, magnet)
    return report


def _dz_bins(inputs: np.ndarray, truth: np.ndarray, predicted: np.ndarray) -> list[dict[str, Any]]:
    dz = np.abs(inputs[:, 6] - inputs[:, 5])
    dpos = position_errors(predicted, truth)
    rows = []
    for low, high in zip(DZ_BINS_MM[:-1], DZ_BINS_MM[1:], strict=True):
        inside = (dz >= low) & (dz < high) if high < DZ_BINS_MM[-1] else (dz >= low)
        if inside.any():
            rows.append(
                {
                    "dz_low_mm": low,
                    "dz_high_mm": high,
                    "tracks": int(inside.sum()),
                    "pos_mean_mm": float(dpos[inside].mean()),
                    "pos_p95_mm": float(np.percentile(dpos[inside], 95)),
                }
            )
    return rows


#: Where a leg lies against the magnet's extent [z_in, z_out]; legs run either way.
REGIONS = ("before", "inside", "after", "entering or leaving", "across")


def leg_regions(inputs: np.ndarray, magnet: tuple[float, float]) -> np.ndarray:
    """Index into REGIONS per track: both ends before the magnet, both inside, both after, one
    end inside and one outside, or one end before and one after (the whole crossing)."""
    z_in, z_out = magnet
    low = np.minimum(inputs[:, 5], inputs[:, 6])
    high = np.maximum(inputs[:, 5], inputs[:, 6])
    region = np.full(len(inputs), 3)  # entering or leaving
    region[high <= z_in] = 0
    region[(low >= z_in) & (high <= z_out)] = 1
    region[low >= z_out] = 2
    region[(low < z_in) & (high > z_out)] = 4
    return region


def _region_bins(inputs, truth, predicted, magnet) -> list[dict[str, Any]]:
    region = leg_regions(inputs, magnet)
    model_err = position_errors(predicted, truth)
    line_err = position_errors(straight_line(inputs), truth)
    rows = []
    for k, name in enumerate(REGIONS):
        inside = region == k
        if inside.any():
            rows.append(
                {
                    "region": name,
                    "tracks": int(inside.sum()),
                    "pos_mean_mm": float(model_err[inside].mean()),
                    "pos_p95_mm": float(np.percentile(model_err[inside], 95)),
                    "straight_line_pos_mean_mm": float(line_err[inside].mean()),
                    "straight_line_pos_p95_mm": float(np.percentile(line_err[inside], 95)),
                }
            )
    return rows


def write_report(out_dir: Path, report: dict[str, Any], history: list[dict[str, float]]) -> None:
    """report.json and the PNG plots into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tracks = report.get("_tracks")
    write_json_atomic(out_dir / "report.json", {k: v for k, v in report.items() if k != "_tracks"})
    if tracks is not None:
        _plot_histograms(out_dir, **tracks)
        _plot_against(out_dir, "momentum", **tracks)
        _plot_against(out_dir, "dz", **tracks)
    if history:
        _plot_learning_curves(out_dir, history)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: runs on nodes without a display
    import matplotlib.pyplot as plt

    return plt


def _plot_histograms(out_dir: Path, inputs, truth, predicted) -> None:
    plt = _pyplot()
    line = straight_line(inputs)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, errors, label in (
        (axes[0], position_errors, "position error [mm]"),
        (axes[1], slope_errors, "slope error"),
    ):
        model_err, line_err = errors(predicted, truth), errors(line, truth)
        floor = max(min(model_err.min(), line_err.min()), 1e-9)
        bins = np.logspace(np.log10(floor), np.log10(max(model_err.max(), line_err.max())), 80)
        ax.hist(model_err, bins=bins, histtype="step", label="model")
        ax.hist(line_err, bins=bins, histtype="step", label="straight line")
        ax.set(xscale="log", xlabel=label, ylabel="tracks")
        ax.legend()
    _save(fig, out_dir / "error_histograms.png")


def _plot_against(out_dir: Path, what: str, inputs, truth, predicted) -> None:
    plt = _pyplot()
    if what == "momentum":
        x, label = momentum_gev(inputs), "p [GeV]"
    else:
        x, label = np.abs(inputs[:, 6] - inputs[:, 5]), "|dz| [mm]"
    dpos = position_errors(predicted, truth)
    fig, ax = plt.subplots(figsize=(6, 4))
    if np.ptp(x) == 0:  # a fixed leg: one point per statistic
        centres, means, p95 = x[:1], [dpos.mean()], [np.percentile(dpos, 95)]
    else:
        edges = np.quantile(x, np.linspace(0, 1, 21))
        index = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, 19)
        filled = [i for i in range(20) if (index == i).any()]
        centres = [np.median(x[index == i]) for i in filled]
        means = [dpos[index == i].mean() for i in filled]
        p95 = [np.percentile(dpos[index == i], 95) for i in filled]
    ax.plot(centres, means, "o-", label="mean")
    ax.plot(centres, p95, "s--", label="P95")
    ax.set(xlabel=label, ylabel="position error [mm]", yscale="log")
    if what == "momentum":
        ax.set_xscale("log")
    ax.legend()
    _save(fig, out_dir / f"error_vs_{what}.png")


def _plot_learning_curves(out_dir: Path, history: list[dict[str, float]]) -> None:
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    axes[0].plot(epochs, [h["train_loss"] for h in history], label="train")
    axes[0].plot(epochs, [h["val_loss"] for h in history], label="validation")
    axes[0].set(xlabel="epoch", ylabel="loss (standardised MSE)", yscale="log")
    axes[0].legend()
    axes[1].plot(epochs, [h["val_pos_mean_mm"] for h in history], label="mean")
    axes[1].plot(epochs, [h["val_pos_p95_mm"] for h in history], label="P95")
    axes[1].set(xlabel="epoch", ylabel="validation position error [mm]", yscale="log")
    axes[1].legend()
    _save(fig, out_dir / "learning_curves.png")


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    fig.clf()
    import matplotlib.pyplot as plt

    plt.close(fig)


#: Ray Tune's name for the checkpoint directories of a trial (checkpoint_000003, ...).
TUNE_CHECKPOINTS = "checkpoint_*"


def is_run(directory: Path) -> bool:
    return (directory / RUN_FILE).is_file() and checkpoint_path(directory).is_file()


def find_run(directory: str | Path) -> Path:
    """The run directory to evaluate for ``directory``: itself when it is one (written by
    ``python -m raytrack.train``, or a search's ``best/``), or, for a Ray Tune trial directory,
    its latest checkpoint (each one holds the trial's run.json and checkpoint)."""
    directory = Path(directory)
    if is_run(directory):
        return directory
    checkpoints = sorted(p for p in directory.glob(TUNE_CHECKPOINTS) if is_run(p))
    if checkpoints:
        return checkpoints[-1]  # zero-padded numbers: the last name is the latest
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such directory")
    raise FileNotFoundError(
        f"{directory}: not a raytrack run: no {RUN_FILE} and {checkpoint_path('.').name} here "
        f"(a run of python -m raytrack.train, a search's best/) nor in a {TUNE_CHECKPOINTS} "
        "directory (a Ray Tune trial of python -m raytrack.tune)"
    )


def evaluate_run(run_dir: str | Path, data_dir: str | Path | None = None) -> dict[str, Any]:
    """Evaluate the best weights of ``run_dir`` on the test split; writes ``evaluation/``.

    ``run_dir``: a run, a search's ``best/`` or a Ray Tune trial directory (see ``find_run``).
    """
    run_dir = Path(run_dir)
    run = find_run(run_dir)
    spec = RunSpec.from_dict(json.loads((run / RUN_FILE).read_text()))
    state = load_checkpoint(checkpoint_path(run))
    splits = load(data_dir or spec.data_dir, dtype=np.float64, splits=("test",))
    report = evaluate_model(
        model_from_checkpoint(state),
        splits.test.inputs(),
        splits.test.targets(),
        magnet=magnet_extent(splits),
    )
    report["dataset_id"] = splits.dataset_id
    write_report(run_dir / "evaluation", report, state["history"])
    return report


def evaluate_independent(
    run_dir: str | Path, count: int, data_dir: str | Path | None = None
) -> dict[str, Any]:
    """Evaluate the run's export on ``count`` fresh tracks of its dataset's phase space, with a
    truth integrated 100 times tighter (raytrack.data.independent); writes
    ``evaluation/independent.json``. The ONNX file is what is measured when the run has one."""
    run_dir = Path(run_dir)
    run = find_run(run_dir)
    spec = RunSpec.from_dict(json.loads((run / RUN_FILE).read_text()))
    splits = load(data_dir or spec.data_dir, splits=())
    rows = independent_tracks(splits.manifest, count, str(splits.manifest_path))
    inputs, truth = rows[:, :7], rows[:, 7:]
    measured = run / "model.onnx"
    if measured.is_file():
        predicted = onnx_predict(measured, inputs).astype(np.float64)
    else:
        measured = checkpoint_path(run)
        predicted = predict(model_from_checkpoint(load_checkpoint(measured)), inputs)
    report = binned_report(inputs, truth, predicted, magnet_extent(splits))
    report["measured"] = str(measured)
    report["truth"] = f"{count} fresh tracks, integration {TIGHTER:g} times tighter"
    (run_dir / "evaluation").mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / "evaluation" / "independent.json", report)
    return report


def magnet_extent(splits) -> tuple[float, float] | None:
    """The magnet's extent from the dataset's field, None for a field with no profile."""
    try:
        return splits.axis_profile().half_maximum_extent()
    except DatasetError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m raytrack.evaluate",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "run_dir",
        help="a run of python -m raytrack.train, a search's best/ or one of its trial directories",
    )
    parser.add_argument("--data", help="dataset to evaluate on (default: the run's own)")
    parser.add_argument(
        "--independent",
        type=positive_int,
        metavar="N",
        help="instead of the test split: N fresh tracks of the dataset's phase space that no "
        "shard holds, with a truth integrated 100 times tighter, through model.onnx "
        "(analytic fields only)",
    )
    args = parser.parse_args(argv)
    try:
        if args.independent:
            report = evaluate_independent(args.run_dir, args.independent, args.data)
        else:
            report = evaluate_run(args.run_dir, args.data)
    except (FileNotFoundError, DatasetError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.independent:
        print(f"{report['measured']} on {report['truth']}:")
    print_summary(report)
    print(f"wrote {Path(args.run_dir) / 'evaluation'}")
    return 0


def print_summary(report: dict[str, Any]) -> None:
    print(
        f"{'':15} {'mean mm':>9} {'median':>9} {'P95':>9} {'P99':>9} {'max':>9} {'slope mean':>11}"
    )
    for label, key in (("model", "model"), ("straight line", "straight_line")):
        r = report[key]
        print(
            f"{label:15} {r['pos_mean_mm']:9.4f} {r['pos_median_mm']:9.4f} {r['pos_p95_mm']:9.4f} "
            f"{r['pos_p99_mm']:9.4f} {r['pos_max_mm']:9.4f} {r['slope_mean']:11.2e}"
        )
    for row in report["momentum_bins"]:
        high = row["p_high_gev"] or "inf"
        r = row["model"]
        print(
            f"  p {row['p_low_gev']:g}-{high} GeV: mean {r['pos_mean_mm']:.4f} mm, "
            f"P95 {r['pos_p95_mm']:.4f} mm ({r['tracks']} tracks)"
        )
    for row in report.get("dz_bins", []):
        print(
            f"  |dz| {row['dz_low_mm']:g}-{row['dz_high_mm']:g} mm: mean "
            f"{row['pos_mean_mm']:.4f} mm, P95 {row['pos_p95_mm']:.4f} mm ({row['tracks']} tracks)"
        )
    if "region_bins" in report:
        z_in, z_out = report["magnet_extent_mm"]
        print(f"  legs against the magnet (z {z_in:g} -> {z_out:g} mm, |By| >= half its peak):")
    for row in report.get("region_bins", []):
        print(
            f"  {row['region']:>20}: mean {row['pos_mean_mm']:.4f} mm, P95 "
            f"{row['pos_p95_mm']:.4f} mm (straight line {row['straight_line_pos_mean_mm']:.4f}, "
            f"{row['straight_line_pos_p95_mm']:.4f}; {row['tracks']} tracks)"
        )


if __name__ == "__main__":
    sys.exit(main())
