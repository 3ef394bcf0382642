"""python -m raytrack.report runs/NAME: the experiment report, runs/NAME/report/index.html.

One self-contained page (the figures are embedded; the same PNG files lie beside it):

- validation P95 position error against weight count and against multiply-adds per track, every
  trial a point coloured by its status, the Pareto front drawn, the 16384-weight (64 KB) limit
  of LHCb's GPU trigger marked; with ``--objective pareto-time``, also against each trial's
  inference time per track, beside the integrator's fastest setting at each accuracy (measured
  once, kept in ``integrator_curve.json``: raytrack.search.timing);
- validation P95 against epoch for every trial (where ASHA stopped a trial, its curve ends);
- the leaderboard, with units;
- the best model on the test split: mean, P95, P99 and worst position error, the worst track
  by name, the errors in bins of momentum, |dz| and |x| and |y| at mid-leg, and figures of the
  error against momentum, |dz|, |x| and |y| at mid-leg, with the straight line beside it.

``python -m raytrack.tune`` writes it at the end of every search; this command writes it again,
also for a search still running or one that was interrupted: it reads only the experiment
directory (the trials' ``result.json``, the leaderboard when the search has ended) and, for the
best model, the latest checkpoint of the best trial when the search left no ``best/``.
"""

from __future__ import annotations

import argparse
import sys

from raytrack.cli import HelpFormatter
from raytrack.data import DatasetError
from raytrack.report.write import write_experiment_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m raytrack.report", description=__doc__, formatter_class=HelpFormatter
    )
    parser.add_argument("experiment", help="an experiment directory of python -m raytrack.tune")
    args = parser.parse_args(argv)
    try:
        index = write_experiment_report(args.experiment)
    except (FileNotFoundError, DatasetError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {index}")
    return 0
