"""Issue 17: what the command lines say about interrupts, outputs they cannot write, and where
they put things. Checked in-process before anything starts (no Ray, no training), except the
Ctrl-C of a real training run."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from raytrack import generate, train
from raytrack.export import cli as export_cli

REPO = Path(__file__).resolve().parents[1]


def refuse_to_start(*_args, **_kwargs):
    raise AssertionError("started work although an output cannot be written")


def exit_code(main, argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit_:  # argparse's own refusal
        return int(exit_.code)


# Item 4: Ctrl-C on train says how to go on, and the same command resumes.

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


# Item 6: an output that cannot be written is named, with its option, before anything starts.


@pytest.fixture(params=["under a file", "read-only filesystem"])
def unwritable(request, tmp_path) -> Path:
    """A directory that cannot be made: below a regular file (chmod does not stop root), or
    on a filesystem that refuses every write (sysfs, root included)."""
    if request.param == "under a file":
        (tmp_path / "afile").write_text("not a directory")
        return tmp_path / "afile" / "out"
    if not Path("/sys/kernel").is_dir():
        pytest.skip("no sysfs here")
    return Path("/sys/raytrack-out")


@pytest.mark.parametrize("command", ["train --out", "generate --out", "export --header", "tune"])
def test_unwritable_outputs_are_named_before_anything_starts(
    command, unwritable, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr("raytrack.train.train_run", refuse_to_start)
    monkeypatch.setattr("raytrack.generate.generate_dataset", refuse_to_start)
    monkeypatch.setattr("raytrack.export.cli.load_model", refuse_to_start)
    monkeypatch.setattr("raytrack.tune.start_ray", refuse_to_start)
    monkeypatch.setattr("raytrack.cluster.ray.init", refuse_to_start)
    path, option = str(unwritable), command.split()[-1]
    if command == "train --out":
        code = exit_code(train.main, ["--data", str(tmp_path), "--out", path])
    elif command == "generate --out":
        code = exit_code(generate.main, ["--samples", "30", "--out", path])
    elif command == "export --header":
        path = str(unwritable / "model.h")
        code = exit_code(export_cli.main, [str(tmp_path / "model.bin"), "--header", path])
    else:
        from raytrack import tune

        option = "--storage"
        code = exit_code(tune.main, ["--storage", path])
    err = capsys.readouterr().err
    assert code == 1
    assert f"{option} {path}: cannot be written" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not unwritable.exists()


# Item 8: a non-positive worker count is refused.


@pytest.mark.parametrize("workers", ["-3", "0"])
def test_generate_refuses_workers_below_one(workers, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("raytrack.generate.generate_dataset", refuse_to_start)
    out = tmp_path / "d"
    assert exit_code(generate.main, ["--samples", "30", "--out", str(out), "--workers", workers])
    assert f"argument --workers: must be at least 1, got {workers}" in capsys.readouterr().err
    assert not out.exists()


# Item 11: tune's dataset of a phase-space file lies under STORAGE/datasets, one per content.


def test_tune_dataset_of_a_phase_space_file_lies_under_storage(tmp_path):
    from raytrack import tune
    from raytrack.configs import shipped_file

    classic = shipped_file("phase space", "classic").read_text()
    first, second = tmp_path / "a" / "space.toml", tmp_path / "b" / "space.toml"
    for path, text in ((first, classic), (second, classic.replace("name = ", "name = 'b' #"))):
        path.parent.mkdir()
        path.write_text(text)
    storage = tmp_path / "runs"

    def data_dir(phase_space: Path) -> Path:
        argv = ["--storage", str(storage), "--samples", "2000", "--phase-space", str(phase_space)]
        return Path(tune.plan_from_args(tune.build_parser().parse_args(argv)).options.data_dir)

    mine = data_dir(first)
    assert mine.parent == storage / "datasets"
    assert re.fullmatch(r"space-[0-9a-f]{8}-2000-seed0", mine.name), mine.name
    assert data_dir(second) != mine  # same stem, another phase space: never one dataset
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "space.toml").write_text("# the same phase space\n" + classic)
    assert data_dir(tmp_path / "c" / "space.toml") == mine
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]  # nothing written
    assert data_dir(Path("classic")) == storage / "datasets" / "classic-2000-seed0"
