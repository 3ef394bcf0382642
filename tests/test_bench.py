"""python -m raytrack.bench on tiny sizes: the rows each benchmark prints, not its speed (speed is
a ratio measured in the same run on a shared machine, never asserted)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from raytrack import bench
from raytrack.bench import accuracy, common, deploy, generate, infer, search, train
from raytrack.models.training import TrainConfig


def table(output: str, first_words: tuple[str, ...]) -> list[list[str]]:
    return [line.split() for line in output.splitlines() if line.startswith(first_words)]


def test_generate_times_propagate_with_the_jacobian_against_without(capsys):
    from raytrack.physics import DipoleField

    states, z0, z1 = common.sample_tracks("default", 200, seed=2)
    figures = generate.bench_jacobian(states, z0, z1, DipoleField(), rounds=1)
    out = capsys.readouterr().out
    assert "propagate with the Jacobian against without, the same 200 variable-leg" in out
    rows = table(out, ("jacobian",))
    assert [r[1] for r in rows] == ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    without, with_jacobian, ratio = (float(v) for v in rows[0][2:5])
    assert ratio == pytest.approx(with_jacobian / without, abs=1e-3)
    assert [f.what for f in figures][0] == "propagate with Jacobian, variable legs, cpu"
    assert figures[0].against.startswith(f"{rows[0][4]} x without")


def test_infer_times_each_model_its_formulation_and_its_physics_free_twin(capsys):
    assert bench.main(["infer", "--tracks", "300", "--presets", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "propagate (Dormand-Prince, default phase space)" in out
    assert "x RK" in out
    rows = table(out, ("tiny",))
    # every (model, engine) at batch 1 and at all the tracks (the batch of 4096 cut to 300)
    seen = {(r[0], r[2], int(r[3])) for r in rows}
    engines = [("tiny", e) for e in ("onnxruntime", "torch", "prepare")]
    engines += [("tiny/line", e) for e in ("onnxruntime", "torch")]
    assert seen == {(m, e, b) for m, e in engines for b in (1, 300)}
    assert len(rows) == len(seen)
    prepare = [line for line in out.splitlines() if " prepare " in line]
    assert all("of tiny's torch time" in line for line in prepare)
    line = [line for line in out.splitlines() if line.startswith("tiny/line")]
    assert all("x tiny (default formulation)" in text for text in line)
    assert all(float(r[4]) > 0 for r in rows)  # tracks/s


def test_infer_defaults_to_every_preset_and_refuses_unknown_ones(capsys):
    from raytrack.models import load_presets

    assert common.preset_names(None) == list(load_presets())
    assert bench.main(["infer", "--presets", "tiny", "nonesuch"]) == 1
    assert "nonesuch" in capsys.readouterr().err


def test_train_compares_the_fast_path_with_the_dataloader_loop(capsys):
    args = ["train", "--preset", "tiny", "--tracks", "300", "--epochs", "1"]
    assert bench.main(args) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith(("fast path", "DataLoader"))]
    default = TrainConfig().batch_size
    labels = ["fast path, batch 512", f"fast path, batch {default}", "DataLoader, batch 512"]
    assert [line[:24].strip() for line in rows] == labels
    assert all(line.endswith("x DataLoader") and "samples/s" in line for line in rows)
    assert rows[-1].split()[-3] == "1.00"  # the baseline against itself


def test_dataloader_baseline_trains_on_the_fast_paths_features_and_targets():
    from raytrack.models import get_preset
    from raytrack.models.training import TrainConfig, train_model

    inputs, targets = common.training_data("default", 400)
    axis = common.axis_of("default")
    config = get_preset("tiny")
    model, dataset = train.baseline_model_and_data(config, (inputs, targets), axis)
    fast = train_model(
        config, TrainConfig(epochs=1), (inputs, targets), (inputs, targets), axis=axis
    )
    for name in ("input_mean", "input_std", "target_mean", "target_std"):
        torch.testing.assert_close(getattr(model, name), getattr(fast.model, name))
    features, standard = dataset.tensors
    assert features.shape == (len(inputs), config.n_features)
    assert features.dtype == standard.dtype == torch.float32
    # Standardised as the huber loss's training does: centred and scaled by the bulk.
    standard = standard.double().numpy()
    assert np.all(np.abs(np.median(standard, 0)) < 0.2)
    spread = np.quantile(standard, 0.9, 0) - np.quantile(standard, 0.1, 0)
    assert np.all((spread > 0.2) & (spread < 5))


def test_all_help_lists_its_options(capsys):
    with pytest.raises(SystemExit) as done:
        bench.main(["all", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    options = (
        "--device", "--search", "--generate-tracks", "--baseline-tracks", "--train-preset",
        "--train-tracks", "--train-epochs", "--infer-tracks", "--infer-presets",
        "--accuracy-samples", "--accuracy-preset", "--accuracy-budget", "--search-num-samples",
        "--search-samples", "--search-max-epochs", "--search-time-budget", "--gpus-per-trial",
    )  # fmt: skip
    for option in options:
        assert option in out, option


def fake_benches(monkeypatch, calls: list) -> None:
    """Each benchmark replaced by one that records its arguments and returns one figure."""

    def fake(name, fail=False):
        def run(*args):
            calls.append((name, args))
            if fail:
                raise RuntimeError(f"{name} broke")
            return [common.Figure(name, f"{name} figure", "1 unit", "2 x baseline")]

        return run

    modules = {"generate": generate, "train": train, "infer": infer, "search": search}
    for name, module in modules.items():
        monkeypatch.setattr(module, f"bench_{name}", fake(name))
    monkeypatch.setattr(accuracy, "bench_accuracy", fake("accuracy", fail=True))


def test_all_prints_one_table_and_goes_on_after_a_failure(monkeypatch, capsys):
    calls: list = []
    fake_benches(monkeypatch, calls)
    assert bench.main(["all", "--train-tracks", "123"]) == 1  # accuracy failed
    out = capsys.readouterr().out
    assert [name for name, _ in calls] == ["generate", "train", "infer", "accuracy"]  # no GPU
    assert calls[1][1][:2] == ("small", 123)
    tail = out[out.index("raytrack bench all") :]
    for name in ("generate", "train", "infer"):
        assert f"{name} figure" in tail
    assert "FAILED" in tail and "accuracy broke" in tail
    walls = [line.split()[1] for line in tail.splitlines() if line.startswith("wall")]
    assert walls == ["generate", "train", "infer", "accuracy", "total"]


def test_all_runs_the_search_when_asked_with_no_gpu_share_on_cpu(monkeypatch, capsys):
    calls: list = []
    fake_benches(monkeypatch, calls)
    bench.main(["all", "--search", "yes", "--gpus-per-trial", "0.5"])
    search = [args for name, args in calls if name == "search"]
    assert len(search) == 1
    assert search[0][3] == 0.0  # gpus per trial: none on a CPU run
    assert "search figure" in capsys.readouterr().out


class TorchSession:
    """Stands in for an ONNX Runtime session of the model (the export costs 5-10 s a model on a
    busy machine; tests/test_export.py and the infer test above cover it)."""

    def __init__(self, model) -> None:
        self.model = model

    def run(self, outputs, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        assert outputs is None and list(feeds) == ["state"]
        with torch.no_grad():
            return [self.model(torch.from_numpy(feeds["state"])).numpy()]


def test_deploy_prints_both_languages_ratios_on_both_fields(capsys, monkeypatch):
    if not (shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")):
        pytest.skip("no C++ compiler (g++, c++ or clang++) on PATH")
    monkeypatch.setattr(deploy, "exported_session", lambda model, path: TorchSession(model))
    args = ["deploy", "--preset", "tiny", "--samples", "600", "--budget", "0.5", "--tracks", "150"]
    args += ["--tolerances", "0.01", "3", "--step-caps", "1000", "none", "--rounds", "1"]
    assert bench.main(args) == 0
    out = capsys.readouterr().out
    table = out[out.index("bench deploy:") :].splitlines()[2:-1]
    rows = [[cell.strip() for cell in line.split("  ") if cell.strip()] for line in table]
    engines = {
        ("Python", "ONNX Runtime, batch 4096"), ("Python", "torch, batch 4096"),
        ("Python", "propagate"), ("C++", "predict"), ("C++", "predict_with_jacobian"),
        ("C++", "Dormand-Prince"),
    }  # fmt: skip
    for field in ("default dipole", "window-frame map"):
        mine = [r for r in rows if r[0] == field]
        assert {(r[2], r[3]) for r in mine} == engines
        for row in mine:
            ratio = float(row[-1])  # the integrator's time per track over the engine's
            assert ratio > 0
            if row[3] in ("propagate", "Dormand-Prince"):
                assert ratio == 1.0 and row[4].startswith("tol ")
    # The C++ integrator is propagate's, step for step: the same ends to rounding (on a grid at
    # tight tolerances the step control can amplify rounding at the map's kinks; not at these).
    agreement = [
        line for line in out.splitlines() if "C++ Dormand-Prince against propagate" in line
    ]
    assert len(agreement) == 2
    for line in agreement:
        same = float(line.split("the same to 1e-9 mm for ")[1].split("%")[0])
        figures = float(line.split("errors differ by at most ")[1].split(" mm")[0])
        assert same > 90 and figures < 1e-3
        assert line.endswith("tracks dropped by one and not the other: 0")


def test_deploy_finds_the_field_a_dataset_was_made_with(tmp_path, monkeypatch):
    from raytrack.physics import DipoleField, field_from_spec
    from raytrack.physics.synthetic_map import write_maps

    dipole = DipoleField(polarity="up")
    record = {"description": dipole.describe(), "hash": dipole.fingerprint()}
    assert deploy.dataset_field({"field": record}, "m").describe() == dipole.describe()
    written = write_maps(tmp_path, spacing=500.0)
    spec = [p.name for p in written["cdf"]]  # relative, as a user typed them in tmp_path
    field = field_from_spec([str(p) for p in written["cdf"]])
    manifest = {
        "field": {"description": field.describe(), "hash": field.fingerprint()},
        "parameters": {"field": spec, "field_unit": None},
    }
    monkeypatch.chdir(tmp_path)
    assert deploy.dataset_field(manifest, "m").fingerprint() == field.fingerprint()
    monkeypatch.chdir(tmp_path.parent)
    with pytest.raises(ValueError, match="cannot be read from here"):
        deploy.dataset_field(manifest, "m")
    monkeypatch.chdir(tmp_path)
    manifest["field"]["hash"] = "0" * 16
    with pytest.raises(ValueError, match="not the one the dataset was made with"):
        deploy.dataset_field(manifest, "m")
