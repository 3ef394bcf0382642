"""The ``model.bin`` deployment format: writer and an independent NumPy reader.

The byte-by-byte specification is ``docs/model_bin.md``; this docstring is a summary. Everything
is little-endian, with no padding::

    offset      type            field
    0           char[8]         magic b"RTRKMLP\\0"
    8           uint32          format version (1)
    12          uint32          endianness marker 0x01020304 (bytes 04 03 02 01 on disk)
    16          uint32          dtype code (1 = float32)
    20          uint32          activation code (1 relu, 2 silu, 3 gelu (exact erf), 4 tanh)
    24          uint32          target mode code (0 raw, 1 residual, 2 residual_qop)
    28          uint32          n_inputs (7)
    32          uint32          n_outputs (4)
    36          uint32          n_layers L (number of Linear layers)
    40          uint32[L][2]    per layer: rows (out_features), cols (in_features)
    40 + 8L     float32[22]     input_mean[7], input_std[7], target_mean[4], target_std[4]
    128 + 8L    per layer       weight float32[rows * cols] ROW-MAJOR (W[o][i] at o*cols + i),
                                then bias float32[rows]
    end - 4     uint32          CRC-32 (zlib polynomial) of every byte before it

The file length must equal exactly what the header implies, so truncation and trailing bytes
are both detected before the checksum is even looked at.

:func:`read_model_bin` returns a :class:`BinModel` whose :meth:`BinModel.forward` evaluates the
network with NumPy only (no torch), as a second implementation to test the export against.
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from raytrack.files import write_bytes_atomic
from raytrack.models.mlp import N_INPUTS, N_OUTPUTS, TrackMLP

MAGIC = b"RTRKMLP\0"
FORMAT_VERSION = 1
ENDIAN_MARKER = 0x01020304
DTYPE_FLOAT32 = 1
ACTIVATION_CODES = {"relu": 1, "silu": 2, "gelu": 3, "tanh": 4}
TARGET_CODES = {"raw": 0, "residual": 1, "residual_qop": 2}
N_NORM = 2 * N_INPUTS + 2 * N_OUTPUTS  # input_mean, input_std, target_mean, target_std
MAX_WIDTH = 1 << 20  # sanity bound on a layer dimension, keeps size arithmetic small
#: Directory holding raytrack_mlp.hpp, the C++17 single-header reader (``-I`` this directory).
INCLUDE_DIR = Path(__file__).resolve().parent / "include"

_FIXED = struct.Struct("<8s8I")  # magic + version ... n_layers: 40 bytes
_CRC = struct.Struct("<I")


@dataclass
class BinModel:
    """A model.bin in memory: codes, normalisation and float32 layers (W is (out, in))."""

    activation: str
    target: str
    input_mean: np.ndarray
    input_std: np.ndarray
    target_mean: np.ndarray
    target_std: np.ndarray
    weights: list[np.ndarray] = field(default_factory=list)
    biases: list[np.ndarray] = field(default_factory=list)

    @classmethod
    def from_torch(cls, model: TrackMLP) -> BinModel:
        """Copy the parameters and buffers of a TrackMLP (as float32, row-major (out, in))."""
        layers = model.linear_layers()

        def arr(t) -> np.ndarray:
            return np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float32)

        return cls(
            activation=model.config.activation,
            target=model.config.target,
            input_mean=arr(model.input_mean),
            input_std=arr(model.input_std),
            target_mean=arr(model.target_mean),
            target_std=arr(model.target_std),
            weights=[arr(layer.weight) for layer in layers],
            biases=[arr(layer.bias) for layer in layers],
        )

    @property
    def n_layers(self) -> int:
        return len(self.weights)

    @property
    def weight_count(self) -> int:
        """Weights and biases of every layer (normalisation not counted)."""
        return sum(w.size + b.size for w, b in zip(self.weights, self.biases, strict=True))

    def forward(self, inputs: np.ndarray) -> np.ndarray:
        """(N, 7) physical inputs -> (N, 4) physical outputs, float32 like the torch model."""
        inputs = np.asarray(inputs, dtype=np.float32)
        if inputs.ndim != 2 or inputs.shape[1] != N_INPUTS:
            raise ValueError(f"inputs must have shape (N, {N_INPUTS}), got {inputs.shape}")
        h = (inputs - self.input_mean) / self.input_std
        last = self.n_layers - 1
        for k, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = h @ w.T + b
            if k < last:
                h = activate(h, self.activation)
        return decode(inputs, h * self.target_std + self.target_mean, self.target)

    def to_bytes(self) -> bytes:
        """The complete file content, checksum included."""
        self._check_consistent("<in memory>")
        shapes = [w.shape for w in self.weights]
        parts = [
            _FIXED.pack(
                MAGIC,
                FORMAT_VERSION,
                ENDIAN_MARKER,
                DTYPE_FLOAT32,
                ACTIVATION_CODES[self.activation],
                TARGET_CODES[self.target],
                N_INPUTS,
                N_OUTPUTS,
                self.n_layers,
            ),
            struct.pack(f"<{2 * self.n_layers}I", *(d for shape in shapes for d in shape)),
        ]
        norms = (self.input_mean, self.input_std, self.target_mean, self.target_std)
        parts += [_le_f32(a) for a in norms]
        for w, b in zip(self.weights, self.biases, strict=True):
            parts += [_le_f32(w), _le_f32(b)]  # C-order ravel of (out, in): row-major
        body = b"".join(parts)
        return body + _CRC.pack(zlib.crc32(body))

    def write(self, path: str | os.PathLike) -> None:
        """Write the file atomically (temporary file in the same directory, then os.replace)."""
        write_bytes_atomic(path, self.to_bytes())

    def _check_consistent(self, name: str) -> None:
        if self.activation not in ACTIVATION_CODES:
            raise ValueError(f"{name}: unknown activation {self.activation!r}")
        if self.target not in TARGET_CODES:
            raise ValueError(f"{name}: unknown target mode {self.target!r}")
        if not self.weights or len(self.weights) != len(self.biases):
            raise ValueError(f"{name}: need at least one layer and one bias per weight matrix")
        shapes = [(w.shape[0], w.shape[1]) if w.ndim == 2 else (-1, -1) for w in self.weights]
        _check_shapes(name, shapes)
        for k, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            if b.shape != (w.shape[0],):
                raise ValueError(f"{name}: layer {k} bias shape {b.shape} != ({w.shape[0]},)")


def write_model_bin(model: TrackMLP, path: str | os.PathLike) -> None:
    """Write ``model`` to ``path`` in the model.bin format (see docs/model_bin.md), atomically."""
    BinModel.from_torch(model).write(path)


def read_model_bin(path: str | os.PathLike) -> BinModel:
    """Read and validate a model.bin; raise ValueError naming the file and the problem."""
    path = Path(path)
    return parse_model_bin(path.read_bytes(), str(path))


def parse_model_bin(data: bytes, name: str = "<bytes>") -> BinModel:
    """Parse model.bin content; ``name`` (the file) is used in error messages."""
    if data[:8] != MAGIC[: len(data)]:  # a short file that starts right is "truncated"
        raise ValueError(f"{name}: bad magic {data[:8]!r}, expected {MAGIC!r} (not a model.bin)")
    if len(data) < _FIXED.size:
        raise ValueError(f"{name}: truncated: {len(data)} bytes, the header alone needs 40")
    _, version, endian, dtype, act, target, n_in, n_out, n_layers = _FIXED.unpack_from(data)
    _check_fixed_header(name, version, endian, dtype, n_in, n_out)
    activation = _decode_code(name, "activation", ACTIVATION_CODES, act)
    target_mode = _decode_code(name, "target mode", TARGET_CODES, target)
    shapes = _read_shapes(data, name, n_layers)
    floats_end = _check_length_and_crc(data, name, shapes)
    floats_start = _FIXED.size + 8 * len(shapes)
    count = (floats_end - floats_start) // 4
    floats = np.frombuffer(data, dtype="<f4", offset=floats_start, count=count)
    return _assemble(activation, target_mode, shapes, floats.astype(np.float32))


def _read_shapes(data: bytes, name: str, n_layers: int) -> list[tuple[int, int]]:
    if not 1 <= n_layers <= 1024:
        raise ValueError(f"{name}: implausible layer count {n_layers}")
    if len(data) < _FIXED.size + 8 * n_layers:
        raise ValueError(f"{name}: truncated inside the layer shapes ({len(data)} bytes)")
    dims = struct.unpack_from(f"<{2 * n_layers}I", data, _FIXED.size)
    shapes = list(zip(dims[0::2], dims[1::2], strict=True))
    _check_shapes(name, shapes)
    return shapes


def _check_length_and_crc(data: bytes, name: str, shapes: list[tuple[int, int]]) -> int:
    """Exact length implied by the header, then the CRC; returns where the CRC starts."""
    n_floats = N_NORM + sum(r * c + r for r, c in shapes)
    crc_at = _FIXED.size + 8 * len(shapes) + 4 * n_floats
    if len(data) != crc_at + _CRC.size:
        what = "truncated" if len(data) < crc_at + _CRC.size else "trailing bytes"
        raise ValueError(f"{name}: {what}: {len(data)} bytes, the header implies {crc_at + 4}")
    (stored,) = _CRC.unpack_from(data, crc_at)
    computed = zlib.crc32(data[:crc_at])
    if stored != computed:
        raise ValueError(
            f"{name}: checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
        )
    return crc_at


def _check_fixed_header(name, version, endian, dtype, n_in, n_out) -> None:
    if endian != ENDIAN_MARKER:
        swapped = endian == int.from_bytes(ENDIAN_MARKER.to_bytes(4, "little"), "big")
        detail = "file is byte-swapped (written big-endian)" if swapped else "corrupt header"
        raise ValueError(f"{name}: endianness marker {endian:#010x}: {detail}")
    if version != FORMAT_VERSION:
        raise ValueError(f"{name}: format version {version}, this reader supports {FORMAT_VERSION}")
    if dtype != DTYPE_FLOAT32:
        raise ValueError(f"{name}: dtype code {dtype}, only {DTYPE_FLOAT32} (float32) is supported")
    if (n_in, n_out) != (N_INPUTS, N_OUTPUTS):
        raise ValueError(f"{name}: n_inputs/n_outputs {n_in}/{n_out}, expected 7/4")


def _decode_code(name: str, what: str, codes: dict[str, int], value: int) -> str:
    for key, code in codes.items():
        if code == value:
            return key
    raise ValueError(f"{name}: unknown {what} code {value} (known: {codes})")


def _check_shapes(name: str, shapes: list[tuple[int, int]]) -> None:
    """Layer k maps cols -> rows; the chain must run 7 -> ... -> 4 with matching widths."""
    width = N_INPUTS
    for k, (rows, cols) in enumerate(shapes):
        if not (0 < rows <= MAX_WIDTH and 0 < cols <= MAX_WIDTH):
            raise ValueError(f"{name}: layer {k} has implausible shape ({rows}, {cols})")
        if cols != width:
            raise ValueError(
                f"{name}: layer {k} has {cols} inputs but the previous width is {width}"
            )
        width = rows
    if width != N_OUTPUTS:
        raise ValueError(f"{name}: last layer has {width} outputs, expected {N_OUTPUTS}")


def _assemble(activation: str, target: str, shapes, floats: np.ndarray) -> BinModel:
    norms = np.split(floats[:N_NORM], np.cumsum([N_INPUTS, N_INPUTS, N_OUTPUTS]))
    model = BinModel(activation, target, *norms)
    pos = N_NORM
    for rows, cols in shapes:
        model.weights.append(floats[pos : pos + rows * cols].reshape(rows, cols))  # row-major
        pos += rows * cols
        model.biases.append(floats[pos : pos + rows])
        pos += rows
    return model


def _le_f32(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a, dtype="<f4").tobytes(order="C")


# --- the maths, float32 like the torch model -------------------------------------------------


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


def erf(x: np.ndarray) -> np.ndarray:
    """Vectorised float64 erf, absolute error below 1e-13 (exact GELU as torch's nn.GELU).

    |x| < 3: Maclaurin series (at most ~55 terms, cancellation costs < 2 digits);
    |x| >= 3: the continued fraction erfc(x) = exp(-x^2)/sqrt(pi) / (x + 1/2/(x + 1/(x + ...))),
    60 levels, evaluated bottom-up. numpy has no erf and scipy is not a dependency.
    """
    x = np.asarray(x, dtype=np.float64)
    a = np.abs(x)
    out = np.empty_like(a)
    small = a < 3.0
    z = a[small]
    z2 = z * z
    term = z.copy()
    total = z.copy()
    for n in range(1, 80):
        term = term * (-z2) / n
        total += term / (2 * n + 1)
        if not term.size or np.max(np.abs(term)) < 1e-17:
            break
    out[small] = (2.0 / math.sqrt(math.pi)) * total
    z = np.minimum(a[~small], 30.0)  # erfc(30) underflows anyway
    frac = z.copy()
    for k in range(60, 0, -1):
        frac = z + (k / 2.0) / frac
    out[~small] = 1.0 - np.exp(-z * z) / (math.sqrt(math.pi) * frac)
    return np.copysign(out, x)


def decode(inputs: np.ndarray, encoded: np.ndarray, target: str) -> np.ndarray:
    """De-standardised network output -> physical end state (float32)."""
    if target == "raw":
        return encoded.astype(np.float32)
    if target == "residual_qop":
        encoded = encoded * inputs[:, 4:5]
    x, y, tx, ty, z0, z1 = (inputs[:, k] for k in (0, 1, 2, 3, 5, 6))
    dz = z1 - z0
    line = np.stack([x + tx * dz, y + ty * dz, tx, ty], axis=1)
    return (line + encoded).astype(np.float32)
