"""The Optuna side of an ``optuna`` or ``all`` search: its study file (``optuna.journal``, which
``optuna-dashboard`` opens and ``--resume`` continues) and the searcher Ray Tune asks for trials."""

from __future__ import annotations

import copy
from pathlib import Path

from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from ray.tune.search import SearchGenerator
from ray.tune.search.optuna import OptunaSearch

from raytrack.models.presets import SEARCH_PRESETS, load_presets
from raytrack.models.train_config import TrainConfig
from raytrack.search.experiment_options import ExperimentOptions
from raytrack.search.layout import STUDY_FILE, running_experiment
from raytrack.search.trial import OBJECTIVE, TrialSettings


def study_storage(path: str | Path) -> StudyJournal:
    """Optuna's journal storage on the study file ``path``."""
    return StudyJournal(path)


def _study_journal(path: str) -> StudyJournal:
    """Unpickles a :class:`StudyJournal`: the study file of the experiment running now."""
    here = running_experiment()
    return StudyJournal(here / STUDY_FILE if here is not None else path)


class StudyJournal(JournalStorage):
    """Optuna's journal storage on an experiment's study file.

    Pickled with the searcher for ``--resume`` (the study, its trials and the searcher share
    it), it is unpickled onto the study file of the experiment being resumed: the experiment
    may have moved since, and the study must not be written at its old place.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        super().__init__(JournalFileBackend(self.path))

    def __reduce__(self) -> tuple:
        return (_study_journal, (self.path,))


def load_study(experiment: str | Path):
    """The Optuna study of an ``optuna`` or ``all`` experiment directory, read from its file."""
    import optuna

    path = Path(experiment) / STUDY_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no Optuna study (only optuna and all searches keep one)")
    storage = study_storage(path)
    names = optuna.study.get_all_study_names(storage)  # one: the experiment's
    return optuna.load_study(study_name=names[0], storage=storage)


def close_abandoned_study_trials(options: ExperimentOptions) -> None:
    """A search interrupted between the searcher asking Optuna for a trial and Tune recording
    it leaves that trial running in the study file forever; once the search is over, such
    trials are marked failed, with a note, so that the dashboard shows no phantom trial."""
    if options.study_path is None or not options.study_path.is_file():
        return
    from optuna.trial import TrialState

    study = load_study(options.path)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(
            trial._trial_id, "raytrack", "abandoned: the search was interrupted before it ran"
        )
        study.tell(trial.number, state=TrialState.FAIL)


class StudyFileSearch(OptunaSearch):
    """Ray's OptunaSearch on a study file that may be ahead of Tune's experiment snapshot.

    The study file is written as results arrive; Tune's snapshot, which --resume restores, is
    written now and then. A trial that finished between the last snapshot and a kill is run
    again on resume, and Optuna refuses results for a trial its study already holds as
    finished: that trial's entry is final, so its repeated results are not reported again.
    """

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        from optuna.exceptions import UpdateFinishedTrialError

        try:
            super().on_trial_result(trial_id, result)
        except UpdateFinishedTrialError:
            self._completed_trials.add(trial_id)


class MovableSearchGenerator(SearchGenerator):
    """Tune's wrapper of a searcher, whose new trials go where the experiment lies now.

    On --resume Tune restores the wrapper's experiment from its saved state, with the directory
    the experiment had then, and makes the trials still to come there: after a move, where the
    experiment no longer is (their checkpoints fail). Tune moves the restored trials itself
    (``TuneController._restore_trials``); this moves the trials to come the same way.
    """

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        here = running_experiment()
        storage = self._experiment.spec.get("storage") if self._experiment else None
        if here is not None and storage is not None:
            moved = copy.copy(storage)
            moved.storage_fs_path = str(here.parent)
            moved.experiment_dir_name = here.name
            self._experiment.spec["storage"] = moved


def make_searcher(options: ExperimentOptions, settings: TrialSettings, cost: str | None):
    import optuna

    space = settings.space
    points = None
    if options.search == "all":  # the presets first: the searcher continues from what they show
        presets = load_presets()
        default_train = TrainConfig()
        points = [space.point_for(presets[name], default_train) for name in SEARCH_PRESETS]
    metric, mode = ([OBJECTIVE, cost], ["min", "min"]) if cost else (OBJECTIVE, "min")
    options.path.mkdir(parents=True, exist_ok=True)
    # Optuna logs "A new study created in Journal with name: ..." (INFO) to the console, which
    # is the live table's; the summary names the study's file
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return StudyFileSearch(
        space=space.define_by_run,
        metric=metric,
        mode=mode,
        points_to_evaluate=points,
        sampler=space.sampler(options.seed),
        # in a file, not in memory: optuna-dashboard and optuna.load_study read it; the path is
        # absolute, as the searcher is pickled for --resume
        study_name=options.name,
        storage=study_storage(options.study_path),
    )
