"""What a trigger header's arrays hold (docs/trigger_header.md): the model's numbers in the
formulation's precision (with, in float32, what rounding them left out), their sizes against
the 64 KB of CUDA constant memory, and each number as an exact C++ literal."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from raytrack.export.model_bin import BinModel
from raytrack.export.reference import integration_matrix

#: CUDA constant memory: the most a header's arrays may hold, bytes.
CONSTANT_MEMORY_BYTES = 65536
#: The formulation's arithmetic and table storage in the header (the network is float32 always).
PRECISIONS = {"float32": ("float", 4), "float64": ("double", 8)}
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


def table_rows(model: BinModel, precision: str = "float32") -> list[str]:
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


def split_hi_lo(values: np.ndarray | list[float], precision: str) -> tuple[np.ndarray, np.ndarray]:
    """float64 numbers as (hi, lo): hi rounded to the precision, lo = what that left out (in
    float32, rounded to float again: hi + lo holds 48 bits); lo is 0 in float64."""
    values = np.asarray(values, dtype=np.float64)
    if precision == "float64":
        return values, np.zeros_like(values)
    hi = values.astype(np.float32).astype(np.float64)
    return hi, (values - hi).astype(np.float32).astype(np.float64)


def table_values(model: BinModel, rows: list[str], precision: str) -> np.ndarray:
    """The kept rows, one after the other (float64 numbers exact in the precision)."""
    named = {}
    for name, row in zip(("by", "dby", "f", "h"), model.axis_values, strict=True):
        named[name], named[name + "_lo"] = split_hi_lo(row, precision)
    return np.concatenate([named[r] for r in rows])


def quadrature_values(model: BinModel, precision: str) -> np.ndarray:
    """Nodes and weights, then in float32 their rounding errors (nodes, then weights); for the
    path base then its (K, K) integration matrix, row-major (rounded to the precision: the
    path's field and its integrals are computed in plain Real)."""
    nodes, nodes_lo = split_hi_lo(model.quadrature_nodes, precision)
    weights, weights_lo = split_hi_lo(model.quadrature_weights, precision)
    parts = [nodes, weights] if precision == "float64" else [nodes, weights, nodes_lo, weights_lo]
    if model.base == "path":
        matrix = integration_matrix(model.quadrature_nodes, model.quadrature_weights)
        parts.append(split_hi_lo(matrix.ravel(), precision)[0])
    return np.concatenate(parts).astype(np.float64)


def field_table_values(model: BinModel, precision: str) -> np.ndarray:
    """The path base's x tables (2D rows of T), rounded to the precision; in float32 then what
    rounding the D derivative rows left out (the second dz derivative is a difference of
    neighbouring ones, multiplied by y^2 / 2, which would otherwise lose the derivatives' last
    bits). Empty for none."""
    if model.base != "path" or not model.x_degree:
        return np.zeros(0)
    hi, lo = split_hi_lo(model.x_values, precision)
    if precision == "float64":
        return hi.ravel()
    return np.concatenate([hi.ravel(), lo[model.x_degree :].ravel()])


def constant_data(model: BinModel, precision: str = "float32") -> ConstantData:
    """The constant data a header of ``model`` would hold, in bytes."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    size = PRECISIONS[precision][1]
    n_floats = len(network_values(model))
    rows = table_rows(model, precision)
    n_table = model.axis_values.shape[1]
    return ConstantData(
        network=4 * n_floats,
        tables=size * len(rows) * n_table,
        quadrature=size * len(quadrature_values(model, precision)),
        weight_count=model.weight_count,
        table_rows=len(rows),
        table_nodes=n_table,
        precision=precision,
        field_tables=size * len(field_table_values(model, precision)),
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
    normalisation = len(network_values(model)) - model.weight_count  # float32 each
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


def network_values(model: BinModel) -> np.ndarray:
    """One float32 array: input_mean, input_std, target_mean, target_std, then per layer its
    row-major weight and its bias (model.bin's order)."""
    parts = [model.input_mean, model.input_std, model.target_mean, model.target_std]
    for w, b in zip(model.weights, model.biases, strict=True):
        parts += [np.ravel(w), b]
    return np.concatenate([np.asarray(p, dtype=np.float32).ravel() for p in parts])


def literal(value: float, precision: str) -> str:
    """An exact C++ literal: the shortest decimal that reads back to the same float/double."""
    if not np.isfinite(value):
        raise ValueError(f"non-finite number {value} in the model: cannot export it")
    if precision == "float32":
        text = np.format_float_scientific(np.float32(value), unique=True, trim="-")
        return text + "f"
    return repr(float(np.float64(value)))


def array_macro(name: str, values: np.ndarray, precision: str) -> str:
    """A ``#define`` of the values as literals, eight a line (the header's arrays use it for
    their host copy and their ``__constant__`` copy alike)."""
    literals = [literal(v, precision) for v in values]
    lines = [
        "    " + ", ".join(literals[i : i + _PER_LINE]) for i in range(0, len(literals), _PER_LINE)
    ]
    return f"#define {name} \\\n" + ", \\\n".join(lines) + "\n"
