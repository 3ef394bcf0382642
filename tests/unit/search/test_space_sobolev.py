"""A search space may sample the Jacobian-matching weight (raytrack.search.space)."""

from __future__ import annotations

from pathlib import Path

import optuna

REPO = Path(__file__).resolve().parents[3]


def test_jacobian_weight_is_a_search_space_parameter(tmp_path):
    from raytrack.search.space import load_search_space

    text = (REPO / "search_spaces" / "default.toml").read_text()
    text += '\n[params.jacobian_weight]\ntype = "float"\nlow = 1.0\nhigh = 10000.0\nlog = true\n'
    path = tmp_path / "sobolev.toml"
    path.write_text(text)
    space = load_search_space(str(path))
    study = optuna.create_study(sampler=space.sampler(seed=0))
    trial = study.ask()
    space.define_by_run(trial)
    _, train = space.to_configs(trial.params)
    assert 1.0 <= train["jacobian_weight"] <= 10000.0
