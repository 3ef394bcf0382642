"""Dataset generation on Ray Data (raytrack/data/pipeline.py): determinism, the tracks it
stores, damage, mixing, and the Jacobian columns of ``--jacobian``."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from raytrack.data import DatasetError, load
from raytrack.data.pipeline import generate_dataset
from raytrack.data.schema import (
    COLUMNS,
    INPUT_COLUMNS,
    JACOBIAN_COLUMNS,
    JACOBIAN_UNITS,
    TARGET_COLUMNS,
    UNITS,
)
from raytrack.data.shards import write_shard
from raytrack.physics import DipoleField, TrackStatus, propagate

from .datasets import quiet, shard_bytes, small_spec, spec_of


def test_same_bytes_whatever_the_number_of_workers(ray_cluster, tmp_path):
    spec = small_spec()
    one = generate_dataset(spec, tmp_path / "one", workers=1, log=quiet)
    two = generate_dataset(spec, tmp_path / "two", workers=2, log=quiet)
    assert one["complete"] and two["complete"]
    assert one["shards"] == two["shards"]
    assert shard_bytes(tmp_path / "one") == shard_bytes(tmp_path / "two")
    # And outside Ray altogether, one shard at a time in this process.
    (tmp_path / "direct").mkdir()
    direct = [write_shard(spec, i, tmp_path / "direct")["sha256"] for i in range(spec.shards)]
    assert direct == [one["shards"][spec.shard_name(i)]["sha256"] for i in range(spec.shards)]


def test_content_is_the_propagated_tracks(ray_cluster, tmp_path):
    spec = small_spec(phase_space="classic")
    manifest = generate_dataset(spec, tmp_path / "d", log=quiet)
    table = pq.read_table(tmp_path / "d" / spec.shard_name(0))
    assert table.column_names == list(COLUMNS)
    assert all(str(t) == "double" for t in table.schema.types)
    data = {name: table.column(name).to_numpy() for name in COLUMNS}
    states = np.stack([data[k] for k in ("x", "y", "tx", "ty", "qop")], axis=1)
    end, status = propagate(
        states, data["z_start"], data["z_end"], DipoleField(), return_status=True
    )
    assert (status == TrackStatus.OK).all()
    # Equal to rounding, not bitwise: a track's last bits depend on where it falls among the
    # vector lanes of its batch (docs/generate.md, "Reproducible"); 1e-9 mm is far below the
    # integrator's 1 micrometre accuracy and far above rounding.
    stored = np.stack([data[k] for k in ("x_end", "y_end", "tx_end", "ty_end")], axis=1)
    np.testing.assert_allclose(end[:, :2], stored[:, :2], rtol=0, atol=1e-9)
    np.testing.assert_allclose(end[:, 2:4], stored[:, 2:4], rtol=0, atol=1e-12)
    assert sum(r["rows"] for r in manifest["shards"].values()) == spec.samples
    assert manifest["parameters"] == {} and manifest["field"]["description"]["type"] == "dipole"
    assert manifest["phase_space"]["name"] == "classic"


def test_a_damaged_shard_is_named_and_then_regenerated(ray_cluster, tmp_path):
    spec = small_spec()
    out = tmp_path / "d"
    generate_dataset(spec, out, log=quiet)
    victim = out / spec.shard_name(1)
    original = victim.read_bytes()
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0xFF
    victim.write_bytes(bytes(damaged))
    with pytest.raises(DatasetError, match=str(victim)):
        load(out)
    messages: list[str] = []
    generate_dataset(spec, out, log=messages.append)
    assert any(str(victim) in m and "checksum" in m for m in messages)
    assert victim.read_bytes() == original
    load(out)


def test_refuses_to_mix_datasets(ray_cluster, tmp_path):
    out = tmp_path / "d"
    generate_dataset(small_spec(seed=1), out, log=quiet)
    before = shard_bytes(out)
    with pytest.raises(DatasetError, match="different dataset.*seed"):
        generate_dataset(small_spec(seed=2), out, log=quiet)
    with pytest.raises(DatasetError, match="different dataset.*phase_space"):
        generate_dataset(small_spec(seed=1, phase_space="classic"), out, log=quiet)
    assert shard_bytes(out) == before
    stranger = tmp_path / "other"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not empty"):
        generate_dataset(small_spec(), stranger, log=quiet)


def test_columns_units_and_values(jacobian_dataset, tmp_path):
    manifest = json.loads((jacobian_dataset / "manifest.json").read_text())
    assert manifest["columns"] == list(COLUMNS + JACOBIAN_COLUMNS)
    assert manifest["jacobian"] is True and manifest["identity"]["jacobian"] is True
    assert manifest["units"]["J_x_qop"] == "mm MeV" and manifest["units"]["J_tx_qop"] == "MeV"
    assert manifest["units"]["J_x_tx"] == "mm" and manifest["units"]["J_tx_x"] == "1/mm"
    assert manifest["units"]["J_x_x"] == manifest["units"]["J_tx_ty"] == "1"
    assert manifest["units"] == {**UNITS, **JACOBIAN_UNITS}
    assert len(JACOBIAN_COLUMNS) == 20 and JACOBIAN_COLUMNS[:5] == (
        "J_x_x", "J_x_y", "J_x_tx", "J_x_ty", "J_x_qop",
    )  # fmt: skip
    table = pq.read_table(jacobian_dataset / spec_of(1500, 5, True).shard_name(0))
    assert table.column_names == list(COLUMNS + JACOBIAN_COLUMNS)
    assert all(str(t) == "double" for t in table.schema.types)

    splits = load(jacobian_dataset, dtype=np.float64, jacobian=True)
    assert splits.has_jacobian
    for split in (splits.train, splits.validation, splits.test):
        assert split.jacobians.shape == (len(split), 4, 5)
        assert split.jacobians.dtype == np.float64
    test = splits.test
    inputs = test.inputs()
    end, jac = propagate(
        inputs[:, :5], inputs[:, 5], inputs[:, 6], DipoleField(), return_jacobian=True
    )
    np.testing.assert_allclose(end[:, :4], test.targets(), rtol=0, atol=1e-9)
    # Per column (d end / d one start coordinate), relative to the column's size: equal to
    # rounding (a track's last bits depend on its place among its batch's vector lanes).
    scale = np.abs(jac[:, :4, :]).max(axis=1, keepdims=True)
    assert (np.abs(test.jacobians - jac[:, :4, :]) <= 1e-9 * scale).all()
    # float32 by default, as training loads it
    single = load(jacobian_dataset, jacobian=True, splits=("test",)).test.jacobians
    assert single.dtype == np.float32
    np.testing.assert_allclose(single, test.jacobians, rtol=1e-6, atol=0)
    # Without jacobian=True the Jacobian columns are not read; the rows are the same.
    plain_load = load(jacobian_dataset, dtype=np.float64, splits=("test",)).test
    assert plain_load.jacobians is None
    np.testing.assert_array_equal(plain_load.rows, test.rows)

    # The same tracks as the dataset without the Jacobian, whose plain propagation takes longer
    # steps (raytrack.physics.propagate.MAX_STEP_MM): the end states agree to the integrator's
    # 1 micrometre and 1e-6 in slope, the start states and legs exactly.
    plain = spec_of(1500, 5, jacobian=False)
    write_shard(plain, 0, tmp_path)
    plain_table = pq.read_table(tmp_path / plain.shard_name(0))
    assert plain_table.select(list(INPUT_COLUMNS)).equals(table.select(list(INPUT_COLUMNS)))
    difference = {k: np.abs(plain_table[k].to_numpy() - table[k].to_numpy()).max()
                  for k in TARGET_COLUMNS}  # fmt: skip
    assert difference["x_end"] < 1e-3 and difference["y_end"] < 1e-3
    assert difference["tx_end"] < 1e-6 and difference["ty_end"] < 1e-6


def test_plain_and_jacobian_datasets_never_mix_and_the_loader_says_what_is_missing(
    ray_cluster, tmp_path
):
    plain, with_jacobian = spec_of(30, 3, False, seed=4), spec_of(30, 3, True, seed=4)
    # A plain dataset's identity (and so its id) is what it was before the option existed.
    assert "jacobian" not in plain.identity() and with_jacobian.identity()["jacobian"] is True
    assert plain.dataset_id != with_jacobian.dataset_id
    out = tmp_path / "plain"
    generate_dataset(plain, out, log=quiet)
    with pytest.raises(DatasetError, match="different dataset.*jacobian"):
        generate_dataset(with_jacobian, out, log=quiet)
    with pytest.raises(DatasetError, match=rf"{out}.*no Jacobian columns.*--jacobian"):
        load(out, jacobian=True)
    assert load(out).test.jacobians is None
    # A manifest written before the option (no "jacobian" key) loads as before.
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["jacobian"] is False and manifest["columns"] == list(COLUMNS)
    del manifest["jacobian"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert len(load(out).train) == 10


def test_generate_on_cuda_without_a_gpu_in_ray_is_refused(ray_cluster, tmp_path):
    import ray

    from raytrack.data import load_phase_space
    from raytrack.data.pipeline import generate_dataset
    from raytrack.data.shards import DatasetSpec
    from raytrack.physics import DipoleField

    if ray.cluster_resources().get("GPU"):
        pytest.skip("this Ray has a GPU")
    spec = DatasetSpec(30, 3, 0, load_phase_space("classic"), DipoleField(), device="cuda")
    with pytest.raises(ValueError, match="--device cuda: this Ray cluster has no GPU"):
        generate_dataset(spec, tmp_path / "d", log=lambda _: None)  # the tasks used to wait forever
