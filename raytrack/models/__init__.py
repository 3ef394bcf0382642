"""Models and training: the MLP extrapolator, presets, the training loop and the metrics."""

from raytrack.models.mlp import ModelConfig, Normalisation, TrackMLP
from raytrack.models.presets import SEARCH_PRESETS, get_preset, load_presets

__all__ = [
    "SEARCH_PRESETS",
    "ModelConfig",
    "Normalisation",
    "TrackMLP",
    "get_preset",
    "load_presets",
]
