"""The experiment report, ``runs/NAME/report/index.html`` (``python -m raytrack.report``; its
usage is in :mod:`raytrack.report.cli`).

- :mod:`~raytrack.report.experiment`: reading the experiment directory (Ray Tune's and
  raytrack's files) into trials and a leaderboard;
- :mod:`~raytrack.report.best`: the best model on the test split;
- :mod:`~raytrack.report.figures`: the PNG figures;
- :mod:`~raytrack.report.page`: the HTML;
- :mod:`~raytrack.report.write`: all of it into ``report/``;
- :mod:`~raytrack.report.cli`: the command line.
"""

from raytrack.report.best import BestModel, best_model
from raytrack.report.cli import main
from raytrack.report.experiment import (
    UNFINISHED,
    Experiment,
    Trial,
    equal_accuracy_pairs,
    progress,
    read_experiment,
    tool_commands,
)
from raytrack.report.figures import (
    COST_FIGURES,
    CURVE_COLOURS,
    INTEGRATOR_LABEL,
    STATUS_COLOURS,
    TRIGGER_WEIGHTS,
    best_against_figure,
    p95_against_cost_figure,
    p95_against_epoch_figure,
    plot_best_against,
    plot_p95_against_cost,
    plot_p95_against_epoch,
)
from raytrack.report.page import TABLE, best_summary, leaderboard_table
from raytrack.report.write import REPORT_DIR, write_experiment_report

__all__ = [
    "COST_FIGURES",
    "CURVE_COLOURS",
    "INTEGRATOR_LABEL",
    "REPORT_DIR",
    "STATUS_COLOURS",
    "TABLE",
    "TRIGGER_WEIGHTS",
    "UNFINISHED",
    "BestModel",
    "Experiment",
    "Trial",
    "best_against_figure",
    "best_model",
    "best_summary",
    "equal_accuracy_pairs",
    "leaderboard_table",
    "main",
    "p95_against_cost_figure",
    "p95_against_epoch_figure",
    "plot_best_against",
    "plot_p95_against_cost",
    "plot_p95_against_epoch",
    "progress",
    "read_experiment",
    "tool_commands",
    "write_experiment_report",
]
