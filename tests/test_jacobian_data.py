"""Datasets with the transport Jacobian (python -m raytrack.generate --jacobian): columns, units,
values, identity, the loader; and evaluate's Jacobian report on a tiny run."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from raytrack.data import DatasetError, load, load_phase_space
from raytrack.data.pipeline import generate_dataset
from raytrack.data.schema import COLUMNS, JACOBIAN_COLUMNS, JACOBIAN_UNITS, UNITS
from raytrack.data.shards import DatasetSpec, write_shard
from raytrack.physics import DipoleField, propagate


def quiet(_message: str) -> None:
    pass


def spec_of(samples: int, shards: int, jacobian: bool, seed: int = 21) -> DatasetSpec:
    return DatasetSpec(
        samples=samples,
        shards=shards,
        seed=seed,
        phase_space=load_phase_space("default"),
        field=DipoleField(),
        jacobian=jacobian,
    )


@pytest.fixture(scope="module")
def jacobian_dataset(ray_cluster, tmp_path_factory):
    """1500 default-phase-space tracks with the Jacobian, 5 shards (300 test tracks)."""
    out = tmp_path_factory.mktemp("jacobian")
    generate_dataset(spec_of(1500, 5, jacobian=True), out, log=quiet)
    return out


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

    # The state columns are exactly those of the same dataset without the Jacobian.
    plain = spec_of(1500, 5, jacobian=False)
    write_shard(plain, 0, tmp_path)
    assert pq.read_table(tmp_path / plain.shard_name(0)).equals(table.select(list(COLUMNS)))


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


def test_generate_cli_option():
    from raytrack.generate import build_parser, spec_from_args

    args = build_parser().parse_args(["--samples", "10", "--out", "x", "--jacobian"])
    assert spec_from_args(args).jacobian is True
    args = build_parser().parse_args(["--samples", "10", "--out", "x"])
    assert spec_from_args(args).jacobian is False
    assert dataclasses.replace(spec_from_args(args), jacobian=True).dataset_id != (
        spec_from_args(args).dataset_id
    )
