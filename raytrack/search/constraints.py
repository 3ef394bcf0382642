"""Constraint expressions of ``[[constraints]]``: parsed with ``ast``, evaluated by a small
interpreter over a whitelist of nodes (never ``eval``).

Each constraint becomes a number c for Optuna's constrained TPE: ``a <= b`` gives a - b,
``a >= b`` gives b - a, ``a == b`` gives |a - b|, a chain the largest; c <= 0 is feasible.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from raytrack.search.options import SearchSpaceError

_BINOPS: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}
_UNARY: dict[type, Callable[[float], float]] = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_COMPARE: dict[type, Callable[[float, float], float]] = {
    ast.LtE: lambda a, b: a - b,
    ast.GtE: lambda a, b: b - a,
    ast.Eq: lambda a, b: abs(a - b),
}
# Names every constraint may use besides the numeric parameters (SearchSpace computes them).
COMPUTED_NAMES = ("weight_count", "macs_per_track", "depth")
ALLOWED_SYNTAX = "comparisons <=, >=, ==; arithmetic + - * / **; numbers; parameter names"


@dataclass(frozen=True)
class Constraint:
    """One ``[[constraints]]`` expression: ``value(names)`` <= 0 means feasible."""

    expr: str
    tree: ast.Expression
    names: frozenset[str]

    def value(self, namespace: Mapping[str, float]) -> float:
        """c for these values: ``a <= b`` gives a - b (max over a chain); 0 when not applicable.

        A constraint naming a parameter that the trial does not have (width_3 at depth 3, an
        inactive conditional parameter without a default) does not apply: 0.0.
        """
        if not self.names <= namespace.keys():
            return 0.0
        try:
            value = _evaluate(self.tree.body, namespace)
        except (ArithmeticError, ValueError):
            return math.inf
        return math.inf if math.isnan(value) else value


def parse_constraint(expr: Any, allowed_names: Sequence[str], where: str) -> Constraint:
    """Parse and check a constraint expression; ``where`` prefixes any error message."""
    if not isinstance(expr, str) or not expr.strip():
        raise SearchSpaceError(
            f"{where}: expected an expression string such as 'weight_count <= 200000', got {expr!r}"
        )
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError as err:
        raise SearchSpaceError(f"{where}: {expr!r} is not a valid expression ({err.msg})") from None
    if not isinstance(tree.body, ast.Compare):
        raise SearchSpaceError(
            f"{where}: {expr!r} must be a comparison such as 'weight_count <= 200000'"
        )
    names = set()
    for node in ast.walk(tree.body):
        _check_node(node, expr, where)
        if isinstance(node, ast.Name):
            names.add(node.id)
    unknown = sorted(names - set(allowed_names))
    if unknown:
        raise SearchSpaceError(
            f"{where}: unknown name(s) {unknown} in {expr!r}; allowed: {sorted(allowed_names)}"
        )
    return Constraint(expr.strip(), tree, frozenset(names))


def _check_node(node: ast.AST, expr: str, where: str) -> None:
    """Refuse every construct outside the small whitelist (calls, attributes, strings, ...)."""
    allowed = (
        isinstance(node, ast.Compare | ast.BinOp | ast.UnaryOp | ast.Name | ast.Load)
        or type(node) in _BINOPS
        or type(node) in _UNARY
        or type(node) in _COMPARE
        or (
            isinstance(node, ast.Constant)
            and isinstance(node.value, int | float)
            and not isinstance(node.value, bool)
        )
    )
    if not allowed:
        what = _SYMBOLS.get(type(node), type(node).__name__)
        raise SearchSpaceError(
            f"{where}: {what} is not allowed in {expr!r}; allowed: {ALLOWED_SYNTAX}"
        )


_SYMBOLS = {
    ast.Lt: "comparison <",
    ast.Gt: "comparison >",
    ast.NotEq: "comparison !=",
    ast.Call: "a function call",
    ast.Attribute: "attribute access",
    ast.Subscript: "indexing",
}


def _evaluate(node: ast.AST, namespace: Mapping[str, float]) -> float:
    """Value of a checked expression node (floats throughout: no unbounded integer powers)."""
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.Name):
        return float(namespace[node.id])
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](_evaluate(node.operand, namespace))
    if isinstance(node, ast.BinOp):
        left, right = _evaluate(node.left, namespace), _evaluate(node.right, namespace)
        return _BINOPS[type(node.op)](left, right)
    assert isinstance(node, ast.Compare)
    terms = [_evaluate(term, namespace) for term in (node.left, *node.comparators)]
    return max(
        _COMPARE[type(op)](a, b) for op, a, b in zip(node.ops, terms[:-1], terms[1:], strict=True)
    )
