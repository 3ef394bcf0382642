"""``bench infer`` on tiny sizes: the rows it prints and the presets it accepts."""

from __future__ import annotations

import pytest

from raytrack import bench
from raytrack.bench import common

from .output import table


@pytest.mark.slow  # exports ONNX and times every engine
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
