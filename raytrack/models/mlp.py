"""The MLP track extrapolator: physical state in, physical state out.

Inputs ``[x, y, tx, ty, qop, z_start, z_end]`` (mm, 1, 1, 1/MeV, mm, mm), outputs
``[x_end, y_end, tx_end, ty_end]`` (mm, 1, 1). Normalisation is part of the model (buffers fitted
on the training split), so an exported model takes and returns physical units.

Target modes (``ModelConfig.target``):

* ``"residual"``: the network predicts the deviation from the straight line
  (``x_end - x - tx*dz``, ``y_end - y - ty*dz``, ``tx_end - tx``, ``ty_end - ty``), each
  standardised, and the straight line is added back.
* ``"residual_qop"``: the same residual divided by q/p before standardising. To first order in the
  field integral the bending is proportional to q/p, so this target varies little between 2 and
  100 GeV and the error of a stiff track shrinks with its bending (physics.md section 4).
* ``"raw"``: the network predicts the standardised end state itself (for comparison).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import torch
from torch import nn

N_INPUTS = 7
N_OUTPUTS = 4
TARGET_MODES = ("residual_qop", "residual", "raw")
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
}


def options_from_dict(cls, data: dict[str, Any], what: str):
    """``cls(**data)`` for a dataclass of options, naming any unknown key and the allowed ones."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {what} option(s) {unknown}; allowed: {sorted(known)}")
    return cls(**data)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture as plain data: hidden widths, activation, dropout, target mode."""

    hidden: tuple[int, ...] = (128, 128, 64)
    activation: str = "silu"
    dropout: float = 0.0
    target: str = "residual_qop"

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(w) for w in self.hidden))
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError(
                f"hidden must be a non-empty list of positive widths, got {self.hidden}"
            )
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.target not in TARGET_MODES:
            raise ValueError(f"target must be one of {list(TARGET_MODES)}, got {self.target!r}")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["hidden"] = list(self.hidden)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        return options_from_dict(cls, data, "model")

    @property
    def weight_count(self) -> int:
        """Trainable numbers: weights and biases of every linear layer."""
        sizes = (N_INPUTS, *self.hidden, N_OUTPUTS)
        return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=True))

    @property
    def macs_per_track(self) -> int:
        """Multiply-adds of the linear layers for one track (normalisation is negligible)."""
        sizes = (N_INPUTS, *self.hidden, N_OUTPUTS)
        return sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))


@dataclass
class Normalisation:
    """Input and target standardisation, fitted on the training split (float64 numbers)."""

    input_mean: np.ndarray = field(default_factory=lambda: np.zeros(N_INPUTS))
    input_std: np.ndarray = field(default_factory=lambda: np.ones(N_INPUTS))
    target_mean: np.ndarray = field(default_factory=lambda: np.zeros(N_OUTPUTS))
    target_std: np.ndarray = field(default_factory=lambda: np.ones(N_OUTPUTS))

    @classmethod
    def fit(cls, inputs: np.ndarray, targets: np.ndarray, target_mode: str) -> Normalisation:
        encoded = encode_targets(inputs, targets, target_mode)
        return cls(
            input_mean=inputs.mean(axis=0),
            input_std=_safe_std(inputs),
            target_mean=encoded.mean(axis=0),
            target_std=_safe_std(encoded),
        )


def _safe_std(values: np.ndarray) -> np.ndarray:
    """Standard deviation per column, 1 where a column is constant (a fixed leg, say)."""
    std = values.std(axis=0)
    scale = np.maximum(np.abs(values).max(axis=0), 1e-300)
    return np.where(std > 1e-12 * scale, std, 1.0)


def straight_line(inputs):
    """(N, 4) straight-line extrapolation of (N, 7) inputs; NumPy or torch."""
    x, y, tx, ty, _, z0, z1 = (inputs[:, k] for k in range(N_INPUTS))
    dz = z1 - z0
    stack = torch.stack if isinstance(inputs, torch.Tensor) else np.stack
    return stack([x + tx * dz, y + ty * dz, tx, ty], 1)


def encode_targets(inputs: np.ndarray, targets: np.ndarray, mode: str) -> np.ndarray:
    """Physical end states -> what the network learns (before standardisation), float64."""
    if mode == "raw":
        return targets
    residual = targets - straight_line(inputs)
    return residual / inputs[:, 4:5] if mode == "residual_qop" else residual


class TrackMLP(nn.Module):
    """MLP extrapolator with normalisation and the target decoding built in."""

    def __init__(self, config: ModelConfig, norm: Normalisation | None = None) -> None:
        super().__init__()
        self.config = config
        norm = norm or Normalisation()
        for name in ("input_mean", "input_std", "target_mean", "target_std"):
            self.register_buffer(name, torch.as_tensor(getattr(norm, name), dtype=torch.float32))
        layers: list[nn.Module] = []
        width = N_INPUTS
        for hidden in config.hidden:
            layers += [nn.Linear(width, hidden), ACTIVATIONS[config.activation]()]
            if config.dropout:
                layers.append(nn.Dropout(config.dropout))
            width = hidden
        layers.append(nn.Linear(width, N_OUTPUTS))
        self.net = nn.Sequential(*layers)

    def linear_layers(self) -> list[nn.Linear]:
        return [m for m in self.net if isinstance(m, nn.Linear)]

    def standardised(self, inputs: torch.Tensor) -> torch.Tensor:
        """The network's raw output: standardised targets (what the loss compares)."""
        return self.net((inputs - self.input_mean) / self.input_std)

    def decode(self, inputs: torch.Tensor, standardised: torch.Tensor) -> torch.Tensor:
        """Standardised network output -> physical end state."""
        encoded = standardised * self.target_std + self.target_mean
        mode = self.config.target
        if mode == "raw":
            return encoded
        if mode == "residual_qop":
            encoded = encoded * inputs[:, 4:5]
        return straight_line(inputs) + encoded

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """(N, 7) physical inputs -> (N, 4) physical outputs."""
        return self.decode(inputs, self.standardised(inputs))

    def normalisation(self) -> Normalisation:
        return Normalisation(
            **{
                name: getattr(self, name).double().cpu().numpy()
                for name in ("input_mean", "input_std", "target_mean", "target_std")
            }
        )
