"""Search spaces as TOML files: presets as points, sampling, conditions, constraints, errors.

Optuna only (no Ray): a study driven by ``space.define_by_run`` is what Ray's OptunaSearch does.
"""

from __future__ import annotations

import json
import math
import warnings

import optuna
import pytest

from raytrack.models.mlp import ModelConfig
from raytrack.models.presets import load_presets
from raytrack.models.train_config import TrainConfig
from raytrack.search import (
    SearchSpace,
    SearchSpaceError,
    builtin_search_spaces,
    constraints_func,
    load_search_space,
    parse_constraint,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

PRESETS = load_presets()
BATCH_SIZES = (256, 512, 1024, 2048, 4096)


def run_study(space: SearchSpace, n_trials: int, seed: int = 0, objective=None) -> optuna.Study:
    """``n_trials`` of the space; the objective sees (ModelConfig, train overrides)."""
    objective = objective or (lambda model, overrides: model.weight_count)
    study = optuna.create_study(sampler=space.sampler(seed))

    def trial_objective(trial: optuna.Trial) -> float:
        space.define_by_run(trial)
        return objective(*space.to_configs(trial.params))

    study.optimize(trial_objective, n_trials=n_trials)
    return study


# -- built-in files and presets ----------------------------------------------------------------


def test_builtin_search_spaces_are_found_by_name():
    assert {"default", "example_conditional"} <= set(builtin_search_spaces())
    assert "presets" not in builtin_search_spaces()
    space = load_search_space("default")
    assert space.name == "default" and space.path.name == "default.toml"
    assert space.widths == "per_layer"
    assert load_search_space(space.path).params.keys() == space.params.keys()


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_is_a_point_of_the_default_space(preset):
    space = load_search_space("default")
    model = PRESETS[preset]
    point = space.point_for(model, TrainConfig())
    depth = len(model.hidden)
    assert point["depth"] == depth
    widths = sorted(k for k in point if k.startswith("width_"))
    assert widths == sorted(f"width_{i}" for i in range(depth))
    rebuilt, overrides = space.to_configs(point)
    assert rebuilt == model
    defaults = TrainConfig()
    assert overrides == {
        "lr": defaults.lr,
        "batch_size": defaults.batch_size,
        "weight_decay": defaults.weight_decay,
    }


def test_point_for_tapered_space_and_conditions():
    space = load_search_space("example_conditional")
    model = ModelConfig(hidden=(512, 256, 128, 64), activation="gelu")
    point = space.point_for(model, TrainConfig(schedule="plateau", lr=1e-3))
    assert point["width"] == 512 and point["taper"] == pytest.approx(0.5)
    assert point["dropout"] == 0.0  # depth 4: dropout is searched, so it is part of the point
    assert "min_lr_ratio" not in point  # only with the cosine schedule
    assert "target" not in point  # fixed: not an Optuna parameter
    rebuilt, overrides = space.to_configs(point)
    assert rebuilt == model
    assert overrides == {"schedule": "plateau", "lr": 1e-3}
    shallow = space.point_for(ModelConfig(hidden=(64, 32), activation="silu"))
    assert "dropout" not in shallow and shallow["min_lr_ratio"] == 0.01


@pytest.mark.parametrize(
    ("space_name", "model", "train", "expected"),
    [
        ("default", ModelConfig(hidden=(4096, 64)), None, ["hidden[0]=4096", "16..2048"]),
        ("default", ModelConfig(hidden=(64,) * 6), None, ["depth=6", "int 2..5"]),
        ("default", ModelConfig(hidden=(64, 64), dropout=0.1), None, ["dropout=0.1", "0.0"]),
        ("default", PRESETS["tiny"], TrainConfig(lr=0.1), ["lr=0.1", "0.0003..0.01"]),
        ("example_conditional", ModelConfig(hidden=(64, 64), activation="relu"), None, ["relu"]),
        ("example_conditional", ModelConfig(hidden=(64, 100)), None, ["hidden=[64, 100]"]),
    ],
)
def test_point_for_refuses_presets_outside_the_space(space_name, model, train, expected):
    space = load_search_space(space_name)
    with pytest.raises(SearchSpaceError) as err:
        space.point_for(model, train)
    assert str(space.path) in str(err.value)
    for text in expected:
        assert text in str(err.value)


# -- sampling ------------------------------------------------------------------------------------


def test_sampled_configs_respect_bounds_and_per_layer_widths():
    space = load_search_space("default")
    study = run_study(space, n_trials=30)
    depths = set()
    for trial in study.trials:
        params = trial.params
        depth = params["depth"]
        depths.add(depth)
        assert 2 <= depth <= 5
        assert sorted(k for k in params if k.startswith("width_")) == sorted(
            f"width_{i}" for i in range(depth)
        )
        assert all(16 <= params[f"width_{i}"] <= 2048 for i in range(depth))
        assert params["batch_size"] in BATCH_SIZES
        assert 3e-4 <= params["lr"] <= 1e-2 and 1e-7 <= params["weight_decay"] <= 1e-3
        model, overrides = space.to_configs(params)
        assert model.hidden == tuple(params[f"width_{i}"] for i in range(depth))
        assert model.activation == params["activation"] and model.target == params["target"]
        assert set(overrides) == {"lr", "batch_size", "weight_decay"}
    assert len(depths) >= 3


def test_conditional_parameters_only_when_their_condition_holds():
    space = load_search_space("example_conditional")
    study = run_study(space, n_trials=40)
    seen = {"dropout": set(), "min_lr_ratio": set()}
    for trial in study.trials:
        params = trial.params
        deep = params["depth"] >= 4
        cosine = params["schedule"] == "cosine"
        assert ("dropout" in params) == deep
        assert ("min_lr_ratio" in params) == cosine
        seen["dropout"].add(deep)
        seen["min_lr_ratio"].add(cosine)
        model, overrides = space.to_configs(params)
        assert model.target == "residual_qop"  # the fixed parameter
        assert model.dropout == params.get("dropout", 0.0)
        assert len(model.hidden) == params["depth"] and min(model.hidden) >= 8
        assert model.hidden[0] == params["width"]
        assert ("min_lr_ratio" in overrides) == cosine
    assert seen == {"dropout": {True, False}, "min_lr_ratio": {True, False}}


def test_define_by_run_returns_fixed_values_as_constants():
    space = load_search_space("example_conditional")
    trial = optuna.create_study(sampler=space.sampler(0)).ask()
    assert space.define_by_run(trial) == {"target": "residual_qop"}
    assert "target" not in trial.params
    default = load_search_space("default")
    trial = optuna.create_study(sampler=default.sampler(0)).ask()
    assert default.define_by_run(trial) == {"base": "path", "inputs": "physics"}
    assert "base" not in trial.params and "leg_power" in trial.params


def test_same_seed_gives_the_same_sequence():
    space = load_search_space("example_conditional")
    first = [t.params for t in run_study(space, n_trials=15, seed=3).trials]
    again = [t.params for t in run_study(space, n_trials=15, seed=3).trials]
    other = [t.params for t in run_study(space, n_trials=15, seed=4).trials]
    assert first == again
    assert first != other


# -- limits and constraints -----------------------------------------------------------------------


def test_max_weights_limit_flags_larger_models():
    space = load_search_space("default", max_weights=16384)
    tiny = space.point_for(PRESETS["tiny"])
    large = space.point_for(PRESETS["large"])
    assert space.weight_count(tiny) == PRESETS["tiny"].weight_count <= 16384
    assert space.violates_limits(tiny) is None
    message = space.violates_limits(large)
    assert str(PRESETS["large"].weight_count) in message and "16384" in message
    assert space.constraint_values(large) == [PRESETS["large"].weight_count - 16384]
    assert load_search_space("default").violates_limits(large) is None


def test_constraints_are_recorded_on_trials():
    space = load_search_space("default", max_weights=16384)
    study = run_study(space, n_trials=12)
    for trial in study.trials:
        values = constraints_func(trial)
        assert values == trial.user_attrs["constraints"] == space.constraint_values(trial.params)
        assert (values[0] <= 0) == (space.violates_limits(trial.params) is None)
        if hasattr(trial, "constraints"):  # Optuna >= 5 reads Trial.set_constraint values
            assert trial.constraints == {"max_weights": values[0]}
    unconstrained = run_study(load_search_space("default"), n_trials=2)
    assert all("constraints" not in t.user_attrs for t in unconstrained.trials)


def test_constrained_sampler_mostly_samples_feasible_models():
    """Objective indifferent to size: only the constraint steers the widths."""

    def objective(model, overrides):
        return (math.log(overrides["lr"]) - math.log(1e-3)) ** 2

    limited = load_search_space("default", max_weights=16384)

    def feasible_fraction(space):
        trials = run_study(space, n_trials=60, objective=objective).trials[30:]
        return sum(limited.violates_limits(t.params) is None for t in trials) / len(trials)

    with_limit = feasible_fraction(limited)
    without = feasible_fraction(load_search_space("default"))
    assert with_limit >= 0.5
    assert with_limit > without + 0.2


def test_sampler_is_seeded_tpe_without_deprecation_warnings():
    space = load_search_space("example_conditional", max_weights=100000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sampler = space.sampler(7)
    assert isinstance(sampler, optuna.samplers.TPESampler)


NAMES = ["weight_count", "macs_per_track", "depth", "width_0", "width_1", "width", "taper"]


@pytest.mark.parametrize(
    ("expr", "namespace", "expected"),
    [
        ("weight_count <= 200000", {"weight_count": 1000}, -199000),
        ("weight_count <= 200000", {"weight_count": 250000}, 50000),
        ("width_0 >= width_1", {"width_0": 64, "width_1": 128}, 64),
        ("width_0 >= width_1", {"width_0": 128, "width_1": 64}, -64),
        ("depth == 3", {"depth": 5}, 2),
        ("16 <= width <= 64", {"width": 100}, 36),
        ("16 <= width <= 64", {"width": 32}, -16),
        ("width * taper ** 2 >= 8", {"width": 64, "taper": 0.25}, 4),
        ("-depth + 2 * macs_per_track / 4 <= 10", {"depth": 2, "macs_per_track": 40}, 8),
        ("width_1 >= 16", {"width_0": 64}, 0.0),  # width_1 absent (depth 1): not applicable
    ],
)
def test_constraint_evaluation(expr, namespace, expected):
    constraint = parse_constraint(expr, NAMES, "test")
    assert constraint.value(namespace) == pytest.approx(expected)


def test_file_constraint_value_through_the_space():
    space = load_search_space("example_conditional")
    point = space.point_for(ModelConfig(hidden=(512, 256, 128, 64), activation="gelu"))
    macs = ModelConfig(hidden=(512, 256, 128, 64)).macs_per_track
    assert space.constraint_values(point) == [macs - 100000]
    assert space.constraint_names == ["macs_per_track <= 100000"]


@pytest.mark.parametrize(
    "expr",
    [
        "__import__('os')",
        "__import__('os').system('true') <= 1",
        "weight_count.real <= 1",
        "abs(depth) <= 1",
        "().__class__ <= 1",
        "[depth][0] <= 1",
        "(lambda: 1)() <= 1",
        "depth <= 'a'",
        "depth <= 3 and depth >= 2",
        "depth < 3",
        "depth",
        "depth <=",
        "flops <= 10",
    ],
)
def test_unsafe_or_unknown_constraint_expressions_are_rejected(expr):
    with pytest.raises(SearchSpaceError, match="allowed|not a valid|comparison"):
        parse_constraint(expr, NAMES, "test")


# -- records -------------------------------------------------------------------------------------


def test_to_dict_is_plain_data():
    space = load_search_space("example_conditional", max_weights=50000)
    record = json.loads(json.dumps(space.to_dict()))
    assert record["name"] == "example_conditional"
    assert record["path"].endswith("example_conditional.toml")
    assert record["constraints"] == ["macs_per_track <= 100000"]
    assert record["max_weights"] == 50000
    assert record["params"]["dropout"]["when"] == {"param": "depth", "in": [4, 5, 6]}


# -- bad files -----------------------------------------------------------------------------------

WIDTHS = """
[params.depth]
type = "int"
low = 2
high = 5

[params.width]
type = "int"
per_layer = true
low = 16
high = 2048
log = true
"""

BAD_FILES = {
    "unknown parameter": (
        '[params.momentum]\ntype = "float"\nlow = 0.1\nhigh = 0.9\n',
        ["[params.momentum]", "allowed", "'lr'", "'weight_decay'"],
    ),
    "cli option": ('[params.epochs]\ntype = "fixed"\nvalue = 10\n', ["[params.epochs]", "command"]),
    "unknown type": (
        '[params.lr]\ntype = "uniform"\nlow = 1e-4\nhigh = 1e-2\n',
        ["[params.lr].type", "'uniform'", "'float'", "'categorical'"],
    ),
    "missing high": ('[params.lr]\ntype = "float"\nlow = 1e-4\n', ["[params.lr].high", "missing"]),
    "low >= high": (
        '[params.lr]\ntype = "float"\nlow = 1e-2\nhigh = 1e-4\n',
        ["[params.lr].low", "below high"],
    ),
    "log with low <= 0": (
        '[params.weight_decay]\ntype = "float"\nlow = 0.0\nhigh = 1e-3\nlog = true\n',
        ["[params.weight_decay].log", "low > 0"],
    ),
    "bad activation": (
        '[params.activation]\ntype = "categorical"\nchoices = ["relu", "swish"]\n',
        ["[params.activation].choices", "'swish'", "'relu'", "'silu'", "'gelu'", "'tanh'"],
    ),
    "bad fixed schedule": (
        '[params.schedule]\ntype = "fixed"\nvalue = "linear"\n',
        ["[params.schedule].value", "'linear'", "'cosine'", "'plateau'"],
    ),
    # A string option without a list here (base, inputs): its config's own check names the
    # allowed values (it was a KeyError).
    "string option checked by its config": (
        '[params.base]\ntype = "fixed"\nvalue = "nope"\n',
        ["[params.base].value", "'nope'", "'expansion'"],
    ),
    "float for an int option": (
        '[params.batch_size]\ntype = "float"\nlow = 256\nhigh = 4096\n',
        ["[params.batch_size].type", "'int'", "'categorical'"],
    ),
    "dropout out of range": (
        '[params.dropout]\ntype = "float"\nlow = 0.0\nhigh = 1.5\n',
        ["[params.dropout].high", "[0, 1)"],
    ),
    "when unknown param": (
        WIDTHS + '[params.dropout]\ntype = "float"\nlow = 0.0\nhigh = 0.2\n'
        'when = { param = "depht", in = [4, 5] }\n',
        ["[params.dropout].when.param", "'depht'", "'depth'"],
    ),
    "when on itself": (
        '[params.lr]\ntype = "float"\nlow = 1e-4\nhigh = 1e-2\n'
        'when = { param = "lr", equals = 1e-3 }\n',
        ["[params.lr].when.param", "itself"],
    ),
    "when value never taken": (
        WIDTHS + '[params.dropout]\ntype = "float"\nlow = 0.0\nhigh = 0.2\n'
        'when = { param = "depth", in = [7] }\n',
        ["[params.dropout].when", "int 2..5"],
    ),
    "conditions form a cycle": (
        '[params.schedule]\ntype = "categorical"\nchoices = ["cosine", "plateau"]\n'
        'when = { param = "precision", equals = "fp32" }\n'
        '[params.precision]\ntype = "categorical"\nchoices = ["fp32", "tf32"]\n'
        'when = { param = "schedule", equals = "cosine" }\n',
        ["when", "cycle", "schedule -> precision"],
    ),
    "unknown constraint name": (
        WIDTHS + '[[constraints]]\nexpr = "flops <= 10"\n',
        ["[[constraints]][0].expr", "'flops'", "'weight_count'", "'width_4'"],
    ),
    "unsafe constraint": (
        WIDTHS + "[[constraints]]\nexpr = \"__import__('os') <= 1\"\n",
        ["[[constraints]][0].expr", "not allowed", "<="],
    ),
    "per-layer and tapered": (
        WIDTHS + '[params.taper]\ntype = "float"\nlow = 0.5\nhigh = 1.0\n',
        ["[params.taper]", "cannot be mixed"],
    ),
    "depth missing": (
        '[params.width]\ntype = "int"\nper_layer = true\nlow = 16\nhigh = 64\n',
        ["[params.width]", "depth missing"],
    ),
    "individual widths": (
        '[params.width_0]\ntype = "int"\nlow = 16\nhigh = 64\n',
        ["[params.width_0]", "per_layer = true"],
    ),
    "step with log": (
        '[params.patience]\ntype = "int"\nlow = 5\nhigh = 25\nstep = 5\nlog = true\n',
        ["[params.patience].step", "log"],
    ),
    "unknown key": (
        '[params.lr]\ntype = "float"\nlow = 1e-4\nhigh = 1e-2\nlogscale = true\n',
        ["[params.lr]", "'logscale'", "'log'", "'step'"],
    ),
    "invalid TOML": ('[params.lr\ntype = "float"\n', ["not valid TOML"]),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_files_name_the_file_the_key_and_the_allowed_values(case, tmp_path):
    text, expected = BAD_FILES[case]
    path = tmp_path / "broken.toml"
    path.write_text(text)
    with pytest.raises(SearchSpaceError) as err:
        load_search_space(path)
    message = str(err.value)
    assert str(path) in message
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_missing_files_and_unknown_names(tmp_path):
    with pytest.raises(SearchSpaceError, match="not found"):
        load_search_space(tmp_path / "nope.toml")
    with pytest.raises(SearchSpaceError, match="example_conditional"):
        load_search_space("no_such_space")
    with pytest.raises(SearchSpaceError, match="max_weights"):
        load_search_space("default", max_weights=0)


def test_to_configs_needs_every_active_width():
    space = load_search_space("default")
    with pytest.raises(SearchSpaceError, match="width_2"):
        space.to_configs({"depth": 3, "width_0": 64, "width_1": 64})
