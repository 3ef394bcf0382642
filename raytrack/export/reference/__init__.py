"""The NumPy reference of model.bin's forward pass (docs/model_bin.md, "Forward pass"): the
formulation in float64, the network in float32, as the torch model computes them.
:meth:`raytrack.export.model_bin.BinModel.forward` runs it."""

from raytrack.export.reference.erf import erf
from raytrack.export.reference.formulation import (
    AxisPoint,
    Tables,
    base_prediction,
    field_integrals,
    integration_matrix,
    straight_line,
)
from raytrack.export.reference.network import activate, run_network

__all__ = [
    "AxisPoint",
    "Tables",
    "activate",
    "base_prediction",
    "erf",
    "field_integrals",
    "integration_matrix",
    "run_network",
    "straight_line",
]
