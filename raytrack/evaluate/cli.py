"""python -m raytrack.evaluate RUN_DIR [--data DIR]: the held-out report of a trained run.

RUN_DIR: a run of ``python -m raytrack.train``, a search's ``best/`` (``runs/NAME/best``), or one
of its Ray Tune trial directories (``runs/NAME/run_trial_...``, evaluated at its last checkpoint).
Writes ``RUN_DIR/evaluation/report.json`` (position and slope errors of the model and of the
straight line, mean, P95, P99 and worst, overall and in bins of momentum, |dz|, |x| and |y| at
mid-leg and where the leg lies; the worst tracks by name) and PNG plots: error histograms, error
against momentum, |dz|, mid-leg |x| and |y|, learning curves. When the dataset was generated with
``--jacobian``, also the model's transport Jacobian against the integrator's (the ``jacobian``
key, ``jacobian.png``; see :func:`jacobian_report`). With ``--data`` another dataset than the
run's, all of it goes to ``RUN_DIR/evaluation-<its directory name>/`` instead: the evaluation on
the run's own test split stays.
"""

from __future__ import annotations

import argparse
import sys

from raytrack.cli import HelpFormatter, positive_int
from raytrack.data import DatasetError
from raytrack.evaluate.runs import evaluate_independent, evaluate_run, evaluation_dir
from raytrack.evaluate.summary import print_summary

#: What the report says when the dataset has no Jacobian columns.
NO_JACOBIAN_NOTE = (
    "no Jacobian report: the dataset has no Jacobian columns; generate one with "
    "python -m raytrack.generate --jacobian and evaluate on it (--data DIR)"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m raytrack.evaluate",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "run_dir",
        help="a run of python -m raytrack.train, a search's best/ or one of its trial directories",
    )
    parser.add_argument("--data", help="dataset to evaluate on (default: the run's own)")
    parser.add_argument(
        "--independent",
        type=positive_int,
        metavar="N",
        help="instead of the test split: N fresh tracks of the dataset's phase space that no "
        "shard holds, with a truth integrated 100 times tighter, through model.onnx "
        "(analytic fields only)",
    )
    args = parser.parse_args(argv)
    try:
        if args.independent:
            report = evaluate_independent(args.run_dir, args.independent, args.data)
        else:
            report = evaluate_run(args.run_dir, args.data)
    except (FileNotFoundError, DatasetError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.independent:
        print(f"{report['measured']} on {report['truth']}:")
    print_summary(report)
    if not args.independent and "jacobian" not in report:
        print(NO_JACOBIAN_NOTE)
    print(f"wrote {evaluation_dir(args.run_dir, args.data)}")
    return 0
