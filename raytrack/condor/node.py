"""One node's Ray processes: started with ``ray start`` on the slot's resources and ports, tagged,
and stopped by their tag (never another slot's)."""

from __future__ import annotations

import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from raytrack.cluster import (
    NODE_TAG,
    START_ATTEMPTS,
    STOP_GRACE_SECONDS,
    RayStartError,
    stop_tagged,
    tagged_processes,
)
from raytrack.condor.job import ClusterDir, Slot, plan_ports

#: This node's Ray processes: those that carry its tag (``RAYTRACK_NODE_TAG``, see ray_env).
node_processes = tagged_processes


def log(message: str) -> None:
    print(f"[raytrack-bootstrap {time.strftime('%H:%M:%S')}] {message}", flush=True)


def ray_env(env: dict[str, str], cluster: ClusterDir, tag: str) -> dict[str, str]:
    """The environment of this node's Ray processes: token authentication with the cluster's
    token, and a tag that every process of this node inherits (see :func:`stop_node`)."""
    out = dict(env)
    out.pop("RAY_AUTH_TOKEN", None)
    out.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(cluster.token),
        RAY_USAGE_STATS_ENABLED="0",
        **{NODE_TAG: tag},
    )
    return out


def node_tag(cluster_id: str, pid: int) -> str:
    return f"{cluster_id}-{pid}"


def ray_start(
    role: str,
    slot: Slot,
    settings: dict[str, str],
    env: dict[str, str],
    temp_dir: Path,
    head_address: str | None = None,
) -> dict[str, int]:
    """Start this node's Ray processes (they run on after ``ray start`` returns); its ports."""
    ports = plan_ports(env, head=role == "head")
    command = [
        sys.executable, "-m", "ray.scripts.scripts", "start",
        f"--num-cpus={slot.cpus}", f"--num-gpus={slot.gpus}",
        f"--node-ip-address={settings['node_ip']}", f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
        *(f"--{name}={port}" for name, port in ports.items()),
    ]  # fmt: skip
    if slot.memory_bytes:
        # Ray's share of the slot: 70 % for tasks, 25 % for the object store.
        command += [
            f"--memory={int(slot.memory_bytes * 0.7)}",
            f"--object-store-memory={int(slot.memory_bytes * 0.25)}",
        ]
    if role == "head":
        command += ["--head", "--include-dashboard=true", "--dashboard-host=127.0.0.1"]
    else:
        command += [f"--address={head_address}"]
    log(" ".join(shlex.quote(c) for c in command))
    for attempt in range(1, START_ATTEMPTS + 1):
        if subprocess.run(command, env=env).returncode == 0:
            return ports
        stop_tagged(env[NODE_TAG])  # what the failed start left
        if attempt < START_ATTEMPTS:
            log("ray start failed (its output above): starting again")
    raise RayStartError(f"ray start failed {START_ATTEMPTS} times (its output above)")


def stop_node(tag: str, temp_dir: Path, grace: float = STOP_GRACE_SECONDS) -> None:
    """Stop this node's Ray processes (those carrying its tag), then remove its temp dir."""
    stop_tagged(tag, grace)
    shutil.rmtree(temp_dir, ignore_errors=True)


def reachable(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=3):
            return True
    except OSError:
        return False
