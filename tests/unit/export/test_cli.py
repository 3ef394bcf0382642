"""``python -m raytrack.export RUN_DIR --header OUT.h`` (raytrack.export.cli): from a training
run's ``best/`` directory, a Ray Tune trial directory and a model.bin, and its errors."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from raytrack.export import write_model_bin
from raytrack.export.cli import main as export_main
from raytrack.files import write_json_atomic
from raytrack.models.checkpoints import CHECKPOINT_NAME
from raytrack.models.formulation import Formulation
from raytrack.models.jacobian import forward_with_jacobian
from raytrack.models.mlp import ModelConfig
from raytrack.models.train_config import TrainConfig
from raytrack.models.training import train_model
from raytrack.run.directory import RUN_FILE, RunSpec

from .drivers import run_header
from .header_helpers import (
    FORMULATIONS,
    IGNORE_JIT_WARNING,
    JACOBIAN_RTOL,
    check_against_torch,
    draw_tracks,
    jacobian_error,
    make_model,
)
from .helpers import AXIS, mismatch

pytestmark = IGNORE_JIT_WARNING


def test_export_from_a_search_best_dir_and_a_trial_dir(tmp_path: Path, capsys) -> None:
    """best/ as the search writes it (run.json, checkpoint.pt of a trained model, trial.json,
    the exports) and a Ray Tune trial's checkpoint directory export the checkpoint's best
    weights: the same header as the run's model.bin gives, and predictions as torch's."""
    config = ModelConfig(hidden=(16, 8), activation="silu", leg_power=1.5)
    train = TrainConfig(epochs=1, batch_size=256, seed=0)
    inputs = draw_tracks(1200, 31)
    truth = Formulation("expansion", "state", "raw", 0.0, AXIS).base_prediction(
        torch.from_numpy(inputs).double()
    )
    truth = truth.numpy() + np.random.default_rng(0).normal(0.0, 0.01, (len(inputs), 4))
    best = tmp_path / "search" / "best"
    result = train_model(
        config, train, (inputs[:1000], truth[:1000]), (inputs[1000:], truth[1000:]),
        axis=AXIS, checkpoint_dir=best,
    )  # fmt: skip
    spec = RunSpec(data_dir=str(tmp_path / "data"), model=config, train=train, name="tiny")
    write_json_atomic(best / RUN_FILE, spec.to_dict())
    write_json_atomic(best / "trial.json", {"trial_id": "a_00000", "row": {}})
    write_model_bin(result.model, best / "model.bin")

    assert export_main([str(best), "--header", str(tmp_path / "best.h")]) == 0
    printed = capsys.readouterr().out
    assert "best.h: namespace raytrack_model" in printed and "of 65536 bytes" in printed
    from_bin = tmp_path / "from_bin.h"
    assert export_main([str(best / "model.bin"), "--header", str(from_bin)]) == 0

    def body(path: Path) -> str:  # all but the first two lines, which name the source
        return "\n".join(path.read_text().splitlines()[2:])

    assert body(tmp_path / "best.h") == body(from_bin)

    trial = tmp_path / "search" / "run_trial_0" / "checkpoint_000001"
    trial.mkdir(parents=True)
    shutil.copy(best / CHECKPOINT_NAME, trial / CHECKPOINT_NAME)
    shutil.copy(best / RUN_FILE, trial / RUN_FILE)
    args = [str(trial.parent), "--header", str(tmp_path / "trial.h"), "--namespace", "t::m"]
    assert export_main(args) == 0
    renamed = body(from_bin).replace("raytrack_model", "t::m")
    renamed = renamed.replace("RAYTRACK_MODEL_RAYTRACK_MODEL_", "RAYTRACK_MODEL_T__M_")
    assert body(tmp_path / "trial.h") == renamed

    groups = {"any": draw_tracks(200, 32), "fixed": draw_tracks(100, 33, "fixed")}
    out, _, jac = run_header(tmp_path / "best.h", "raytrack_model", groups, tmp_path)
    check_against_torch(result.model, groups, out, jac, JACOBIAN_RTOL["float32"], "best/")
    # ... and the torch model's own forward_with_jacobian (what model_jacobian.onnx exports).
    inputs = np.concatenate(list(groups.values()))
    with torch.no_grad():
        end, ref = forward_with_jacobian(result.model, torch.from_numpy(inputs))
    assert mismatch(out, end.numpy()) <= 1.0
    assert jacobian_error(jac, ref.double().numpy()).max() <= JACOBIAN_RTOL["float32"]


def test_cli_errors_name_the_problem(tmp_path: Path, capsys) -> None:
    assert export_main([str(tmp_path / "absent"), "--header", str(tmp_path / "x.h")]) == 1
    assert "no such directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert export_main([str(tmp_path / "empty"), "--header", str(tmp_path / "x.h")]) == 1
    assert "not a raytrack run" in capsys.readouterr().err
    write_model_bin(make_model(*FORMULATIONS[1]), tmp_path / "model.bin")
    args = [str(tmp_path / "model.bin"), "--header", str(tmp_path / "no" / "x.h")]
    assert export_main(args) == 1
    assert "no such directory" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        export_main([str(tmp_path / "model.bin"), "--header", "x.h", "--namespace", "a-b"])
    assert "not a usable C++ namespace" in capsys.readouterr().err


def test_python_dash_m_runs_the_cli(tmp_path: Path) -> None:
    write_model_bin(make_model(*FORMULATIONS[1]), tmp_path / "model.bin")
    cmd = [sys.executable, "-m", "raytrack.export", str(tmp_path / "model.bin")]
    proc = subprocess.run(
        [*cmd, "--header", str(tmp_path / "m.h")], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "#ifndef RAYTRACK_MODEL_RAYTRACK_MODEL_H" in (tmp_path / "m.h").read_text()
