"""What the network is trained to output and how far off it is: the standardisation of the
encoded targets and the training loss.

With the huber loss the targets are scaled by their spread without their outer TARGET_TRIM,
and the loss turns linear HUBER_BETA (in those units) away: with the path base the residuals
are near the data's float32 resolution on most tracks, and that noise, amplified by the target
scaling on short stiff legs, and the few tracks the base misses would otherwise make most of
the targets' variance (docs/models.md).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from torch import nn

from raytrack.models.mlp import Normalisation

#: The fraction of the encoded targets (those farthest from the median) left out when their
#: mean and spread are measured, for the huber loss.
TARGET_TRIM = 0.01
HUBER_BETA = 1.0


def standardisation(norm: Normalisation, targets: torch.Tensor, loss: str) -> Normalisation:
    """The standardisation a training with ``loss`` uses: ``norm`` (the features' and targets'
    moments) as it is for ``mse``, its targets' moments trimmed for ``huber``."""
    return _trimmed_moments(targets, norm) if loss == "huber" else norm


def _trimmed_moments(targets: torch.Tensor, norm: Normalisation) -> Normalisation:
    """``norm`` with the mean and standard deviation of each column of the (N, 4) encoded
    targets taken without the TARGET_TRIM of them farthest from the column's median (a fixed
    column keeps its scale of 1)."""
    mean, spread = np.empty(targets.shape[1]), np.empty(targets.shape[1])
    for k, column in enumerate(targets.T.numpy()):
        mean[k], spread[k] = _trimmed_column(column)
    fixed = (norm.target_std == 1.0) | ~(spread > 0)
    return replace(
        norm,
        target_mean=np.where(fixed, norm.target_mean, mean),
        target_std=np.where(fixed, norm.target_std, spread),
    )


def _trimmed_column(values: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of ``values`` without the TARGET_TRIM of them farthest from
    their median, in float64 through one scratch array the size of the column: a training's
    targets are its largest array after the data, and copies of all of them would set the
    run's peak memory."""
    scratch = values.astype(np.float64)
    median = np.median(scratch, overwrite_input=True)

    def deviation() -> np.ndarray:
        np.subtract(values, median, out=scratch)
        return np.abs(scratch, out=scratch)

    threshold = np.quantile(deviation(), 1 - TARGET_TRIM, overwrite_input=True)
    kept = values[deviation() <= threshold]
    return float(np.mean(kept, dtype=np.float64)), float(np.std(kept, dtype=np.float64))


def training_loss(predicted: torch.Tensor, wanted: torch.Tensor, loss: str) -> torch.Tensor:
    """The mean training loss ``loss`` (huber or mse) of standardised outputs."""
    if loss == "huber":
        return nn.functional.smooth_l1_loss(predicted, wanted, beta=HUBER_BETA)
    return nn.functional.mse_loss(predicted, wanted)
