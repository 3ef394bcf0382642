"""``bench deploy``'s cases: each model with the field it is measured on and fresh tracks, from
a run directory (its dataset's field and phase space) or trained here on each field."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from raytrack.bench.common import TIGHT
from raytrack.bench.common import training_data as propagated_tracks
from raytrack.data.phase_space import PhaseSpace, load_phase_space, parse_phase_space
from raytrack.physics import DipoleField, Field

if TYPE_CHECKING:  # model, training and run code is imported where used: `bench --help` needs none
    from raytrack.models.mlp import TrackMLP

#: Seeds: the tracks a model is trained on here, and the fresh tracks every figure is made on.
TRAIN_SEED, TRACKS_SEED = 3, 11


@dataclasses.dataclass
class Case:
    """One model on one field, and the fresh tracks it is measured on."""

    field_name: str
    model_name: str
    field: Field
    model: TrackMLP
    inputs: np.ndarray  # (N, 7) float64
    truth: np.ndarray  # (N, 4)


def fresh_tracks(phase_space: PhaseSpace, field: Field, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` tracks no model here was trained on, with the tight truth (tracks it drops are left
    out)."""
    return propagated_tracks(phase_space, n, seed=TRACKS_SEED, field=field, tolerance=TIGHT)


def trained_cases(preset: str, samples: int, budget: float, tracks: int) -> list[Case]:
    """A model of ``preset`` trained for ``budget`` s on ``samples`` default-phase-space tracks of
    each field, the default dipole and the window-frame test map."""
    from raytrack.physics.synthetic_map import sampled_grid

    space = load_phase_space("default")
    fields = {"default dipole": DipoleField(), "window-frame map": sampled_grid()}
    cases = []
    for field_name, field in fields.items():
        start = time.perf_counter()
        model, note = quick_model(preset, space, field, samples, budget)
        inputs, truth = fresh_tracks(space, field, tracks)
        wall = time.perf_counter() - start
        print(f"{field_name}: {note}; {wall:.0f} s wall (tracks propagated, training)", flush=True)
        name = f"{preset}, {budget:g} s"
        cases.append(Case(field_name, name, field, model, inputs, truth))
    return cases


def quick_model(
    preset: str, space: PhaseSpace, field: Field, samples: int, budget: float
) -> tuple[TrackMLP, str]:
    """``preset`` trained for ``budget`` s on ``samples`` tracks through ``field`` (90 % train,
    10 % validation), as ``bench accuracy`` trains; returns the model and what was done."""
    from raytrack.bench.common import axis_of
    from raytrack.models import get_preset
    from raytrack.models.train_config import TrainConfig
    from raytrack.models.training import train_model

    inputs, targets = propagated_tracks(space, samples, seed=TRAIN_SEED, field=field)
    split = int(0.9 * len(inputs))
    result = train_model(
        get_preset(preset),
        TrainConfig(epochs=1_000_000, time_budget=budget),
        (inputs[:split], targets[:split]),
        (inputs[split:], targets[split:]),
        axis=axis_of(space, field),
    )
    note = (
        f"{preset} trained on {split} tracks: training budget {budget:g} s, "
        f"{result.epochs_run} epochs run"
    )
    return result.model.eval(), note


def run_case(run_dir: str, tracks: int) -> Case:
    """The model of a run (a run, a search's best/ or a trial) on its dataset's field and phase
    space; a map must be readable where the dataset's manifest says it was read from."""
    from raytrack.data.schema import read_manifest
    from raytrack.evaluate import find_run
    from raytrack.models.checkpoints import load_checkpoint, model_from_checkpoint
    from raytrack.run.directory import checkpoint_path, run_spec

    run = find_run(run_dir)
    spec = run_spec(run)
    manifest = read_manifest(Path(spec.data_dir))
    if manifest is None:
        raise ValueError(f"{run_dir}: its dataset {spec.data_dir} has no manifest.json")
    where = str(Path(spec.data_dir) / "manifest.json")
    field = dataset_field(manifest, where)
    space = parse_phase_space(manifest["phase_space"]["definition"], where)
    model = model_from_checkpoint(load_checkpoint(checkpoint_path(run))).eval()
    inputs, truth = fresh_tracks(space, field, tracks)
    field_name = describe_field(field)
    return Case(field_name, str(run_dir), field, model, inputs, truth)


def dataset_field(manifest: dict[str, Any], where: str) -> Field:
    """The field a dataset was made with: an analytic one from its description, a map read
    again from the files its ``generate`` command named (checked against the recorded hash)."""
    from raytrack.data.manifest_field import analytic_field
    from raytrack.physics import field_from_spec

    record = manifest["field"]
    field = analytic_field(record["description"])
    if field is not None:
        return field
    parameters = manifest.get("parameters", {})
    spec, unit = parameters.get("field"), parameters.get("field_unit")
    try:
        field = field_from_spec(spec, field_unit=unit)
    except (OSError, ValueError) as err:
        raise ValueError(
            f"{where}: the dataset's field map {spec} cannot be read from here ({err}); run "
            "from the directory the dataset was generated in"
        ) from None
    if field.fingerprint() != record["hash"]:
        raise ValueError(f"{where}: the map {spec} is not the one the dataset was made with")
    return field


def describe_field(field: Field) -> str:
    if isinstance(field, DipoleField):
        return "default dipole" if field.describe() == DipoleField().describe() else "dipole"
    source = field.describe().get("source", {})
    files = source.get("files") or [source.get("file", "map")]
    return f"map {files[0]}" + (" ..." if len(files) > 1 else "")
