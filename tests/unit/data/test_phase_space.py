"""Phase-space files: the built-ins match docs/physics.md section 4, bad files get errors naming
file and key."""

from __future__ import annotations

import numpy as np
import pytest

from raytrack.data.phase_space import PhaseSpaceError, load_phase_space


def test_default_phase_space_matches_docs_physics_section_4():
    sample = load_phase_space("default").sample(np.random.default_rng(0), 20000)
    assert np.abs(sample["x"]).max() <= 900 and np.abs(sample["y"]).max() <= 750
    assert np.abs(sample["tx"]).max() <= 0.3 and np.abs(sample["ty"]).max() <= 0.25
    p_gev = 1 / np.abs(sample["qop"]) / 1000
    assert p_gev.min() >= 2.0 and p_gev.max() <= 100.0
    assert abs(np.mean(np.log(p_gev)) - np.log(np.sqrt(200.0))) < 0.05  # log-uniform
    assert abs(np.mean(sample["qop"] > 0) - 0.5) < 0.02  # both charges
    dz = sample["z_end"] - sample["z_start"]
    assert np.abs(dz).min() >= 25 and np.abs(dz).max() <= 10000
    assert abs(np.mean(dz > 0) - 0.5) < 0.02  # forward and backward legs
    for key in ("z_start", "z_end"):
        assert sample[key].min() >= 0 and sample[key].max() <= 14000


def test_classic_phase_space_has_the_fixed_leg():
    sample = load_phase_space("classic").sample(np.random.default_rng(0), 100)
    assert (sample["z_start"] == 3000).all() and (sample["z_end"] == 7000).all()


def test_sampling_is_a_function_of_the_generator_state():
    space = load_phase_space("default")
    a = space.sample(np.random.default_rng([1, 2]), 50)
    b = space.sample(np.random.default_rng([1, 2]), 50)
    assert all(np.array_equal(a[k], b[k]) for k in a)


BASE = """
name = "mine"
[x]
distribution = "uniform"
low = -10.0
high = 10.0
[y]
distribution = "uniform"
low = -10.0
high = 10.0
[tx]
distribution = "uniform"
low = -0.1
high = 0.1
[ty]
distribution = "uniform"
low = -0.1
high = 0.1
[p_gev]
distribution = "log-uniform"
low = 5.0
high = 50.0
[charge]
values = [-1, 1]
[leg]
z_start = 0.0
z_end = 1000.0
"""


def test_a_user_file_loads(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(BASE)
    space = load_phase_space(str(path))
    assert space.name == "mine" and space.fixed_leg


@pytest.mark.parametrize(
    "change,message",
    [
        (('distribution = "log-uniform"', 'distribution = "gaussian"'), r"p_gev\.distribution"),
        (("low = 5.0", "low = -5.0"), "p_gev"),
        (("low = -10.0\nhigh = 10.0\n[y]", "low = 10.0\nhigh = -10.0\n[y]"), "'x'.*low < high"),
        (("values = [-1, 1]", "values = [2]"), r"charge\.values"),
        (('name = "mine"', 'name = "mine"\nbogus = 1'), "bogus"),
        (("z_start = 0.0\nz_end = 1000.0", "z_min = 0.0"), r"z_max"),
        (("high = 0.1\n[ty]", 'high = "a lot"\n[ty]'), r"tx\.high"),
        (("[leg]\nz_start = 0.0\nz_end = 1000.0", ""), "'leg' is missing"),
    ],
)
def test_bad_files_get_errors_naming_file_and_key(tmp_path, change, message):
    path = tmp_path / "bad.toml"
    assert change[0] in BASE
    path.write_text(BASE.replace(change[0], change[1], 1))
    with pytest.raises(PhaseSpaceError, match=message) as info:
        load_phase_space(str(path))
    assert str(path) in str(info.value)


def test_not_toml_and_unknown_names(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("name = [unclosed")
    with pytest.raises(PhaseSpaceError, match="not valid TOML"):
        load_phase_space(str(path))
    with pytest.raises(PhaseSpaceError, match="unknown phase space 'nonsense'.*classic"):
        load_phase_space("nonsense")
    with pytest.raises(PhaseSpaceError, match="not found"):
        load_phase_space(str(tmp_path / "missing.toml"))
