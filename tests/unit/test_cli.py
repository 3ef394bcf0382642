"""What every command line shares: options checked and named before anything starts, and
every option with a default says it in --help."""

from __future__ import annotations

from pathlib import Path

import pytest

from raytrack import generate, train
from raytrack.export import cli as export_cli

from .commands import exit_code, refuse_to_start


def parsers():
    import argparse

    from raytrack import bench, evaluate, tune

    def from_main(main, *args):
        captured = {}

        def parse_args(self, argv=None, namespace=None):
            captured.setdefault("parser", self)
            raise SystemExit(0)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(argparse.ArgumentParser, "parse_args", parse_args)
            with pytest.raises(SystemExit):
                main(list(args))
        return captured["parser"]

    bench_parser = from_main(bench.main)
    subcommands = next(a for a in bench_parser._actions if a.choices and a.dest == "command")
    yield from (generate.build_parser(), train.build_parser(), tune.build_parser())
    yield from_main(evaluate.main, "run")
    yield bench_parser
    yield from subcommands.choices.values()


def test_every_help_text_shows_its_default():
    import argparse

    for parser in parsers():
        formatter = parser._get_formatter()
        for action in parser._actions:
            nothing = any(action.default is n for n in (None, False, argparse.SUPPRESS))
            if not action.option_strings or nothing:
                continue
            text = formatter._expand_help(action)
            says = "(default" in text or text.startswith("default ")
            assert says, f"{parser.prog} {action.option_strings[0]}: {text!r}"


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
