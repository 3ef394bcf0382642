"""What a training run is asked to do (``TrainConfig``) and what it gives back (``TrainResult``).

Plain data shared by the training loop (:mod:`raytrack.models.training`), its checkpoints
(:mod:`raytrack.models.checkpoints`) and everything that configures a run (the command line,
the search space, the benchmarks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from raytrack.models.mlp import TrackMLP, options_from_dict

LOSSES = ("huber", "mse")
SCHEDULES = ("cosine", "plateau")
PRECISIONS = ("fp32", "tf32", "bf16")
VALIDATION_METRICS = (
    "val_loss",
    "val_pos_mean_mm",
    "val_pos_p95_mm",
    "val_pos_p99_mm",
    "val_pos_max_mm",  # the worst validation track
    "val_slope_mean",
    "val_slope_p95",
)
#: The validation metric that picks a run's best epoch, the weights it exports and the figures
#: its leaderboard row and report show: the one a search minimises (its OBJECTIVE is this
#: metric of the best epoch), so the epoch a search ranks is the epoch it ships. With the
#: huber loss the validation loss and the P95 position error need not fall together.
BEST_METRIC = "val_pos_p95_mm"


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings as plain data."""

    epochs: int = 100
    # At a fixed time budget on CPU, 256 tracks a step at 1e-3 beat the larger batches at any
    # rate tried on variable legs (docs/models.md).
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-5
    warmup_epochs: float = 1.0
    schedule: str = "cosine"
    min_lr_ratio: float = 0.01
    grad_clip: float = 1.0
    patience: int = 20  # epochs without a better BEST_METRIC (second half of a cosine)
    seed: int = 0
    time_budget: float | None = None  # seconds of training; the cosine schedule follows it
    precision: str = "fp32"
    # Sobolev training: weight of a Jacobian-matching term in the loss (0: off). Needs a dataset
    # generated with --jacobian; see raytrack.models.jacobian.standardised_with_jacobian_error.
    jacobian_weight: float = 0.0
    # "huber": the targets scaled by their spread without the outer 1 % (TARGET_TRIM in
    # raytrack.models.targets), the loss quadratic within HUBER_BETA of it and linear beyond;
    # "mse": scaled by the full standard deviation, mean squared error. See docs/models.md.
    loss: str = "huber"

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "lr": self.lr > 0,
            "weight_decay": self.weight_decay >= 0,
            "warmup_epochs": self.warmup_epochs >= 0,
            "min_lr_ratio": 0 <= self.min_lr_ratio <= 1,
            "grad_clip": self.grad_clip > 0,
            "patience": self.patience >= 1,
            "time_budget": self.time_budget is None or self.time_budget > 0,
            "jacobian_weight": self.jacobian_weight >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"training option {name}={getattr(self, name)!r} is out of range")
        if self.loss not in LOSSES:
            raise ValueError(f"training option loss must be one of {LOSSES}, got {self.loss!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {self.schedule!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {self.precision!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return options_from_dict(cls, data, "training")


@dataclass
class TrainResult:
    status: str  # "finished", "early_stopped", "time_budget", "failed"
    model: TrackMLP
    history: list[dict[str, float]]
    best: dict[str, float]  # the metrics of the epoch whose weights ``model`` holds
    reason: str = ""
    epochs_run: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


#: Called after every epoch with the epoch's metrics and the checkpoint path (or None).
EpochCallback = Callable[[dict[str, float], Path | None], None]
