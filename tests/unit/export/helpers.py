"""Tracks, models and comparisons the export tests share.

Models are built without training (random weights, an on-axis field profile, a normalisation
fitted on synthetic end states), so the tests are fast; every model has non-square layers and
a non-trivial normalisation, so a transposed weight matrix or a forgotten standardisation
cannot hide.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import torch

from raytrack.models.formulation import Formulation
from raytrack.models.mlp import ModelConfig, Normalisation, TrackMLP
from raytrack.physics.axis_profile import AxisProfile
from raytrack.physics.fields import DipoleField
from raytrack.physics.synthetic_map import WindowFrameField

AXIS = AxisProfile.from_field(DipoleField(), -500.0, 14500.0)
#: The window-frame test map's profile (analytic): its midplane falls off with x, fitted by a
#: degree-8 polynomial at every table node (the path base's x tables).
MAP_AXIS = AxisProfile.from_field(WindowFrameField(), -500.0, 14500.0)
LEG_GROUPS = ("any", "short", "beyond", "fixed")


def draw_tracks(n: int, seed: int = 1, legs: str = "any", *, qop_last: bool = False) -> np.ndarray:
    """(n, 7) float32 states like real tracks anywhere along the detector.

    legs: "any" (z_start, z_end in 0..14000 mm, either direction), "short" (25-250 mm hops,
    either direction, and a few zero-length legs), "beyond" (ends up to 1.5 m outside the field
    tables, which span -500..14500 mm) or "fixed" (3000 -> 7000 mm, the classic leg).
    ``qop_last``: the header tests' draw (q/p drawn after the rest, no zero-length hops), so
    that their tracks stay what their tolerances were set on.
    """
    rng = np.random.default_rng(seed)
    p = np.exp(rng.uniform(np.log(2000.0), np.log(100000.0), n))
    qop = None if qop_last else rng.choice([-1.0, 1.0], n) / p
    if legs == "fixed":
        z0, z1 = np.full(n, 3000.0), np.full(n, 7000.0)
    elif legs == "short":
        z0 = rng.uniform(0.0, 14000.0, n)
        z1 = z0 + rng.choice([-1.0, 1.0], n) * rng.uniform(25.0, 250.0, n)
        if not qop_last:
            z1[:3] = z0[:3]
    else:
        lo, hi = (0.0, 14000.0) if legs == "any" else (-2000.0, 16000.0)
        z0, z1 = rng.uniform(lo, hi, n), rng.uniform(lo, hi, n)
    cols = [
        rng.uniform(-900.0, 900.0, n),
        rng.uniform(-750.0, 750.0, n),
        rng.uniform(-0.3, 0.3, n),
        rng.uniform(-0.25, 0.25, n),
    ]
    cols.append(rng.choice([-1.0, 1.0], n) / p if qop is None else qop)
    return np.stack([*cols, z0, z1], axis=1).astype(np.float32)


def track_groups(n: int = 200, seed: int = 1) -> dict[str, np.ndarray]:
    """One batch per kind of leg: each is compared on its own, so that the tolerance of the
    10 m legs (scaled by their largest values) does not swallow the short hops' errors."""
    return {legs: draw_tracks(n, seed + k, legs) for k, legs in enumerate(LEG_GROUPS)}


def synthetic_truth(
    inputs: torch.Tensor, gen: torch.Generator, leg: torch.Tensor | None = None
) -> torch.Tensor:
    """Plausible end states for fitting a normalisation: the expansion transport plus a residual
    that grows with q/p and the leg (m; default |z_end - z_start| in float64) as a real one
    does (and is large enough to matter), its noise drawn from ``gen``."""
    inputs = inputs.double()
    base = Formulation("expansion", "state", "raw", 0.0, AXIS).base_prediction(inputs)
    if leg is None:
        leg = torch.abs(inputs[:, 6] - inputs[:, 5]) / 1000.0
    size = torch.stack((2.0 * leg**2, 2.0 * leg**2, 1e-3 * leg, 1e-3 * leg), 1)
    noise = torch.randn(inputs.shape[0], 4, dtype=torch.float64, generator=gen)
    return base + 1e4 * inputs[:, 4:5] * size * noise


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randomise_layers(model: TrackMLP, gen: torch.Generator) -> None:
    """Random weights (about unit gain a layer) and biases, drawn from ``gen``."""
    with torch.no_grad():
        for layer in model.linear_layers():
            fan_in = layer.weight.shape[1]
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) * 1.5 / fan_in**0.5)
            layer.bias.copy_(torch.randn(layer.bias.shape, generator=gen) * 0.5)


def make_model(
    hidden=(16, 8),
    activation: str = "silu",
    seed: int = 0,
    dropout: float = 0.0,
    fit_on: np.ndarray | None = None,
    axis: AxisProfile = AXIS,
    **formulation,
) -> TrackMLP:
    """A TrackMLP in eval mode with random weights and biases and a normalisation fitted with
    ``Normalisation.fit`` on synthetic end states of ``fit_on`` (default: tracks of any leg).

    ``formulation``: ModelConfig's base / inputs / target / leg_power (defaults otherwise);
    ``axis``: the field profile (default: the default dipole's)."""
    config = ModelConfig(hidden=hidden, activation=activation, dropout=dropout, **formulation)
    model = TrackMLP(config, axis=axis)
    if fit_on is None:
        fit_on = np.concatenate([draw_tracks(1500, 1000 + seed), draw_tracks(500, seed, "short")])
    inputs = torch.from_numpy(fit_on)
    with torch.no_grad():
        features, encoded = model.encode(inputs, synthetic_truth(inputs, _gen(seed)))
        model.set_normalisation(Normalisation.fit(features, encoded))
    randomise_layers(model, _gen(seed))
    return model.eval()


def torch_predict(model: TrackMLP, inputs: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(inputs)).numpy()


def mismatch(got: np.ndarray, ref: np.ndarray) -> float:
    """Largest error in units of the float32 tolerance (<= 1 passes).

    Tolerance per element: rtol 1e-5 of the value plus 1e-5 of the column's largest magnitude
    (x_end ~ 2000 mm carries absolute float32 rounding a small tx_end cannot have).
    """
    assert got.shape == ref.shape, (got.shape, ref.shape)
    atol = 1e-5 * np.abs(ref).max(axis=0) + 1e-30
    return float(np.max(np.abs(got.astype(np.float64) - ref) / (atol + 1e-5 * np.abs(ref))))


def assert_matches(got: np.ndarray, ref: np.ndarray, what: str) -> None:
    assert np.all(np.isfinite(ref)), f"{what}: the torch reference is not finite"
    assert np.all(np.isfinite(got)), f"{what}: non-finite outputs"
    err = mismatch(got, ref)
    assert err <= 1.0, f"{what}: error is {err:.3g} x the float32 tolerance"


def assert_groups_match(got: np.ndarray, ref: np.ndarray, groups: dict, what: str) -> None:
    """``got`` and ``ref`` are the groups' tracks concatenated in order; compare each group."""
    start = 0
    for legs, tracks in groups.items():
        end = start + len(tracks)
        assert_matches(got[start:end], ref[start:end], f"{what}, {legs} legs")
        start = end


def spec_size(hidden, n_features: int, n_quad: int, n_table: int, n_x: int = 0) -> int:
    """S = 128 + 8L + 8(2K + 4T + 2DT) + 4(2F + 8) + 4 sum(rows cols + rows) + 4
    (docs/model_bin.md)."""
    widths = (n_features, *hidden, 4)
    layers = sum(r * c + r for c, r in zip(widths[:-1], widths[1:], strict=True))
    return (
        128
        + 8 * (len(widths) - 1)
        + 8 * (2 * n_quad + 4 * n_table + 2 * n_x * n_table)
        + 4 * (2 * n_features + 8)
        + 4 * layers
        + 4
    )


def spec_layout(data: bytes) -> dict:
    """Parse a version-3 model.bin with struct, following docs/model_bin.md literally."""
    magic = data[0:8]
    header = struct.unpack_from("<14I", data, 8)
    numbers = struct.unpack_from("<7d", data, 64)
    path_words = struct.unpack_from("<2I", data, 120)  # passes, reserved
    n_layers, n_features, n_quad, n_table = header[7], header[10], header[11], header[12]
    n_x = header[13]
    dims = struct.unpack_from(f"<{2 * n_layers}I", data, 128)
    shapes = list(zip(dims[0::2], dims[1::2], strict=True))
    offset = 128 + 8 * n_layers
    quadrature = np.frombuffer(data, "<f8", 2 * n_quad, offset).reshape(2, n_quad)
    offset += 16 * n_quad
    tables = np.frombuffer(data, "<f8", 4 * n_table, offset).reshape(4, n_table)
    offset += 32 * n_table
    x_tables = np.frombuffer(data, "<f8", 2 * n_x * n_table, offset).reshape(2 * n_x, n_table)
    offset += 16 * n_x * n_table
    norm = np.frombuffer(data, "<f4", 2 * n_features + 8, offset)
    offset += 4 * (2 * n_features + 8)
    layers = []
    for rows, cols in shapes:
        w_off = offset
        weight = np.frombuffer(data, "<f4", rows * cols, offset)
        offset += 4 * rows * cols
        bias = np.frombuffer(data, "<f4", rows, offset)
        offset += 4 * rows
        layers.append((w_off, rows, cols, weight, bias))
    (crc,) = struct.unpack_from("<I", data, offset)
    return dict(
        magic=magic, header=header, numbers=numbers, path_words=path_words,
        quadrature=quadrature, tables=tables, x_tables=x_tables, norm=norm, layers=layers,
        crc=crc, end=offset + 4,
    )  # fmt: skip


def with_crc(data: bytearray) -> bytes:
    data[-4:] = struct.pack("<I", zlib.crc32(bytes(data[:-4])))
    return bytes(data)
