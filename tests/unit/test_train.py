"""python -m raytrack.train: a run from the command line, what it checks before it speaks, and
a rerun of a finished run."""

from __future__ import annotations

import contextlib
import io
import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from raytrack import train
from raytrack.data import load, load_phase_space
from raytrack.physics import DipoleField
from raytrack.run.directory import OUTPUTS
from raytrack.train import build_parser
from raytrack.train import main as train_main

from .models.common import TINY, model_inputs

REPO = Path(__file__).resolve().parents[2]
TRAIN_OPTIONS = ["--preset", "tiny", "--epochs", "3", "--threads", "1"]


class StartedError(Exception):
    """Raised by a stand-in for train_run: the command went on to train."""


def refuse_to_train(*_args, **_kwargs):
    raise StartedError


@pytest.fixture(scope="module")
def trained(classic_dataset, tmp_path_factory):
    """A finished run of the tiny preset, trained by the command's main: (run dir, its
    arguments, the exit code, what it printed)."""
    run_dir = tmp_path_factory.mktemp("train") / "run"
    argv = ["--data", str(classic_dataset), "--out", str(run_dir), *TRAIN_OPTIONS]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = train_main(argv)
    return run_dir, argv, code, printed.getvalue()


def test_train_and_evaluate_commands(trained, classic_dataset, tmp_path, capsys):
    run_dir, _, code, printed = trained
    assert code == 0
    assert "straight line" in printed
    # issue 15: train's summary has the tails and the bins across the aperture
    for words in ("P99", "worst track:", "mid-leg |x| 0-250 mm", "mid-leg |y| 0-250 mm"):
        assert words in printed, words
    for name in (
        "run.json",
        "checkpoint.pt",
        "history.json",
        "model.onnx",
        "model.bin",
        "metadata.json",
        "evaluation/report.json",
        "evaluation/learning_curves.png",
        "evaluation/error_histograms.png",
        "evaluation/error_vs_momentum.png",
        "evaluation/error_vs_dz.png",
        "evaluation/error_vs_x_mid.png",
        "evaluation/error_vs_y_mid.png",
    ):
        assert (run_dir / name).exists(), name
    metadata = json.loads((run_dir / "metadata.json").read_text())
    assert metadata["weight_count"] == TINY.weight_count
    assert metadata["dataset"]["dataset_id"] == load(classic_dataset).dataset_id
    assert metadata["architecture"]["layers"] == [14, 64, 64, 4]
    assert metadata["architecture"]["base"] == "path"
    assert len(metadata["normalisation"]["input_mean"]) == 14
    assert metadata["test_metrics"]["model"]["pos_mean_mm"] > 0
    assert len(json.loads((run_dir / "history.json").read_text())) == 3
    report_file = run_dir / "evaluation" / "report.json"
    kept = report_file.read_bytes()
    report_file.unlink()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "raytrack.evaluate", str(run_dir)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        report = json.loads(report_file.read_text())
    finally:  # the module's finished run keeps every output
        report_file.write_bytes(kept)
    worst = report["worst_tracks"][0]
    assert worst["pos_error_mm"] == report["model"]["pos_max_mm"]
    for words in ("P99", f"worst track: {worst['pos_error_mm']:.4f} mm off", "mid-leg |x|",
                  "mid-leg |y|"):  # fmt: skip
        assert words in done.stdout, words
    assert report["x_mid_bins"] and report["y_mid_bins"]
    assert report["model"]["pos_mean_mm"] == pytest.approx(
        metadata["test_metrics"]["model"]["pos_mean_mm"]
    )
    # A directory that is no run: the command's own main (python -m ran it above), without
    # a third Python importing torch.
    from raytrack.evaluate import main as evaluate_main

    assert evaluate_main([str(tmp_path)]) == 1
    assert "not a raytrack run" in capsys.readouterr().err


def test_a_finished_run_is_left_as_it_is(trained, monkeypatch, capsys):
    """Issue 25: the same command again, on a run that ended with every output written, says
    so and where its outputs are, and exits 0 without training, evaluating or exporting."""
    run_dir, argv, code, _ = trained
    assert code == 0
    monkeypatch.setattr("raytrack.train.train_run", refuse_to_train)
    written = {name: (run_dir / name).stat().st_mtime_ns for name in OUTPUTS}
    assert train_main(argv) == 0
    out = capsys.readouterr().out
    assert f"run {run_dir} is finished (finished)" in out and "Nothing to do" in out
    assert f"its outputs are in {run_dir}: history.json" in out and "model.onnx" in out
    history = json.loads((run_dir / "history.json").read_text())
    best = min(history, key=lambda m: m["val_pos_p95_mm"])
    assert f"best epoch {best['epoch']}, validation P95 {best['val_pos_p95_mm']:.4f} mm" in out
    assert "training" not in out and "resuming" not in out
    assert {name: (run_dir / name).stat().st_mtime_ns for name in OUTPUTS} == written
    # Other options are another run: refused, as before.
    other = [*argv[: argv.index("--epochs")], "--epochs", "4", "--threads", "1"]
    assert train_main(other) == 1
    assert "another model, training or dataset configuration" in capsys.readouterr().err


def test_a_finished_run_missing_an_output_writes_it_again(trained, monkeypatch):
    """Without all its outputs a finished run is not done: the command goes on (and train_run,
    finding the training ended, exports and evaluates again)."""
    run_dir, argv, _, _ = trained
    monkeypatch.setattr("raytrack.train.train_run", refuse_to_train)
    model_bin = run_dir / "model.bin"
    kept = model_bin.read_bytes()
    model_bin.unlink()
    try:
        with pytest.raises(StartedError):
            train_main(argv)
    finally:
        model_bin.write_bytes(kept)


def test_a_missing_dataset_is_refused_before_anything_is_said(tmp_path, monkeypatch, capsys):
    """Issue 25: no 'training small ... on cpu' line before the error."""
    monkeypatch.setattr("raytrack.train.train_run", refuse_to_train)
    out = tmp_path / "run"
    assert train_main(["--data", str(tmp_path / "nonexistent"), "--out", str(out)]) == 1
    said = capsys.readouterr()
    assert said.out == ""
    assert "nonexistent/manifest.json: not found" in said.err
    assert not out.exists()


def test_help_says_which_epoch_is_exported_and_how_to_pick_a_gpu():
    text = " ".join(build_parser().format_help().split())
    assert "lowest validation P95 position error" in text
    assert "--device cuda:1" in text and "CUDA_VISIBLE_DEVICES" in text


def test_train_cli_trains_with_the_datasets_jacobians(
    ray_cluster, classic_dataset, tmp_path, capsys
):
    from raytrack.data.pipeline import generate_dataset
    from raytrack.data.shards import DatasetSpec

    data = tmp_path / "data"
    spec = DatasetSpec(
        samples=600,
        shards=3,
        seed=23,
        phase_space=load_phase_space("default"),
        field=DipoleField(),
        jacobian=True,
    )
    generate_dataset(spec, data, log=lambda _: None)
    common = ["--preset", "trigger", "--epochs", "1", "--jacobian-weight", "100"]
    refused = tmp_path / "refused"
    assert train_main(["--data", str(classic_dataset), "--out", str(refused), *common]) == 1
    assert "--jacobian" in capsys.readouterr().err
    assert not refused.exists()  # refused before anything was written
    run = tmp_path / "run"
    assert train_main(["--data", str(data), "--out", str(run), *common]) == 0
    assert json.loads((run / "run.json").read_text())["train"]["jacobian_weight"] == 100.0
    three_readers_agree_on_the_jacobian(run, tmp_path)


def three_readers_agree_on_the_jacobian(run: Path, work: Path) -> None:
    """model_jacobian.onnx, the torch model and the trigger header (g++) of a trained run give
    the same Jacobian to float32 tolerance (each element against its column's largest)."""
    from raytrack.export import onnx_predict_with_jacobian
    from raytrack.export.cli import main as export_main
    from raytrack.models.checkpoints import load_checkpoint, model_from_checkpoint
    from raytrack.models.jacobian import forward_with_jacobian
    from unit.export.drivers import run_header

    model = model_from_checkpoint(load_checkpoint(run / "checkpoint.pt"))
    inputs = model_inputs(300, seed=24).numpy().astype(np.float32)
    with torch.no_grad():
        end, jac = (
            t.double().numpy() for t in forward_with_jacobian(model, torch.from_numpy(inputs))
        )
    onnx_end, onnx_jac = onnx_predict_with_jacobian(run / "model_jacobian.onnx", inputs)
    assert export_main([str(run), "--header", str(work / "model.h")]) == 0
    header_end, _, header_jac = run_header(
        work / "model.h", "raytrack_model", {"all": inputs}, work
    )
    scale = np.abs(jac).max(axis=0) + 1e-30
    for name, got in (("onnx", onnx_jac), ("header", header_jac)):
        assert np.max(np.abs(got - jac) / scale) < 1e-4, name
    for got in (onnx_end, header_end):
        assert np.max(np.abs(got - end) / (np.abs(end).max(axis=0))) < 1e-4


def test_train_with_missing_data_writes_nothing(tmp_path, capsys):
    out = tmp_path / "R"
    code = train.main(["--data", str(tmp_path / "nonexistent"), "--out", str(out)])
    assert code == 1
    assert "nonexistent" in capsys.readouterr().err
    assert not out.exists()


def test_train_on_cuda_with_a_cpu_only_torch_is_named(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: False)
    out = tmp_path / "R"
    code = train.main(["--data", str(tmp_path / "data"), "--out", str(out), "--device", "cuda"])
    assert code == 1
    err = capsys.readouterr().err
    assert "--device cuda" in err and "CPU-only" in err
    assert not out.exists()


@pytest.mark.parametrize(
    "args,message",
    [
        (["--batch", "0"], "argument --batch: must be at least 1, got 0"),
        (["--lr", "-1"], "argument --lr: must be greater than 0"),
        (["--device", "tpu"], "--device tpu"),
    ],
)
def test_train_bad_options_are_named_and_write_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "R"
    try:
        code = train.main(["--data", str(tmp_path), "--out", str(out), *args])
    except SystemExit as exit_:  # argparse's own refusal
        code = exit_.code
    assert code in (1, 2)
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_train_names_a_damaged_manifest(tmp_path, capsys):
    (tmp_path / "manifest.json").write_text('{"format": "raytrack-dataset", "format_version": 1}')
    assert train.main(["--data", str(tmp_path), "--out", str(tmp_path / "R")]) == 1
    err = capsys.readouterr().err
    assert f"{Path(tmp_path) / 'manifest.json'}: damaged manifest" in err
    assert not (tmp_path / "R").exists()


# Python installs its KeyboardInterrupt handler only where SIGINT is not ignored, and a test
# run in the background inherits an ignored SIGINT: the child sets the handler itself.
TRAIN = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv[0] = 'raytrack.train'; runpy.run_module('raytrack.train', run_name='__main__')"
)


def start_train(data: Path, out: Path) -> subprocess.Popen:
    options = ["--preset", "tiny", "--epochs", "100000", "--threads", "1", "--device", "cpu"]
    return subprocess.Popen(
        [sys.executable, "-c", TRAIN, "--data", str(data), "--out", str(out), *options],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_until(process: subprocess.Popen, pattern: str) -> re.Match:
    """The first line of the process's output that matches ``pattern``."""
    for line in process.stdout:
        if found := re.search(pattern, line):
            return found
    process.wait()
    raise AssertionError(f"no line matched {pattern!r}; stderr:\n{process.stderr.read()}")


def interrupt(process: subprocess.Popen) -> str:
    """SIGINT (Ctrl-C) to the process; its stderr once it ended with 130."""
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Traceback" not in err
    return err


def test_train_interrupted_says_how_to_resume_and_resumes(classic_dataset, tmp_path):
    out = tmp_path / "run"
    first = start_train(classic_dataset, out)
    read_until(first, r"^epoch +2 ")  # a checkpoint is written after every epoch
    err = interrupt(first)
    said = re.search(rf"run the same command again to resume {out} from epoch (\d+)", err)
    assert said, err
    done = int(said.group(1))
    assert done >= 2

    again = start_train(classic_dataset, out)
    assert int(read_until(again, r"^resuming from epoch (\d+)").group(1)) == done
    read_until(again, rf"^epoch +{done + 1} ")  # it goes on, not from epoch 1
    interrupt(again)
