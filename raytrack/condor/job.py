"""What an HTCondor job was given and told: its slot, its ports, Ray's temp dir, the bootstrap's
settings (``RAYTRACK_*``) and the cluster directory that the jobs of one cluster share."""

from __future__ import annotations

import math
import os
import secrets
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

from raytrack.files import write_bytes_atomic

DEFAULT_DRIVER = "python -m raytrack.tune --search presets --address auto"
#: Default of RAYTRACK_POLL_SECONDS: how often the head counts the workers that joined and a
#: worker checks on its head (a worker looks for the head's address five times as often).
POLL_SECONDS = 5.0
#: Set to 1 to run the bootstrap outside an HTCondor job on purpose (one machine, a test): its
#: defaults then stand in for what a job's environment tells it.
OUTSIDE_CONDOR = "RAYTRACK_OUTSIDE_CONDOR"
SOCKET_PATH_LIMIT = 107
RAY_SOCKET_SUFFIX = 70  # session_<date>_<pid>/sockets/plasma_store and the like


@dataclass(frozen=True)
class Slot:
    """What HTCondor gave this job: never the whole host."""

    cpus: int
    memory_bytes: int | None
    gpus: int
    scratch: Path


def read_ad(path: str | None) -> dict[str, str]:
    """A ClassAd file (``Name = value`` lines) as a dict with lower-case keys."""
    if not path or not Path(path).exists():
        return {}
    ad = {}
    for line in Path(path).read_text().splitlines():
        if "=" in line:
            key, _, value = line.partition("=")
            ad[key.strip().lower()] = value.strip().strip('"')
    return ad


def _number(ad: dict[str, str], *keys: str) -> float | None:
    for key in keys:
        try:
            return float(ad[key.lower()])
        except (KeyError, ValueError):
            continue
    return None


def slot_from_env(env: dict[str, str]) -> Slot:
    machine = read_ad(env.get("_CONDOR_MACHINE_AD"))
    job = read_ad(env.get("_CONDOR_JOB_AD"))
    cpus = _number(machine, "Cpus") or _number(job, "RequestCpus") or 1
    memory_mb = _number(machine, "Memory") or _number(job, "RequestMemory")
    assigned = env.get("_CONDOR_AssignedGPUs")
    if assigned is not None:  # the authoritative list, possibly empty
        gpus = len([g for g in assigned.replace(" ", ",").split(",") if g])
    else:
        gpus = int(_number(machine, "GPUs") or _number(job, "RequestGpus") or 0)
    scratch = Path(env.get("_CONDOR_SCRATCH_DIR") or tempfile.gettempdir())
    memory = int(memory_mb * 1024 * 1024) if memory_mb else None
    return Slot(cpus=int(cpus), memory_bytes=memory, gpus=gpus, scratch=scratch)


PORT_FLAGS = (
    "node-manager-port", "object-manager-port", "dashboard-agent-grpc-port",
    "dashboard-agent-listen-port", "metrics-export-port", "runtime-env-agent-port",
)  # fmt: skip
HEAD_PORT_FLAGS = ("port", "dashboard-port", "ray-client-server-port")
WORKER_PORTS = 64  # per node, for Ray's worker processes
DASHBOARD_PORT = 8265


def plan_ports(env: dict[str, str], head: bool) -> dict[str, int]:
    """``ray start`` port options (name -> port): from the site's range when it sets one,
    otherwise free ports (fixed defaults such as 8265 or 52365 would collide when two slots of
    the cluster share a host)."""
    names = (HEAD_PORT_FLAGS if head else ()) + PORT_FLAGS
    low, high = env.get("_CONDOR_LOWPORT"), env.get("_CONDOR_HIGHPORT")
    if not (low and high):
        ports = {name: _free_port() for name in names}
        if head and _port_is_free(DASHBOARD_PORT):  # the port the README's tunnel uses
            ports["dashboard-port"] = DASHBOARD_PORT
        return ports
    low, high = int(low), int(high)
    if high - low + 1 < len(names) + WORKER_PORTS:
        raise SystemExit(
            f"_CONDOR_LOWPORT..HIGHPORT ({low}-{high}) is too narrow for Ray: "
            f"{len(names) + WORKER_PORTS} ports needed"
        )
    ports = dict(zip(names, range(low, low + len(names)), strict=True))
    ports["min-worker-port"] = low + len(names)
    ports["max-worker-port"] = low + len(names) + WORKER_PORTS - 1
    return ports


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def short_temp_dir(slot: Slot, cluster_id: str, role: str) -> Path:
    """Ray's temp dir: in the job's scratch when its path is short enough, else under /tmp."""
    if len(str(slot.scratch)) + len("/ray") + RAY_SOCKET_SUFFIX < SOCKET_PATH_LIMIT:
        base = slot.scratch / "ray"
        base.mkdir(parents=True, exist_ok=True)
        return base
    return Path(tempfile.mkdtemp(prefix=f"rt{cluster_id}{role[0]}", dir="/tmp"))


@dataclass(frozen=True)
class ClusterDir:
    path: Path

    @property
    def token(self) -> Path:
        return self.path / "token"

    @property
    def address(self) -> Path:
        return self.path / "address"

    @property
    def finished(self) -> Path:
        return self.path / "finished"

    def create_token(self) -> None:
        """A random secret readable by this user only (kept when a head job runs again)."""
        self.path.mkdir(parents=True, exist_ok=True)
        if not self.token.exists():
            fd = os.open(self.token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32))
        os.chmod(self.token, 0o600)

    def publish(self, address: str) -> None:
        self.finished.unlink(missing_ok=True)
        write_bytes_atomic(self.address, address.encode())

    def finish(self, how: str) -> None:
        self.address.unlink(missing_ok=True)
        write_bytes_atomic(self.finished, how.encode())

    def finished_normally(self) -> bool | None:
        """True: ended with the driver; False: ended by a signal; None: not finished."""
        if not self.finished.exists():
            return None
        return self.finished.read_text().startswith("exit")


def cluster_id_from_env(env: dict[str, str]) -> str | None:
    """RAYTRACK_CLUSTER_ID, else the job ad's ClusterId; None outside a job."""
    job_ad = read_ad(env.get("_CONDOR_JOB_AD")).get("clusterid")
    return env.get("RAYTRACK_CLUSTER_ID") or env.get("_CONDOR_CLUSTER_ID") or job_ad


def missing_condor_environment(env: dict[str, str], role: str) -> list[str]:
    """What an HTCondor job's environment tells the bootstrap's ``role`` (head or worker) and
    ``env`` does not, each with what it would take instead; empty inside a job (or with
    :data:`OUTSIDE_CONDOR` set, for a run outside HTCondor on purpose)."""
    if env.get(OUTSIDE_CONDOR, "").strip() not in ("", "0"):
        return []
    missing = []
    if not (read_ad(env.get("_CONDOR_MACHINE_AD")) or read_ad(env.get("_CONDOR_JOB_AD"))):
        missing.append("_CONDOR_MACHINE_AD or _CONDOR_JOB_AD (the slot's CPUs, memory and GPUs; "
                       "else 1 CPU)")  # fmt: skip
    if cluster_id_from_env(env) is None:
        missing.append("RAYTRACK_CLUSTER_ID (else the cluster 'local')")
    if role == "head" and not env.get("RAYTRACK_DRIVER"):
        missing.append(f"RAYTRACK_DRIVER (else {DEFAULT_DRIVER!r}, on the default dataset)")
    return missing


def settings_from_env(env: dict[str, str]) -> dict[str, str]:
    cluster_id = cluster_id_from_env(env) or "local"
    start = Path.cwd()
    return {
        "cluster_id": cluster_id,
        "cluster_dir": str(
            start / env.get("RAYTRACK_CLUSTER_DIR", f"condor/clusters/{cluster_id}")
        ),
        "storage": str(start / env.get("RAYTRACK_STORAGE", "runs")),
        "driver": env.get("RAYTRACK_DRIVER") or DEFAULT_DRIVER,
        "min_workers": env.get("RAYTRACK_MIN_WORKERS", "0"),
        "wait_timeout": env.get("RAYTRACK_WAIT_TIMEOUT", "900"),
        "poll_seconds": str(poll_seconds(env)),
        "node_ip": env.get("RAYTRACK_NODE_IP") or socket.gethostbyname(socket.gethostname()),
    }


def poll_seconds(env: dict[str, str]) -> float:
    """RAYTRACK_POLL_SECONDS (default :data:`POLL_SECONDS`): a positive number of seconds."""
    value = env.get("RAYTRACK_POLL_SECONDS", "")
    if not value:
        return POLL_SECONDS
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not seconds > 0 or math.isinf(seconds):
        raise SystemExit(f"RAYTRACK_POLL_SECONDS={value!r}: expected a positive number of seconds")
    return seconds
