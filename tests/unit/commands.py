"""Calling a command's ``main`` in the test process, and proving it stopped before any work."""

from __future__ import annotations

from collections.abc import Callable


def refuse_to_start(*_args, **_kwargs):
    """Stands in for the step that would start work: a test passes only if the command stopped
    before it."""
    raise AssertionError("started work although the inputs were wrong")


def exit_code(main: Callable[[list[str]], int], argv: list[str]) -> int:
    """``main(argv)``'s exit status, argparse's own refusals (SystemExit) included."""
    try:
        return main(argv)
    except SystemExit as exit_:
        return int(exit_.code)
