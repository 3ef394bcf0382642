"""Evaluating a run directory: finding the run (a training's, a search's ``best/`` or a Ray
Tune trial's latest checkpoint), measuring its model on a dataset's test split or on fresh
tracks, and writing ``evaluation/`` (report.json and the figures)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from raytrack.data import DatasetError, load
from raytrack.data.independent import TIGHTER, independent_tracks
from raytrack.data.schema import has_jacobian, read_manifest
from raytrack.evaluate.bins import binned_report, evaluate_model
from raytrack.evaluate.figures import (
    AGAINST,
    error_against_figure,
    histograms_figure,
    jacobian_figure,
    learning_curves_figure,
    plot_context,
)
from raytrack.evaluate.jacobian import jacobian_report, model_jacobians
from raytrack.evaluate.summary import layers_text
from raytrack.export.onnx_export import onnx_predict
from raytrack.files import write_json_atomic
from raytrack.models.checkpoints import load_checkpoint, model_from_checkpoint
from raytrack.plotting import save_png
from raytrack.run.directory import (
    RUN_FILE,
    RunSpec,
    checkpoint_path,
    predict,
    predict_base,
    run_spec,
)

#: The evaluation's figures' resolution, and the PNG's Software text.
DPI = 110
SOFTWARE = "raytrack.evaluate"


def write_report(
    out_dir: Path,
    report: dict[str, Any],
    history: list[dict[str, float]],
    spec: RunSpec | None = None,
) -> None:
    """report.json and the PNG plots into ``out_dir``, the evaluation directory of a run; the
    figures name the run's model and loss from ``spec``, else from the run's ``run.json``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tracks = report.get("_tracks")
    plain = {k: v for k, v in report.items() if k != "_tracks"}
    if isinstance(report.get("jacobian"), dict):
        plain["jacobian"] = {k: v for k, v in report["jacobian"].items() if k != "_tracks"}
    write_json_atomic(out_dir / "report.json", plain)
    spec = spec or read_spec(out_dir.parent)
    run = plot_context(out_dir, model_title(spec) if spec else None)
    figures = {}
    if tracks is not None:
        figures["error_histograms"] = histograms_figure(run, **tracks)
        for what in AGAINST:
            figures[f"error_vs_{what}"] = error_against_figure(run, what, **tracks)
    if isinstance(report.get("jacobian"), dict) and "_tracks" in report["jacobian"]:
        figures["jacobian"] = jacobian_figure(run, report["jacobian"])
    if history:
        loss = (spec.train.loss, spec.train.jacobian_weight) if spec else (None, 0.0)
        figures["learning_curves"] = learning_curves_figure(run, history, *loss)
    for name, figure in figures.items():
        save_png(figure, out_dir / f"{name}.png", DPI, SOFTWARE)


def model_title(spec: RunSpec) -> str:
    """The run's model as the figures' titles name it: its preset or variant name and its
    hidden layers, ``tiny (32-32 silu)``."""
    return f"{spec.name} ({layers_text(spec.model.hidden, spec.model.activation)})"


def read_spec(directory: Path) -> RunSpec | None:
    """The spec of the run in ``directory`` (its run.json, else that of :func:`find_run`'s
    run), None when there is none."""
    try:
        return run_spec(directory if (directory / RUN_FILE).is_file() else find_run(directory))
    except (OSError, ValueError, KeyError):
        return None


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


def evaluation_dir(run_dir: str | Path, data_dir: str | Path | None = None) -> Path:
    """Where the evaluation of ``run_dir`` on ``data_dir`` goes: ``evaluation/`` on the run's own
    dataset, ``evaluation-<dataset directory name>/`` on another one (the run's own stays)."""
    run_dir = Path(run_dir)
    if data_dir is None:
        return run_dir / "evaluation"
    spec = run_spec(find_run(run_dir))
    data = Path(data_dir).resolve()
    if data == Path(spec.data_dir).resolve():
        return run_dir / "evaluation"
    return run_dir / f"evaluation-{data.name}"


def evaluate_run(run_dir: str | Path, data_dir: str | Path | None = None) -> dict[str, Any]:
    """Evaluate the best weights of ``run_dir`` on the test split; writes ``evaluation/`` (see
    :func:`evaluation_dir` for another dataset).

    ``run_dir``: a run, a search's ``best/`` or a Ray Tune trial directory (see ``find_run``).
    """
    run_dir = Path(run_dir)
    run = find_run(run_dir)
    spec = run_spec(run)
    state = load_checkpoint(checkpoint_path(run))
    data = Path(data_dir or spec.data_dir)
    manifest = read_manifest(data)
    jacobian = manifest is not None and has_jacobian(manifest)
    splits = load(data, dtype=np.float64, splits=("test",), jacobian=jacobian)
    report = evaluate_model(
        model_from_checkpoint(state),
        splits.test.inputs(),
        splits.test.targets(),
        magnet=magnet_extent(splits),
    )
    report["dataset_id"] = splits.dataset_id
    if jacobian:
        inputs = splits.test.inputs()
        jac_model, source = model_jacobians(run, inputs)
        report["jacobian"] = jacobian_report(inputs, splits.test.jacobians, jac_model, source)
    write_report(evaluation_dir(run_dir, data_dir), report, state["history"], spec)
    return report


def evaluate_independent(
    run_dir: str | Path, count: int, data_dir: str | Path | None = None
) -> dict[str, Any]:
    """Evaluate the run's export on ``count`` fresh tracks of its dataset's phase space, with a
    truth integrated 100 times tighter (raytrack.data.independent); writes
    ``independent.json`` in :func:`evaluation_dir`. The ONNX file is what is measured when the
    run has one."""
    run_dir = Path(run_dir)
    run = find_run(run_dir)
    spec = run_spec(run)
    splits = load(data_dir or spec.data_dir, splits=())
    rows = independent_tracks(splits.manifest, count, str(splits.manifest_path))
    inputs, truth = rows[:, :7], rows[:, 7:]
    model = model_from_checkpoint(load_checkpoint(checkpoint_path(run)))
    measured = run / "model.onnx"
    if measured.is_file():
        predicted = onnx_predict(measured, inputs).astype(np.float64)
    else:
        measured = checkpoint_path(run)
        predicted = predict(model, inputs)
    base = predict_base(model, inputs)
    report = binned_report(inputs, truth, predicted, magnet_extent(splits), base)
    report["measured"] = str(measured)
    report["truth"] = f"{count} fresh tracks, integration {TIGHTER:g} times tighter"
    out = evaluation_dir(run_dir, data_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "independent.json", report)
    return report


def magnet_extent(splits) -> tuple[float, float] | None:
    """The magnet's extent from the dataset's field, None for a field with no profile."""
    try:
        return splits.axis_profile().half_maximum_extent()
    except DatasetError:
        return None
