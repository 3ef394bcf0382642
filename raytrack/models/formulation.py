"""What the network is asked to learn: the physics base, the extra inputs, the target scaling.

A model predicts ``end = base(state, leg) + scale(leg, qop) * network(features)``:

* ``base`` (``ModelConfig.base``): the straight line (``"line"``), the first-order
  field-integral kick (``"kick"``), the exact transport in the on-axis field (``"axial"``),
  that plus the first-order effect of the field off the symmetry plane (``"expansion"``), or
  the on-axis transport corrected for the whole field along the track's own path, x
  dependence included (``"path"``, the default); see :mod:`raytrack.physics.transports`.
  Every base but the line reads two cumulative tables of the on-axis field of the dataset's
  own field, kept in the model as buffers; ``path`` also the fitted x dependence of the
  field's midplane (none for the default dipole).
* ``features`` (``ModelConfig.inputs``): the 7 inputs (``"state"``), or those plus the leg
  length, the field integrals I1 and I2 and the base's bending (``"physics"``).
* ``scale`` (``ModelConfig.target`` and ``ModelConfig.leg_power``): the residual over the base,
  divided by q/p (``"residual_qop"``; the bending is proportional to q/p to first order) and by
  the leg length L in metres to the power ``leg_power`` for positions (``leg_power - 1`` for
  slopes), so that a short leg's residual is not drowned by a long one's. ``"raw"`` learns the
  end state itself.

All of it is computed in float64 from the (float32) inputs the model is given, so that training,
evaluation and every export see the same numbers.
"""

from __future__ import annotations

import torch
from torch import nn

from raytrack.physics.axis_lookup import AxisTables, axis_interval_rows, x_interval_rows
from raytrack.physics.axis_profile import X_SCALE_MM, AxisProfile
from raytrack.physics.transports import (
    PATH_NODES,
    PATH_PASSES,
    QUADRATURE_NODES,
    Ends,
    axial_transport,
    expansion_transport,
    field_integrals,
    gauss_legendre,
    integration_matrix,
    kick_transport,
    leg_ends,
    path_transport,
    straight_line,
)

N_INPUTS = 7
N_OUTPUTS = 4
BASES = ("path", "expansion", "axial", "kick", "line")
INPUT_SETS = {"state": N_INPUTS, "physics": N_INPUTS + 7}
#: Legs shorter than this count as this long in the target scaling (m): avoids dividing by 0.
MIN_LEG_M = 0.001
#: The curvature rule of a new model (the ``continuous_curvature`` buffer): second dz
#: derivatives of the on-axis field and of the x coefficients linear between the table nodes.
CURVATURE_RULE = 2


def needs_field(base: str, inputs: str) -> bool:
    """Whether a formulation reads the on-axis field tables."""
    return base != "line" or inputs == "physics"


def quadrature_nodes(base: str) -> int:
    """Gauss-Legendre nodes along the leg a new model of ``base`` integrates with."""
    return PATH_NODES if base == "path" else QUADRATURE_NODES


class Formulation(nn.Module):
    """Base prediction, features and target scaling of one model configuration (no weights).

    ``path_nodes``: the path base's quadrature nodes (training chooses them from the data:
    :func:`raytrack.physics.path_nodes.choose_path_nodes`); a loaded state keeps its own.
    """

    def __init__(
        self,
        base: str,
        inputs: str,
        target: str,
        leg_power: float,
        axis: AxisProfile | None = None,
        path_nodes: int | None = None,
    ) -> None:
        super().__init__()
        self.base, self.inputs, self.target, self.leg_power = base, inputs, target, leg_power
        if needs_field(base, inputs) and axis is None:
            raise ValueError(
                f"base {base!r} with inputs {inputs!r} needs the on-axis field of the dataset"
            )
        values = axis.tables() if axis is not None else torch.zeros(4, 0, dtype=torch.float64)
        grid = [axis.z_first, axis.spacing] if axis is not None else [0.0, 1.0]
        self.register_buffer("axis_values", values)
        self.register_buffer("axis_grid", torch.tensor(grid, dtype=torch.float64))
        # The same two numbers as Python floats, so an ONNX export sees constants.
        self.z_first, self.spacing = grid
        nodes, weights = gauss_legendre(path_nodes or quadrature_nodes(base))
        self.register_buffer("quadrature_nodes", nodes)
        self.register_buffer("quadrature_weights", weights)
        # The path base: the midplane's x dependence (none: (0, T)), its scale, the passes.
        x_values = torch.zeros(0, values.shape[1], dtype=torch.float64)
        x_scale = X_SCALE_MM
        if base == "path" and axis is not None and axis.x_degree:
            x_values, x_scale = axis.x_tables(), axis.x_scale
        self.register_buffer("x_values", x_values)
        self.register_buffer("x_grid", torch.tensor([x_scale], dtype=torch.float64))
        self.register_buffer("path_passes", torch.tensor(PATH_PASSES))
        # The curvature rule (axis_lookup.py): 2, d2By/dz2 and the x coefficients' second dz
        # derivatives continuous between the nodes; 1, d2By/dz2 only; 0, neither.
        self.register_buffer("continuous_curvature", torch.tensor(CURVATURE_RULE))
        self._derive()

    def _derive(self) -> None:
        """What follows from the saved buffers (recomputed after loading a state), not saved:
        the look-ups' rows, the path's integration matrix, Python constants for the export."""
        # A Python bool, as x_scale and passes below: an exported graph sees a constant.
        self.smooth_curvature = int(self.continuous_curvature) >= 1
        self.smooth_x_curvature = int(self.continuous_curvature) >= 2
        rows = self.axis_values.T
        spacing = float(self.axis_grid[1])
        if self.axis_values.shape[1]:
            rows = axis_interval_rows(self.axis_values, spacing, self.smooth_curvature)
        self.register_buffer("axis_rows", rows, persistent=False)
        x_rows = self.x_values.T
        if len(self.x_values):
            x_rows = x_interval_rows(self.x_values, spacing, self.smooth_x_curvature)
        self.register_buffer("x_rows", x_rows, persistent=False)
        integration = integration_matrix(self.quadrature_nodes)
        self.register_buffer("integration", integration, persistent=False)
        self.x_scale, self.passes = float(self.x_grid[0]), int(self.path_passes)

    @property
    def n_features(self) -> int:
        return INPUT_SETS[self.inputs]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # A model saved with another number of quadrature nodes keeps its own, one saved with
        # other x tables its own; one saved before the path base existed has none.
        state_dict.setdefault(prefix + "x_values", self.x_values[:0])
        state_dict.setdefault(prefix + "x_grid", self.x_grid)
        state_dict.setdefault(prefix + "path_passes", self.path_passes)
        state_dict.setdefault(prefix + "continuous_curvature", torch.tensor(0))
        for name, partner in (("quadrature_nodes", "quadrature_weights"), ("x_values", None)):
            saved = state_dict.get(prefix + name)
            if saved is not None and saved.shape != getattr(self, name).shape:
                setattr(self, name, torch.empty_like(saved))
                if partner:
                    setattr(self, partner, torch.empty_like(saved))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._derive()

    def tables(self) -> AxisTables:
        x_values = self.x_values if len(self.x_values) else None
        return AxisTables(
            self.axis_values,
            self.z_first,
            self.spacing,
            self.axis_rows,
            x_values,
            self.x_scale,
            self.x_rows if x_values is not None else None,
            self.smooth_curvature,
            self.smooth_x_curvature,
        )

    def base_prediction(self, inputs: torch.Tensor, ends: Ends | None = None) -> torch.Tensor:
        """(N, 4) float64 base end states of (N, 7) float64 inputs (``ends``: the tables at the
        legs' ends, when already looked up)."""
        if self.base == "line":
            return straight_line(inputs)
        tables = self.tables()
        ends = ends or leg_ends(inputs, tables)
        if self.base == "kick":
            return kick_transport(inputs, tables, ends)
        if self.base == "path":
            nodes, weights, passes = self.quadrature_nodes, self.quadrature_weights, self.passes
            return path_transport(inputs, tables, nodes, weights, self.integration, ends, passes)
        transport = axial_transport if self.base == "axial" else expansion_transport
        return transport(inputs, tables, self.quadrature_nodes, self.quadrature_weights, ends)

    def prepare(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Features (N, F), base (N, 4) and target scale (N, 4) of (N, 7) inputs, float64."""
        inputs = inputs.double()
        ends = leg_ends(inputs, self.tables()) if needs_field(self.base, self.inputs) else None
        base = self.base_prediction(inputs, ends)
        features = inputs
        if self.inputs == "physics":
            dz = inputs[:, 6] - inputs[:, 5]
            i1, i2 = field_integrals(*ends, dz)
            bend = base - straight_line(inputs)
            features = torch.cat((inputs, torch.stack((dz, i1, i2), 1), bend), 1)
        return features, base, self.target_scale(inputs)

    def target_scale(self, inputs: torch.Tensor) -> torch.Tensor:
        """(N, 4) divisor of the residual over the base (ones for ``raw``).

        Built from the input columns only (no ``ones_like``, no ``torch.tensor``): constants
        made here are lifted out of an exported graph, which the Jacobian export's forward-mode
        transform cannot trace.
        """
        zero_legs = inputs[:, 5:6] - inputs[:, 5:6]  # (N, 1) zeros that keep N dynamic
        scale = zero_legs + 1.0
        if self.target == "raw":
            return scale.expand(-1, N_OUTPUTS)
        if self.target == "residual_qop":
            scale = scale * inputs[:, 4:5]
        if not self.leg_power:
            return scale.expand(-1, N_OUTPUTS)
        leg = torch.clamp(torch.abs(inputs[:, 6:7] - inputs[:, 5:6]) / 1000.0, min=MIN_LEG_M)
        slope = scale * leg ** (self.leg_power - 1)
        position = slope * leg  # one power, not two: each is slow in ONNX Runtime
        return torch.cat((position, position, slope, slope), 1)

    def encode(self, base: torch.Tensor, scale: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
        """Physical end states -> what the network learns (before standardisation)."""
        if self.target == "raw":
            return truth.double()
        return (truth.double() - base) / scale

    def decode(
        self, base: torch.Tensor, scale: torch.Tensor, encoded: torch.Tensor
    ) -> torch.Tensor:
        """What the network gives (after standardisation) -> physical end states."""
        if self.target == "raw":
            return encoded
        return base + scale * encoded
