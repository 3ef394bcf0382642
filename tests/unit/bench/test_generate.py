"""``bench generate`` on tiny sizes: the rows it prints, not its speed (speed is a ratio measured
in the same run on a shared machine, never asserted)."""

from __future__ import annotations

import pytest
import torch

from raytrack.bench import common, generate

from .output import table


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
