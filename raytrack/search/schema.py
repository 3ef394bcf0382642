"""A search-space document, checked: the file's schema and the rules between its tables.

Every error is a :class:`SearchSpaceError` that names the file, the key
(``[params.lr].high``, ``[[constraints]][0].expr``) and what is allowed; one line per problem.
Each ``[params.NAME]`` table is checked by the model of its type (``params.py``) against the
option NAME searches; what no single table can check (depth with widths, conditions on other
parameters, the names a constraint may use) is checked here once all tables are read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, StrictStr, ValidationError, field_validator

from raytrack.search.constraints import COMPUTED_NAMES, Constraint, parse_constraint
from raytrack.search.options import ARCHITECTURE, OPTIONS, SearchSpaceError, option_named
from raytrack.search.params import PARAM_TYPES, Param, Table, suggestion_order

# Words for pydantic's error types that a TOML author meets; others keep pydantic's message.
_EXPECTED = {
    "int_type": "an integer",
    "float_type": "a number",
    "string_type": "a string",
    "bool_type": "true or false",
    "list_type": "a list",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
    "too_short": "a non-empty list",
}
_BOUNDS = {"greater_than": (">", "gt"), "greater_than_equal": (">=", "ge")}
_TOP_TABLES = {"params": "[params]", "constraints": "[[constraints]]"}


class _ConstraintTable(Table):
    expr: StrictStr


class _Document(Table):
    """The top level. ``params`` holds raw tables: the schema of each depends on its name."""

    name: StrictStr | None = None
    description: StrictStr = ""
    params: dict[str, Any] = Field(default_factory=dict, validate_default=True)
    constraints: list[_ConstraintTable] = []

    @field_validator("params")
    @classmethod
    def _some(cls, params: dict[str, Any]) -> dict[str, Any]:
        if not params:
            raise ValueError("expected at least one [params.NAME] table")
        return params


@dataclass(frozen=True)
class Document:
    """A checked search-space document."""

    name: str
    description: str
    params: dict[str, Param]
    constraints: list[Constraint]


def check_document(data: Mapping[str, Any], where: str) -> Document:
    """Check a parsed TOML document; ``where`` (the file) starts every error message."""
    document = _validate(_Document, data, where, "")
    params = {name: _param(name, table, where) for name, table in document.params.items()}
    _check_architecture(params, where)
    _check_conditions(params, where)
    names = _constraint_names(params)
    constraints: list[Constraint] = []
    for i, entry in enumerate(document.constraints):
        key = f"{where}: [[constraints]][{i}].expr"
        constraint = parse_constraint(entry.expr, names, key)
        if constraint.expr in (c.expr for c in constraints):
            raise SearchSpaceError(f"{key}: {constraint.expr!r} is repeated")
        constraints.append(constraint)
    name = document.name if document.name is not None else Path(where).stem
    return Document(name, document.description, params, constraints)


def _param(name: str, table: Any, where: str) -> Param:
    """One ``[params.NAME]`` table, checked by the model of its type against option NAME."""
    key = f"[params.{name}]"
    option = option_named(name, f"{where}: {key}")
    if not isinstance(table, dict):
        raise SearchSpaceError(f"{where}: {key}: expected a table, got {table!r}")
    ptype = table.get("type")
    if ptype not in option.param_types:
        detail = "missing" if ptype is None else f"{ptype!r} is not allowed"
        raise SearchSpaceError(
            f"{where}: {key}.type: {detail}; allowed for {name}: {list(option.param_types)}"
        )
    model = PARAM_TYPES[ptype]
    required = " and ".join(n for n, f in model.model_fields.items() if f.is_required())
    return _validate(model, table, where, key, f"type {ptype!r} needs {required}", option=option)


def _validate(
    model: type[BaseModel], data: Any, where: str, key: str, needs: str = "", **context: Any
) -> Any:
    """``model`` validated from ``data``, or a SearchSpaceError naming each key at fault;
    ``needs`` explains a missing key, ``context`` goes to the validators."""
    try:
        return model.model_validate(data, context=context)
    except ValidationError as err:
        problems = [(_key(key, e["loc"]), _problem(e)) for e in err.errors()]
        lines = [
            f"{where}: {k}: {p} ({needs})" if p == "missing" and needs else f"{where}: {k}: {p}"
            for k, p in problems
        ]
        raise SearchSpaceError("\n".join(lines)) from None


def _key(prefix: str, loc: tuple[int | str, ...]) -> str:
    """TOML's spelling of a pydantic location: [params.lr].high, [[constraints]][0].expr."""
    key = prefix
    for part in loc:
        if isinstance(part, int):
            key += f"[{part}]"
        else:
            key = f"{key}.{part}" if key else _TOP_TABLES.get(part, part)
    return key or "top level"


def _problem(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    if kind == "value_error":  # our validators' own messages
        return str(error["ctx"]["error"])
    if kind == "missing":
        return "missing"
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {error['input']!r}"
    if kind in _BOUNDS:
        sign, bound = _BOUNDS[kind]
        return f"expected a value {sign} {error['ctx'][bound]}, got {error['input']!r}"
    return f"{error['msg']}, got {error['input']!r}"


def _check_architecture(params: Mapping[str, Param], where: str) -> None:
    """depth with width; per-layer widths or tapered (width + taper), not both."""
    width = params.get("width")
    problem = None
    if "depth" in params and width is None:
        problem = (
            "[params.depth]: needs [params.width] (per_layer = true, or tapered with "
            "[params.taper])"
        )
    elif width is not None and "depth" not in params:
        problem = (
            "[params.width]: depth missing: widths need [params.depth] (number of hidden layers)"
        )
    elif "taper" in params and (width is None or width.per_layer):
        problem = (
            "[params.taper]: tapered widths need [params.width] without per_layer; per-layer "
            "and tapered widths cannot be mixed"
        )
    elif width is not None and not width.per_layer and "taper" not in params:
        problem = (
            '[params.width]: tapered widths need [params.taper] (type = "fixed", value = 1.0 '
            "for equal widths), or set per_layer = true"
        )
    conditional = [name for name in ARCHITECTURE if name in params and params[name].when]
    if problem is None and conditional:
        problem = (
            f"[params.{conditional[0]}].when: the architecture (depth, width, taper) cannot "
            "be conditional"
        )
    if problem:
        raise SearchSpaceError(f"{where}: {problem}")


def _check_conditions(params: Mapping[str, Param], where: str) -> None:
    """Each ``when`` names another declared parameter and values it can take."""
    for name, param in params.items():
        if param.when is None:
            continue
        key = f"{where}: [params.{name}].when"
        target = param.when.param
        if target == name:
            raise SearchSpaceError(f"{key}.param: a parameter cannot depend on itself")
        if target not in params:
            raise SearchSpaceError(
                f"{key}.param: unknown parameter {target!r}; declared: {sorted(params)}"
            )
        if params[target].per_layer:
            raise SearchSpaceError(
                f"{key}.param: per-layer widths cannot be a condition; use depth"
            )
        for value in param.when.values:
            if not params[target].contains(value):
                raise SearchSpaceError(
                    f"{key}: {target} never takes {value!r}; [params.{target}] is "
                    f"{params[target].describe()}"
                )
    suggestion_order(params, where)  # refuses circular conditions


def _constraint_names(params: Mapping[str, Param]) -> list[str]:
    """Names a constraint may use: computed sizes and the numeric parameters."""
    names = set(COMPUTED_NAMES)
    for name, param in params.items():
        if OPTIONS[name].kind == "str":
            continue
        if param.per_layer:
            names.update(f"width_{i}" for i in range(params["depth"].largest()))
        else:
            names.add(name)
    return sorted(names)
