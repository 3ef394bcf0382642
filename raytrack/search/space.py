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

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna

from raytrack.configs import shipped_file, shipped_names
from raytrack.files import read_toml
from raytrack.models.mlp import ModelConfig
from raytrack.models.train_config import TrainConfig
from raytrack.search.constraints import COMPUTED_NAMES, Constraint, parse_constraint
from raytrack.search.options import MODEL_OPTIONS, OPTIONS, TRAIN_OPTIONS, SearchSpaceError
from raytrack.search.params import Condition, FixedParam, Param, suggestion_order
from raytrack.search.schema import check_document

LIMIT_KEY = "max_weights"
USER_ATTR = "constraints"
# Optuna >= 5 stores constraints per trial (Trial.set_constraint); constraints_func is deprecated.
_HAS_SET_CONSTRAINT = hasattr(optuna.trial.Trial, "set_constraint")


def constraints_func(trial: optuna.trial.FrozenTrial) -> list[float]:
    """The constraint values ``define_by_run`` recorded on the trial (for ``constraints_func``)."""
    return list(trial.user_attrs.get(USER_ATTR, []))


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
        self._order = suggestion_order(self.params, str(path or name))
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
        for name, param in self._active(values):
            if param.per_layer:
                for i in range(values["depth"]):
                    values[f"width_{i}"] = param.suggest(trial, f"width_{i}")
                continue
            values[name] = param.suggest(trial, name)
            if isinstance(param, FixedParam):
                constants[name] = param.value
        if self.has_constraints:
            self._record_constraints(trial, values)
        return constants or None

    def _active(self, values: dict[str, Any]) -> Iterator[tuple[str, Param]]:
        """The parameters in suggestion order whose condition holds for ``values`` so far."""
        for name in self._order:
            param = self.params[name]
            if param.when is None or param.when.holds(values):
                yield name, param

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
        for name, param in self._active(values):
            if isinstance(param, FixedParam):
                values.setdefault(name, param.value)
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
        for table, param in self._active(values):
            names = [f"width_{i}" for i in range(values["depth"])] if param.per_layer else [table]
            for name in names:
                self._require(table, param, name, wanted[name])
                values[name] = wanted[name]
        self._require_defaults(model, values)
        fixed = {name for name, param in self.params.items() if isinstance(param, FixedParam)}
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

    def _require(self, table: str, param: Param, name: str, value: Any) -> None:
        if not param.contains(value):
            label = f"hidden[{name[6:]}]" if param.per_layer else name
            raise SearchSpaceError(
                f"{self._where()}: preset {label}={value!r} is outside [params.{table}] "
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


# --------------------------------------------------------------------------------------------
# Loading


def builtin_search_spaces() -> list[str]:
    """Names of the search spaces shipped in ``search_spaces/``."""
    return shipped_names("search space")


def load_search_space(name_or_path: str | Path, max_weights: int | None = None) -> SearchSpace:
    """Load a built-in search space by name ("default", ...) or a TOML file by path."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        if str(name_or_path) not in builtin_search_spaces():
            raise SearchSpaceError(
                f"unknown search space {str(name_or_path)!r}: use one of "
                f"{builtin_search_spaces()} or a .toml file"
            )
        path = shipped_file("search space", str(name_or_path))
    data = read_toml(path, SearchSpaceError, "search-space")
    return parse_search_space(data, origin=path, max_weights=max_weights)


def parse_search_space(
    data: Mapping[str, Any], origin: str | Path = "<search space>", max_weights: int | None = None
) -> SearchSpace:
    """Validate a parsed search-space document; errors name ``origin`` and the key at fault."""
    where = str(origin)
    document = check_document(data, where)
    if max_weights is not None and (
        isinstance(max_weights, bool) or not isinstance(max_weights, int) or max_weights < 1
    ):
        raise SearchSpaceError(
            f"{where}: max_weights must be a positive integer, got {max_weights!r}"
        )
    return SearchSpace(
        name=document.name,
        params=document.params,
        constraints=document.constraints,
        description=document.description,
        path=Path(origin) if isinstance(origin, Path) else None,
        source=data,
        max_weights=max_weights,
    )


__all__ = [
    "Condition",
    "Constraint",
    "Param",
    "SearchSpace",
    "SearchSpaceError",
    "builtin_search_spaces",
    "constraints_func",
    "load_search_space",
    "parse_constraint",
    "parse_search_space",
    "tapered_widths",
]
