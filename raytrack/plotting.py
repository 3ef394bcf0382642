"""Matplotlib helpers that the evaluation's and the experiment report's figures share: the
Agg backend, labelled log axes, grids, binned error statistics and saving a PNG.

This module imports no torch, and matplotlib only inside the functions that draw: training
and the Ray trial workers import :mod:`raytrack.evaluate` (and through it this module) without
drawing a figure, and need not pay for loading matplotlib.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from raytrack.files import replacing

#: A tick label closer than this share of a log axis to one already labelled is left blank, so
#: that labels never crowd (the tick and its grid line stay).
LABEL_GAP = 1 / 8


def pyplot():
    """matplotlib.pyplot on the Agg backend (PNG files, no display)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: runs on nodes without a display
    import matplotlib.pyplot as plt

    return plt


def log_ticks(ax, which: str, values) -> None:
    """Ticks on a log axis (``which``: "x" or "y") with plain-number labels, at least three,
    and its limits at the ticks just outside ``values``: every point lies between two labels.

    The ticks are 1, else 1-2-5, else 1-2-...-9 times the powers of ten, the first of these
    with four ticks that leaves at most a quarter of the axis empty; narrower ranges get a
    linear locator's ticks, ranges of more than nine decades matplotlib's own. Only some of
    the ticks are labelled (:func:`labelled_ticks`).
    """
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter

    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values) & (values > 0)]
    if values.size == 0:
        return
    axis = ax.xaxis if which == "x" else ax.yaxis
    ticks = log_tick_values(float(values.min()), float(values.max()))
    if ticks is None:
        axis.set_major_formatter(FuncFormatter(lambda v, _: tick_label(v)))
        return
    shown = set(labelled_ticks(ticks))
    axis.set_major_formatter(FuncFormatter(lambda v, _: tick_label(v) if v in shown else ""))
    axis.set_major_locator(FixedLocator(ticks))
    axis.set_minor_locator(LogLocator(subs="auto"))
    axis.set_minor_formatter(NullFormatter())
    margin = (ticks[-1] / ticks[0]) ** 0.02  # points on the outermost ticks clear the frame
    limits = (ticks[0] / margin, ticks[-1] * margin)
    (ax.set_xlim if which == "x" else ax.set_ylim)(*limits)


def tick_label(value: float) -> str:
    """A tick's label: a plain number, 1e-5 rather than 1e-05."""
    return f"{value:g}".replace("e-0", "e-")


def grid(ax) -> None:
    """Grid lines at the major ticks, fainter ones at the minor ticks of a log axis."""
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", alpha=0.08)


def log_tick_values(low: float, high: float) -> list[float] | None:
    """The ticks of :func:`log_ticks` for values from ``low`` to ``high`` (> 0), from the tick
    at or below ``low`` to the one at or above ``high``; None: more than nine decades."""
    from matplotlib.ticker import MaxNLocator

    if high / low > 1e9:
        return None
    if high / low < 1.01:  # one value: a little around it
        low, high = low / 1.1, high * 1.1
    powers = range(int(np.floor(np.log10(low))) - 1, int(np.ceil(np.log10(high))) + 1)
    for subs in ((1,), (1, 2, 5), tuple(range(1, 10))):
        grid = sorted(s * 10.0**k for k in powers for s in subs)
        below = max(t for t in grid if t <= low * (1 + 1e-9))
        above = min(t for t in grid if t >= high * (1 - 1e-9))
        ticks = [t for t in grid if below <= t <= above]
        empty = np.log(low / below) + np.log(above / high)
        if len(ticks) >= 4 and empty <= 0.25 * np.log(above / below):
            return ticks
    # within a few steps of 1-2-...-9: a linear locator's ticks where they bracket the range
    # (the one at 0 is dropped on a log axis: 0.18 -> 2 gets 0.5 ... 2.5), else 1-2-...-9's
    linear = [float(t) for t in MaxNLocator(nbins=4).tick_values(low, high) if t > 0]
    if linear and linear[0] <= low * (1 + 1e-9) and linear[-1] >= high * (1 - 1e-9):
        return linear
    return ticks


def labelled_ticks(ticks: list[float]) -> list[float]:
    """The ticks of a log axis that get a label: both ends (they bracket the values), then the
    powers of ten, then 2 and 5 times them, then the others, each only when it lies at least
    :data:`LABEL_GAP` of the axis from every label already chosen; at least three."""
    logs = np.log10(ticks)
    gap = LABEL_GAP * (logs[-1] - logs[0])
    chosen = {0, len(ticks) - 1}
    for k in sorted(range(1, len(ticks) - 1), key=lambda k: (_plainness(ticks[k]), k)):
        if all(abs(logs[k] - logs[j]) >= gap for j in chosen):
            chosen.add(k)
    if len(chosen) < 3 and len(ticks) >= 3:  # the interior tick farthest from both ends
        interior = range(1, len(ticks) - 1)
        chosen.add(max(interior, key=lambda k: min(logs[k] - logs[0], logs[-1] - logs[k])))
    return [ticks[k] for k in sorted(chosen)]


def _plainness(value: float) -> int:
    """0 for a power of ten, 1 for 2 or 5 times one, 2 otherwise: the order in which ticks
    are labelled."""
    mantissa = value / 10.0 ** math.floor(math.log10(value) + 1e-9)
    for rank, plain in ((0, (1.0,)), (1, (2.0, 5.0))):
        if any(math.isclose(mantissa, m, rel_tol=1e-6) for m in plain):
            return rank
    return 2


def quantile_bins(
    x: np.ndarray, errors: dict[str, np.ndarray], bins: int = 20
) -> tuple[np.ndarray, dict[str, tuple[np.ndarray, ...]]]:
    """The median of ``x`` in each of ``bins`` bins of equal counts (one bin when ``x`` is
    fixed, a fixed leg), and per error array its mean, P95, P99 and worst in those bins."""
    if np.ptp(x) == 0:
        index, filled = np.zeros(len(x), dtype=int), [0]
    else:
        edges = np.quantile(x, np.linspace(0, 1, bins + 1))
        index = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, bins - 1)
        filled = [i for i in range(bins) if (index == i).any()]
    centres = np.array([np.median(x[index == i]) for i in filled])
    stats = {
        key: (
            np.array([e[index == i].mean() for i in filled]),
            np.array([np.percentile(e[index == i], 95) for i in filled]),
            np.array([np.percentile(e[index == i], 99) for i in filled]),
            np.array([e[index == i].max() for i in filled]),
        )
        for key, e in errors.items()
    }
    return centres, stats


def save_png(fig, path: Path, dpi: int, software: str) -> Path:
    """Lay ``fig`` out, write it to ``path`` (a PNG, written in full or not at all) and close
    it. Its title and axis labels go into the file's text chunks too (:func:`png_text`)."""
    plt = pyplot()
    fig.tight_layout()
    with replacing(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", metadata=png_text(fig, software))
    plt.close(fig)
    return path


def png_text(fig, software: str) -> dict[str, str]:
    """A figure's PNG text chunks, where a test or a catalogue can read what it shows: Title
    (the figure's title, else its first axes'), Description (each labelled axes' x and y
    labels) and Software (what drew it)."""
    labelled = [ax for ax in fig.axes if ax.get_xlabel() or ax.get_ylabel()]
    return {
        "Title": fig.get_suptitle() or fig.axes[0].get_title(),
        "Description": "; ".join(
            f"x axis: {ax.get_xlabel()}; y axis: {ax.get_ylabel()}" for ax in labelled
        ),
        "Software": software,
    }
