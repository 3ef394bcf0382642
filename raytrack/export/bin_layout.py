"""model.bin's codes, header layouts, sanity bounds and the checks a reader makes
(docs/model_bin.md, "Layout" and "Validation"); every error names the file."""

from __future__ import annotations

import math
import struct
import zlib

from raytrack.models.formulation import needs_field
from raytrack.models.mlp import N_INPUTS, N_OUTPUTS

MAGIC = b"RTRKMLP\0"
FORMAT_VERSION = 5
#: Versions this reader understands: 1 (straight-line base, 7 inputs), 2 (no path base), 3, 4
#: and 5 (version 3's layout; 4: d2By/dz2 continuous between the table nodes; 5: the x
#: coefficients' second dz derivatives too, docs/model_bin.md).
READABLE_VERSIONS = (1, 2, 3, 4, 5)
#: The last version whose d2By/dz2 is constant on each table interval (its models' rule).
STEPPED_CURVATURE_VERSION = 3
#: The last version whose x coefficients' second dz derivatives are constant on each interval.
STEPPED_X_CURVATURE_VERSION = 4
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

V1_HEADER = struct.Struct("<8s8I")  # magic + version ... n_layers: 40 bytes
V2_HEADER = struct.Struct("<8s14I6d")  # ... + base ... reserved, 6 float64: 112 bytes
V3_HEADER = struct.Struct("<8s14I7d2I")  # word 60 is D, + x_scale, passes, reserved: 128 (v3, v4)
CRC = struct.Struct("<I")


def read_shapes(
    data: bytes, name: str, n_layers: int, offset: int, n_features: int
) -> list[tuple[int, int]]:
    if not 1 <= n_layers <= 1024:
        raise ValueError(f"{name}: implausible layer count {n_layers}")
    if len(data) < offset + 8 * n_layers:
        raise ValueError(f"{name}: truncated inside the layer shapes ({len(data)} bytes)")
    dims = struct.unpack_from(f"<{2 * n_layers}I", data, offset)
    shapes = list(zip(dims[0::2], dims[1::2], strict=True))
    check_shapes(name, shapes, n_features)
    return shapes


def check_length_and_crc(data: bytes, name: str, crc_at: int) -> None:
    """Exact length implied by the header (``crc_at`` + 4), then the CRC."""
    if len(data) != crc_at + CRC.size:
        what = "truncated" if len(data) < crc_at + CRC.size else "trailing bytes"
        raise ValueError(f"{name}: {what}: {len(data)} bytes, the header implies {crc_at + 4}")
    (stored,) = CRC.unpack_from(data, crc_at)
    computed = zlib.crc32(data[:crc_at])
    if stored != computed:
        raise ValueError(
            f"{name}: checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
        )


def check_fixed_header(name, version, endian, dtype, n_in, n_out) -> None:
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


def check_formulation(
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


def check_path(name: str, base: str, n_quad: int, n_x: int, x_scale: float, passes: int) -> None:
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


def decode_code(name: str, what: str, codes: dict[str, int], value: int) -> str:
    for key, code in codes.items():
        if code == value:
            return key
    raise ValueError(f"{name}: unknown {what} code {value} (known: {codes})")


def check_shapes(name: str, shapes: list[tuple[int, int]], n_features: int) -> None:
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
