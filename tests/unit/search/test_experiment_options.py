"""An experiment's options in experiment.json, and a moved experiment."""

from __future__ import annotations

import json

from .searches import options


def test_a_moved_experiment_finds_its_files_where_it_lies_now(tmp_path):
    """Issue 17: experiment.json holds the default dataset (under the storage directory) and
    the MLflow store relative to the experiment, and what Tune pickled for --resume (the Optuna
    study's storage, the MLflow callback) is unpickled onto the experiment where it lies now."""
    import pickle

    from raytrack.search.experiment_options import load_options, options_document
    from raytrack.search.layout import running
    from raytrack.search.study import study_storage
    from raytrack.search.tracking import MlflowTracking, local_uri
    from raytrack.search.trial import TrialSettings

    old, new = tmp_path / "runs" / "exp", tmp_path / "moved" / "exp"
    started = options(tmp_path / "runs", tmp_path / "runs" / "datasets" / "d",
                      mlflow=local_uri(old))  # fmt: skip
    document = options_document(started)
    assert document["data_dir"] == "../datasets/d" and document["mlflow"] == "local"
    assert "storage" not in document
    old.mkdir(parents=True)
    (old / "experiment.json").write_text(json.dumps(document))
    settings = TrialSettings(max_epochs=2, time_budget=None, seed=0, device="cpu", cpus=1)
    pickled = pickle.dumps(
        (
            study_storage(old / "optuna.journal"),
            MlflowTracking(local_uri(old), "exp", str(old), settings),
            MlflowTracking("http://127.0.0.1:5000", "exp", str(old), settings),
        )
    )
    (tmp_path / "runs").rename(tmp_path / "moved")
    moved = load_options(str(tmp_path / "moved"), "exp")
    assert moved.data_dir == str((tmp_path / "moved" / "datasets" / "d").resolve())
    assert moved.mlflow == local_uri(new)
    with running(new):
        study, local, remote = pickle.loads(pickled)
    assert study.path == str(new.resolve() / "optuna.journal")
    assert (local.uri, local.experiment_dir) == (local_uri(new), str(new.resolve()))
    assert remote.uri == "http://127.0.0.1:5000"
    assert not (tmp_path / "runs").exists()
