"""The held-out evaluation of a trained run (``python -m raytrack.evaluate``; its usage is in
:mod:`raytrack.evaluate.cli`).

- :mod:`~raytrack.evaluate.bins`: the report's numbers, overall and in bins, the worst tracks;
- :mod:`~raytrack.evaluate.jacobian`: the model's transport Jacobian against the integrator's;
- :mod:`~raytrack.evaluate.figures`: the PNG figures (drawn with :mod:`raytrack.plotting`);
- :mod:`~raytrack.evaluate.runs`: finding a run directory, evaluating it, writing
  ``evaluation/``;
- :mod:`~raytrack.evaluate.summary`: the report as text;
- :mod:`~raytrack.evaluate.cli`: the command line.

The names below are those the rest of raytrack (the run pipeline, training, the bench, the
experiment report) and users import from ``raytrack.evaluate``.
"""

from raytrack.evaluate.bins import (
    DZ_BINS_MM,
    REGIONS,
    WORST_TRACKS,
    X_MID_BINS_MM,
    Y_MID_BINS_MM,
    binned_report,
    evaluate_model,
    leg_regions,
    worst_tracks,
)
from raytrack.evaluate.cli import NO_JACOBIAN_NOTE, main
from raytrack.evaluate.figures import (
    AGAINST,
    against_variable,
    error_against_figure,
    histograms_figure,
    jacobian_figure,
    learning_curves_figure,
    loss_label,
    plot_context,
)
from raytrack.evaluate.jacobian import (
    JACOBIAN_BATCH,
    JACOBIAN_FLOOR,
    jacobian_report,
    model_jacobians,
    propagated_sigmas,
    start_sigmas,
    straight_line_jacobian,
)
from raytrack.evaluate.runs import (
    TUNE_CHECKPOINTS,
    evaluate_independent,
    evaluate_run,
    evaluation_dir,
    find_run,
    is_run,
    magnet_extent,
    model_title,
    read_spec,
    write_report,
)
from raytrack.evaluate.summary import (
    bin_rows,
    layers_text,
    momentum_bin_label,
    print_jacobian_summary,
    print_summary,
    print_worst_track,
    worst_track_lines,
)
from raytrack.plotting import grid, log_tick_values, log_ticks, pyplot

__all__ = [
    "AGAINST",
    "DZ_BINS_MM",
    "JACOBIAN_BATCH",
    "JACOBIAN_FLOOR",
    "NO_JACOBIAN_NOTE",
    "REGIONS",
    "TUNE_CHECKPOINTS",
    "WORST_TRACKS",
    "X_MID_BINS_MM",
    "Y_MID_BINS_MM",
    "against_variable",
    "bin_rows",
    "binned_report",
    "error_against_figure",
    "evaluate_independent",
    "evaluate_model",
    "evaluate_run",
    "evaluation_dir",
    "find_run",
    "grid",
    "histograms_figure",
    "is_run",
    "jacobian_figure",
    "jacobian_report",
    "layers_text",
    "learning_curves_figure",
    "leg_regions",
    "log_tick_values",
    "log_ticks",
    "loss_label",
    "magnet_extent",
    "main",
    "model_jacobians",
    "model_title",
    "momentum_bin_label",
    "plot_context",
    "print_jacobian_summary",
    "print_summary",
    "print_worst_track",
    "propagated_sigmas",
    "pyplot",
    "read_spec",
    "start_sigmas",
    "straight_line_jacobian",
    "worst_track_lines",
    "worst_tracks",
    "write_report",
]
