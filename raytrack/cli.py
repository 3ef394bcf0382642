"""What every command line shares: help texts that show defaults, checked numeric options.

A number out of range is refused by argparse itself, so the message names the option as it was
typed (``argument --batch: must be at least 1, got 0``) and nothing has started yet.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the module docstring's layout and appends ``(default: X)`` to every option that
    has a default and does not already say it in its help."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            action.option_strings
            and not any(action.default is nothing for nothing in (None, False, argparse.SUPPRESS))
            and not _states_its_default(text)
        ):
            text += " (default: %(default)s)"
        return text


def _states_its_default(text: str) -> bool:
    """Whether a help text already gives its default ("(default: ...)", "default 100, ...")."""
    return "(default" in text or "default:" in text or text.startswith("default ")


def number_at_least(
    minimum: float, kind: type = int, *, above: bool = False, maximum: float | None = None
) -> Callable[[str], float]:
    """An argparse ``type``: a ``kind`` number >= ``minimum`` (> with ``above``), and at most
    ``maximum`` when given."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            noun = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"must be {noun}, got {text!r}") from None
        if value < minimum or (above and value == minimum):
            relation = "greater than" if above else "at least"
            raise argparse.ArgumentTypeError(f"must be {relation} {minimum:g}, got {text}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum:g}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in some of its own messages
    return parse


positive_int = number_at_least(1)
non_negative_int = number_at_least(0)
positive_float = number_at_least(0, float, above=True)
non_negative_float = number_at_least(0, float)
port_number = number_at_least(1, maximum=65535)
