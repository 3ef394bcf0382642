"""python -m raytrack (the overview of the commands) and the console scripts pyproject.toml
installs, one a command."""

from __future__ import annotations

import importlib
import subprocess
import sys
import tomllib
from pathlib import Path

from raytrack.__main__ import COMMANDS, main, overview, summary

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


def test_every_console_script_resolves_to_a_callable_main():
    assert set(SCRIPTS) == {"raytrack"} | {f"raytrack-{name}" for name in COMMANDS}
    for script, target in SCRIPTS.items():
        module, _, attribute = target.partition(":")
        assert callable(getattr(importlib.import_module(module), attribute)), script
        if script != "raytrack":  # each command's script runs what python -m runs
            assert module == COMMANDS[script.removeprefix("raytrack-")], script


def test_the_overview_lists_every_command_with_its_own_line(capsys):
    text = overview()
    for name, module in COMMANDS.items():
        line = next(line for line in text.splitlines() if line.split()[:1] == [name])
        assert line.split(None, 1)[1] == summary(module)  # from the module's docstring
        assert len(line.split()) > 2 and "python -m" not in line, line
    assert "--device cuda:1" in text and "CUDA_VISIBLE_DEVICES" in text
    assert main([]) == 0 and capsys.readouterr().out.strip() == text
    assert main(["trian"]) == 2
    assert "unknown argument 'trian'" in capsys.readouterr().err


def test_python_m_raytrack_prints_the_overview_without_importing_torch():
    check = (
        "import runpy, sys\nsys.argv[1:] = []\n"
        "try:\n    runpy.run_module('raytrack', run_name='__main__')\n"
        "except SystemExit as ended:\n    assert ended.code == 0\n"
        "assert 'torch' not in sys.modules and 'ray' not in sys.modules, 'imported'"
    )
    done = subprocess.run(
        [sys.executable, "-c", check], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == overview()
