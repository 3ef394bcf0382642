"""The NumPy reference of model.bin's forward pass (raytrack.export.reference): its formulation
against torch's in float64, and its erf."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from raytrack.export.model_bin import BinModel
from raytrack.export.reference import erf
from raytrack.physics.axis_profile import AxisProfile

from .helpers import AXIS, MAP_AXIS, make_model, track_groups


@pytest.mark.parametrize(
    "base, axis",
    [("path", AXIS), ("path", MAP_AXIS), ("expansion", AXIS)],
    ids=["path", "path-map", "expansion"],
)
def test_numpy_formulation_matches_torch_in_float64(base: str, axis: AxisProfile) -> None:
    """Features, base and scale agree with torch's to float64 rounding, not just float32."""
    model = make_model(seed=3, axis=axis, base=base)  # physics, residual_qop, leg_power 2
    loaded = BinModel.from_torch(model)
    inputs = np.concatenate(list(track_groups(seed=3).values()))
    with torch.no_grad():
        expected = [t.numpy() for t in model.prepare(torch.from_numpy(inputs))]
    got_all = loaded.prepare(inputs.astype(np.float64))
    for got, ref, name in zip(got_all, expected, ("features", "base", "scale"), strict=True):
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-9, err_msg=name)


def test_erf_is_exact_to_float64_precision() -> None:
    xs = np.concatenate([np.linspace(-12.0, 12.0, 20001), [0.0, -0.0, 2.999999, 3.0, 40.0]])
    ref = np.array([math.erf(v) for v in xs])
    assert np.max(np.abs(erf(xs) - ref)) < 1e-12
