"""The Optuna study of a search: its file ahead of Tune's snapshot, its quiet creation."""

from __future__ import annotations

from .searches import options


def test_results_of_a_trial_the_study_file_already_finished_are_not_reported_again(tmp_path):
    """After a kill the study file can be ahead of Tune's snapshot: --resume reruns a trial the
    study holds as finished, and its results must not fail the search."""
    import optuna

    from raytrack.search.space import load_search_space
    from raytrack.search.study import StudyFileSearch, study_storage

    space = load_search_space("default")
    storage = study_storage(tmp_path / "optuna.journal")
    searcher = StudyFileSearch(
        space=space.define_by_run, metric="objective", mode="min",
        sampler=space.sampler(0), study_name="s", storage=storage,
    )  # fmt: skip
    searcher.suggest("trial_a")
    study = optuna.load_study(study_name="s", storage=storage)
    study.tell(0, 1.0)  # what the killed search had already written
    searcher.on_trial_result("trial_a", {"objective": 0.5, "training_iteration": 1})
    searcher.on_trial_complete("trial_a", {"objective": 0.5})
    assert study.trials[0].value == 1.0 and study.trials[0].intermediate_values == {}


def test_the_searcher_creates_its_study_without_a_console_line(tmp_path):
    """Issue 17: Optuna logged "A new study created in Journal with name: ..." on the console,
    which is the live table's."""
    import logging

    from raytrack.search.experiment import _settings
    from raytrack.search.study import make_searcher

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    optuna_logger = logging.getLogger("optuna")  # Optuna's own handler hangs here too
    optuna_logger.addHandler(handler)
    try:
        study = options(tmp_path, tmp_path, search="optuna")
        make_searcher(study, _settings(study), None)
    finally:
        optuna_logger.removeHandler(handler)
    assert study.study_path.is_file()  # the study was created
    assert [r.getMessage() for r in records if r.levelno < logging.WARNING] == []
