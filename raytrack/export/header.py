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

No allocation, no file I/O, no standard library beyond ``<math.h>``. The header is the template
``cpp/trigger_header.template.hpp`` filled in, with the per-track code of ``cpp/core.hpp`` that
``raytrack_mlp.hpp`` (model.bin's C++ reader) is built from too (:mod:`raytrack.export.assemble`),
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
from pathlib import Path

import numpy as np

import raytrack
from raytrack.export.assemble import assemble, part
from raytrack.export.bin_layout import ACTIVATION_CODES, BASE_CODES, INPUT_CODES, TARGET_CODES
from raytrack.export.header_data import (
    CONSTANT_MEMORY_BYTES,
    PRECISIONS,
    TABLE_ROWS,
    ConstantData,
    array_macro,
    check_fits,
    constant_data,
    field_table_values,
    literal,
    network_values,
    quadrature_values,
    split_hi_lo,
    table_rows,
    table_values,
)
from raytrack.export.model_bin import BinModel, read_model_bin
from raytrack.files import replacing

__all__ = [
    "DEFAULT_NAMESPACE",
    "check_namespace",
    "core_source",
    "header_source",
    "load_model",
    "write_header",
]

DEFAULT_NAMESPACE = "raytrack_model"
#: The templates a header is made from (raytrack/export/cpp/, see raytrack.export.assemble).
HEADER_TEMPLATE = "trigger_header.template.hpp"
ARRAY_TEMPLATE = "trigger_array.template.hpp"
FIELD_TABLES_TEMPLATE = "trigger_field_tables.template.hpp"
GLOBAL_NOTE_TEMPLATE = "trigger_global_note.template.hpp"
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


def core_source() -> str:
    """The device-ready per-track code that raytrack_mlp.hpp and every trigger header hold
    (``cpp/core.hpp`` with its parts)."""
    return part("core.hpp")


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


def header_source(
    model: BinModel,
    namespace: str = DEFAULT_NAMESPACE,
    precision: str = "float32",
    origin: str = "a raytrack model",
) -> str:
    """The text of the trigger header of ``model`` (raises ConstantMemoryError past 64 KB):
    ``cpp/trigger_header.template.hpp`` with the model's numbers and arrays, and the core."""
    check_namespace(namespace)
    data = check_fits(model, precision, origin)
    real, _ = PRECISIONS[precision]
    tag = re.sub(r"[^A-Z0-9]", "_", namespace.upper())
    macro = f"RAYTRACK_MODEL_{tag}_"
    nf = model.n_features
    shapes = [w.shape for w in model.weights]
    widths = [nf, *(rows for rows, _ in shapes)]
    field_tables = field_table_values(model, precision)
    has_field_tables = len(field_tables) > 0
    global_note = ""
    if has_field_tables:
        global_note = assemble(
            GLOBAL_NOTE_TEMPLATE,
            {"global_tables": data.describe_global(), "namespace": namespace},
        )
    values = {
        "version": raytrack.__version__,
        "origin": origin.replace("\n", " "),
        "crc": f"{zlib.crc32(model.to_bytes()):#010x}",
        "base": model.base,
        "inputs": model.inputs,
        "features": str(nf),
        "target": model.target,
        "leg_power": f"{model.leg_power:g}",
        "activation": model.activation,
        "widths": " -> ".join(map(str, widths)),
        "weight_count": str(model.weight_count),
        "constant_bytes": str(data.total),
        "constant_memory_bytes": str(CONSTANT_MEMORY_BYTES),
        "constant_data": data.describe(),
        "global_note": global_note,
        "real": real,
        "namespace": namespace,
        "tables_doc": "the x tables (above): device global memory in a kernel"
        if has_field_tables
        else "ignored (this model has no x tables; nullptr will do)",
        "guard": f"RAYTRACK_MODEL_{tag}_H",
        "path_nodes": str(len(model.quadrature_nodes) if model.base == "path" else 1),
        "layers": str(len(shapes)),
        "max_width": str(max(widths)),
        "field_table_size": str(len(field_tables)),
        "field_table_bytes": str(data.field_tables),
        "arrays": _arrays(model, precision, macro),
        "field_tables": _field_tables(model, precision, macro, field_tables),
        **_model_values(model, precision, has_field_tables),
    }
    return assemble(HEADER_TEMPLATE, values)


def _arrays(model: BinModel, precision: str, macro: str) -> str:
    """The constant arrays (network, field tables, quadrature), each a host array and its
    ``__constant__`` copy under nvcc, and an accessor that picks the one of the caller's side."""
    nf, n_quad = model.n_features, len(model.quadrature_nodes)
    rows = table_rows(model, precision)
    arrays = [("NET", "float", "kNet", network_values(model), "float32")]
    if rows:
        arrays.append(
            ("TABLES", "Real", "kTables", table_values(model, rows, precision), precision)
        )
    if n_quad:
        quad = quadrature_values(model, precision)
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
    return "".join(
        assemble(
            ARRAY_TEMPLATE,
            {
                "comment": comments[name],
                "define": array_macro(macro + suffix, values, prec),
                "ctype": ctype,
                "name": name,
                "size": str(len(values)),
                "macro": macro + suffix,
                "accessor": name[1].lower() + name[2:],
            },
        )
        for suffix, ctype, name, values, prec in arrays
    )


def _field_tables(model: BinModel, precision: str, macro: str, field_tables: np.ndarray) -> str:
    """The path base's x tables as a host array ("" when the model has none)."""
    if not len(field_tables):
        return ""
    degree = model.x_degree
    errors = (
        f", then what rounding\n// the derivatives to float left out ({degree} rows)"
        if precision == "float32"
        else ""
    )
    return assemble(
        FIELD_TABLES_TEMPLATE,
        {
            "nodes": str(model.axis_values.shape[1]),
            "degree": str(degree),
            "errors": errors,
            "define": array_macro(macro + "FIELD", field_tables, precision),
            "size": str(len(field_tables)),
            "macro": macro + "FIELD",
        },
    )


def _model_values(model: BinModel, precision: str, has_field_tables: bool) -> dict[str, str]:
    """The template's values of ``data::model()`` and the predict functions: codes, numbers,
    the pointers into the arrays, and what the two-argument forms pass for the x tables."""
    nf, n_quad, n_table = model.n_features, len(model.quadrature_nodes), model.axis_values.shape[1]

    def lit(value) -> str:
        return literal(value, precision)

    offset = 2 * nf + 8  # after the normalisation
    layer_inits = []
    for rows_k, cols_k in (w.shape for w in model.weights):
        weight_at = offset
        bias_at = offset + rows_k * cols_k
        offset = bias_at + rows_k
        layer_inits.append(f"{{{rows_k}, {cols_k}, p + {weight_at}, p + {bias_at}}}")
    assert offset == len(network_values(model))
    if has_field_tables:
        x_lo = "nullptr"
        if precision == "float32":
            x_lo = f"field_tables + {2 * model.x_degree * n_table}"
        x_fields = f"{model.x_degree}, {lit(model.x_scale)}, field_tables, {x_lo}"
    else:
        x_fields = "0, Real(0), nullptr, nullptr"
    curvature = ", ".join(
        "true" if rule else "false"
        for rule in (model.continuous_curvature, model.continuous_x_curvature)
    )
    rows = table_rows(model, precision)
    if rows:
        row_ptr = {r: f"tables() + {k * n_table}" for k, r in enumerate(rows)}
        pointers = ", ".join(row_ptr.get(r, "nullptr") for r in TABLE_ROWS)
        axis = (
            f"core::Axis<Real>{{{lit(model.axis_z_first)}, {lit(model.axis_spacing)}, {n_table}, "
            f"{pointers},\n                            {x_fields}, {curvature}}}"
        )
    else:
        axis = (
            "core::Axis<Real>{Real(0), Real(1), 0, "
            + ", ".join(["nullptr"] * len(TABLE_ROWS))
            + f", {x_fields}, {curvature}}}"
        )
    quad_size = 2 * n_quad if precision == "float64" else 4 * n_quad
    quad_ptr = [f"quadrature() + {k * n_quad}" if n_quad else "nullptr" for k in range(4)]
    if precision == "float64":
        quad_ptr[2:] = ["nullptr", "nullptr"]
    kappa, kappa_lo = (float(v[0]) for v in split_hi_lo([model.kappa], precision))
    unused = "  static_cast<void>(field_tables);  // no x tables\n"
    return {
        "unused": "" if has_field_tables else unused,
        "activation_code": str(ACTIVATION_CODES[model.activation]),
        "target_code": str(TARGET_CODES[model.target]),
        "base_code": str(BASE_CODES[model.base]),
        "inputs_code": str(INPUT_CODES[model.inputs]),
        "leg_power_value": lit(model.leg_power),
        "kappa": lit(kappa),
        "kappa_lo": lit(kappa_lo),
        "min_uz_squared": lit(model.min_uz_squared),
        "min_leg_m": lit(model.min_leg_m),
        "axis": axis,
        "axis_nodes": str(n_table if rows else 0),
        "axis_x_degree": str(model.x_degree if has_field_tables else 0),
        "n_quad": str(n_quad),
        "nodes": quad_ptr[0],
        "weights": quad_ptr[1],
        "nodes_lo": quad_ptr[2],
        "weights_lo": quad_ptr[3],
        "passes": str(model.passes),
        "integration": f"quadrature() + {quad_size}" if model.base == "path" else "nullptr",
        "target_mean_at": str(2 * nf),
        "target_std_at": str(2 * nf + 4),
        "layer_inits": ", ".join(layer_inits),
        "field_what": "the x tables (kFieldTables, or its copy in device global memory)"
        if has_field_tables
        else "ignored (this model has no x tables)",
        "two_arg_note": ", reading the host array kFieldTables: host code only"
        if has_field_tables
        else " (this model has no x tables)",
        "two_arg_hd": "" if has_field_tables else "RAYTRACK_HD ",
        "host_tables": "data::kFieldTables" if has_field_tables else "nullptr",
    }


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
    from raytrack.models.checkpoints import load_checkpoint, model_from_checkpoint
    from raytrack.run.directory import checkpoint_path

    run = find_run(path)
    model = model_from_checkpoint(load_checkpoint(checkpoint_path(run)))
    return BinModel.from_torch(model)
