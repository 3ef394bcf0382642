"""The GPU-trigger export: one self-contained C++17/CUDA header per model (docs/trigger_header.md).

``python -m raytrack.export RUN_DIR --header OUT.h`` writes a header that holds the model's
numbers as constant arrays (``__constant__`` under nvcc, ``constexpr`` otherwise) and two
functions, ``__host__ __device__`` under nvcc::

    void predict(const float in[7], float out[4]);
    void predict_with_jacobian(const float in[7], float out[4], float jac[20]);

plus, for a path model whose field has x dependence (its x tables), the same two functions with
a last argument ``const Real* field_tables``: those tables (2D x T numbers, 48 KB for D = 8 and
T = 751 in float32) would not fit CUDA's 64 KB of constant memory beside the rest, so the header
keeps them as a host array (``data::kFieldTables``, ``kFieldTableBytes``) that a CUDA program
copies once to device global memory and passes to every call; host code may call the
two-argument forms, which read the host array.

No allocation, no file I/O, no standard library beyond ``<math.h>``. The per-track code is a
verbatim copy of the ``raytrack core`` block of ``raytrack_mlp.hpp`` (model.bin's C++ reader),
so both run the same arithmetic; the header only fixes the numbers and the precision of the
formulation (``float32`` by default, the type a GPU trigger computes in; ``float64`` on request).
A float32 formulation computes its values in two floats (hi + lo) and keeps, beside its tables,
quadrature and kappa, what rounding them to float left out, so that it reproduces the float64
model (docs/trigger_header.md, "Precision"). The whole constant data (everything but the x
tables) must fit the 64 KB of CUDA constant memory, or the export is refused.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import raytrack
from raytrack.export.model_bin import (
    ACTIVATION_CODES,
    BASE_CODES,
    INCLUDE_DIR,
    INPUT_CODES,
    TARGET_CODES,
    BinModel,
    integration_matrix,
    read_model_bin,
)
from raytrack.files import replacing

#: CUDA constant memory: the most a header's arrays may hold, bytes.
CONSTANT_MEMORY_BYTES = 65536
#: The formulation's arithmetic and table storage in the header (the network is float32 always).
PRECISIONS = {"float32": ("float", 4), "float64": ("double", 8)}
DEFAULT_NAMESPACE = "raytrack_model"
CORE_BEGIN = "// >>> raytrack core: begin"
CORE_END = "// <<< raytrack core: end"
_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
_NAMESPACE = re.compile(rf"{_IDENTIFIER}(::{_IDENTIFIER})*")
# Keywords and the names a namespace must not take (the C++ keywords a user might try, and
# the reserved forms: double underscores, underscore + capital).
_KEYWORD_TEXT = (
    "alignas alignof and asm auto bool break case catch char class const constexpr continue "
    "decltype default delete do double else enum explicit export extern false float for "
    "friend goto if inline int long mutable namespace new noexcept not nullptr operator or "
    "private protected public register return short signed sizeof static struct switch "
    "template this throw true try typedef typeid typename union unsigned using virtual void "
    "volatile while std"
)
_KEYWORDS = frozenset(_KEYWORD_TEXT.split())
_PER_LINE = 8


class ConstantMemoryError(ValueError):
    """The model's constant data does not fit the 64 KB of CUDA constant memory."""


@dataclass(frozen=True)
class ConstantData:
    """What a header's arrays hold, bytes: the network with its normalisation (float32), the
    field tables and the quadrature (with the path base's integration matrix), in the
    formulation's precision: the constant data; and the path base's x tables (``field_tables``,
    global memory on a GPU: not part of ``total``)."""

    network: int
    tables: int
    quadrature: int
    weight_count: int
    table_rows: int
    table_nodes: int
    precision: str
    field_tables: int = 0

    @property
    def total(self) -> int:
        """The constant data, bytes (what must fit 64 KB)."""
        return self.network + self.tables + self.quadrature

    def describe(self) -> str:
        parts = [f"network and normalisation {self.network} bytes ({self.weight_count} weights)"]
        ctype = PRECISIONS[self.precision][0]
        if self.tables:
            parts.append(
                f"field tables {self.tables} bytes ({self.table_rows} x {self.table_nodes} {ctype})"
            )
        if self.quadrature:
            parts.append(f"quadrature {self.quadrature} bytes")
        return ", ".join(parts)

    def describe_global(self) -> str:
        """The x tables, for the header's comment and the CLI ("" when there are none)."""
        if not self.field_tables:
            return ""
        ctype = PRECISIONS[self.precision][0]
        count = self.field_tables // PRECISIONS[self.precision][1]
        return (
            f"x tables {self.field_tables} bytes ({count // self.table_nodes} x "
            f"{self.table_nodes} {ctype}), in global memory on a GPU"
        )


#: The table rows by name, in the order of core::Axis's pointers: model.bin's four, then what
#: rounding By, F and H to float leaves out.
TABLE_ROWS = {
    "by": "By (T)",
    "dby": "dBy/dz (T/mm)",
    "f": "F (T mm)",
    "h": "H (T mm^2)",
    "by_lo": "By - float(By)",
    "f_lo": "F - float(F)",
    "h_lo": "H - float(H)",
    "dby_lo": "dBy/dz - float(dBy/dz)",
}


def _table_rows(model: BinModel, precision: str = "float32") -> list[str]:
    """Rows of the tables the header keeps: By, F, H always (F's and H's Hermite slopes are By
    and F) and dBy/dz for the expansion and path bases (its readers). In float32 also what
    rounding F and H to float leaves out (F reaches 4500 T mm and H 4e7 T mm^2, where a float's
    spacing is 5e-4 and 4, and a leg's integrals are differences of them), and for those two
    bases By's instead of the dBy/dz row where dBy/dz is By's central differences (the header
    takes it from By as the tables were made), else the dBy/dz row with its rounding error (a
    map's, smoothed over its grid): d2By, a difference of neighbouring dBy/dz, would otherwise
    lose ten bits of a float dBy/dz."""
    if model.axis_values.shape[1] == 0:
        return []
    expansion = model.base in ("expansion", "path")  # the bases that read dBy/dz
    if precision == "float64":
        return ["by", "dby", "f", "h"] if expansion else ["by", "f", "h"]
    if expansion and not _is_central_differences(model):
        return ["by", "dby", "f", "h", "f_lo", "h_lo", "dby_lo"]
    return ["by", "f", "h", *(["by_lo"] if expansion else []), "f_lo", "h_lo"]


def _is_central_differences(model: BinModel) -> bool:
    """Whether the dBy/dz table is np.gradient of the By table (an analytic field's; a map's is
    of By smoothed over its grid)."""
    by, dby = model.axis_values[0], model.axis_values[1]
    expected = np.gradient(by, model.axis_spacing)
    return bool(np.abs(dby - expected).max() <= 1e-12 * max(np.abs(expected).max(), 1e-300))


def _split(values, precision: str) -> tuple[np.ndarray, np.ndarray]:
    """float64 numbers as (hi, lo): hi rounded to the precision, lo = what that left out (in
    float32, rounded to float again: hi + lo holds 48 bits); lo is 0 in float64."""
    values = np.asarray(values, dtype=np.float64)
    if precision == "float64":
        return values, np.zeros_like(values)
    hi = values.astype(np.float32).astype(np.float64)
    return hi, (values - hi).astype(np.float32).astype(np.float64)


def _table_values(model: BinModel, rows: list[str], precision: str) -> np.ndarray:
    """The kept rows, one after the other (float64 numbers exact in the precision)."""
    named = {}
    for name, row in zip(("by", "dby", "f", "h"), model.axis_values, strict=True):
        named[name], named[name + "_lo"] = _split(row, precision)
    return np.concatenate([named[r] for r in rows])


def _quadrature_values(model: BinModel, precision: str) -> np.ndarray:
    """Nodes and weights, then in float32 their rounding errors (nodes, then weights); for the
    path base then its (K, K) integration matrix, row-major (rounded to the precision: the
    path's field and its integrals are computed in plain Real)."""
    nodes, nodes_lo = _split(model.quadrature_nodes, precision)
    weights, weights_lo = _split(model.quadrature_weights, precision)
    parts = [nodes, weights] if precision == "float64" else [nodes, weights, nodes_lo, weights_lo]
    if model.base == "path":
        matrix = integration_matrix(model.quadrature_nodes, model.quadrature_weights)
        parts.append(_split(matrix.ravel(), precision)[0])
    return np.concatenate(parts).astype(np.float64)


def _field_table_values(model: BinModel, precision: str) -> np.ndarray:
    """The path base's x tables (2D rows of T), rounded to the precision; in float32 then what
    rounding the D derivative rows left out (the second dz derivative is a difference of
    neighbouring ones, multiplied by y^2 / 2: without it the window-frame map's header was off
    by 12 um). Empty for none."""
    if model.base != "path" or not model.x_degree:
        return np.zeros(0)
    hi, lo = _split(model.x_values, precision)
    if precision == "float64":
        return hi.ravel()
    return np.concatenate([hi.ravel(), lo[model.x_degree :].ravel()])


def constant_data(model: BinModel, precision: str = "float32") -> ConstantData:
    """The constant data a header of ``model`` would hold, in bytes."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    size = PRECISIONS[precision][1]
    n_floats = len(_network_values(model))
    rows = _table_rows(model, precision)
    n_table = model.axis_values.shape[1]
    return ConstantData(
        network=4 * n_floats,
        tables=size * len(rows) * n_table,
        quadrature=size * len(_quadrature_values(model, precision)),
        weight_count=model.weight_count,
        table_rows=len(rows),
        table_nodes=n_table,
        precision=precision,
        field_tables=size * len(_field_table_values(model, precision)),
    )


def check_fits(model: BinModel, precision: str = "float32", name: str = "model") -> ConstantData:
    """The constant data of ``model``'s header; raises :class:`ConstantMemoryError` (naming both
    sizes) when it exceeds CUDA's 64 KB of constant memory."""
    data = constant_data(model, precision)
    if data.total > CONSTANT_MEMORY_BYTES:
        hint = " (--precision float32 halves the tables)" if precision == "float64" else ""
        raise ConstantMemoryError(
            f"{name}: its constant data is {data.total} bytes, more than the "
            f"{CONSTANT_MEMORY_BYTES} bytes (64 KB) of CUDA constant memory: {data.describe()}; "
            f"export a smaller model{hint}{_what_fits(model, precision)}"
        )
    return data


def weights_that_fit(model: BinModel, precision: str = "float32") -> int:
    """The most weights and biases a model of ``model``'s formulation (its inputs, field tables
    and quadrature) may have for its header to fit 64 KB (docs/trigger_header.md's table)."""
    data = constant_data(model, precision)
    normalisation = len(_network_values(model)) - model.weight_count  # float32 each
    return (CONSTANT_MEMORY_BYTES - data.tables - data.quadrature) // 4 - normalisation


def _what_fits(model: BinModel, precision: str) -> str:
    """How to get a model that fits, in the commands' own options: the trigger preset (when it
    is small enough) and tune's --max-weights, with the bound of this formulation."""
    most = weights_that_fit(model, precision)
    if most <= 0:
        return ""
    # Imported here: the presets need torch, the header alone does not.
    from raytrack.models.presets import load_presets

    trigger = load_presets().get("trigger")
    preset = ""
    if trigger is not None and trigger.weight_count <= most:
        preset = (
            f"train with `python -m raytrack.train --preset trigger` "
            f"({trigger.weight_count} weights) or "
        )
    return (
        f": with this formulation at most {most} weights and biases fit; {preset}search with "
        f"`python -m raytrack.tune --max-weights {most}`"
    )


def core_source() -> str:
    """The device-ready per-track code of raytrack_mlp.hpp (its ``raytrack core`` block)."""
    text = (INCLUDE_DIR / "raytrack_mlp.hpp").read_text()
    if text.count(CORE_BEGIN) != 1 or text.count(CORE_END) != 1:
        raise RuntimeError("raytrack_mlp.hpp: the 'raytrack core' markers are missing or repeated")
    start = text.index(CORE_BEGIN)
    return text[start : text.index(CORE_END) + len(CORE_END)] + "\n"


def check_namespace(namespace: str) -> str:
    """A C++ namespace name (``a`` or ``a::b``); raises ValueError otherwise."""
    parts = namespace.split("::")
    bad = [p for p in parts if p in _KEYWORDS or "__" in p or re.match(r"_[A-Z]", p)]
    if not _NAMESPACE.fullmatch(namespace) or bad:
        raise ValueError(
            f"namespace {namespace!r} is not a usable C++ namespace name (letters, digits and "
            "underscores, not starting with a digit, '::' between nested names, no keyword, no "
            "'__' and no leading underscore + capital)"
        )
    if parts[0] == "raytrack":
        raise ValueError(
            f"namespace {namespace!r}: raytrack and its nested names are raytrack_mlp.hpp's "
            "(its raytrack::core would clash with the header's); choose another"
        )
    return namespace


# --- the header text ---------------------------------------------------------------------------


def _network_values(model: BinModel) -> np.ndarray:
    """One float32 array: input_mean, input_std, target_mean, target_std, then per layer its
    row-major weight and its bias (model.bin's order)."""
    parts = [model.input_mean, model.input_std, model.target_mean, model.target_std]
    for w, b in zip(model.weights, model.biases, strict=True):
        parts += [np.ravel(w), b]
    return np.concatenate([np.asarray(p, dtype=np.float32).ravel() for p in parts])


def _literal(value, precision: str) -> str:
    """An exact C++ literal: the shortest decimal that reads back to the same float/double."""
    if not np.isfinite(value):
        raise ValueError(f"non-finite number {value} in the model: cannot export it")
    if precision == "float32":
        text = np.format_float_scientific(np.float32(value), unique=True, trim="-")
        return text + "f"
    return repr(float(np.float64(value)))


def _array_macro(name: str, values: np.ndarray, precision: str) -> str:
    literals = [_literal(v, precision) for v in values]
    lines = [
        "    " + ", ".join(literals[i : i + _PER_LINE]) for i in range(0, len(literals), _PER_LINE)
    ]
    return f"#define {name} \\\n" + ", \\\n".join(lines) + "\n"


def header_source(
    model: BinModel,
    namespace: str = DEFAULT_NAMESPACE,
    precision: str = "float32",
    origin: str = "a raytrack model",
) -> str:
    """The text of the trigger header of ``model`` (raises ConstantMemoryError past 64 KB)."""
    check_namespace(namespace)
    data = check_fits(model, precision, origin)
    real, _ = PRECISIONS[precision]
    tag = re.sub(r"[^A-Z0-9]", "_", namespace.upper())
    guard = f"RAYTRACK_MODEL_{tag}_H"
    macro = f"RAYTRACK_MODEL_{tag}_"
    net = _network_values(model)
    nf = model.n_features
    shapes = [w.shape for w in model.weights]
    widths = [nf, *(rows for rows, _ in shapes)]
    n_table = model.axis_values.shape[1]
    rows = _table_rows(model, precision)
    n_quad = len(model.quadrature_nodes)
    field_tables = _field_table_values(model, precision)
    has_field_tables = len(field_tables) > 0
    global_comment = _global_comment(data, namespace)
    tables_doc = (
        "the x tables (above): device global memory in a kernel"
        if has_field_tables
        else "ignored (this model has no x tables; nullptr will do)"
    )
    crc = zlib.crc32(model.to_bytes())
    origin_line = origin.replace("\n", " ")

    def lit(value) -> str:
        return _literal(value, precision)

    out: list[str] = []
    add = out.append
    add(
        f"""// Generated by `python -m raytrack.export` (raytrack {raytrack.__version__}) from
// {origin_line}
// (its model.bin would have CRC-32 {crc:#010x}). Do not edit: export again.
//
// A raytrack track extrapolator for host code and CUDA kernels (docs/trigger_header.md):
//   base {model.base}, inputs {model.inputs} ({nf} features), target {model.target}, \
leg_power {model.leg_power:g},
//   activation {model.activation}, layers {" -> ".join(map(str, [*widths]))}, \
{model.weight_count} weights and biases.
// Constant data: {data.total} of {CONSTANT_MEMORY_BYTES} bytes:
//   {data.describe()}.
{global_comment}// Arithmetic: the formulation (physics base, features, target scale,
// decoding) and its tables in {real}, the network in float.
//
// API, in namespace {namespace}; __host__ __device__ under nvcc, plain functions otherwise:
//   void predict(const float in[7], float out[4]);
//   void predict_with_jacobian(const float in[7], float out[4], float jac[20]);
//   void predict(const float in[7], float out[4], const Real* field_tables);
//   void predict_with_jacobian(const float in[7], float out[4], float jac[20],
//                              const Real* field_tables);
// in:  x [mm], y [mm], tx, ty, q/p [1/MeV], z_start [mm], z_end [mm]
// out: x, y [mm], tx, ty at z_end;  jac[5 * a + b] = d out[a] / d in[b], b < 5 (row-major 4 x 5).
// field_tables: {tables_doc}.
// No allocation, no file I/O, no standard library beyond <math.h>. Compile as C++17; not with
// -ffast-math / --use_fast_math (the table look-up tests for NaN, the formulation needs IEEE).

#ifndef {guard}
#define {guard}

#include <math.h>

namespace {namespace} {{

"""
    )
    path_nodes = n_quad if model.base == "path" else 1
    add(
        f"// The path base's per-track arrays in the core below: this model's {path_nodes} "
        "node(s).\n"
        f"constexpr int kCorePathNodes = {path_nodes};\n\n"
    )
    add(core_source())
    add(
        f"""
// The formulation's arithmetic and table storage.
using Real = {real};

constexpr int kInputs = 7, kOutputs = 4, kJacobianSize = 20;
constexpr int kLayers = {len(shapes)}, kMaxWidth = {max(widths)}, kFeatures = {nf};
constexpr int kWeightCount = {model.weight_count};
constexpr int kConstantBytes = {data.total};
// The x tables (data::kFieldTables): Real numbers and bytes, 0 when the model has none.
constexpr int kFieldTableSize = {len(field_tables)};
constexpr int kFieldTableBytes = {data.field_tables};

namespace data {{

"""
    )
    arrays = [("NET", "float", "kNet", net, "float32")]
    if rows:
        arrays.append(
            ("TABLES", "Real", "kTables", _table_values(model, rows, precision), precision)
        )
    if n_quad:
        quad = _quadrature_values(model, precision)
        arrays.append(("QUADRATURE", "Real", "kQuadrature", quad, precision))
    quad_lo = ", then their rounding errors (nodes, weights)" if precision == "float32" else ""
    comments = {
        "kNet": f"input_mean[{nf}], input_std[{nf}], target_mean[4], target_std[4], then per "
        "layer its weight (row-major, out x in) and bias",
        "kTables": "on-axis field tables at z_first + i * spacing, one row after the other: "
        + ", ".join(TABLE_ROWS[r] for r in rows),
        "kQuadrature": f"Gauss-Legendre nodes on [0, 1] ({n_quad}), then their weights{quad_lo}"
        + (", then the path's integration matrix (row-major)" if model.base == "path" else ""),
    }
    for suffix, ctype, name, values, prec in arrays:
        add(f"// {comments[name]}\n")
        add(_array_macro(macro + suffix, values, prec))
        add(f"inline constexpr {ctype} {name}[{len(values)}] = {{{macro + suffix}}};\n")
        add("#if defined(__CUDACC__)\n")
        add(f"static __constant__ {ctype} {name}Device[{len(values)}] = {{{macro + suffix}}};\n")
        add("#endif\n")
        add(f"#undef {macro + suffix}\n\n")
        add(
            f"RAYTRACK_HD inline const {ctype}* {name[1].lower() + name[2:]}() {{\n"
            "#if defined(__CUDA_ARCH__)\n"
            f"  return {name}Device;\n"
            "#else\n"
            f"  return {name};\n"
            "#endif\n"
            "}\n\n"
        )

    if has_field_tables:
        degree = model.x_degree
        errors = (
            f", then what rounding\n// the derivatives to float left out ({degree} rows)"
            if precision == "float32"
            else ""
        )
        add(
            f"// The path base's x tables, rows of {n_table} nodes: the {degree} coefficients "
            f"of (x / x_scale)^1..{degree}\n"
            f"// (T), then their dz derivatives (T/mm){errors}. A host array only: a CUDA "
            "program copies\n// it to global memory and passes that pointer (see the top of "
            "the header).\n"
        )
        add(_array_macro(macro + "FIELD", field_tables, precision))
        add(f"inline constexpr Real kFieldTables[{len(field_tables)}] = {{{macro}FIELD}};\n")
        add(f"#undef {macro}FIELD\n\n")

    # Pointers into the arrays for every layer.
    offset = 2 * nf + 8  # after the normalisation
    layer_inits = []
    for rows_k, cols_k in shapes:
        weight_at = offset
        bias_at = offset + rows_k * cols_k
        offset = bias_at + rows_k
        layer_inits.append(f"{{{rows_k}, {cols_k}, p + {weight_at}, p + {bias_at}}}")
    assert offset == len(net)
    if has_field_tables:
        x_lo = "nullptr"
        if precision == "float32":
            x_lo = f"field_tables + {2 * model.x_degree * n_table}"
        x_fields = f"{model.x_degree}, {lit(model.x_scale)}, field_tables, {x_lo}"
    else:
        x_fields = "0, Real(0), nullptr, nullptr"
    if rows:
        row_ptr = {r: f"tables() + {k * n_table}" for k, r in enumerate(rows)}
        pointers = ", ".join(row_ptr.get(r, "nullptr") for r in TABLE_ROWS)
        axis = (
            f"core::Axis<Real>{{{lit(model.axis_z_first)}, {lit(model.axis_spacing)}, {n_table}, "
            f"{pointers},\n                            {x_fields}}}"
        )
    else:
        axis = (
            "core::Axis<Real>{Real(0), Real(1), 0, "
            + ", ".join(["nullptr"] * len(TABLE_ROWS))
            + f", {x_fields}}}"
        )
    unused = "" if has_field_tables else "  static_cast<void>(field_tables);  // no x tables\n"
    quad_size = 2 * n_quad if precision == "float64" else 4 * n_quad
    integration = f"quadrature() + {quad_size}" if model.base == "path" else "nullptr"
    quad_ptr = [f"quadrature() + {k * n_quad}" if n_quad else "nullptr" for k in range(4)]
    if precision == "float64":
        quad_ptr[2:] = ["nullptr", "nullptr"]
    kappa, kappa_lo = (float(v[0]) for v in _split([model.kappa], precision))
    if has_field_tables:
        field_what = "the x tables (kFieldTables, or its copy in device global memory)"
        two_arg_note = ", reading the host array kFieldTables: host code only"
        two_arg_hd, host_tables = "", "data::kFieldTables"
    else:
        field_what = "ignored (this model has no x tables)"
        two_arg_note = " (this model has no x tables)"
        two_arg_hd, host_tables = "RAYTRACK_HD ", "nullptr"
    add(
        f"""// Everything a prediction reads, with the kLayers layers given (pointers into net())
// and the x tables (kFieldTables or a device copy of it).
RAYTRACK_HD inline core::Model<Real> model(const core::Layer* layers, const Real* field_tables) {{
{unused}  const float* p = net();
  core::Model<Real> m{{}};
  m.activation = {ACTIVATION_CODES[model.activation]}u;  // {model.activation}
  m.target = {TARGET_CODES[model.target]}u;  // {model.target}
  m.base = {BASE_CODES[model.base]}u;  // {model.base}
  m.inputs = {INPUT_CODES[model.inputs]}u;  // {model.inputs}
  m.leg_power = {lit(model.leg_power)};
  m.kappa = {lit(kappa)};  // MeV / (T mm)
  m.kappa_lo = {lit(kappa_lo)};  // what rounding kappa to Real left out
  m.min_uz_squared = {lit(model.min_uz_squared)};
  m.min_leg_m = {lit(model.min_leg_m)};
  m.axis = {axis};
  m.n_quad = {n_quad};
  m.nodes = {quad_ptr[0]};
  m.weights = {quad_ptr[1]};
  m.nodes_lo = {quad_ptr[2]};
  m.weights_lo = {quad_ptr[3]};
  m.passes = {model.passes};
  m.integration = {integration};
  m.input_mean = p;
  m.input_std = p + {nf};
  m.target_mean = p + {2 * nf};
  m.target_std = p + {2 * nf + 4};
  m.n_layers = kLayers;
  m.layers = layers;
  return m;
}}

}}  // namespace data

// in[7] = x [mm], y [mm], tx, ty, q/p [1/MeV], z_start [mm], z_end [mm];
// out[4] = x [mm], y [mm], tx, ty at z_end; field_tables: {field_what}.
RAYTRACK_HD inline void predict(const float in[7], float out[4], const Real* field_tables) {{
  const float* p = data::net();
  const core::Layer layers[kLayers] = {{{", ".join(layer_inits)}}};
  float a[kMaxWidth], b[kMaxWidth];
  core::predict(data::model(layers, field_tables), in, out, a, b);
}}

// predict, plus jac[5 * a + b] = d out[a] / d in[b] for b < 5 (x, y, tx, ty, q/p): the exact
// derivative of the same arithmetic (forward-mode, not finite differences).
RAYTRACK_HD inline void predict_with_jacobian(const float in[7], float out[4], float jac[20],
                                              const Real* field_tables) {{
  const float* p = data::net();
  const core::Layer layers[kLayers] = {{{", ".join(layer_inits)}}};
  core::Dual<float> a[kMaxWidth], b[kMaxWidth];
  core::predict_with_jacobian(data::model(layers, field_tables), in, out, jac, a, b);
}}

// The same{two_arg_note}.
{two_arg_hd}inline void predict(const float in[7], float out[4]) {{
  predict(in, out, {host_tables});
}}
{two_arg_hd}inline void predict_with_jacobian(const float in[7], float out[4], float jac[20]) {{
  predict_with_jacobian(in, out, jac, {host_tables});
}}

}}  // namespace {namespace}

#endif  // {guard}
"""
    )
    return "".join(out)


def _global_comment(data: ConstantData, namespace: str) -> str:
    """The header comment's paragraph on the x tables ("" without them)."""
    if not data.field_tables:
        return ""
    return f"""// Global data: {data.describe_global()}: data::kFieldTables, kFieldTableBytes
// bytes. With the rest they would outgrow the 64 KB of constant memory, so they are a host
// array: a CUDA program copies them once to device global memory and passes the pointer:
//   Real* tables = nullptr;  // Real: {namespace}::Real
//   cudaMalloc(&tables, {namespace}::kFieldTableBytes);
//   cudaMemcpy(tables, {namespace}::data::kFieldTables, {namespace}::kFieldTableBytes,
//              cudaMemcpyHostToDevice);
//   // in a kernel: {namespace}::predict(in, out, tables);
// Host code passes data::kFieldTables, or calls the two-argument forms (host only here).
"""


def write_header(
    model: BinModel,
    path: str | Path,
    namespace: str = DEFAULT_NAMESPACE,
    precision: str = "float32",
    origin: str = "a raytrack model",
) -> ConstantData:
    """Write the trigger header of ``model`` to ``path`` atomically; returns its constant data.

    Refuses (:class:`ConstantMemoryError`) a model whose constant data exceeds 64 KB, and writes
    nothing then."""
    path = Path(path)
    text = header_source(model, namespace, precision, origin)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path.parent}: no such directory for the header")
    with replacing(path) as tmp:
        tmp.write_text(text)
    return constant_data(model, precision)


def load_model(source: str | Path) -> BinModel:
    """The model of ``source``: a run directory of ``python -m raytrack.train``, a search's
    ``best/``, a Ray Tune trial directory (its latest checkpoint) or a model.bin file. A run's
    model is its checkpoint's best weights (what its model.bin and model.onnx hold)."""
    path = Path(source)
    if path.is_file():
        return read_model_bin(path)
    # Imported here: raytrack.evaluate imports the ONNX export (raytrack.export) itself.
    from raytrack.evaluate import find_run
    from raytrack.models.training import load_checkpoint, model_from_checkpoint
    from raytrack.run.directory import checkpoint_path

    run = find_run(path)
    model = model_from_checkpoint(load_checkpoint(checkpoint_path(run)))
    return BinModel.from_torch(model)
