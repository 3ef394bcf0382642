"""What the benchmark tests read from a benchmark's printed output."""

from __future__ import annotations


def table(output: str, first_words: tuple[str, ...]) -> list[list[str]]:
    """The whitespace-split lines of ``output`` that start with one of ``first_words``."""
    return [line.split() for line in output.splitlines() if line.startswith(first_words)]
