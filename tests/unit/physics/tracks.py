"""Tracks, their truth and the on-axis tables, for the tests of the physics bases."""

from __future__ import annotations

import numpy as np
import torch

from raytrack.physics import Field, GridField, Tolerance, propagate
from raytrack.physics.axis_lookup import AxisTables
from raytrack.physics.axis_profile import AxisProfile
from raytrack.physics.synthetic_map import WindowFrameField
from raytrack.physics.transports import gauss_legendre, integration_matrix, path_transport


class OnAxisOnly(Field):
    """The field of ``inner`` on the axis, everywhere: (0, By(0, 0, z), 0)."""

    def __init__(self, inner: Field) -> None:
        self.inner = inner

    def evaluate(self, x, y, z):
        zero = torch.zeros_like(x)
        return zero, self.inner.evaluate(zero, zero, z)[1], zero

    def describe(self):
        return {"type": "on-axis", "inner": self.inner.describe()}


def tables_of(field: Field) -> AxisTables:
    profile = AxisProfile.from_field(field, -500.0, 14500.0)
    return AxisTables(profile.tables(), profile.z_first, profile.spacing)


def random_tracks(n: int, seed: int = 0, p_gev=(2.0, 100.0), legs=(25.0, 10000.0)):
    rng = np.random.default_rng(seed)
    p = np.exp(rng.uniform(*np.log(p_gev), n)) * 1000.0
    dz = np.exp(rng.uniform(*np.log(legs), n)) * rng.choice([-1.0, 1.0], n)
    z0 = rng.uniform(np.maximum(0, -dz), np.minimum(14000, 14000 - dz))
    return np.stack(
        [
            rng.uniform(-900, 900, n),
            rng.uniform(-750, 750, n),
            rng.uniform(-0.3, 0.3, n),
            rng.uniform(-0.25, 0.25, n),
            rng.choice([-1.0, 1.0], n) / p,
            z0,
            z0 + dz,
        ],
        axis=1,
    )


def truth(inputs: np.ndarray, field: Field) -> np.ndarray:
    end = propagate(
        inputs[:, :5], inputs[:, 5], inputs[:, 6], field, tolerance=Tolerance(3e-7, 3e-10)
    )
    return end[:, :4]


def position_error(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.hypot(a[:, 0] - b[:, 0], a[:, 1] - b[:, 1])


def path_tables(field: Field, profile: AxisProfile | None = None) -> AxisTables:
    profile = profile or AxisProfile.from_field(field, -500.0, 14500.0)
    x_values = profile.x_tables() if profile.x_degree else None
    return AxisTables(
        profile.tables(),
        profile.z_first,
        profile.spacing,
        x_values=x_values,
        x_scale=profile.x_scale,
    )


def path_base(inputs: np.ndarray, tables: AxisTables, count: int = 12) -> np.ndarray:
    nodes, weights = gauss_legendre(count)
    matrix = integration_matrix(nodes)
    return path_transport(torch.from_numpy(inputs), tables, nodes, weights, matrix).numpy()


def tracks_and_truth(field: Field, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    inputs = random_tracks(n, seed=seed)
    expected = truth(inputs, field)
    kept = np.isfinite(expected).all(axis=1)
    return inputs[kept], expected[kept]


def sampled_window_frame() -> GridField:
    """The window-frame field on a 100 mm grid over the region the tests read."""
    x = np.arange(-4000.0, 4000.1, 100.0)
    y = np.array([-100.0, 0.0, 100.0])
    z = np.arange(1000.0, 9000.1, 100.0)
    xs, ys, zs = np.meshgrid(x, y, z, indexing="ij")
    field = WindowFrameField()
    values = np.stack([b.numpy() for b in field.evaluate(*map(torch.from_numpy, (xs, ys, zs)))], -1)
    return GridField(values, origin=(x[0], y[0], z[0]), spacing=(100.0, 100.0, 100.0))
