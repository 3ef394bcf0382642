"""A run from start to end (raytrack.run.pipeline): train, export, evaluate."""

from __future__ import annotations

import dataclasses
import json

from raytrack.evaluate import main as evaluate_main
from raytrack.models import get_preset
from raytrack.run.directory import RunSpec
from raytrack.run.pipeline import train_run

from ..models.common import SHORT


def test_evaluate_independent_measures_the_onnx_export(default_dataset, tmp_path, capsys):
    spec = RunSpec(
        data_dir=str(default_dataset),
        model=get_preset("tiny"),
        train=dataclasses.replace(SHORT, epochs=2),
        name="tiny",
    )
    train_run(tmp_path / "run", spec)
    report = json.loads((tmp_path / "run" / "evaluation" / "report.json").read_text())
    assert {row["region"] for row in report["region_bins"]} <= {
        "before",
        "inside",
        "after",
        "entering or leaving",
        "across",
    }
    capsys.readouterr()
    # The command's own main, in this process: a second Python would import torch again.
    code = evaluate_main([str(tmp_path / "run"), "--independent", "400"])
    done = capsys.readouterr()
    assert code == 0, done.err
    assert "model.onnx on 400 fresh tracks" in done.out
    independent = json.loads((tmp_path / "run" / "evaluation" / "independent.json").read_text())
    assert independent["measured"].endswith("model.onnx")
    assert independent["model"]["tracks"] == 400
    assert sum(row["tracks"] for row in independent["region_bins"]) == 400
