"""The README's commands are the ones CI runs and the ones the package provides."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_ci_runs_the_readme_test_command():
    ci_lines = (REPO / ".ci" / "run").read_text().strip().splitlines()
    assert ci_lines[-1] in (REPO / "README.md").read_text()
    assert "pytest" in ci_lines[-1]


def test_every_entry_point_in_the_readme_answers_help(monkeypatch, capsys):
    # Each module runs as ``python -m`` runs it (as __main__), in this process: a new
    # interpreter for each module would only add the seconds of importing torch and Ray again.
    readme = (REPO / "README.md").read_text()
    modules = (
        "raytrack.tune",
        "raytrack.generate",
        "raytrack.bench",
        "raytrack.train",
        "raytrack.evaluate",
        "raytrack.export",
        "raytrack.report",
    )
    for module in modules:
        assert f"python -m {module}" in readme
        monkeypatch.setattr(sys, "argv", [module, "--help"])
        with pytest.raises(SystemExit) as done:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        out, err = capsys.readouterr()
        assert done.value.code in (0, None), err
        assert "usage" in out


@pytest.mark.slow  # a new Python process that times propagation
def test_bench_generate_runs_and_prints_ratios():
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "raytrack.bench",
            "generate",
            "--tracks",
            "2000",
            "--baseline-tracks",
            "2",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "x baseline" in done.stdout
    rows = [
        line.split()
        for line in done.stdout.splitlines()
        if line.startswith(("classic", "variable"))
    ]
    assert [r[0] for r in rows[:2]] == ["classic", "variable"]
    assert all(float(r[3]) > 1 for r in rows)  # faster than the scalar loop


def test_bench_usage_lines_state_the_real_defaults(monkeypatch):
    """``[--tracks 8192]`` in ``bench --help`` is what ``bench infer`` uses without the option."""
    import argparse
    import re

    from raytrack import bench

    parse_args = argparse.ArgumentParser.parse_args

    class ParsedError(Exception):
        pass

    def parse_only(self, *args, **kwargs):  # stop main() before it measures anything
        raise ParsedError(parse_args(self, *args, **kwargs))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_only)
    usage = r"python -m raytrack\.bench (\w+)((?: \[--[\w-]+ [^\]]+\])*)"
    usages = re.findall(usage, bench.__doc__)
    assert usages
    for command, options in usages:
        try:
            bench.main([command])
        except ParsedError as parsed:
            args = parsed.args[0]
        for name, shown in re.findall(r"\[--([\w-]+) ([^\]]+)\]", options):
            if shown == "..." or shown.isupper():  # a placeholder, not a default
                continue
            default = getattr(args, name.replace("-", "_"))
            assert str(default) == shown.replace("_", ""), f"bench {command} --{name}"


def test_the_cpu_torch_advice_comes_before_the_two_commands_it_applies_to():
    readme = (REPO / "README.md").read_text()
    first_install = readme.index("```bash", readme.index("## Two commands"))
    # The pinned CPU build first (it comes from a mirror too), PyTorch's index as the alternative.
    assert readme.index("pip install torch==2.13.0") < readme.index("download.pytorch.org/whl/cpu")
    assert readme.index("download.pytorch.org/whl/cpu") < first_install
    section = readme.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    assert section.count("```bash") == 2


def test_tensorboard_installs_with_the_project_as_the_readme_says():
    import tomllib

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert any(r.startswith("tensorboard") for r in extras["tensorboard"])
    readme = (REPO / "README.md").read_text()
    assert 'pip install -e ".[tensorboard]"' in readme
    assert "tensorboard --logdir runs/NAME" in readme  # what tune prints at the end


def test_every_physics_citation_points_at_a_section_of_docs_physics_md():
    """The code cites the project's own docs/physics.md, by sections that exist."""
    import re

    headings = re.findall(r"^#+ (\d+[a-z]?)\. ", (REPO / "docs" / "physics.md").read_text(), re.M)
    cited = 0
    for folder in ("raytrack", "tests", "search_spaces", "condor", "docs"):
        for path in (REPO / folder).rglob("*"):
            if path.suffix not in {".py", ".md", ".toml", ".hpp", ".sub", ".sh"}:
                continue
            if path == Path(__file__).resolve():
                continue
            text = path.read_text()
            for match in re.finditer(r"(\S*)physics\.md\S*?,? section (\d+[a-z]?)", text):
                assert match[2] in headings, f"{path}: {match[0]} (no such section)"
                cited += 1
            for match in re.finditer(r"(\S*)physics\.md", text):
                # Beside docs/physics.md, its neighbours link it by its own name.
                assert match[1].endswith("docs/") or path.parent.name == "docs", (
                    f"{path} cites {match[0]!r}, not docs/physics.md"
                )
    readme = (REPO / "README.md").read_text()
    assert "physics.md 2a" not in readme and "docs/physics.md" in readme
    assert cited >= 10


def test_the_readme_names_the_overview_and_the_console_scripts():
    import tomllib

    readme = (REPO / "README.md").read_text()
    assert "`python -m raytrack`" in readme and "`raytrack-<command>`" in readme
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    done = subprocess.run(
        [sys.executable, "-m", "raytrack"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    for script in scripts:
        if script.startswith("raytrack-"):
            assert script.removeprefix("raytrack-") in done.stdout
            assert f"python -m raytrack.{script.removeprefix('raytrack-')}" in readme
