"""model.bin's network in float32 NumPy, as the torch model runs it."""

from __future__ import annotations

import math

import numpy as np

from raytrack.export.reference.erf import erf


def activate(x: np.ndarray, activation: str) -> np.ndarray:
    """Element-wise activation in float32 (GELU via a float64 erf, see :func:`erf`)."""
    if activation == "relu":
        return np.maximum(x, np.float32(0))
    if activation == "tanh":
        return np.tanh(x)
    if activation == "silu":
        e = np.exp(-np.abs(x))  # stable sigmoid: never overflows
        sig = np.where(x >= 0, 1 / (1 + e), e / (1 + e))
        return (x * sig).astype(np.float32)
    if activation == "gelu":
        x64 = x.astype(np.float64)
        return (0.5 * x64 * (1.0 + erf(x64 / math.sqrt(2.0)))).astype(np.float32)
    raise ValueError(f"unknown activation {activation!r}")


def run_network(
    h: np.ndarray, weights: list[np.ndarray], biases: list[np.ndarray], activation: str
) -> np.ndarray:
    """The layers on standardised float32 features ``h`` (N, F): ``act(W h + b)`` for every
    layer but the last, ``W h + b`` for the last."""
    last = len(weights) - 1
    for k, (w, b) in enumerate(zip(weights, biases, strict=True)):
        h = h @ w.T + b
        if k < last:
            h = activate(h, activation)
    return h
