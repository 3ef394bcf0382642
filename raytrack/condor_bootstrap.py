"""One node of a Ray cluster inside an HTCondor job (``condor/ray_bootstrap.sh head|worker``).

The jobs of one HTCondor cluster meet through a directory on the shared filesystem
(``RAYTRACK_CLUSTER_DIR``)::

    token      random secret (mode 0600); every node runs with RAY_AUTH_MODE=token
    address    HOST:PORT of the head's GCS, written atomically by the head while it is up
    finished   written by the head when it ends: "exit N" (driver's exit code) or "signal N"

Slot, not host: CPUs, memory and GPUs come from the job's machine/job ads and
``_CONDOR_AssignedGPUs``; CUDA_VISIBLE_DEVICES is left as HTCondor set it. Ports come from
``_CONDOR_LOWPORT``..``_CONDOR_HIGHPORT`` when the site sets them. Ray's temp dir is short (unix
socket paths are limited to 107 bytes) and removed at exit.

Environment knobs (defaults suit a real pool): RAYTRACK_DRIVER, RAYTRACK_MIN_WORKERS,
RAYTRACK_NODE_IP, RAYTRACK_CLUSTER_DIR, RAYTRACK_CLUSTER_ID, RAYTRACK_STORAGE,
RAYTRACK_WAIT_TIMEOUT, RAYTRACK_POLL_SECONDS. Outside an HTCondor job it refuses to start unless
RAYTRACK_OUTSIDE_CONDOR=1 (see raytrack.condor.job.missing_condor_environment).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from raytrack.cluster import RayStartError

# The parts, importable from here as they always were
from raytrack.condor.driver import (
    DriverError,
    driver_command,
)
from raytrack.condor.job import (
    OUTSIDE_CONDOR,
    ClusterDir,
    missing_condor_environment,
    settings_from_env,
    short_temp_dir,
    slot_from_env,
)
from raytrack.condor.node import (
    STOP_GRACE_SECONDS,
    log,
    node_tag,
    ray_env,
    ray_start,
    reachable,
    stop_node,
)

HEAD_GONE_CHECKS = 3  # consecutive failed checks (15 s by default) before a worker gives up


# --------------------------------------------------------------------------- head
class TerminatedError(Exception):
    def __init__(self, signum: int) -> None:
        self.signum = signum


def _raise_on_signal(signum, _frame):
    raise TerminatedError(signum)


def run_head(env: dict[str, str]) -> int:
    settings, slot = settings_from_env(env), slot_from_env(env)
    cluster = ClusterDir(Path(settings["cluster_dir"]))
    cluster.create_token()
    try:  # a DRIVER the search would refuse stops the cluster now, not after the workers came
        command = driver_command(settings)
    except DriverError as err:
        log(f"error: {err}")
        cluster.finish("exit 2")  # the workers leave, and are not queued again
        return 2
    tag = node_tag(settings["cluster_id"], os.getpid())
    env = ray_env(env, cluster, tag)
    temp_dir = short_temp_dir(slot, settings["cluster_id"], "head")
    driver = None
    how = "signal 15"
    signal.signal(signal.SIGTERM, _raise_on_signal)
    try:
        ports = ray_start("head", slot, settings, env, temp_dir)
        address = f"{settings['node_ip']}:{ports['port']}"
        cluster.publish(address)
        log(
            f"head up at {address}; slot: {slot.cpus} CPUs, {slot.gpus} GPUs; dashboard on "
            f"127.0.0.1:{ports['dashboard-port']} (see condor/README.md for the tunnel)"
        )
        _wait_for_workers(
            address,
            env,
            int(settings["min_workers"]),
            float(settings["wait_timeout"]),
            float(settings["poll_seconds"]),
        )
        log(f"driver: {command}")
        driver = subprocess.Popen(
            command, shell=True, env={**env, "RAY_ADDRESS": address}, start_new_session=True
        )
        code = driver.wait()
        how = f"exit {code}"
        log(f"driver exited with {code}")
        return code
    except RayStartError as err:  # the driver never ran: the head job ends as a failed one
        log(f"error: {err}")
        how = "exit 1"
        return 1
    except TerminatedError as stop:
        log(f"signal {stop.signum}: stopping the driver and Ray")
        how = f"signal {stop.signum}"
        _stop_driver(driver)
        return 128 + stop.signum
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        cluster.finish(how)
        stop_node(tag, temp_dir)


def _wait_for_workers(
    address: str, env: dict[str, str], wanted: int, timeout: float, poll: float
) -> None:
    if wanted <= 0:
        return
    deadline = time.time() + timeout
    while True:
        nodes = _alive_nodes(address, env)
        if nodes - 1 >= wanted:
            log(f"{nodes - 1} workers joined")
            return
        if time.time() > deadline:
            log(f"only {nodes - 1} of {wanted} workers after {timeout:.0f} s: starting anyway")
            return
        time.sleep(poll)


def _alive_nodes(address: str, env: dict[str, str]) -> int:
    code = (
        f"import ray; ray.init(address={address!r}, logging_level='ERROR'); "
        "print(sum(n['Alive'] for n in ray.nodes()))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    try:
        return int(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return 1


def _stop_driver(driver: subprocess.Popen | None) -> None:
    if driver is None or driver.poll() is not None:
        return
    os.killpg(driver.pid, signal.SIGTERM)
    try:
        driver.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(driver.pid, signal.SIGKILL)


# --------------------------------------------------------------------------- worker
def run_worker(env: dict[str, str]) -> int:
    settings, slot = settings_from_env(env), slot_from_env(env)
    cluster = ClusterDir(Path(settings["cluster_dir"]))
    poll = float(settings["poll_seconds"])
    address = _wait_for_address(cluster, float(settings["wait_timeout"]), poll)
    if address is None:
        return 0 if cluster.finished_normally() else 1
    tag = node_tag(settings["cluster_id"], os.getpid())
    env = ray_env(env, cluster, tag)
    temp_dir = short_temp_dir(slot, settings["cluster_id"], "worker")
    signal.signal(signal.SIGTERM, _raise_on_signal)
    try:
        ray_start("worker", slot, settings, env, temp_dir, head_address=address)
        log(f"joined {address} with {slot.cpus} CPUs, {slot.gpus} GPUs")
        return _watch_head(cluster, address, poll)
    except RayStartError as err:  # non-zero: HTCondor queues the worker again
        log(f"error: {err}")
        return 1
    except TerminatedError as stop:
        log(f"signal {stop.signum}: leaving the cluster")
        return 128 + stop.signum
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        # Without its head's GCS, a raylet's graceful exit waits for it in vain (the grace).
        stop_node(tag, temp_dir, STOP_GRACE_SECONDS if reachable(address) else 1.0)


def _wait_for_address(cluster: ClusterDir, timeout: float, poll: float) -> str | None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cluster.address.exists():
            return cluster.address.read_text().strip()
        if cluster.finished_normally():
            log("the cluster has already finished: nothing to join")
            return None
        time.sleep(poll / 5)
    log(
        f"no head address in {cluster.address} after {timeout:.0f} s: is the head job running? "
        "(condor_q; RAYTRACK_WAIT_TIMEOUT sets this wait)"
    )
    return None


def _watch_head(cluster: ClusterDir, address: str, poll: float) -> int:
    """Stay while the head is up; 0 when it finished normally, 1 when it vanished (requeue)."""
    failures = 0
    while True:
        time.sleep(poll)
        finished = cluster.finished_normally()
        if finished is not None:
            log("the head has finished: leaving")
            return 0 if finished else 1
        failures = 0 if reachable(address) else failures + 1
        if failures >= HEAD_GONE_CHECKS:
            log(f"the head at {address} is gone: leaving")
            return 1


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in ("head", "worker"):
        print("usage: ray_bootstrap.sh head|worker", file=sys.stderr)
        return 2
    env = dict(os.environ)
    missing = missing_condor_environment(env, args[0])
    if missing:
        print(
            f"error: ray_bootstrap.sh {args[0]} runs inside an HTCondor job (condor_submit "
            f"condor/ray_cluster.sub), and this environment lacks {'; '.join(missing)}; "
            f"set them, or {OUTSIDE_CONDOR}=1 to run outside HTCondor with those defaults",
            file=sys.stderr,
        )
        return 2
    return run_head(env) if args[0] == "head" else run_worker(env)


if __name__ == "__main__":
    sys.exit(main())
