"""The evaluation shows the model's physics base alone beside the model: what the network adds."""

from __future__ import annotations

import numpy as np
import torch

from raytrack.evaluate import evaluate_model, print_summary
from raytrack.models.metrics import position_errors
from raytrack.models.mlp import ModelConfig, TrackMLP
from raytrack.physics import DipoleField, Tolerance, propagate
from raytrack.physics.axis_profile import AxisProfile


def _tracks(n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    z0 = rng.uniform(0, 4000, n)
    inputs = np.stack(
        [rng.uniform(-900, 900, n), rng.uniform(-750, 750, n), rng.uniform(-0.3, 0.3, n),
         rng.uniform(-0.25, 0.25, n), rng.choice([-1, 1], n) / rng.uniform(2e3, 1e5, n),
         z0, z0 + rng.uniform(25, 10000, n)], 1)  # fmt: skip
    end = propagate(inputs[:, :5], inputs[:, 5], inputs[:, 6], DipoleField(), tolerance=Tolerance())
    return inputs, np.asarray(end)[:, :4]


def test_the_report_has_the_base_alone_overall_and_in_every_bin(capsys) -> None:
    axis = AxisProfile.from_field(DipoleField(), -500.0, 14500.0)
    model = TrackMLP(ModelConfig(hidden=(8,)), axis=axis).eval()
    inputs, truth = _tracks()
    report = evaluate_model(model, inputs, truth, magnet=axis.half_maximum_extent())
    with torch.no_grad():
        rounded = torch.as_tensor(inputs, dtype=torch.float32).double()
        base = model.formulation.base_prediction(rounded).numpy()
    expected = position_errors(base, truth)
    assert np.isclose(report["base"]["pos_mean_mm"], expected.mean())
    assert np.isclose(report["base"]["pos_max_mm"], expected.max())
    assert report["base"]["pos_mean_mm"] != report["model"]["pos_mean_mm"]  # a random network
    for kind in ("dz_bins", "x_mid_bins", "y_mid_bins", "region_bins"):
        assert all("base_pos_p99_mm" in row for row in report[kind]), kind
    assert all("base" in row for row in report["momentum_bins"])
    print_summary({k: v for k, v in report.items() if k != "_tracks"})
    out = capsys.readouterr().out
    assert "base alone" in out and "base P99" in out
