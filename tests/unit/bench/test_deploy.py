"""``bench deploy`` on tiny sizes: both languages' rows on both fields, the field of a dataset,
and what its lines say."""

from __future__ import annotations

import shutil

import pytest

from raytrack import bench
from raytrack.bench import deploy, deploy_cases


@pytest.mark.slow  # trains on both fields, exports ONNX, compiles the C++ benchmark with -O3
def test_deploy_prints_both_languages_ratios_on_both_fields(capsys):
    if not (shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")):
        pytest.skip("no C++ compiler (g++, c++ or clang++) on PATH")
    args = ["deploy", "--preset", "tiny", "--samples", "600", "--budget", "0.5", "--tracks", "150"]
    args += ["--tolerances", "0.01", "3", "--step-caps", "1000", "none", "--rounds", "1"]
    assert bench.main(args) == 0
    out = capsys.readouterr().out
    for field in ("default dipole", "window-frame map"):
        trained = [line for line in out.splitlines() if line.startswith(f"{field}: tiny trained")]
        assert len(trained) == 1
        assert "tracks: training budget 0.5 s, " in trained[0]
        assert trained[0].endswith(" s wall (tracks propagated, training)")
    assert out.rstrip().splitlines()[-1].startswith("wall time ")
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
        assert "tracks dropped by one and not the other: 0" in line.split("; ")


def test_deploy_finds_the_field_a_dataset_was_made_with(tmp_path, monkeypatch):
    from raytrack.physics import DipoleField, field_from_spec
    from raytrack.physics.synthetic_map import write_maps

    dipole = DipoleField(polarity="up")
    record = {"description": dipole.describe(), "hash": dipole.fingerprint()}
    assert deploy_cases.dataset_field({"field": record}, "m").describe() == dipole.describe()
    written = write_maps(tmp_path, spacing=500.0)
    spec = [p.name for p in written["cdf"]]  # relative, as a user typed them in tmp_path
    field = field_from_spec([str(p) for p in written["cdf"]])
    manifest = {
        "field": {"description": field.describe(), "hash": field.fingerprint()},
        "parameters": {"field": spec, "field_unit": None},
    }
    monkeypatch.chdir(tmp_path)
    assert deploy_cases.dataset_field(manifest, "m").fingerprint() == field.fingerprint()
    monkeypatch.chdir(tmp_path.parent)
    with pytest.raises(ValueError, match="cannot be read from here"):
        deploy_cases.dataset_field(manifest, "m")
    monkeypatch.chdir(tmp_path)
    manifest["field"]["hash"] = "0" * 16
    with pytest.raises(ValueError, match="not the one the dataset was made with"):
        deploy_cases.dataset_field(manifest, "m")


def test_the_closing_line_calls_the_machine_busy_only_above_the_cpu_count():
    busy = deploy.closing_line(312.4, load=3.5, cpus=2)
    assert busy == (
        "wall time 312 s; load average 3.5 at the end on 2 CPUs "
        "(above the CPU count: the machine was busy)"
    )
    for load in (0.3, 2.0):
        quiet = deploy.closing_line(312.4, load=load, cpus=2)
        assert quiet == f"wall time 312 s; load average {load:.1f} at the end on 2 CPUs"
        assert "busy" not in quiet


def test_a_model_trained_here_says_what_each_figure_is():
    from raytrack.data.phase_space import load_phase_space
    from raytrack.physics import DipoleField

    model, note = deploy_cases.quick_model(
        "tiny", load_phase_space("default"), DipoleField(), 300, 0.3
    )
    assert model.training is False
    words = note.split()
    epochs = int(words[words.index("epochs") - 1])
    assert epochs >= 1
    assert note == f"tiny trained on 270 tracks: training budget 0.3 s, {epochs} epochs run"
