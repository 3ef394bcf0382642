"""The ``model.bin`` deployment format: writer and an independent NumPy reader.

The byte-by-byte specification is ``docs/model_bin.md``; this docstring is a summary. Everything
is little-endian, with no padding (version 4; F = n_features, K = quadrature nodes, T = table
nodes, D = x coefficients of the midplane field, L = linear layers)::

    offset      type            field
    0           char[8]         magic b"RTRKMLP\\0"
    8           uint32          format version (4; versions 1 to 3 are still read)
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
are both detected before the checksum is even looked at. Version 3 files have version 4's
layout; their models read d2By/dz2 as the slope of the dBy/dz interpolant (constant between
nodes), version 4's linear between the nodes' central differences. Version 2 files (a
112-byte header: word 60 reserved, six float64, no x tables, no base ``path``) are read as
version 3 with D = 0.
Version 1 files (no formulation block: the shapes follow at byte 40, the normalisation has 7
inputs) are read as the formulation they were trained with: base ``line``, inputs ``state``,
``leg_power`` 0.

:func:`read_model_bin` returns a :class:`BinModel` whose :meth:`BinModel.forward` evaluates the
model with NumPy only (no torch): the formulation in float64, the network in float32, as the
torch model does (:mod:`raytrack.export.reference`). The codes, header layouts and the reader's
checks are :mod:`raytrack.export.bin_layout`'s.
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from raytrack.export.bin_layout import (
    ACTIVATION_CODES,
    BASE_CODES,
    CRC,
    DTYPE_FLOAT32,
    ENDIAN_MARKER,
    FEATURE_COUNTS,
    FORMAT_VERSION,
    INPUT_CODES,
    MAGIC,
    QUADRATURE_BASES,
    STEPPED_CURVATURE_VERSION,
    STEPPED_X_CURVATURE_VERSION,
    TARGET_CODES,
    V1_HEADER,
    V2_HEADER,
    V3_HEADER,
    check_fixed_header,
    check_formulation,
    check_length_and_crc,
    check_path,
    check_shapes,
    decode_code,
    read_shapes,
)
from raytrack.export.reference import (
    Tables,
    base_prediction,
    field_integrals,
    run_network,
    straight_line,
)
from raytrack.files import write_bytes_atomic
from raytrack.models.formulation import MIN_LEG_M, needs_field
from raytrack.models.mlp import N_INPUTS, N_OUTPUTS, TrackMLP
from raytrack.physics.transports import MIN_UZ_SQUARED
from raytrack.physics.units import KAPPA

#: Directory holding raytrack_mlp.hpp, the C++17 single-header reader (``-I`` this directory).
INCLUDE_DIR = Path(__file__).resolve().parent / "include"


@dataclass
class BinModel:
    """A model.bin in memory: codes, formulation, normalisation and float32 layers.

    Weight matrices are (out, in) float32; the formulation's arrays are float64:
    ``axis_values`` (4, T) rows By, dBy/dz, F, H at ``axis_z_first + i * axis_spacing``;
    ``quadrature_nodes`` / ``quadrature_weights`` (K,) Gauss-Legendre on [0, 1]; for the path
    base ``x_values`` (2D, T): the D coefficients of the midplane field's x dependence in
    ``x / x_scale`` at the table nodes, then their dz derivatives ((0, T) for none), and
    ``passes`` (0 for every other base, as ``x_scale``).
    ``version`` is the format version the model was read from; writing gives the current, or,
    for a model with a stepped second dz derivative (constant between table nodes), 4 (the x
    coefficients', ``continuous_x_curvature`` False) or 3 (d2By/dz2's too,
    ``continuous_curvature`` False).
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
    continuous_curvature: bool = True
    continuous_x_curvature: bool = True

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
            continuous_curvature=form.smooth_curvature,
            continuous_x_curvature=form.smooth_x_curvature,
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
        h = run_network(h, self.weights, self.biases, self.activation)
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
            self.continuous_curvature,
            self.continuous_x_curvature,
        )

    @property
    def written_version(self) -> int:
        """The format version :meth:`to_bytes` writes: the last whose curvature rule is this
        model's."""
        if self.continuous_x_curvature:
            return FORMAT_VERSION
        if self.continuous_curvature:
            return STEPPED_X_CURVATURE_VERSION
        return STEPPED_CURVATURE_VERSION

    def _quadrature(self) -> tuple[np.ndarray, np.ndarray]:
        return self.quadrature_nodes, self.quadrature_weights

    def to_bytes(self) -> bytes:
        """The complete file content (current format version), checksum included."""
        self._check_consistent("<in memory>")
        shapes = [w.shape for w in self.weights]
        n_quad, n_table = len(self.quadrature_nodes), self.axis_values.shape[1]
        parts = [
            V3_HEADER.pack(
                MAGIC,
                self.written_version,
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
        return body + CRC.pack(zlib.crc32(body))

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
        check_shapes(name, shapes, self.n_features)
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
        check_formulation(
            name,
            self.base,
            self.inputs,
            len(self.quadrature_nodes),
            self.axis_values.shape[1],
            (self.leg_power, self.kappa, self.min_uz_squared, self.min_leg_m),
            self.axis_spacing,
        )
        check_path(
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
    """Read and validate a model.bin (version 1 to 4); raise ValueError naming the file."""
    path = Path(path)
    return parse_model_bin(path.read_bytes(), str(path))


def parse_model_bin(data: bytes, name: str = "<bytes>") -> BinModel:
    """Parse model.bin content; ``name`` (the file) is used in error messages."""
    if data[:8] != MAGIC[: len(data)]:  # a short file that starts right is "truncated"
        raise ValueError(f"{name}: bad magic {data[:8]!r}, expected {MAGIC!r} (not a model.bin)")
    if len(data) < V1_HEADER.size:
        raise ValueError(f"{name}: truncated: {len(data)} bytes, the header alone needs 40")
    _, version, endian, dtype, act, target, n_in, n_out, n_layers = V1_HEADER.unpack_from(data)
    check_fixed_header(name, version, endian, dtype, n_in, n_out)
    activation = decode_code(name, "activation", ACTIVATION_CODES, act)
    target_mode = decode_code(name, "target mode", TARGET_CODES, target)
    if version == 1:
        return _parse_v1(data, name, activation, target_mode, n_layers)
    layout = V2_HEADER if version == 2 else V3_HEADER
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
    base = decode_code(name, "base", BASE_CODES, base_code)
    inputs = decode_code(name, "input set", INPUT_CODES, inputs_code)
    if n_features != FEATURE_COUNTS[inputs]:
        raise ValueError(
            f"{name}: n_features {n_features}, input set {inputs!r} has {FEATURE_COUNTS[inputs]}"
        )
    check_formulation(
        name, base, inputs, n_quad, n_table, (leg_power, kappa, min_uz2, min_leg), spacing
    )
    if not math.isfinite(z_first):
        raise ValueError(f"{name}: z_first {z_first} is not finite")
    check_path(name, base, n_quad, n_x, x_scale, passes)
    shapes = read_shapes(data, name, n_layers, layout.size, n_features)
    pos = layout.size + 8 * n_layers
    n_f64 = 2 * n_quad + 4 * n_table + 2 * n_x * n_table
    n_f32 = 2 * n_features + 2 * N_OUTPUTS + sum(r * c + r for r, c in shapes)
    check_length_and_crc(data, name, pos + 8 * n_f64 + 4 * n_f32)
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
    model.continuous_curvature = version > STEPPED_CURVATURE_VERSION
    model.continuous_x_curvature = version > STEPPED_X_CURVATURE_VERSION
    return model


def _parse_v1(data: bytes, name: str, activation: str, target: str, n_layers: int) -> BinModel:
    """Version 1: 40-byte header, shapes, 22 normalisation floats, layers. Its decoding was the
    straight line plus the (qop-scaled) residual: base line, inputs state, leg_power 0."""
    shapes = read_shapes(data, name, n_layers, V1_HEADER.size, N_INPUTS)
    pos = V1_HEADER.size + 8 * n_layers
    n_f32 = 2 * N_INPUTS + 2 * N_OUTPUTS + sum(r * c + r for r, c in shapes)
    check_length_and_crc(data, name, pos + 4 * n_f32)
    floats = np.frombuffer(data, dtype="<f4", offset=pos, count=n_f32).astype(np.float32)
    model = _assemble(activation, target, shapes, floats, N_INPUTS)
    model.version = 1
    return model


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
