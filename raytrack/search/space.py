"""Search spaces as TOML files: parameters, conditions and constraints for an Optuna search.

A search space is data (see ``search_spaces/default.toml`` and ``example_conditional.toml``,
shipped as ``raytrack.search_spaces``). Select one by name or by path::

    name = "my-search"                # optional (default: the file name)
    description = "..."               # optional

    [params.depth]                    # one table per searched option
    type = "int"                      # "int" | "float" | "categorical" | "fixed"
    low = 2                           # int/float: low, high (inclusive),
    high = 5                          #   optional step = ..., or log = true (not both)

    [params.width]                    # hidden-layer widths, one of two conventions:
    type = "int"                      #   per_layer = true: width_0 ... width_{depth-1}, each
    per_layer = true                  #   drawn from this range; width_i exists only if i < depth
    low = 16                          #   no per_layer: tapered widths, with [params.taper]:
    high = 2048                       #   hidden[i] = max(min_width, round(width * taper**i))
    log = true                        #   (min_width = 8 unless the width table sets it)

    [params.dropout]
    type = "float"
    low = 0.0
    high = 0.2
    when = { param = "depth", in = [4, 5] }   # or { param = "schedule", equals = "cosine" }

    [params.activation]
    type = "categorical"
    choices = ["relu", "silu"]

    [[constraints]]
    expr = "weight_count <= 200000"   # <=, >= or == over numbers, + - * / **, and the names
                                      # weight_count, macs_per_track, depth and numeric params

Parameter names: ``depth``, ``width``, ``taper`` (architecture), the ModelConfig options
``activation``, ``dropout``, ``target`` and the TrainConfig options other than ``epochs``,
``time_budget`` and ``seed`` (those come from the command line). A conditional parameter is
suggested only when its condition holds; otherwise it is absent and the option keeps its
default. A ``fixed`` parameter is not searched: it sets the option for every trial.

Constraints use Optuna's constrained TPE: each becomes a number c, c <= 0 meaning feasible,
recorded on the trial (user attribute ``constraints``; with Optuna >= 5 also
``Trial.set_constraint``). They steer the sampler; they do not stop a trial. The hard limit is
``max_weights`` (``--max-weights``): one more constraint, and ``violates_limits`` for the
trainable to refuse a model before training it.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

import optuna

from raytrack.files import read_toml
from raytrack.models.mlp import ACTIVATIONS, TARGET_MODES, ModelConfig
from raytrack.models.training import PRECISIONS, SCHEDULES, TrainConfig

PARAM_TYPES = ("int", "float", "categorical", "fixed")
CLI_OPTIONS = ("epochs", "time_budget", "seed")
ARCHITECTURE = ("depth", "width", "taper")
DEFAULT_MIN_WIDTH = 8
LIMIT_KEY = "max_weights"
USER_ATTR = "constraints"
COMPUTED_NAMES = ("weight_count", "macs_per_track", "depth")
# Optuna >= 5 stores constraints per trial (Trial.set_constraint); constraints_func is deprecated.
_HAS_SET_CONSTRAINT = hasattr(optuna.trial.Trial, "set_constraint")
STRING_CHOICES: dict[str, tuple[str, ...]] = {
    "activation": tuple(ACTIVATIONS),
    "target": TARGET_MODES,
    "schedule": SCHEDULES,
    "precision": PRECISIONS,
}


class SearchSpaceError(ValueError):
    """A search-space file is malformed; the message names the file and the key at fault."""


# --------------------------------------------------------------------------------------------
# Options that may be searched


@dataclass(frozen=True)
class _Option:
    """What one parameter name stands for: value kind, owner (arch/model/train), default."""

    name: str
    kind: str  # "int", "float", "str"
    owner: str  # "arch", "model", "train"
    default: Any = None

    def check(self, value: Any) -> str | None:
        """Why ``value`` is not a valid setting of this option, or None."""
        if isinstance(value, bool) or not isinstance(value, _PY_TYPES[self.kind]):
            return f"{value!r} is not {_KIND_WORDS[self.kind]}"
        if self.kind == "str":
            allowed = STRING_CHOICES[self.name]
            return None if value in allowed else f"{value!r} is not allowed; allowed: {allowed}"
        if self.owner == "arch":
            return None if value > 0 else f"{value!r} must be > 0"
        config = ModelConfig if self.owner == "model" else TrainConfig
        try:
            config(**{self.name: value})
        except ValueError as err:
            return f"{value!r} is not a valid {self.name} ({err})"
        return None


_PY_TYPES = {"int": int, "float": (int, float), "str": str}
_KIND_WORDS = {"int": "an integer", "float": "a number", "str": "a string"}
_TYPES_FOR_KIND = {
    "int": ("int", "categorical", "fixed"),
    "float": ("float", "int", "categorical", "fixed"),
    "str": ("categorical", "fixed"),
}


def _options() -> dict[str, _Option]:
    """Every searchable option, by parameter name."""
    options = {
        "depth": _Option("depth", "int", "arch"),
        "width": _Option("width", "int", "arch"),
        "taper": _Option("taper", "float", "arch"),
    }
    for owner, config in (("model", ModelConfig), ("train", TrainConfig)):
        defaults = config()
        for field in fields(config):
            if field.name in ("hidden", *CLI_OPTIONS):
                continue
            default = getattr(defaults, field.name)
            kind = "str" if isinstance(default, str) else type(default).__name__
            options[field.name] = _Option(field.name, kind, owner, default)
    return options


OPTIONS = _options()
MODEL_OPTIONS = tuple(name for name, opt in OPTIONS.items() if opt.owner == "model")
TRAIN_OPTIONS = tuple(name for name, opt in OPTIONS.items() if opt.owner == "train")


# --------------------------------------------------------------------------------------------
# Parameters and conditions


@dataclass(frozen=True)
class Condition:
    """``when = { param = ..., in = [...] }`` (or ``equals = ...``): holds for those values."""

    param: str
    values: tuple[Any, ...]

    def holds(self, values: Mapping[str, Any]) -> bool:
        """True when the referenced parameter is present and takes one of the values."""
        return self.param in values and values[self.param] in self.values


@dataclass(frozen=True)
class Param:
    """One ``[params.NAME]`` table: a distribution (or a fixed value) and its condition."""

    name: str
    type: str
    low: Any = None
    high: Any = None
    step: Any = None
    log: bool = False
    choices: tuple[Any, ...] = ()
    value: Any = None
    when: Condition | None = None
    per_layer: bool = False
    min_width: int = DEFAULT_MIN_WIDTH

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        """Draw this parameter as ``name`` on an Optuna trial (a fixed value is returned)."""
        if self.type == "fixed":
            return self.value
        if self.type == "categorical":
            return trial.suggest_categorical(name, list(self.choices))
        suggest = trial.suggest_int if self.type == "int" else trial.suggest_float
        if self.step is not None:
            return suggest(name, self.low, self.high, step=self.step)
        return suggest(name, self.low, self.high, log=self.log)

    def contains(self, value: Any) -> bool:
        """Whether the parameter can take ``value``."""
        if self.type == "fixed":
            return value == self.value
        if self.type == "categorical":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.type == "int" and value != int(value):
            return False
        if not self.low <= value <= self.high:
            return False
        if self.step is None:
            return True
        steps = (value - self.low) / self.step
        return math.isclose(steps, round(steps), abs_tol=1e-9)

    def describe(self) -> str:
        """The allowed values in words, for error messages."""
        if self.type == "fixed":
            return f"fixed {self.value!r}"
        if self.type == "categorical":
            return f"one of {list(self.choices)}"
        extra = " (log)" if self.log else f" (step {self.step})" if self.step is not None else ""
        return f"{self.type} {self.low}..{self.high}{extra}"

    def largest(self) -> Any:
        """The largest value the parameter can take (numeric parameters)."""
        if self.type == "fixed":
            return self.value
        return max(self.choices) if self.type == "categorical" else self.high

    def discrete_values(self) -> tuple[Any, ...] | None:
        """All values for a categorical or fixed parameter, None for a range."""
        if self.type == "fixed":
            return (self.value,)
        return self.choices if self.type == "categorical" else None


# --------------------------------------------------------------------------------------------
# Constraint expressions (parsed with ast, evaluated by a small interpreter: no eval)

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


def constraints_func(trial: optuna.trial.FrozenTrial) -> list[float]:
    """The constraint values ``define_by_run`` recorded on the trial (for ``constraints_func``)."""
    return list(trial.user_attrs.get(USER_ATTR, []))


# --------------------------------------------------------------------------------------------
# The search space


class SearchSpace:
    """A parsed search space: define-by-run suggestions, configs, preset points, limits."""

    constraints_func = staticmethod(constraints_func)

    def __init__(
        self,
        *,
        name: str,
        params: dict[str, Param],
        constraints: Sequence[Constraint] = (),
        description: str = "",
        path: Path | None = None,
        source: Mapping[str, Any] | None = None,
        max_weights: int | None = None,
    ) -> None:
        self.name = name
        self.description = description
        self.path = path
        self.params = dict(params)
        self.constraints = tuple(constraints)
        self.max_weights = max_weights
        self.source = dict(source or {})
        self._order = _suggestion_order(self.params, str(path or name))
        width = self.params.get("width")
        self.widths = None if width is None else "per_layer" if width.per_layer else "tapered"

    def __repr__(self) -> str:
        return f"SearchSpace({self.name!r}, params={list(self.params)}, path={self.path})"

    # -- Optuna -------------------------------------------------------------------------------

    def define_by_run(self, trial: optuna.Trial) -> dict[str, Any] | None:
        """Suggest every active parameter on ``trial``; record the constraints on it.

        Usable as Ray Tune's ``OptunaSearch(space=space.define_by_run)``; returns the fixed
        values (constants Ray adds to the trial's config), or None when there are none.
        """
        values: dict[str, Any] = {}
        constants: dict[str, Any] = {}
        for param in self._active(values):
            if param.per_layer:
                for i in range(values["depth"]):
                    values[f"width_{i}"] = param.suggest(trial, f"width_{i}")
                continue
            values[param.name] = param.suggest(trial, param.name)
            if param.type == "fixed":
                constants[param.name] = param.value
        if self.has_constraints:
            self._record_constraints(trial, values)
        return constants or None

    def _active(self, values: dict[str, Any]):
        """The parameters in suggestion order whose condition holds for ``values`` so far."""
        for name in self._order:
            param = self.params[name]
            if param.when is None or param.when.holds(values):
                yield param

    def _record_constraints(self, trial: optuna.Trial, values: Mapping[str, Any]) -> None:
        constraint_values = self.constraint_values(values)
        trial.set_user_attr(USER_ATTR, constraint_values)
        if _HAS_SET_CONSTRAINT:
            for key, value in zip(self.constraint_names, constraint_values, strict=True):
                trial.set_constraint(key, value)

    @property
    def has_constraints(self) -> bool:
        """Whether trials carry constraint values (file constraints or ``max_weights``)."""
        return bool(self.constraints) or self.max_weights is not None

    @property
    def constraint_names(self) -> list[str]:
        """One name per constraint value: the expressions, then ``max_weights`` if set."""
        names = [constraint.expr for constraint in self.constraints]
        return names + ([LIMIT_KEY] if self.max_weights is not None else [])

    def constraint_values(self, params: Mapping[str, Any]) -> list[float]:
        """The constraint values (<= 0: feasible) of a parameter dict, in ``constraint_names``
        order."""
        params = self._with_fixed(params)
        model, overrides = self.to_configs(params)
        namespace = self._namespace(params, model, overrides)
        values = [float(constraint.value(namespace)) for constraint in self.constraints]
        if self.max_weights is not None:
            values.append(float(model.weight_count - self.max_weights))
        return values

    def _namespace(self, params, model: ModelConfig, overrides) -> dict[str, float]:
        """Numeric names a constraint may use: computed sizes, parameters, effective options."""
        namespace: dict[str, float] = {
            "weight_count": model.weight_count,
            "macs_per_track": model.macs_per_track,
            "depth": len(model.hidden),
        }
        for name in self.params:
            option = OPTIONS[name]
            if option.kind == "str" or option.owner == "arch":
                continue
            if option.owner == "model":
                namespace[name] = getattr(model, name)
            else:
                namespace[name] = overrides.get(name, option.default)
        numeric = (k for k, v in params.items() if _is_number(v) and k not in COMPUTED_NAMES)
        namespace.update({k: params[k] for k in numeric})
        return namespace

    def sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        """A seeded TPE sampler, constraint-aware when the space has constraints.

        With Optuna >= 5 the sampler reads the values ``define_by_run`` stores with
        ``Trial.set_constraint``; older Optuna gets ``constraints_func`` (deprecated in 5).
        """
        if self.has_constraints and not _HAS_SET_CONSTRAINT:
            return optuna.samplers.TPESampler(seed=seed, constraints_func=constraints_func)
        return optuna.samplers.TPESampler(seed=seed)

    # -- configurations -----------------------------------------------------------------------

    def to_configs(self, params: Mapping[str, Any]) -> tuple[ModelConfig, dict[str, Any]]:
        """The ModelConfig and the TrainConfig overrides of a parameter dict.

        Fixed parameters are filled in; model options not in ``params`` keep their
        ModelConfig defaults; the overrides hold only the training options present. Keys that
        are not search parameters (Ray's own, say) are ignored.
        """
        values = self._with_fixed(params)
        model_options = {k: values[k] for k in MODEL_OPTIONS if k in values}
        model = ModelConfig(hidden=self._hidden(values), **model_options)
        return model, {k: values[k] for k in TRAIN_OPTIONS if k in values}

    def _with_fixed(self, params: Mapping[str, Any]) -> dict[str, Any]:
        values = dict(params)
        for param in self._active(values):
            if param.type == "fixed":
                values.setdefault(param.name, param.value)
        return values

    def _hidden(self, values: Mapping[str, Any]) -> tuple[int, ...]:
        """Hidden widths from depth and the per-layer or tapered widths."""
        if self.widths is None:
            return ModelConfig().hidden
        needed = ["depth", "width", "taper"]
        if self.widths == "per_layer":
            needed = ["depth"] + [f"width_{i}" for i in range(int(values.get("depth", 0)))]
        missing = [k for k in needed if k not in values]
        if missing:
            raise SearchSpaceError(f"search space {self.name!r}: parameters lack {missing}")
        depth = int(values["depth"])
        if self.widths == "per_layer":
            return tuple(int(values[f"width_{i}"]) for i in range(depth))
        return tapered_widths(values["width"], values["taper"], depth, self.params["width"])

    def weight_count(self, params: Mapping[str, Any]) -> int:
        """Trainable numbers of the model a parameter dict describes."""
        return self.to_configs(params)[0].weight_count

    def violates_limits(self, params: Mapping[str, Any]) -> str | None:
        """Why the model must not be trained (above ``max_weights``), or None."""
        if self.max_weights is None:
            return None
        count = self.weight_count(params)
        if count <= self.max_weights:
            return None
        return f"model has {count} weights, above --max-weights {self.max_weights}"

    # -- presets --------------------------------------------------------------------------------

    def point_for(self, model: ModelConfig, train: TrainConfig | None = None) -> dict[str, Any]:
        """The parameters (as ``define_by_run`` would suggest them) that reproduce a preset.

        For Ray's ``points_to_evaluate``: every active non-fixed parameter is included, so
        Optuna samples nothing for the point. Raises SearchSpaceError when the preset is not
        expressible: a value outside a parameter's range, or a model option the space does not
        search that differs from its default.
        """
        train = train or TrainConfig()
        wanted = self._preset_values(model, train)
        values: dict[str, Any] = {}
        for param in self._active(values):
            names = (
                [f"width_{i}" for i in range(values["depth"])] if param.per_layer else [param.name]
            )
            for name in names:
                self._require(param, name, wanted[name])
                values[name] = wanted[name]
        self._require_defaults(model, values)
        fixed = {name for name, param in self.params.items() if param.type == "fixed"}
        return {k: v for k, v in values.items() if k not in fixed}

    def _preset_values(self, model: ModelConfig, train: TrainConfig) -> dict[str, Any]:
        """The value every parameter name would need for this preset."""
        wanted = {**train.to_dict(), **model.to_dict(), "depth": len(model.hidden)}
        wanted.update({f"width_{i}": w for i, w in enumerate(model.hidden)})
        if self.widths == "tapered":
            wanted.update(self._solve_taper(model.hidden))
        return wanted

    def _solve_taper(self, hidden: tuple[int, ...]) -> dict[str, Any]:
        width_param, taper_param = self.params["width"], self.params["taper"]
        tapers = list(taper_param.discrete_values() or ())
        if len(hidden) > 1:
            tapers += [hidden[1] / hidden[0], (hidden[-1] / hidden[0]) ** (1 / (len(hidden) - 1))]
        else:
            tapers += [1.0, taper_param.low]
        for taper in tapers:
            if taper_param.contains(taper) and tapered_widths(
                hidden[0], taper, len(hidden), width_param
            ) == tuple(hidden):
                return {"width": hidden[0], "taper": taper}
        raise SearchSpaceError(
            f"{self._where()}: preset hidden={list(hidden)} is not a tapered stack "
            f"max({width_param.min_width}, round(width * taper**i)) with [params.width] "
            f"{width_param.describe()} and [params.taper] {taper_param.describe()}"
        )

    def _require(self, param: Param, name: str, value: Any) -> None:
        if not param.contains(value):
            label = f"hidden[{name[6:]}]" if param.per_layer else name
            raise SearchSpaceError(
                f"{self._where()}: preset {label}={value!r} is outside [params.{param.name}] "
                f"{param.describe()}"
            )

    def _require_defaults(self, model: ModelConfig, values: Mapping[str, Any]) -> None:
        """Model options the point leaves out keep their defaults: the preset must have them."""
        for name in MODEL_OPTIONS:
            default = OPTIONS[name].default
            if name not in values and getattr(model, name) != default:
                raise SearchSpaceError(
                    f"{self._where()}: preset {name}={getattr(model, name)!r} cannot be "
                    f"expressed: the space leaves {name} at its default {default!r} here"
                )
        default_hidden = ModelConfig().hidden
        if self.widths is None and model.hidden != default_hidden:
            raise SearchSpaceError(
                f"{self._where()}: preset hidden={list(model.hidden)} cannot be expressed: the "
                f"space has no [params.depth]/[params.width] (default {list(default_hidden)})"
            )

    def _where(self) -> str:
        return str(self.path or f"search space {self.name!r}")

    # -- records --------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the experiment's records: the file's content, path, limit."""
        return {
            "name": self.name,
            "description": self.description,
            "path": str(self.path) if self.path else None,
            "params": self.source.get("params", {}),
            "constraints": [c.expr for c in self.constraints],
            "max_weights": self.max_weights,
        }


def tapered_widths(width: int, taper: float, depth: int, width_param: Param) -> tuple[int, ...]:
    """``hidden[i] = max(min_width, round(width * taper**i))`` for i < depth."""
    return tuple(
        max(width_param.min_width, int(round(width * taper**i))) for i in range(int(depth))
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _suggestion_order(params: Mapping[str, Param], where: str) -> tuple[str, ...]:
    """Parameter names with every condition's parameter (and depth) before its dependants."""
    order: list[str] = []
    visiting: list[str] = []

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            cycle = " -> ".join([*visiting[visiting.index(name) :], name])
            raise SearchSpaceError(
                f"{where}: [params.{name}].when: conditions form a cycle: {cycle}"
            )
        visiting.append(name)
        param = params[name]
        for dependency in _dependencies(param):
            visit(dependency)
        visiting.pop()
        order.append(name)

    for name in params:
        visit(name)
    return tuple(order)


def _dependencies(param: Param) -> list[str]:
    deps = [param.when.param] if param.when else []
    return deps + (["depth"] if param.per_layer else [])


# --------------------------------------------------------------------------------------------
# Loading and validation


def builtin_search_spaces() -> list[str]:
    """Names of the search spaces shipped in ``raytrack.search_spaces``."""
    folder = resources.files("raytrack.search_spaces")
    return sorted(
        entry.name[: -len(".toml")]
        for entry in folder.iterdir()
        if entry.name.endswith(".toml") and entry.name != "presets.toml"
    )


def load_search_space(name_or_path: str | Path, max_weights: int | None = None) -> SearchSpace:
    """Load a built-in search space by name ("default", ...) or a TOML file by path."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        if str(name_or_path) not in builtin_search_spaces():
            raise SearchSpaceError(
                f"unknown search space {str(name_or_path)!r}: use one of "
                f"{builtin_search_spaces()} or a .toml file"
            )
        path = Path(str(resources.files("raytrack.search_spaces") / f"{name_or_path}.toml"))
    data = read_toml(path, SearchSpaceError, "search-space")
    return parse_search_space(data, origin=path, max_weights=max_weights)


def parse_search_space(
    data: Mapping[str, Any], origin: str | Path = "<search space>", max_weights: int | None = None
) -> SearchSpace:
    """Validate a parsed search-space document; errors name ``origin`` and the key at fault."""
    where = str(origin)
    _check_keys(data, {"name", "description", "params", "constraints"}, where, "top level")
    name = data.get("name", Path(where).stem)
    description = data.get("description", "")
    for key, value in (("name", name), ("description", description)):
        if not isinstance(value, str):
            raise SearchSpaceError(f"{where}: {key}: expected a string, got {value!r}")
    tables = data.get("params")
    if not isinstance(tables, dict) or not tables:
        raise SearchSpaceError(f"{where}: [params]: expected at least one [params.NAME] table")
    params = {pname: _parse_param(pname, table, where) for pname, table in tables.items()}
    _check_architecture(params, where)
    _check_conditions(params, where)
    constraints = _parse_constraints(data.get("constraints", []), params, where)
    if max_weights is not None and (
        isinstance(max_weights, bool) or not isinstance(max_weights, int) or max_weights < 1
    ):
        raise SearchSpaceError(
            f"{where}: max_weights must be a positive integer, got {max_weights!r}"
        )
    path = Path(origin) if isinstance(origin, Path) else None
    return SearchSpace(
        name=name,
        params=params,
        constraints=constraints,
        description=description,
        path=path,
        source=data,
        max_weights=max_weights,
    )


def _check_keys(table: Mapping[str, Any], allowed: set[str], where: str, key: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise SearchSpaceError(
            f"{where}: {key}: unknown key(s) {unknown}; allowed: {sorted(allowed)}"
        )


def _parse_param(name: str, table: Any, where: str) -> Param:
    """One ``[params.NAME]`` table -> Param, every key checked."""
    key = f"[params.{name}]"
    _check_name(name, where, key)
    if not isinstance(table, dict):
        raise SearchSpaceError(f"{where}: {key}: expected a table, got {table!r}")
    option = OPTIONS[name]
    ptype = table.get("type")
    allowed_types = _TYPES_FOR_KIND[option.kind]
    if ptype not in allowed_types:
        detail = "missing" if ptype is None else f"{ptype!r} is not allowed"
        raise SearchSpaceError(
            f"{where}: {key}.type: {detail}; allowed for {name}: {list(allowed_types)}"
        )
    allowed_keys = {"type", "when", *_TYPE_KEYS[ptype]}
    if name == "width":
        allowed_keys |= {"per_layer", "min_width"}
    _check_keys(table, allowed_keys, where, key)
    fields_ = _PARSERS[ptype](table, option, where, key)
    fields_.update(_width_options(table, where, key) if name == "width" else {})
    return Param(name=name, type=ptype, when=_parse_when(table.get("when"), where, key), **fields_)


def _check_name(name: str, where: str, key: str) -> None:
    if name in OPTIONS:
        return
    if name in CLI_OPTIONS:
        raise SearchSpaceError(
            f"{where}: {key}: {name} is not searched: epochs, time_budget and "
            f"seed come from the command line"
        )
    if name == "hidden" or (name.startswith("width_") and name[6:].isdigit()):
        raise SearchSpaceError(
            f"{where}: {key}: declare the widths once as [params.width] with "
            f"per_layer = true (width_0, width_1, ...) or with [params.taper]"
        )
    raise SearchSpaceError(
        f"{where}: {key}: unknown parameter {name!r}; allowed: {sorted(OPTIONS)}"
    )


_TYPE_KEYS = {
    "int": ("low", "high", "step", "log"),
    "float": ("low", "high", "step", "log"),
    "categorical": ("choices",),
    "fixed": ("value",),
}


def _parse_range(table: Mapping[str, Any], option: _Option, where: str, key: str) -> dict:
    """low, high, step, log of an int or float parameter."""
    integer = table["type"] == "int"
    values = {}
    for bound in ("low", "high"):
        if bound not in table:
            raise SearchSpaceError(
                f"{where}: {key}.{bound}: missing (type {table['type']!r} needs low and high)"
            )
        values[bound] = _number(table[bound], integer, option, where, f"{key}.{bound}")
    low, high = values["low"], values["high"]
    if low >= high:
        raise SearchSpaceError(
            f"{where}: {key}.low: low ({low}) must be below high ({high}); "
            f'for one value use type = "fixed"'
        )
    log = table.get("log", False)
    if not isinstance(log, bool):
        raise SearchSpaceError(f"{where}: {key}.log: expected true or false, got {log!r}")
    if log and low <= 0:
        raise SearchSpaceError(f"{where}: {key}.log: log = true needs low > 0, got low = {low}")
    step = _parse_step(table, integer, log, (low, high), where, key)
    return {"low": low, "high": high, "log": log, "step": step}


def _parse_step(table, integer: bool, log: bool, bounds, where: str, key: str):
    if "step" not in table:
        return None
    step = table["step"]
    word = "an integer" if integer else "a number"
    if isinstance(step, bool) or not isinstance(step, int if integer else int | float) or step <= 0:
        raise SearchSpaceError(f"{where}: {key}.step: expected {word} > 0, got {step!r}")
    if log:
        raise SearchSpaceError(f"{where}: {key}.step: step and log = true cannot be combined")
    steps = (bounds[1] - bounds[0]) / step
    if not math.isclose(steps, round(steps), abs_tol=1e-9):
        raise SearchSpaceError(
            f"{where}: {key}.step: high - low ({bounds[1] - bounds[0]}) is not "
            f"a multiple of step ({step})"
        )
    return step


def _number(value: Any, integer: bool, option: _Option, where: str, key: str) -> Any:
    word = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int if integer else int | float):
        raise SearchSpaceError(f"{where}: {key}: expected {word}, got {value!r}")
    problem = option.check(value)
    if problem:
        raise SearchSpaceError(f"{where}: {key}: {problem}")
    return value


def _parse_choices(table: Mapping[str, Any], option: _Option, where: str, key: str) -> dict:
    choices = table.get("choices")
    if not isinstance(choices, list) or not choices:
        raise SearchSpaceError(
            f"{where}: {key}.choices: expected a non-empty list, got {choices!r}"
        )
    for choice in choices:
        problem = option.check(choice)
        if problem:
            raise SearchSpaceError(f"{where}: {key}.choices: {problem}")
    if len(set(choices)) != len(choices):
        raise SearchSpaceError(f"{where}: {key}.choices: repeated values in {choices}")
    return {"choices": tuple(choices)}


def _parse_fixed(table: Mapping[str, Any], option: _Option, where: str, key: str) -> dict:
    if "value" not in table:
        raise SearchSpaceError(f'{where}: {key}.value: missing (type "fixed" needs value)')
    problem = option.check(table["value"])
    if problem:
        raise SearchSpaceError(f"{where}: {key}.value: {problem}")
    return {"value": table["value"]}


_PARSERS = {
    "int": _parse_range,
    "float": _parse_range,
    "categorical": _parse_choices,
    "fixed": _parse_fixed,
}


def _width_options(table: Mapping[str, Any], where: str, key: str) -> dict:
    per_layer = table.get("per_layer", False)
    if not isinstance(per_layer, bool):
        raise SearchSpaceError(
            f"{where}: {key}.per_layer: expected true or false, got {per_layer!r}"
        )
    min_width = table.get("min_width", DEFAULT_MIN_WIDTH)
    if per_layer and "min_width" in table:
        raise SearchSpaceError(
            f"{where}: {key}.min_width: only for tapered widths (without per_layer = true)"
        )
    if isinstance(min_width, bool) or not isinstance(min_width, int) or min_width < 1:
        raise SearchSpaceError(
            f"{where}: {key}.min_width: expected an integer >= 1, got {min_width!r}"
        )
    return {"per_layer": per_layer, "min_width": min_width}


def _parse_when(when: Any, where: str, key: str) -> Condition | None:
    """``when = { param = NAME, in = [...] }`` or ``{ param = NAME, equals = VALUE }``."""
    if when is None:
        return None
    form = '{ param = "depth", in = [4, 5] } or { param = "schedule", equals = "cosine" }'
    if not isinstance(when, dict) or not isinstance(when.get("param"), str):
        raise SearchSpaceError(f"{where}: {key}.when: expected {form}, got {when!r}")
    _check_keys(when, {"param", "in", "equals"}, where, f"{key}.when")
    if ("in" in when) == ("equals" in when):
        raise SearchSpaceError(
            f"{where}: {key}.when: give exactly one of 'in' and 'equals': {form}"
        )
    values = when["in"] if "in" in when else [when["equals"]]
    if not isinstance(values, list) or not values:
        raise SearchSpaceError(f"{where}: {key}.when.in: expected a non-empty list, got {values!r}")
    return Condition(when["param"], tuple(values))


def _check_architecture(params: Mapping[str, Param], where: str) -> None:
    """depth with width; per-layer widths or tapered (width + taper), not both."""
    width = params.get("width")
    if "depth" in params and width is None:
        raise SearchSpaceError(
            f"{where}: [params.depth]: needs [params.width] (per_layer = true, "
            f"or tapered with [params.taper])"
        )
    if width is not None and "depth" not in params:
        raise SearchSpaceError(
            f"{where}: [params.width]: depth missing: widths need "
            f"[params.depth] (number of hidden layers)"
        )
    if "taper" in params and (width is None or width.per_layer):
        raise SearchSpaceError(
            f"{where}: [params.taper]: tapered widths need [params.width] "
            f"without per_layer; per-layer and tapered widths cannot be mixed"
        )
    if width is not None and not width.per_layer and "taper" not in params:
        raise SearchSpaceError(
            f"{where}: [params.width]: tapered widths need [params.taper] "
            f'(type = "fixed", value = 1.0 for equal widths), or set '
            f"per_layer = true"
        )
    for name in ARCHITECTURE:
        if name in params and params[name].when is not None:
            raise SearchSpaceError(
                f"{where}: [params.{name}].when: the architecture (depth, "
                f"width, taper) cannot be conditional"
            )


def _check_conditions(params: Mapping[str, Param], where: str) -> None:
    """Each ``when`` names another declared parameter and values it can take."""
    for name, param in params.items():
        if param.when is None:
            continue
        key = f"[params.{name}].when"
        target = param.when.param
        if target == name:
            raise SearchSpaceError(f"{where}: {key}.param: a parameter cannot depend on itself")
        if target not in params:
            raise SearchSpaceError(
                f"{where}: {key}.param: unknown parameter {target!r}; declared: {sorted(params)}"
            )
        if params[target].per_layer:
            raise SearchSpaceError(
                f"{where}: {key}.param: per-layer widths cannot be a condition; use depth"
            )
        for value in param.when.values:
            if not params[target].contains(value):
                raise SearchSpaceError(
                    f"{where}: {key}: {target} never takes {value!r}; [params.{target}] is "
                    f"{params[target].describe()}"
                )
    _suggestion_order(params, where)


def _parse_constraints(entries: Any, params: Mapping[str, Param], where: str) -> list[Constraint]:
    """``[[constraints]]`` tables, each with one ``expr``."""
    if not isinstance(entries, list):
        raise SearchSpaceError(f"{where}: [[constraints]]: expected an array of tables with expr")
    names = _constraint_names(params)
    constraints = []
    for i, entry in enumerate(entries):
        key = f"[[constraints]][{i}]"
        if not isinstance(entry, dict):
            raise SearchSpaceError(f'{where}: {key}: expected a table with expr = "..."')
        _check_keys(entry, {"expr"}, where, key)
        constraint = parse_constraint(entry.get("expr"), names, f"{where}: {key}.expr")
        if constraint.expr in (c.expr for c in constraints):
            raise SearchSpaceError(f"{where}: {key}.expr: {constraint.expr!r} is repeated")
        constraints.append(constraint)
    return constraints


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
