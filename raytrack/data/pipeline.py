"""Generate a dataset directory with Ray Data: one task per missing shard, resumable.

The driver owns ``manifest.json`` and rewrites it (atomically) after every finished shard, so
a run killed at any point leaves a directory that the same command completes: shards recorded
with a matching checksum are kept, everything else is generated again. Because a shard's
content depends only on its spec and index, the resumed result equals an uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray

import raytrack
from raytrack.cluster import connect
from raytrack.data.manifest_field import profile_for
from raytrack.data.schema import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    DatasetError,
    dataset_columns,
    dataset_units,
    file_sha256,
    read_manifest,
)
from raytrack.data.shards import DatasetSpec, write_shard
from raytrack.files import is_temporary, temporary_target, write_json_atomic

Log = Callable[[str], None]


def generate_dataset(
    spec: DatasetSpec,
    out_dir: str | Path,
    *,
    workers: int | None = None,
    address: str | None = None,
    parameters: dict[str, Any] | None = None,
    progress: bool | None = None,
    log: Log = print,
) -> dict[str, Any]:
    """Make (or complete) the dataset ``spec`` in ``out_dir``; returns the final manifest.

    ``parameters`` (the command line, for the record) goes into the manifest as given.
    ``progress`` shows a progress bar; by default only when stderr is a terminal.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest = _open_manifest(out, spec, parameters or {})
    _check_recorded_shards(out, manifest, log)
    _remove_leftovers(out, spec)
    missing = [i for i in range(spec.shards) if spec.shard_name(i) not in manifest["shards"]]
    if missing:
        if len(missing) < spec.shards:
            log(
                f"resuming {out}: {spec.shards - len(missing)} of {spec.shards} shards already done"
            )
        _run_shard_tasks(spec, out, manifest, missing, workers, address, progress, log)
    manifest["complete"] = True
    manifest["dropped"] = _total_drops(manifest)
    write_json_atomic(out / MANIFEST_NAME, manifest)
    return manifest


def _remove_leftovers(out: Path, spec: DatasetSpec) -> None:
    """Delete the temporary files a killed run of this dataset left; nothing else."""
    ours = {MANIFEST_NAME} | {spec.shard_name(i) for i in range(spec.shards)}
    for path in out.iterdir():
        if temporary_target(path) in ours:
            path.unlink(missing_ok=True)


def _new_manifest(spec: DatasetSpec, parameters: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": "raytrack-dataset",
        "format_version": FORMAT_VERSION,
        "raytrack_version": raytrack.__version__,
        "dataset_id": spec.dataset_id,
        "identity": spec.identity(),
        "parameters": parameters,
        "phase_space": {"name": spec.phase_space.name, "definition": spec.phase_space.source},
        "field": {
            "description": spec.field.describe(),
            "hash": spec.field.fingerprint(),
            # The models' physics base reads this (raytrack.data.manifest_field); not part of
            # the identity.
            "axis_profile": profile_for(spec.field, spec.phase_space).to_dict(),
        },
        "columns": list(dataset_columns(spec.jacobian)),
        "units": dataset_units(spec.jacobian),
        # The transport Jacobian's 20 columns J_<out>_<in> (python -m raytrack.generate
        # --jacobian); also in the identity, so a dataset with them has another id.
        "jacobian": spec.jacobian,
        "shards": {},
        "complete": False,
        "dropped": {},
    }


def _open_manifest(out: Path, spec: DatasetSpec, parameters: dict[str, Any]) -> dict[str, Any]:
    """The manifest to continue from; refuses a directory that holds anything else."""
    manifest = read_manifest(out)
    if manifest is None:
        strangers = sorted(p.name for p in out.iterdir() if not is_temporary(p))
        if strangers:
            raise DatasetError(
                f"{out}: not empty and has no {MANIFEST_NAME} (found {strangers[:3]}): "
                "choose a new or empty directory"
            )
        manifest = _new_manifest(spec, parameters)
        write_json_atomic(out / MANIFEST_NAME, manifest)
        return manifest
    if manifest.get("dataset_id") != spec.dataset_id:
        differs = _differences(manifest.get("identity", {}), spec.identity())
        raise DatasetError(
            f"{out / MANIFEST_NAME}: this directory holds a different dataset "
            f"(differs in: {', '.join(differs) or 'dataset_id'}); refusing to mix datasets: "
            "choose another directory, or the parameters it was made with to complete it"
        )
    manifest["parameters"] = parameters
    return manifest


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return sorted(
        k
        for k in set(old) | set(new)
        if json.dumps(old.get(k), sort_keys=True) != json.dumps(new.get(k), sort_keys=True)
    )


def _check_recorded_shards(out: Path, manifest: dict[str, Any], log: Log) -> None:
    """Forget (and report) recorded shards that are missing or whose checksum does not match."""
    for name, record in list(manifest["shards"].items()):
        path = out / name
        if not path.exists():
            problem = "is missing"
        elif file_sha256(path) != record["sha256"]:
            problem = "does not match its checksum in the manifest"
        else:
            continue
        log(f"warning: shard {path} {problem}; generating it again")
        del manifest["shards"][name]
    manifest["complete"] = False
    write_json_atomic(out / MANIFEST_NAME, manifest)


def _run_shard_tasks(spec, out, manifest, missing, workers, address, progress, log) -> None:
    connect(address)
    resources = {"num_gpus": 1} if spec.device.startswith("cuda") else {"num_cpus": 1}
    available = ray.cluster_resources().get("GPU" if "num_gpus" in resources else "CPU", 0)
    if available == 0 and "num_gpus" in resources:  # the tasks would wait for a GPU forever
        raise ValueError(f"--device {spec.device}: this Ray cluster has no GPU; use --device cpu")
    workers = max(1, int(workers or available))
    log(
        f"generating {len(missing)} shards of {spec.samples} tracks in {out} "
        f"with {workers} parallel tasks"
    )
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # ours below counts tracks, not blocks
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    spec_ref = ray.put(spec)
    directory = str(out.resolve())

    def make_shard(row: dict[str, Any]) -> dict[str, Any]:
        record = write_shard(ray.get(spec_ref), int(row["index"]), Path(directory))
        return {"record": json.dumps(record)}

    tasks = ray.data.from_items([{"index": i} for i in missing], override_num_blocks=len(missing))
    results = tasks.map(make_shard, compute=ray.data.TaskPoolStrategy(size=workers), **resources)
    with _progress_bar(spec, manifest, progress) as bar:
        for row in results.iter_rows():
            record = json.loads(row["record"])
            manifest["shards"][record.pop("file")] = record
            write_json_atomic(out / MANIFEST_NAME, manifest)
            bar.update(record["rows"])


def _progress_bar(spec: DatasetSpec, manifest: dict[str, Any], enabled: bool | None):
    from tqdm import tqdm

    done = sum(r["rows"] for r in manifest["shards"].values())
    return tqdm(
        total=spec.samples,
        initial=done,
        unit="track",
        unit_scale=True,
        desc="shards",
        disable=not (sys.stderr.isatty() if enabled is None else enabled),
    )


def _total_drops(manifest: dict[str, Any]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for record in manifest["shards"].values():
        total.update(record["dropped"])
    return dict(sorted(total.items()))
