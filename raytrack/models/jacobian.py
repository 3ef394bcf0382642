"""The models' transport Jacobian: d [x, y, tx, ty]_end / d [x, y, tx, ty, qop]_start.

A Kalman fit moves the covariance with the transport Jacobian (docs/physics.md section 2b), so a
model that replaces Runge-Kutta must give it too. It is computed exactly, in two parts:

* the formulation (base transport, physics features, target scale) is differentiated in
  forward mode, by running the formulation's own code on dual numbers
  (:mod:`raytrack.models.forward_mode`); the field look-ups depend only on ``z_start`` and
  ``z_end``, which are not differentiated, and stay plain;
* the network is differentiated layer by layer (``W t`` through a linear layer,
  ``act'(z) t`` through an activation), which is what an exported graph can hold (the
  forward-mode rules of torch's activations are backward ops ONNX does not have).

The same function serves inference, the ONNX export ``model_jacobian.onnx`` and the
Jacobian-matching (Sobolev) term of the training loss, which differentiates through it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from raytrack.models.formulation import N_OUTPUTS
from raytrack.models.forward_mode import Dual, tangent_of, value_of
from raytrack.models.mlp import TrackMLP

#: The start coordinates differentiated: x, y, tx, ty, qop.
N_DIFFERENTIATED = 5


def forward_with_jacobian(
    model: TrackMLP, inputs: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """End states (N, 4) and Jacobians (N, 4, 5) of (N, 7) physical inputs.

    ``end`` is what ``model(inputs)`` gives, in the inputs' dtype; ``jac[i, a, b] =
    d end_a / d input_b`` for b over x, y, tx, ty, qop (mm/mm, mm, mm MeV; 1/mm, 1, MeV).
    """
    _, end, jac = _outputs_and_jacobian(model, inputs)
    return end.to(inputs.dtype), jac.to(inputs.dtype)


def _outputs_and_jacobian(model: TrackMLP, inputs: torch.Tensor):
    """The network's standardised output (N, 4), the end states (N, 4) and the Jacobians
    (N, 4, 5), float64 (the network's part in its own dtype before that)."""
    (features, base, scale), (d_features, d_base, d_scale) = _formulation_tangents(
        model, inputs.double()
    )
    standardised, d_standardised = _network_tangents(model, features, d_features)
    target_std = model.target_std.double()
    encoded = standardised.double() * target_std + model.target_mean.double()
    d_encoded = d_standardised.double() * target_std[:, None]
    if model.config.target == "raw":
        return standardised, encoded, d_encoded
    end = model.formulation.decode(base, scale, encoded)
    jac = d_base + d_scale * encoded[..., None] + scale[..., None] * d_encoded
    return standardised, end, jac


def _formulation_tangents(model: TrackMLP, inputs: torch.Tensor):
    """``prepare``'s outputs and their tangents (N, ..., 5), by forward-mode dual numbers."""
    outputs = model.prepare(Dual.seed(inputs, N_DIFFERENTIATED))
    values = tuple(value_of(o) for o in outputs)
    return values, tuple(tangent_of(o, N_DIFFERENTIATED) for o in outputs)


def _network_tangents(model: TrackMLP, features: torch.Tensor, d_features: torch.Tensor):
    """The network's standardised output (N, 4) and its tangents (N, 4, 5)."""
    x = model.standardise(features)
    t = torch.where(model.input_fixed[:, None], 0.0, d_features.float() / model.input_std[:, None])
    for layer in model.net:
        if isinstance(layer, nn.Linear):
            x = layer(x)
            t = torch.matmul(layer.weight, t)
        elif isinstance(layer, nn.Dropout):
            if layer.training and layer.p > 0:
                mask = nn.functional.dropout(torch.ones_like(x), layer.p, training=True)
                x, t = x * mask, t * mask[..., None]
        else:
            t = activation_derivative(layer, x)[..., None] * t
            x = layer(x)
    return x, t


def activation_derivative(layer: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """d act(z) / dz of the activation modules :data:`raytrack.models.mlp.ACTIVATIONS` holds."""
    if isinstance(layer, nn.ReLU):
        return (z > 0).to(z.dtype)
    if isinstance(layer, nn.Tanh):
        return 1.0 - torch.tanh(z) ** 2
    if isinstance(layer, nn.SiLU):
        sigmoid = torch.sigmoid(z)
        return sigmoid * (1.0 + z * (1.0 - sigmoid))
    if isinstance(layer, nn.GELU) and layer.approximate == "none":
        cdf = 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))
        return cdf + z * torch.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    raise TypeError(f"no derivative for the activation {layer!r}")


#: Typical 1-sigma start uncertainties of a fitted track (x, y in mm; tx, ty; qop relative): they
#: weigh the Jacobian's columns in the Jacobian-matching loss, so that a column counts by how
#: much position (or slope) error it would propagate in a fit.
TYPICAL_SIGMA = (0.1, 0.1, 1e-4, 1e-4)
TYPICAL_SIGMA_QOP_RELATIVE = 0.005


def typical_sigma(inputs: torch.Tensor) -> torch.Tensor:
    """(N, 5) typical start uncertainties of (N, 7) inputs (:data:`TYPICAL_SIGMA`)."""
    fixed = torch.tensor(TYPICAL_SIGMA, dtype=inputs.dtype, device=inputs.device)
    qop = TYPICAL_SIGMA_QOP_RELATIVE * inputs[:, 4:5].abs()
    return torch.cat((fixed.expand(len(inputs), -1), qop), 1)


def standardised_with_jacobian_error(
    model: TrackMLP, inputs: torch.Tensor, true_jacobian: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The network's standardised output (N, 4) and the Jacobian mismatch (N, 4, 5), both
    differentiable by the weights.

    The mismatch ``(J_model - J_true)[a, b] * sigma_b / |J_true[a] * sigma|`` is the error
    column b propagates into output a for a typical start uncertainty sigma
    (:data:`TYPICAL_SIGMA`), relative to the whole propagated 1-sigma of output a: its sum of
    squares over b is the squared relative error of the propagated uncertainty a Kalman fit
    would get. (Relative to each element instead, the many elements near 0, d x / d qop on a
    leg outside the field, would dominate with errors no fit notices.)
    """
    standardised, _, jac = _outputs_and_jacobian(model, inputs)
    sigma = typical_sigma(inputs.double())[:, None, :]
    true_jacobian = true_jacobian.double()
    propagated = (true_jacobian * sigma).norm(dim=2, keepdim=True)
    return standardised, (jac - true_jacobian) * sigma / propagated


class JacobianModel(nn.Module):
    """A TrackMLP whose forward returns ``(state_end, jacobian)``: what the ONNX export holds."""

    def __init__(self, model: TrackMLP) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return forward_with_jacobian(self.model, inputs)


__all__ = [
    "N_DIFFERENTIATED",
    "N_OUTPUTS",
    "JacobianModel",
    "forward_with_jacobian",
    "standardised_with_jacobian_error",
    "typical_sigma",
]
