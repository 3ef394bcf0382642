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
    values = targets.double().numpy()
    deviation = np.abs(values - np.median(values, axis=0))
    kept = deviation <= np.quantile(deviation, 1 - TARGET_TRIM, axis=0)
    trimmed = np.where(kept, values, np.nan)
    mean, spread = np.nanmean(trimmed, axis=0), np.nanstd(trimmed, axis=0)
    fixed = (norm.target_std == 1.0) | ~(spread > 0)
    return replace(
        norm,
        target_mean=np.where(fixed, norm.target_mean, mean),
        target_std=np.where(fixed, norm.target_std, spread),
    )


def training_loss(predicted: torch.Tensor, wanted: torch.Tensor, loss: str) -> torch.Tensor:
    """The mean training loss ``loss`` (huber or mse) of standardised outputs."""
    if loss == "huber":
        return nn.functional.smooth_l1_loss(predicted, wanted, beta=HUBER_BETA)
    return nn.functional.mse_loss(predicted, wanted)
