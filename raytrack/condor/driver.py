"""The head's driver (``RAYTRACK_DRIVER``): a search keeps its experiment in shared storage and
resumes it when the head job runs again; a command ``python -m raytrack.tune`` would refuse is
refused before Ray starts."""

from __future__ import annotations

import argparse
import contextlib
import io
import shlex
from pathlib import Path


class DriverError(ValueError):
    """RAYTRACK_DRIVER (the submit file's DRIVER) cannot run: refused before Ray starts."""


def driver_command(settings: dict[str, str]) -> str:
    """The driver; a search keeps its experiment in shared storage and resumes it if it exists
    (the head job runs again after an eviction). Raises :class:`DriverError` for a search
    command that ``python -m raytrack.tune`` would refuse."""
    command = settings["driver"]
    arguments = tune_arguments(command)
    if arguments is None:
        return command
    args = parse_tune_arguments(command, arguments)
    storage = args.storage or settings["storage"]
    name = args.name or "condor-" + settings["cluster_id"]
    if args.storage is None:
        command += f" --storage {shlex.quote(storage)}"
    if args.name is None:
        command += f" --name {shlex.quote(name)}"
    if not args.resume and (Path(storage) / name / "experiment.json").exists():
        command += " --resume"
    return command


def tune_arguments(command: str) -> list[str] | None:
    """The words after ``-m raytrack.tune`` in ``command``; None when it runs something else."""
    try:
        words = shlex.split(command)
    except ValueError as err:  # an unclosed quote: the shell would refuse it too
        raise DriverError(f"DRIVER {command!r}: {err}") from err
    for i in range(len(words) - 1):
        if words[i] == "-m" and words[i + 1] == "raytrack.tune":
            return words[i + 2 :]
    return None


def operators_after_the_search(command: str) -> list[str]:
    """The shell's operators (``|``, ``&&``, ``;``, ``>``...) after ``-m raytrack.tune`` in
    ``command``, quoted text aside. Those before it (``cd DIR &&``) are the user's business;
    after it they would take the options the head appends (``| tee log --storage ...``)."""
    lexer = shlex.shlex(command, posix=False, punctuation_chars=True)  # keeps quotes on words
    lexer.whitespace_split = True
    words = list(lexer)
    start = next(
        (i for i in range(1, len(words)) if words[i - 1 : i + 1] == ["-m", "raytrack.tune"]), 0
    )
    return [word for word in words[start:] if set(word) <= set(lexer.punctuation_chars)]


def parse_tune_arguments(command: str, arguments: list[str]) -> argparse.Namespace:
    """``arguments`` read by raytrack.tune's own parser (every spelling it accepts: --name=X,
    --stor X), with None for a --storage or --name not given."""
    from raytrack.tune import build_parser  # imports Ray Tune: only for a search driver

    if operators_after_the_search(command):
        raise DriverError(
            f"DRIVER {command!r}: a raytrack.tune driver must end with that command, without "
            "shell operators (| ; & > <) after it: the head adds --storage, --name and --resume "
            "to its end, and its output already goes to the job's log"
        )
    parser = build_parser()
    parser.set_defaults(storage=None, name=None)
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(errors):
            return parser.parse_args(arguments)
    except SystemExit:  # argparse's error (or --help): its message says what is wrong
        message = errors.getvalue().strip().splitlines()
        reason = message[-1] if message else "not a raytrack.tune command line"
        raise DriverError(f"DRIVER {command!r}: {reason}") from None
