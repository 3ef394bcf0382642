"""The MLP track extrapolator: physical state in, physical state out.

Inputs ``[x, y, tx, ty, qop, z_start, z_end]`` (mm, 1, 1, 1/MeV, mm, mm), outputs
``[x_end, y_end, tx_end, ty_end]`` (mm, 1, 1). The model is a :class:`Formulation` (physics
base, features, target scaling; see formulation.py) around a plain MLP, with the
standardisation of its features and targets as buffers fitted on the training split, so an
exported model takes and returns physical units.

Target modes (``ModelConfig.target``), over the configuration's base (``ModelConfig.base``):

* ``"residual_qop"``: the residual over the base divided by q/p (and by the leg length to the
  power ``leg_power``), each standardised. To first order in the field the bending is
  proportional to q/p, so this target varies little between 2 and 100 GeV.
* ``"residual"``: the residual over the base, standardised.
* ``"raw"``: the standardised end state itself (for comparison).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import torch
from torch import nn

from raytrack.models.formulation import (
    BASES,
    INPUT_SETS,
    N_INPUTS,
    N_OUTPUTS,
    Formulation,
    needs_field,
)
from raytrack.physics.axis_profile import AxisProfile
from raytrack.physics.transports import straight_line

__all__ = ["N_INPUTS", "N_OUTPUTS", "ModelConfig", "Normalisation", "TrackMLP", "straight_line"]

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
    """Architecture as plain data: hidden widths, activation, dropout, and the formulation
    (physics base, input features, target mode and leg scaling; see formulation.py)."""

    hidden: tuple[int, ...] = (128, 128, 64)
    activation: str = "silu"
    dropout: float = 0.0
    target: str = "residual_qop"
    base: str = "path"
    inputs: str = "physics"
    leg_power: float = 1.5

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
        if self.base not in BASES:
            raise ValueError(f"base must be one of {list(BASES)}, got {self.base!r}")
        if self.inputs not in INPUT_SETS:
            raise ValueError(f"inputs must be one of {list(INPUT_SETS)}, got {self.inputs!r}")
        object.__setattr__(self, "leg_power", float(self.leg_power))
        if not 0.0 <= self.leg_power <= 4.0:
            raise ValueError(f"leg_power must be in [0, 4], got {self.leg_power}")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["hidden"] = list(self.hidden)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        return options_from_dict(cls, data, "model")

    @property
    def n_features(self) -> int:
        """Width of the network's input layer."""
        return INPUT_SETS[self.inputs]

    @property
    def needs_field(self) -> bool:
        """Whether the model reads the dataset's on-axis field tables."""
        return needs_field(self.base, self.inputs)

    @property
    def weight_count(self) -> int:
        """Trainable numbers: weights and biases of every linear layer."""
        sizes = (self.n_features, *self.hidden, N_OUTPUTS)
        return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=True))

    @property
    def macs_per_track(self) -> int:
        """Multiply-adds of the linear layers for one track (normalisation and the physics base
        are small beside them: the base is a few hundred operations)."""
        sizes = (self.n_features, *self.hidden, N_OUTPUTS)
        return sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))


#: A feature column whose spread is below this fraction of its largest magnitude is constant at
#: float32 resolution (the network sees features rounded to float32): a fixed leg's z_start,
#: z_end, dz, I1 and I2.
FIXED_RESOLUTION = 2.0**-24
NORMALISATION_FIELDS = ("input_mean", "input_std", "target_mean", "target_std", "input_fixed")


@dataclass
class Normalisation:
    """Feature and target standardisation, fitted on the training split (float64 numbers).

    ``input_fixed`` marks the features that were constant in training: the network receives
    0 for them whatever their value (a float32 formulation computes a fixed leg's I2, about
    -7e6 T mm^2, only to a few units, which a standard deviation of 1 would pass on as several
    standard deviations of an input the network never saw vary); their mean is their value and
    their std 1.
    """

    input_mean: np.ndarray = field(default_factory=lambda: np.zeros(N_INPUTS))
    input_std: np.ndarray = field(default_factory=lambda: np.ones(N_INPUTS))
    target_mean: np.ndarray = field(default_factory=lambda: np.zeros(N_OUTPUTS))
    target_std: np.ndarray = field(default_factory=lambda: np.ones(N_OUTPUTS))
    input_fixed: np.ndarray = field(default_factory=lambda: np.zeros(N_INPUTS, dtype=bool))

    @classmethod
    def fit(cls, features, encoded_targets) -> Normalisation:
        """From (N, F) features and (N, 4) encoded targets (NumPy or tensors, any float)."""
        moments = (ColumnMoments(), ColumnMoments())
        moments[0].add(features)
        moments[1].add(encoded_targets)
        return cls.from_moments(*moments)

    @classmethod
    def from_moments(cls, features: ColumnMoments, targets: ColumnMoments) -> Normalisation:
        return cls(
            input_mean=features.mean(),
            input_std=features.std(),
            target_mean=targets.mean(),
            target_std=targets.std(),
            input_fixed=features.fixed(),
        )

    @classmethod
    def identity(cls, n_features: int) -> Normalisation:
        return cls(
            input_mean=np.zeros(n_features),
            input_std=np.ones(n_features),
            input_fixed=np.zeros(n_features, dtype=bool),
        )


class ColumnMoments:
    """Column means and variances of a stream of (n, k) chunks (Chan et al.), float64."""

    def __init__(self) -> None:
        self.count = 0
        self.mean_: np.ndarray | None = None
        self.m2: np.ndarray | None = None
        self.max_abs: np.ndarray | None = None

    def add(self, chunk) -> None:
        """Merge an (n, k) chunk (NumPy array or tensor)."""
        values = chunk.double().cpu().numpy() if isinstance(chunk, torch.Tensor) else chunk
        values = np.asarray(values, dtype=np.float64)
        n = len(values)
        if not n:
            return
        mean = values.mean(axis=0)
        m2 = ((values - mean) ** 2).sum(axis=0)
        peak = np.abs(values).max(axis=0)
        if self.mean_ is None:
            self.count, self.mean_, self.m2, self.max_abs = n, mean, m2, peak
            return
        total = self.count + n
        delta = mean - self.mean_
        self.mean_ = self.mean_ + delta * n / total
        self.m2 = self.m2 + m2 + delta**2 * self.count * n / total
        self.max_abs = np.maximum(self.max_abs, peak)
        self.count = total

    def mean(self) -> np.ndarray:
        return self.mean_

    def std(self) -> np.ndarray:
        """Standard deviation, 1 where a column is constant (a fixed leg, say: see fixed)."""
        return np.where(self.fixed(), 1.0, self._spread())

    def fixed(self) -> np.ndarray:
        """Whether each column is constant at float32 resolution (``FIXED_RESOLUTION``)."""
        return self._spread() <= FIXED_RESOLUTION * self.max_abs

    def _spread(self) -> np.ndarray:
        return np.sqrt(self.m2 / self.count)


class TrackMLP(nn.Module):
    """MLP extrapolator with its formulation and standardisation built in.

    ``axis``: the on-axis field profile of the dataset (required when
    ``config.needs_field``); see :func:`raytrack.data.axis_profile`. ``path_nodes``: the path
    base's quadrature nodes (see :class:`Formulation`).
    """

    def __init__(
        self,
        config: ModelConfig,
        norm: Normalisation | None = None,
        axis: AxisProfile | None = None,
        path_nodes: int | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.formulation = Formulation(
            config.base, config.inputs, config.target, config.leg_power, axis, path_nodes
        )
        norm = norm or Normalisation.identity(config.n_features)
        for name in ("input_mean", "input_std", "target_mean", "target_std"):
            self.register_buffer(name, torch.as_tensor(getattr(norm, name), dtype=torch.float32))
        self.register_buffer("input_fixed", torch.as_tensor(norm.input_fixed, dtype=torch.bool))
        layers: list[nn.Module] = []
        width = config.n_features
        for hidden in config.hidden:
            layers += [nn.Linear(width, hidden), ACTIVATIONS[config.activation]()]
            if config.dropout:
                layers.append(nn.Dropout(config.dropout))
            width = hidden
        layers.append(nn.Linear(width, N_OUTPUTS))
        self.net = nn.Sequential(*layers)

    @classmethod
    def from_state(cls, config: ModelConfig, state: dict[str, torch.Tensor]) -> TrackMLP:
        """A model whose buffers (field tables included) and weights come from ``state``."""
        axis = None
        if state["formulation.axis_values"].shape[1]:
            z_first, spacing = (float(v) for v in state["formulation.axis_grid"])
            axis = AxisProfile.from_tables(
                z_first, spacing, state["formulation.axis_values"].numpy()
            )
        model = cls(config, axis=axis)
        model.load_state_dict(state)
        return model

    def set_normalisation(self, norm: Normalisation) -> None:
        for name in NORMALISATION_FIELDS:
            getattr(self, name).copy_(torch.as_tensor(getattr(norm, name)))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # A checkpoint from before input_fixed fixes no feature: it behaves as it did.
        state_dict.setdefault(prefix + "input_fixed", torch.zeros_like(self.input_fixed))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def linear_layers(self) -> list[nn.Linear]:
        return [m for m in self.net if isinstance(m, nn.Linear)]

    def prepare(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Features, base and target scale of physical inputs (float64; see Formulation)."""
        return self.formulation.prepare(inputs)

    def encode(self, inputs: torch.Tensor, truth: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Features and encoded (not yet standardised) targets of inputs and true end states."""
        features, base, scale = self.prepare(inputs)
        return features, self.formulation.encode(base, scale, truth)

    def standardise(self, features: torch.Tensor) -> torch.Tensor:
        """The network's input: (N, F) features rounded to float32 and standardised, 0 for the
        features fixed in training.

        One product by a (F,) factor that is 0 for the fixed features: ONNX Runtime folds the
        factor, a where over (N, F) cost a tenth of the network's time."""
        factor = torch.where(self.input_fixed, 0.0, 1.0 / self.input_std)
        return (features.float() - self.input_mean) * factor

    def standardised(self, features: torch.Tensor) -> torch.Tensor:
        """The network's raw output for (N, F) features: standardised targets (the loss's)."""
        return self.net(self.standardise(features))

    def decode(self, base, scale, standardised: torch.Tensor) -> torch.Tensor:
        """Standardised network output -> physical end state (float64)."""
        encoded = standardised.double() * self.target_std.double() + self.target_mean.double()
        return self.formulation.decode(base, scale, encoded)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """(N, 7) physical inputs -> (N, 4) physical outputs, in the inputs' dtype."""
        features, base, scale = self.prepare(inputs)
        return self.decode(base, scale, self.standardised(features)).to(inputs.dtype)

    def normalisation(self) -> Normalisation:
        values = {name: getattr(self, name).cpu().numpy() for name in NORMALISATION_FIELDS}
        for name in ("input_mean", "input_std", "target_mean", "target_std"):
            values[name] = values[name].astype(np.float64)
        return Normalisation(**values)
