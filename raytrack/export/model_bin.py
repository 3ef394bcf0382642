"""The ``model.bin`` deployment format: writer and an independent NumPy reader.

The byte-by-byte specification is ``docs/model_bin.md``; this docstring is a summary. Everything
is little-endian, with no padding (version 3; F = n_features, K = quadrature nodes, T = table
nodes, D = x coefficients of the midplane field, L = linear layers)::

    offset      type            field
    0           char[8]         magic b"RTRKMLP\\0"
    8           uint32          format version (3; versions 1 and 2 are still read)
    12          uint32          endianness marker 0x01020304 (bytes 04 03 02 01 on disk)
    16          uint32          dtype code (1 = float32 network, float64 formulation)
    20          uint32          activation code (1 relu, 2 silu, 3 gelu (exact erf), 4 tanh)
    24          uint32          target mode code (0 raw, 1 residual, 2 residual_qop)
    28          uint32          n_inputs (7)
    32          uint32          n_outputs (4)
    36          uint32          n_layers L (number of Linear layers)
    40          uint32          base code (0 line, 1 kick, 2 axial, 3 expansion, 4 path)
    44          uint32          input set code (0 state, 1 physics)
    48          uint32          n_features F (7 for state, 14 for physics)
    52          uint32          K, quadrature nodes (0 unless base is axial, expansion or path)
    56          uint32          T, field table nodes (0 unless the formulation reads the field)
    60          uint32          D, x coefficients of the midplane field (0 unless base path)
    64          float64[7]      leg_power, kappa, min_uz_squared, min_leg_m (m),
                                z_first (mm), spacing (mm), x_scale (mm; 0 unless base path)
    120         uint32          passes (path base; 0 otherwise)
    124         uint32          reserved, 0 (keeps the float64 fields 8-byte aligned)
    128         uint32[L][2]    per layer: rows (out_features), cols (in_features)
    128 + 8L    float64[K]      quadrature nodes on [0, 1], then float64[K] weights
                float64[4][T]   tables By (T), dBy/dz (T/mm), F (T mm), H (T mm^2)
                float64[2D][T]  x tables: the D coefficients (T) of the midplane's x
                                dependence, then their dz derivatives (T/mm)
                float32[2F+8]   input_mean[F], input_std[F], target_mean[4], target_std[4]
                per layer       weight float32[rows * cols] ROW-MAJOR (W[o][i] at o*cols + i),
                                then bias float32[rows]
    end - 4     uint32          CRC-32 (zlib polynomial) of every byte before it

The file length must equal exactly what the header implies, so truncation and trailing bytes
are both detected before the checksum is even looked at. Version 2 files (a 112-byte header:
word 60 reserved, six float64, no x tables, no base ``path``) are read as version 3 with D = 0.
Version 1 files (no formulation block: the shapes follow at byte 40, the normalisation has 7
inputs) are read as the formulation they were trained with: base ``line``, inputs ``state``,
``leg_power`` 0.

:func:`read_model_bin` returns a :class:`BinModel` whose :meth:`BinModel.forward` evaluates the
model with NumPy only (no torch): the formulation in float64, the network in float32, as the
torch model does. It is a second implementation to test the export against, so none of the
arithmetic here is shared with ``raytrack.physics.field_integrals``.
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
from raytrack.models.formulation import MIN_LEG_M, needs_field
from raytrack.models.mlp import N_INPUTS, N_OUTPUTS, TrackMLP
from raytrack.physics.field_integrals import MIN_UZ_SQUARED
from raytrack.physics.units import KAPPA

MAGIC = b"RTRKMLP\0"
FORMAT_VERSION = 3
#: Versions this reader understands: 1 (straight-line base, 7 inputs), 2 (no path base) and 3.
READABLE_VERSIONS = (1, 2, 3)
ENDIAN_MARKER = 0x01020304
DTYPE_FLOAT32 = 1
ACTIVATION_CODES = {"relu": 1, "silu": 2, "gelu": 3, "tanh": 4}
TARGET_CODES = {"raw": 0, "residual": 1, "residual_qop": 2}
BASE_CODES = {"line": 0, "kick": 1, "axial": 2, "expansion": 3, "path": 4}
INPUT_CODES = {"state": 0, "physics": 1}
#: Network input width per input set (the 7 inputs; plus dz, I1, I2 and the base's bending).
FEATURE_COUNTS = {"state": N_INPUTS, "physics": N_INPUTS + 7}
#: Bases that integrate along the leg and so need quadrature nodes.
QUADRATURE_BASES = ("axial", "expansion", "path")
#: Sanity bounds of the path base: passes along the path, K (the C++ core's per-track arrays)
#: and D (x coefficients).
MAX_PASSES = 64
MAX_PATH_NODES = 32
MAX_X_DEGREE = 32
MAX_WIDTH = 1 << 20  # sanity bound on a layer dimension, keeps size arithmetic small
MAX_QUADRATURE = 1024  # sanity bound on K
MAX_TABLE = 1 << 24  # sanity bound on T (16M nodes: 1 mm steps over 16 km)
#: Directory holding raytrack_mlp.hpp, the C++17 single-header reader (``-I`` this directory).
INCLUDE_DIR = Path(__file__).resolve().parent / "include"

_V1_HEADER = struct.Struct("<8s8I")  # magic + version ... n_layers: 40 bytes
_V2_HEADER = struct.Struct("<8s14I6d")  # ... + base ... reserved, 6 float64: 112 bytes
_V3_HEADER = struct.Struct("<8s14I7d2I")  # word 60 is D, + x_scale, passes, reserved: 128
_CRC = struct.Struct("<I")


@dataclass
class BinModel:
    """A model.bin in memory: codes, formulation, normalisation and float32 layers.

    Weight matrices are (out, in) float32; the formulation's arrays are float64:
    ``axis_values`` (4, T) rows By, dBy/dz, F, H at ``axis_z_first + i * axis_spacing``;
    ``quadrature_nodes`` / ``quadrature_weights`` (K,) Gauss-Legendre on [0, 1]; for the path
    base ``x_values`` (2D, T): the D coefficients of the midplane field's x dependence in
    ``x / x_scale`` at the table nodes, then their dz derivatives ((0, T) for none), and
    ``passes`` (0 for every other base, as ``x_scale``).
    ``version`` is the format version the model was read from (writing always gives the current).
    """

    activation: str
    target: str
    input_mean: np.ndarray
    input_std: np.ndarray
    target_mean: np.ndarray
    target_std: np.ndarray
    weights: list[np.ndarray] = field(default_factory=list)
    biases: list[np.ndarray] = field(default_factory=list)
    base: str = "line"
    inputs: str = "state"
    leg_power: float = 0.0
    kappa: float = KAPPA
    min_uz_squared: float = MIN_UZ_SQUARED
    min_leg_m: float = MIN_LEG_M
    axis_z_first: float = 0.0
    axis_spacing: float = 1.0
    axis_values: np.ndarray = field(default_factory=lambda: np.zeros((4, 0)))
    quadrature_nodes: np.ndarray = field(default_factory=lambda: np.zeros(0))
    quadrature_weights: np.ndarray = field(default_factory=lambda: np.zeros(0))
    x_values: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    x_scale: float = 0.0
    passes: int = 0
    version: int = FORMAT_VERSION

    @classmethod
    def from_torch(cls, model: TrackMLP) -> BinModel:
        """Copy the parameters and buffers of a TrackMLP (network float32, formulation float64).

        The tables and quadrature are stored only when the formulation reads them, so a
        straight-line model stays as small as a version-1 file.
        """
        layers = model.linear_layers()
        config, form = model.config, model.formulation

        def f32(t) -> np.ndarray:
            return np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float32)

        def f64(t) -> np.ndarray:
            return np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float64)

        uses_field = needs_field(config.base, config.inputs)
        uses_quadrature = config.base in QUADRATURE_BASES
        z_first, spacing = (float(v) for v in form.axis_grid) if uses_field else (0.0, 1.0)
        axis_values = f64(form.axis_values) if uses_field else np.zeros((4, 0))
        path = config.base == "path"
        x_values = f64(form.x_values) if path else np.zeros((0, axis_values.shape[1]))
        return cls(
            activation=config.activation,
            target=config.target,
            input_mean=f32(model.input_mean),
            input_std=f32(model.input_std),
            target_mean=f32(model.target_mean),
            target_std=f32(model.target_std),
            weights=_first_layer_ignoring(model, [f32(layer.weight) for layer in layers]),
            biases=[f32(layer.bias) for layer in layers],
            base=config.base,
            inputs=config.inputs,
            leg_power=float(config.leg_power),
            axis_z_first=z_first,
            axis_spacing=spacing,
            axis_values=axis_values,
            quadrature_nodes=f64(form.quadrature_nodes) if uses_quadrature else np.zeros(0),
            quadrature_weights=f64(form.quadrature_weights) if uses_quadrature else np.zeros(0),
            x_values=x_values,
            x_scale=float(form.x_scale) if path else 0.0,
            passes=int(form.passes) if path else 0,
        )

    @property
    def n_layers(self) -> int:
        return len(self.weights)

    @property
    def n_features(self) -> int:
        return FEATURE_COUNTS[self.inputs]

    @property
    def x_degree(self) -> int:
        """D, the x coefficients of the midplane field (0: no x dependence, or not path)."""
        return len(self.x_values) // 2

    @property
    def weight_count(self) -> int:
        """Weights and biases of every layer (normalisation not counted)."""
        return sum(w.size + b.size for w, b in zip(self.weights, self.biases, strict=True))

    def forward(self, inputs: np.ndarray) -> np.ndarray:
        """(N, 7) physical inputs -> (N, 4) physical outputs, float32 like the torch model.

        As ``TrackMLP.forward``: features, base and scale in float64 from the float32 inputs;
        the features rounded to float32 and standardised and the network run in float32; the
        de-standardisation and decoding in float64, rounded to float32 at the end.
        """
        inputs = np.asarray(inputs, dtype=np.float32)
        if inputs.ndim != 2 or inputs.shape[1] != N_INPUTS:
            raise ValueError(f"inputs must have shape (N, {N_INPUTS}), got {inputs.shape}")
        features, base, scale = self.prepare(inputs.astype(np.float64))
        h = (features.astype(np.float32) - self.input_mean) / self.input_std
        last = self.n_layers - 1
        for k, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = h @ w.T + b
            if k < last:
                h = activate(h, self.activation)
        encoded = h.astype(np.float64) * self.target_std.astype(np.float64)
        encoded += self.target_mean.astype(np.float64)
        if self.target == "raw":
            return encoded.astype(np.float32)
        return (base + scale * encoded).astype(np.float32)

    def prepare(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Features (N, F), base (N, 4) and target scale (N, 4) of (N, 7) float64 inputs."""
        tables = self._tables()
        base = base_prediction(
            self.base, inputs, tables, self._quadrature(), self.kappa, self.passes
        )
        features = inputs
        if self.inputs == "physics":
            z0, z1 = inputs[:, 5], inputs[:, 6]
            dz = z1 - z0
            i1, i2 = field_integrals(tables.at(z0), tables.at(z1), dz)
            bend = base - straight_line(inputs)
            features = np.concatenate((inputs, np.stack((dz, i1, i2), 1), bend), 1)
        return features, base, self.target_scale(inputs)

    def target_scale(self, inputs: np.ndarray) -> np.ndarray:
        """(N, 4) divisor of the residual over the base (docs/model_bin.md, step 4)."""
        scale = np.ones((len(inputs), N_OUTPUTS))
        if self.target == "raw":
            return scale
        if self.target == "residual_qop":
            scale *= inputs[:, 4:5]
        if self.leg_power:
            leg = np.maximum(np.abs(inputs[:, 6] - inputs[:, 5]) / 1000.0, self.min_leg_m)
            p = self.leg_power
            scale *= leg[:, None] ** np.array([p, p, p - 1, p - 1])
        return scale

    def _tables(self) -> Tables:
        return Tables(
            self.axis_values,
            self.axis_z_first,
            self.axis_spacing,
            self.min_uz_squared,
            self.x_values,
            self.x_scale,
        )

    def _quadrature(self) -> tuple[np.ndarray, np.ndarray]:
        return self.quadrature_nodes, self.quadrature_weights

    def to_bytes(self) -> bytes:
        """The complete file content (current format version), checksum included."""
        self._check_consistent("<in memory>")
        shapes = [w.shape for w in self.weights]
        n_quad, n_table = len(self.quadrature_nodes), self.axis_values.shape[1]
        parts = [
            _V3_HEADER.pack(
                MAGIC,
                FORMAT_VERSION,
                ENDIAN_MARKER,
                DTYPE_FLOAT32,
                ACTIVATION_CODES[self.activation],
                TARGET_CODES[self.target],
                N_INPUTS,
                N_OUTPUTS,
                self.n_layers,
                BASE_CODES[self.base],
                INPUT_CODES[self.inputs],
                self.n_features,
                n_quad,
                n_table,
                self.x_degree,
                self.leg_power,
                self.kappa,
                self.min_uz_squared,
                self.min_leg_m,
                self.axis_z_first,
                self.axis_spacing,
                self.x_scale,
                self.passes,
                0,
            ),
            struct.pack(f"<{2 * self.n_layers}I", *(d for shape in shapes for d in shape)),
            _le_f64(self.quadrature_nodes),
            _le_f64(self.quadrature_weights),
            _le_f64(self.axis_values),  # C order: the four rows one after the other
            _le_f64(self.x_values),  # the 2D rows, likewise
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
        if self.base not in BASE_CODES:
            raise ValueError(f"{name}: unknown base {self.base!r}")
        if self.inputs not in INPUT_CODES:
            raise ValueError(f"{name}: unknown input set {self.inputs!r}")
        if not self.weights or len(self.weights) != len(self.biases):
            raise ValueError(f"{name}: need at least one layer and one bias per weight matrix")
        shapes = [(w.shape[0], w.shape[1]) if w.ndim == 2 else (-1, -1) for w in self.weights]
        _check_shapes(name, shapes, self.n_features)
        for k, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            if b.shape != (w.shape[0],):
                raise ValueError(f"{name}: layer {k} bias shape {b.shape} != ({w.shape[0]},)")
        for what, array, size in (
            ("input_mean", self.input_mean, self.n_features),
            ("input_std", self.input_std, self.n_features),
            ("target_mean", self.target_mean, N_OUTPUTS),
            ("target_std", self.target_std, N_OUTPUTS),
        ):
            if np.shape(array) != (size,):
                raise ValueError(f"{name}: {what} has shape {np.shape(array)}, expected ({size},)")
        if self.axis_values.ndim != 2 or self.axis_values.shape[0] != 4:
            raise ValueError(f"{name}: axis_values must be (4, T), got {self.axis_values.shape}")
        if self.quadrature_nodes.shape != self.quadrature_weights.shape:
            raise ValueError(f"{name}: quadrature nodes and weights differ in length")
        rows = self.x_values.shape[0] if self.x_values.ndim == 2 else -1
        if rows % 2 or (rows and self.x_values.shape[1] != self.axis_values.shape[1]):
            raise ValueError(
                f"{name}: x_values must be (2D, T) with the axis tables' T = "
                f"{self.axis_values.shape[1]}, got {self.x_values.shape}"
            )
        _check_formulation(
            name,
            self.base,
            self.inputs,
            len(self.quadrature_nodes),
            self.axis_values.shape[1],
            (self.leg_power, self.kappa, self.min_uz_squared, self.min_leg_m),
            self.axis_spacing,
        )
        _check_path(
            name, self.base, len(self.quadrature_nodes), self.x_degree, self.x_scale, self.passes
        )


def _first_layer_ignoring(model: TrackMLP, weights: list[np.ndarray]) -> list[np.ndarray]:
    """The weights with the first layer's columns of the features fixed in training set to 0:
    the torch model gives the network 0 for those features, and a zero column gives the same
    sums whatever a reader computes for them, so the format needs no field for it."""
    fixed = model.input_fixed.cpu().numpy()
    if fixed.any():
        weights[0] = weights[0].copy()  # f32 may share the tensor's memory
        weights[0][:, fixed] = 0.0
    return weights


def write_model_bin(model: TrackMLP, path: str | os.PathLike) -> None:
    """Write ``model`` to ``path`` in the model.bin format (see docs/model_bin.md), atomically."""
    BinModel.from_torch(model).write(path)


def read_model_bin(path: str | os.PathLike) -> BinModel:
    """Read and validate a model.bin (version 1, 2 or 3); raise ValueError naming the file."""
    path = Path(path)
    return parse_model_bin(path.read_bytes(), str(path))


def parse_model_bin(data: bytes, name: str = "<bytes>") -> BinModel:
    """Parse model.bin content; ``name`` (the file) is used in error messages."""
    if data[:8] != MAGIC[: len(data)]:  # a short file that starts right is "truncated"
        raise ValueError(f"{name}: bad magic {data[:8]!r}, expected {MAGIC!r} (not a model.bin)")
    if len(data) < _V1_HEADER.size:
        raise ValueError(f"{name}: truncated: {len(data)} bytes, the header alone needs 40")
    _, version, endian, dtype, act, target, n_in, n_out, n_layers = _V1_HEADER.unpack_from(data)
    _check_fixed_header(name, version, endian, dtype, n_in, n_out)
    activation = _decode_code(name, "activation", ACTIVATION_CODES, act)
    target_mode = _decode_code(name, "target mode", TARGET_CODES, target)
    if version == 1:
        return _parse_v1(data, name, activation, target_mode, n_layers)
    layout = _V2_HEADER if version == 2 else _V3_HEADER
    if len(data) < layout.size:
        raise ValueError(
            f"{name}: truncated: {len(data)} bytes, the header alone needs {layout.size}"
        )
    fields = layout.unpack_from(data)
    base_code, inputs_code, n_features, n_quad, n_table, word_60 = fields[9:15]
    leg_power, kappa, min_uz2, min_leg, z_first, spacing = fields[15:21]
    n_x, x_scale, passes = 0, 0.0, 0
    if version == 2:
        if word_60 != 0:
            raise ValueError(f"{name}: reserved header field is {word_60}, expected 0")
        if base_code == BASE_CODES["path"]:
            raise ValueError(f"{name}: unknown base code {base_code} in a version-2 file")
    else:
        n_x, (x_scale, passes, reserved) = word_60, fields[21:]
        if reserved != 0:
            raise ValueError(f"{name}: reserved header field (byte 124) is {reserved}, expected 0")
    base = _decode_code(name, "base", BASE_CODES, base_code)
    inputs = _decode_code(name, "input set", INPUT_CODES, inputs_code)
    if n_features != FEATURE_COUNTS[inputs]:
        raise ValueError(
            f"{name}: n_features {n_features}, input set {inputs!r} has {FEATURE_COUNTS[inputs]}"
        )
    _check_formulation(
        name, base, inputs, n_quad, n_table, (leg_power, kappa, min_uz2, min_leg), spacing
    )
    if not math.isfinite(z_first):
        raise ValueError(f"{name}: z_first {z_first} is not finite")
    _check_path(name, base, n_quad, n_x, x_scale, passes)
    shapes = _read_shapes(data, name, n_layers, layout.size, n_features)
    pos = layout.size + 8 * n_layers
    n_f64 = 2 * n_quad + 4 * n_table + 2 * n_x * n_table
    n_f32 = 2 * n_features + 2 * N_OUTPUTS + sum(r * c + r for r, c in shapes)
    _check_length_and_crc(data, name, pos + 8 * n_f64 + 4 * n_f32)
    f64 = np.frombuffer(data, dtype="<f8", offset=pos, count=n_f64).astype(np.float64)
    f32 = np.frombuffer(data, dtype="<f4", offset=pos + 8 * n_f64, count=n_f32)
    model = _assemble(activation, target_mode, shapes, f32.astype(np.float32), n_features)
    model.base, model.inputs, model.leg_power = base, inputs, leg_power
    model.kappa, model.min_uz_squared, model.min_leg_m = kappa, min_uz2, min_leg
    model.axis_z_first, model.axis_spacing = z_first, spacing
    model.quadrature_nodes, model.quadrature_weights = f64[:n_quad], f64[n_quad : 2 * n_quad]
    tables_end = 2 * n_quad + 4 * n_table
    model.axis_values = f64[2 * n_quad : tables_end].reshape(4, n_table)
    model.x_values = f64[tables_end:].reshape(2 * n_x, n_table)
    model.x_scale, model.passes, model.version = x_scale, passes, version
    return model


def _parse_v1(data: bytes, name: str, activation: str, target: str, n_layers: int) -> BinModel:
    """Version 1: 40-byte header, shapes, 22 normalisation floats, layers. Its decoding was the
    straight line plus the (qop-scaled) residual: base line, inputs state, leg_power 0."""
    shapes = _read_shapes(data, name, n_layers, _V1_HEADER.size, N_INPUTS)
    pos = _V1_HEADER.size + 8 * n_layers
    n_f32 = 2 * N_INPUTS + 2 * N_OUTPUTS + sum(r * c + r for r, c in shapes)
    _check_length_and_crc(data, name, pos + 4 * n_f32)
    floats = np.frombuffer(data, dtype="<f4", offset=pos, count=n_f32).astype(np.float32)
    model = _assemble(activation, target, shapes, floats, N_INPUTS)
    model.version = 1
    return model


def _read_shapes(
    data: bytes, name: str, n_layers: int, offset: int, n_features: int
) -> list[tuple[int, int]]:
    if not 1 <= n_layers <= 1024:
        raise ValueError(f"{name}: implausible layer count {n_layers}")
    if len(data) < offset + 8 * n_layers:
        raise ValueError(f"{name}: truncated inside the layer shapes ({len(data)} bytes)")
    dims = struct.unpack_from(f"<{2 * n_layers}I", data, offset)
    shapes = list(zip(dims[0::2], dims[1::2], strict=True))
    _check_shapes(name, shapes, n_features)
    return shapes


def _check_length_and_crc(data: bytes, name: str, crc_at: int) -> None:
    """Exact length implied by the header (``crc_at`` + 4), then the CRC."""
    if len(data) != crc_at + _CRC.size:
        what = "truncated" if len(data) < crc_at + _CRC.size else "trailing bytes"
        raise ValueError(f"{name}: {what}: {len(data)} bytes, the header implies {crc_at + 4}")
    (stored,) = _CRC.unpack_from(data, crc_at)
    computed = zlib.crc32(data[:crc_at])
    if stored != computed:
        raise ValueError(
            f"{name}: checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
        )


def _check_fixed_header(name, version, endian, dtype, n_in, n_out) -> None:
    if endian != ENDIAN_MARKER:
        swapped = endian == int.from_bytes(ENDIAN_MARKER.to_bytes(4, "little"), "big")
        detail = "file is byte-swapped (written big-endian)" if swapped else "corrupt header"
        raise ValueError(f"{name}: endianness marker {endian:#010x}: {detail}")
    if version not in READABLE_VERSIONS:
        raise ValueError(
            f"{name}: format version {version}, this reader supports versions "
            f"{', '.join(map(str, READABLE_VERSIONS))} (current {FORMAT_VERSION})"
        )
    if dtype != DTYPE_FLOAT32:
        raise ValueError(f"{name}: dtype code {dtype}, only {DTYPE_FLOAT32} (float32) is supported")
    if (n_in, n_out) != (N_INPUTS, N_OUTPUTS):
        raise ValueError(f"{name}: n_inputs/n_outputs {n_in}/{n_out}, expected 7/4")


def _check_formulation(
    name: str,
    base: str,
    inputs: str,
    n_quad: int,
    n_table: int,
    numbers: tuple[float, float, float, float],
    spacing: float,
) -> None:
    """What the formulation needs is present (and nothing implausible): see docs, Validation."""
    if not all(math.isfinite(v) for v in numbers):
        raise ValueError(f"{name}: non-finite leg_power/kappa/min_uz_squared/min_leg_m {numbers}")
    if not 0 < numbers[2] <= 1 or not numbers[3] > 0:
        raise ValueError(f"{name}: min_uz_squared must be in (0, 1] and min_leg_m > 0: {numbers}")
    if n_quad > MAX_QUADRATURE or n_table > MAX_TABLE:
        raise ValueError(f"{name}: implausible quadrature ({n_quad}) or table ({n_table}) size")
    if base in QUADRATURE_BASES and n_quad < 1:
        raise ValueError(f"{name}: base {base!r} needs quadrature nodes, the file has none")
    if needs_field(base, inputs):
        if n_table < 2:
            raise ValueError(
                f"{name}: base {base!r} with inputs {inputs!r} needs the field tables "
                f"(at least 2 nodes), the file has {n_table}"
            )
        if not (math.isfinite(spacing) and spacing > 0):
            raise ValueError(f"{name}: table spacing {spacing} must be finite and positive")


def _check_path(name: str, base: str, n_quad: int, n_x: int, x_scale: float, passes: int) -> None:
    """The path base's fields: passes, at most MAX_PATH_NODES nodes, x tables with a scale;
    every other base has none of them (docs/model_bin.md, Validation)."""
    if base != "path":
        if n_x or passes or x_scale != 0:
            raise ValueError(
                f"{name}: base {base!r} has no x tables, passes or x_scale, the file has "
                f"D {n_x}, passes {passes}, x_scale {x_scale}"
            )
        return
    if not 1 <= passes <= MAX_PASSES:
        raise ValueError(
            f"{name}: base 'path' needs 1 to {MAX_PASSES} passes, the file has {passes}"
        )
    if n_quad > MAX_PATH_NODES:
        raise ValueError(
            f"{name}: base 'path' takes at most {MAX_PATH_NODES} quadrature nodes, the file has "
            f"{n_quad}"
        )
    if n_x > MAX_X_DEGREE:
        raise ValueError(f"{name}: implausible x degree D {n_x} (at most {MAX_X_DEGREE})")
    if not math.isfinite(x_scale) or (n_x and not x_scale > 0):
        raise ValueError(f"{name}: x_scale {x_scale} must be finite (and positive with x tables)")


def _decode_code(name: str, what: str, codes: dict[str, int], value: int) -> str:
    for key, code in codes.items():
        if code == value:
            return key
    raise ValueError(f"{name}: unknown {what} code {value} (known: {codes})")


def _check_shapes(name: str, shapes: list[tuple[int, int]], n_features: int) -> None:
    """Layer k maps cols -> rows; the chain must run F -> ... -> 4 with matching widths."""
    width = n_features
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


def _assemble(activation: str, target: str, shapes, floats: np.ndarray, n_features) -> BinModel:
    n_norm = 2 * n_features + 2 * N_OUTPUTS
    norms = np.split(floats[:n_norm], np.cumsum([n_features, n_features, N_OUTPUTS]))
    model = BinModel(activation, target, *norms)
    pos = n_norm
    for rows, cols in shapes:
        model.weights.append(floats[pos : pos + rows * cols].reshape(rows, cols))  # row-major
        pos += rows * cols
        model.biases.append(floats[pos : pos + rows])
        pos += rows
    return model


def _le_f32(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a, dtype="<f4").tobytes(order="C")


def _le_f64(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a, dtype="<f8").tobytes(order="C")


# --- the formulation, float64 (docs/model_bin.md, "Formulation") ------------------------------


@dataclass(frozen=True)
class AxisPoint:
    """By (T), dBy/dz (T/mm), F (T mm), H (T mm^2) and d2By/dz2 (T/mm^2) at some z, each an
    array; and where z lies (interval index, fraction u in it, inside the tables or not) for the
    x tables' look-up."""

    by: np.ndarray
    dby: np.ndarray
    f: np.ndarray
    h: np.ndarray
    d2by: np.ndarray
    index: np.ndarray
    u: np.ndarray
    inside: np.ndarray


@dataclass(frozen=True)
class Tables:
    """The (4, T) field tables and where their nodes lie, read like the torch model reads them."""

    values: np.ndarray
    z_first: float
    spacing: float
    min_uz_squared: float
    #: (2D, T): the midplane's x coefficients, then their dz derivatives; (0, T) for none.
    x_values: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    x_scale: float = 0.0

    def at(self, z: np.ndarray) -> AxisPoint:
        """Linear By and dBy/dz, cubic Hermite F (slope By) and H (slope F), d2By the slope of
        the dBy interpolant (constant on each interval); beyond the last node (or before the
        first) By = dBy = d2By = 0, F constant and H linear in z."""
        n = self.values.shape[1]
        t = (z - self.z_first) / self.spacing
        # A NaN z gives NaN values (through u), never an invalid index.
        index = np.clip(np.nan_to_num(np.floor(t)), 0, n - 2)
        u = np.clip(t - index, 0.0, 1.0)
        outside = (t - index - u) * self.spacing  # signed mm past the end node, else 0
        index = index.astype(np.int64)
        by, dby, f, h = self.values
        f_z = _hermite(f, by, index, u, self.spacing)
        h_z = _hermite(h, f, index, u, self.spacing) + f_z * outside
        inside = outside == 0
        return AxisPoint(
            by=np.where(inside, _lerp(by, index, u), 0.0),
            dby=np.where(inside, _lerp(dby, index, u), 0.0),
            f=f_z,
            h=h_z,
            d2by=np.where(inside, (dby[index + 1] - dby[index]) / self.spacing, 0.0),
            index=index,
            u=u,
            inside=inside,
        )

    def midplane(self, at: AxisPoint, x: np.ndarray) -> tuple[np.ndarray, ...]:
        """The midplane's x dependence ``d = b(x, z) - b(0, z)`` at the look-up ``at`` and x:
        ``(d, dd/dx, d2d/dx2 + d2d/dz2, dd/dz)`` (docs/model_bin.md, step 2, path). The
        coefficients are linear in z between nodes, their dz derivatives too, the second dz
        derivatives the slopes of those; d is their polynomial in u = clamp(x / x_scale, -1, 1);
        all zero beyond the tables."""
        degree = len(self.x_values) // 2
        i, w = at.index, at.u
        rows = self.x_values
        value = [_lerp(rows[p], i, w) for p in range(degree)]
        slope = [_lerp(rows[degree + p], i, w) for p in range(degree)]
        curve = [
            (rows[degree + p][i + 1] - rows[degree + p][i]) / self.spacing for p in range(degree)
        ]
        u = np.clip(x / self.x_scale, -1.0, 1.0)
        d = _power_series(value, u, 1)
        d_du = _power_series([(p + 1) * c for p, c in enumerate(value)], u, 0)
        d2_du2 = _power_series([(p + 2) * (p + 1) * c for p, c in enumerate(value[1:])], u, 0)
        laplacian = d2_du2 / (self.x_scale * self.x_scale) + _power_series(curve, u, 1)
        inside = at.inside
        zero = 0.0
        return (
            np.where(inside, d, zero),
            np.where(inside, d_du / self.x_scale, zero),
            np.where(inside, laplacian, zero),
            np.where(inside, _power_series(slope, u, 1), zero),
        )


def _power_series(coefficients: list, u: np.ndarray, first: int) -> np.ndarray:
    """sum_p coefficients[p] u^(p + first), by Horner's rule (0 for no coefficients)."""
    total = np.zeros_like(u)
    for c in reversed(coefficients):
        total = total * u + c
    return total * u if first else total


def _lerp(values: np.ndarray, index: np.ndarray, u: np.ndarray) -> np.ndarray:
    return values[index] * (1 - u) + values[index + 1] * u


def _hermite(values, slopes, index, u, spacing) -> np.ndarray:
    v0, v1 = values[index], values[index + 1]
    d0, d1 = slopes[index] * spacing, slopes[index + 1] * spacing
    u2 = u * u
    u3 = u2 * u
    return (
        (2 * u3 - 3 * u2 + 1) * v0
        + (u3 - 2 * u2 + u) * d0
        + (-2 * u3 + 3 * u2) * v1
        + (u3 - u2) * d1
    )


def straight_line(inputs: np.ndarray) -> np.ndarray:
    """(N, 4) straight-line end states of (N, 7) inputs."""
    x, y, tx, ty, _, z0, z1 = inputs.T
    dz = z1 - z0
    return np.stack([x + tx * dz, y + ty * dz, tx, ty], 1)


def field_integrals(start: AxisPoint, end: AxisPoint, dz: np.ndarray) -> tuple[np.ndarray, ...]:
    """I1 = int By dz (T mm) and I2 = int (z1 - z) By dz (T mm^2) over the leg."""
    return end.f - start.f, end.h - start.h - start.f * dz


def base_prediction(
    base: str,
    inputs: np.ndarray,
    tables: Tables,
    quadrature: tuple[np.ndarray, np.ndarray],
    kappa: float,
    passes: int = 0,
) -> np.ndarray:
    """(N, 4) float64 base end states of (N, 7) float64 inputs."""
    if base == "line":
        return straight_line(inputs)
    if base == "kick":
        return _kick(inputs, tables, kappa)
    if base == "expansion":
        return _expansion(inputs, tables, quadrature, kappa)
    if base == "path":
        return _path(inputs, tables, quadrature, kappa, passes)
    return _axial(inputs, tables, quadrature, kappa)


def _kick(inputs: np.ndarray, tables: Tables, kappa: float) -> np.ndarray:
    x, y, tx, ty, qop, z0, z1 = inputs.T
    dz = z1 - z0
    i1, i2 = field_integrals(tables.at(z0), tables.at(z1), dz)
    k = kappa * qop * np.sqrt(1 + tx * tx + ty * ty)
    bend_x, bend_y = -k * (1 + tx * tx), -k * tx * ty
    return np.stack(
        (x + tx * dz + bend_x * i2, y + ty * dz + bend_y * i2, tx + bend_x * i1, ty + bend_y * i1),
        1,
    )


def _axial(inputs, tables: Tables, quadrature, kappa: float) -> np.ndarray:
    """Exact in the on-axis field: ux = tx / N changes by -kappa qop dF, uy is constant."""
    nodes, weights = quadrature
    x, y, tx, ty, qop, z0, z1 = inputs.T
    inv_n = 1 / np.sqrt(1 + tx * tx + ty * ty)
    ux0, uy = tx * inv_n, ty * inv_n
    kq = kappa * qop
    f0 = tables.at(z0).f
    dz = z1 - z0
    f_nodes = tables.at(z0[:, None] + dz[:, None] * nodes).f  # (N, K)
    ux_nodes = ux0[:, None] - kq[:, None] * (f_nodes - f0[:, None])
    tx_nodes, ty_nodes = _slopes(ux_nodes, uy[:, None], tables.min_uz_squared)
    tx1, ty1 = _slopes(ux0 - kq * (tables.at(z1).f - f0), uy, tables.min_uz_squared)
    return np.stack((x + dz * (tx_nodes @ weights), y + dz * (ty_nodes @ weights), tx1, ty1), 1)


def _slopes(ux: np.ndarray, uy: np.ndarray, min_uz_squared: float) -> tuple[np.ndarray, ...]:
    inv_uz = 1 / np.sqrt(np.maximum(1 - ux * ux - uy * uy, min_uz_squared))
    return ux * inv_uz, uy * inv_uz


def _expansion(inputs, tables: Tables, quadrature, kappa: float) -> np.ndarray:
    """The axial transport plus the off-plane field By = f - y^2/2 f'', Bz = y f' evaluated at
    the quadrature nodes of the on-axis trajectory (its slopes, and y with the kick's bending
    in y) and integrated to first order: d slope = int g dz, d position = int (z1 - z) g dz."""
    nodes, weights = quadrature
    x, y, tx, ty, qop, z0, z1 = inputs.T
    norm = np.sqrt(1 + tx * tx + ty * ty)
    ux0, uy = tx / norm, ty / norm
    kq = kappa * qop
    dz = z1 - z0
    start = tables.at(z0)
    z_nodes = z0[:, None] + dz[:, None] * nodes  # (N, K)
    at = tables.at(z_nodes)
    ux = ux0[:, None] - kq[:, None] * (at.f - start.f[:, None])
    uz2 = 1 - ux * ux - (uy * uy)[:, None]
    inv_uz = 1 / np.sqrt(np.maximum(uz2, tables.min_uz_squared))
    tx_k, ty_k = ux * inv_uz, uy[:, None] * inv_uz
    # y along the path: the straight line plus the kick's first-order bending in y.
    lever = at.h - start.h[:, None] - start.f[:, None] * (z_nodes - z0[:, None])
    bend_y = (kq * norm * tx * ty)[:, None]
    y_k = y[:, None] + ty[:, None] * (z_nodes - z0[:, None]) - bend_y * lever
    by_off, bz = -0.5 * y_k * y_k * at.d2by, y_k * at.dby
    k = kq[:, None] * inv_uz  # kappa qop N along the path (N = 1 / uz)
    dtx = k * (ty_k * bz - (1 + tx_k * tx_k) * by_off)
    dty = -k * (tx_k * ty_k * by_off + tx_k * bz)
    tx1, ty1 = _slopes(ux0 - kq * (tables.at(z1).f - start.f), uy, tables.min_uz_squared)
    lever_weights = weights * (1 - nodes)
    return np.stack(
        (
            x + dz * (tx_k @ weights) + dz * dz * (dtx @ lever_weights),
            y + dz * (ty_k @ weights) + dz * dz * (dty @ lever_weights),
            tx1 + dz * (dtx @ weights),
            ty1 + dz * (dty @ weights),
        ),
        1,
    )


def integration_matrix(nodes: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(K, K) S, ``sum_j S[k, j] g(t_j) = int_0^t_k g dt`` for polynomials g of degree below K:
    S[k, j] is the integral over [0, t_k] of the Lagrange basis polynomial L_j of the nodes,
    computed by the nodes' own Gauss-Legendre rule scaled to [0, t_k] (exact: L_j has degree
    K - 1), ``t_k sum_m w_m L_j(t_k t_m)``, with L_j in product form (no ill-conditioned
    Vandermonde matrix). The operations and their order are raytrack_mlp.hpp's
    (``integration_matrix``), so both give the same bits (the trigger header writes these)."""
    t = np.asarray(nodes, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    count = len(t)
    points = t[:, None] * t[None, :]  # (k, m): t_k t_m
    matrix = np.zeros((count, count))
    for j in range(count):
        basis = np.ones((count, count))  # (k, m): L_j(t_k t_m)
        for other in range(count):
            if other != j:
                basis = basis * ((points - t[other]) / (t[j] - t[other]))
        total = np.zeros(count)
        for m in range(count):  # in order, as the C++ loop sums
            total = total + w[m] * basis[:, m]
        matrix[:, j] = t * total
    return matrix


def _path(inputs, tables: Tables, quadrature, kappa: float, passes: int) -> np.ndarray:
    """The on-axis transport corrected for the whole field along the track's own path
    (docs/model_bin.md, step 2, path): in direction cosines, ux on the axis changes by exactly
    -kappa qop dF; ``passes`` times, the rest of the field (Maxwell's expansion to second order
    in y of the on-axis profile and of the midplane's x dependence) is evaluated at the nodes
    of the current path and integrated to every node, for the direction and the next path."""
    nodes, weights = quadrature
    integration = integration_matrix(nodes, weights)  # (K, K)
    x, y, tx, ty, qop, z0, z1 = inputs.T
    norm = np.sqrt(1 + tx * tx + ty * ty)
    ux0, uy0 = tx / norm, ty / norm
    kq = kappa * qop
    dz = z1 - z0
    run = nodes[:, None] * dz  # (K, N): z - z0 at the nodes
    start = tables.at(z0)
    at = tables.at(z0 + run)
    ux_axis = ux0 - kq * (at.f - start.f)
    uy_axis = uy0 + 0.0 * ux_axis
    bend = (kq * norm) * (at.h - start.h - start.f * run)
    x_k = x + tx * run - (1 + tx * tx) * bend
    y_k = y + ty * run - (tx * ty) * bend
    ux, uy = ux_axis, uy_axis
    gx = gy = np.zeros_like(ux)
    for step in range(passes):
        gx, gy = _off_axis_force(tables, at, x_k, y_k, ux, uy, kq)
        ux = ux_axis + dz * (integration @ gx)
        uy = uy_axis + dz * (integration @ gy)
        if step + 1 < passes:
            tx_k, ty_k = _slopes(ux, uy, tables.min_uz_squared)
            x_k = x + dz * (integration @ tx_k)
            y_k = y + dz * (integration @ ty_k)
    tx_k, ty_k = _slopes(ux, uy, tables.min_uz_squared)
    ux1 = ux0 - kq * (tables.at(z1).f - start.f) + dz * (weights @ gx)
    tx1, ty1 = _slopes(ux1, uy0 + dz * (weights @ gy), tables.min_uz_squared)
    return np.stack((x + dz * (weights @ tx_k), y + dz * (weights @ ty_k), tx1, ty1), 1)


def _off_axis_force(tables: Tables, at: AxisPoint, x, y, ux, uy, kq) -> tuple[np.ndarray, ...]:
    """d(ux, uy)/dz from the field beyond the on-axis By at the nodes' (x, y): By = -y^2/2 f'',
    Bz = y f' and, with x tables, dBy = d - y^2/2 (d_xx + d_zz), Bx = y d_x, dBz = y d_z."""
    inv_uz = 1 / np.sqrt(np.maximum(1 - ux * ux - uy * uy, tables.min_uz_squared))
    half_y2 = 0.5 * y * y
    by, bz = -half_y2 * at.d2by, y * at.dby
    if not len(tables.x_values):
        return -kq * (by - uy * bz * inv_uz), -kq * (ux * bz * inv_uz)
    deviation, d_dx, laplacian, d_dz = tables.midplane(at, x)
    by = by + deviation - half_y2 * laplacian
    bz = bz + y * d_dz
    return -kq * (by - uy * bz * inv_uz), kq * (y * d_dx - ux * bz * inv_uz)


# --- the network, float32 like the torch model -------------------------------------------------


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
