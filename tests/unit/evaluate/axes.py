"""What a drawn figure shows on its axes, for the tests of the evaluation's and the report's
figures, and a fixture that closes the figures a test drew."""

from __future__ import annotations

import pytest

from raytrack.plotting import pyplot


@pytest.fixture(autouse=True)
def close_figures():
    """Close the figures a test drew after it: pyplot keeps every open figure."""
    yield
    pyplot().close("all")


def labelled_ticks(axis) -> list[float]:
    """Where ``axis`` shows a tick label (major or minor) inside its limits, once drawn."""
    axis.figure.canvas.draw()
    low, high = sorted(axis.get_view_interval())
    ticks = [*axis.get_major_ticks(), *axis.get_minor_ticks()]
    shown = [t for t in ticks if t.label1.get_visible() and t.label1.get_text()]
    return sorted(t.get_loc() for t in shown if low <= t.get_loc() <= high)


def check_log_axis(axis, values) -> None:
    """At least three labels, and every value between two of them (issue 17: two labels, and
    the curve below the lowest)."""
    labels = labelled_ticks(axis)
    assert len(labels) >= 3, labels
    assert labels[0] <= min(values) and max(values) <= labels[-1], (labels, min(values))
