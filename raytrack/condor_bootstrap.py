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
RAYTRACK_WAIT_TIMEOUT, RAYTRACK_POLL_SECONDS.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from raytrack.files import write_bytes_atomic

DEFAULT_DRIVER = "python -m raytrack.tune --search presets --address auto"
#: Default of RAYTRACK_POLL_SECONDS: how often the head counts the workers that joined and a
#: worker checks on its head (a worker looks for the head's address five times as often).
POLL_SECONDS = 5.0
HEAD_GONE_CHECKS = 3  # consecutive failed checks (15 s by default) before a worker gives up
#: SIGTERM to SIGKILL for a node's Ray processes when it stops (its raylet drains to the GCS).
STOP_GRACE_SECONDS = 10.0
SOCKET_PATH_LIMIT = 107
RAY_SOCKET_SUFFIX = 70  # session_<date>_<pid>/sockets/plasma_store and the like


def log(message: str) -> None:
    print(f"[raytrack-bootstrap {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --------------------------------------------------------------------------- the slot
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


# --------------------------------------------------------------------------- ports, temp dir
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


# --------------------------------------------------------------------------- the cluster dir
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


def settings_from_env(env: dict[str, str]) -> dict[str, str]:
    cluster_id = env.get("RAYTRACK_CLUSTER_ID") or env.get("_CONDOR_CLUSTER_ID") or "local"
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


def ray_env(env: dict[str, str], cluster: ClusterDir, tag: str) -> dict[str, str]:
    """The environment of this node's Ray processes: token authentication with the cluster's
    token, and a tag that every process of this node inherits (see :func:`stop_node`)."""
    out = dict(env)
    out.pop("RAY_AUTH_TOKEN", None)
    out.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(cluster.token),
        RAY_USAGE_STATS_ENABLED="0",
        RAYTRACK_NODE_TAG=tag,
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
    subprocess.run(command, env=env, check=True)
    return ports


def node_processes(tag: str) -> list[int]:
    """PIDs of the processes carrying ``RAYTRACK_NODE_TAG=tag``: this node's Ray processes.

    ``ray stop`` would stop every Ray process of the user on the host, other slots' included;
    the tag limits the stop to this node.
    """
    marker = f"RAYTRACK_NODE_TAG={tag}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                pids.append(int(entry.name))
        except OSError:  # gone, or not ours
            continue
    return pids


def stop_node(tag: str, temp_dir: Path, grace: float = STOP_GRACE_SECONDS) -> None:
    """Stop this node's Ray processes, then remove the temp dir: SIGTERM in ``ray stop``'s
    order, within ``grace`` s in all (the raylet, the node's other processes, the GCS server
    last: their shutdown talks to it; all at once, the GCS server hung in its own shutdown
    until the SIGKILL, 10 s a node), then SIGKILL for what is left."""
    deadline = time.time() + grace
    for group in range(3):
        pids = [pid for pid in node_processes(tag) if _stop_group(pid) == group]
        _signal_and_wait(tag, pids, signal.SIGTERM, deadline)
    _signal_and_wait(tag, node_processes(tag), signal.SIGKILL, time.time() + grace)
    shutil.rmtree(temp_dir, ignore_errors=True)


def _stop_group(pid: int) -> int:
    """0 for the raylet, 2 for the GCS server, 1 for any other process."""
    try:
        program = (Path("/proc") / str(pid) / "cmdline").read_bytes().split(b"\0")[0]
    except OSError:  # gone
        return 1
    return 0 if program.endswith(b"/raylet") else 2 if program.endswith(b"/gcs_server") else 1


def _signal_and_wait(tag: str, pids: list[int], sig: int, deadline: float) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    while set(pids) & set(node_processes(tag)) and time.time() < deadline:
        time.sleep(0.1)


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
    except TerminatedError as stop:
        log(f"signal {stop.signum}: stopping the driver and Ray")
        how = f"signal {stop.signum}"
        _stop_driver(driver)
        return 128 + stop.signum
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        cluster.finish(how)
        stop_node(tag, temp_dir)


class DriverError(ValueError):
    """RAYTRACK_DRIVER (the submit file's DRIVER) cannot run: refused before Ray starts."""


def driver_command(settings: dict[str, str]) -> str:
    """The driver; a search keeps its experiment in shared storage and resumes it if it exists
    (the head job runs again after an eviction). Raises :class:`DriverError` for a search
    command that ``python -m raytrack.tune`` would refuse."""
    command = settings["driver"]
    arguments = tune_arguments(command)
    if arguments is None:
        return command
    args = parse_tune_arguments(command, arguments)
    storage = args.storage or settings["storage"]
    name = args.name or "condor-" + settings["cluster_id"]
    if args.storage is None:
        command += f" --storage {shlex.quote(storage)}"
    if args.name is None:
        command += f" --name {shlex.quote(name)}"
    if not args.resume and (Path(storage) / name / "experiment.json").exists():
        command += " --resume"
    return command


def tune_arguments(command: str) -> list[str] | None:
    """The words after ``-m raytrack.tune`` in ``command``; None when it runs something else."""
    try:
        words = shlex.split(command)
    except ValueError as err:  # an unclosed quote: the shell would refuse it too
        raise DriverError(f"DRIVER {command!r}: {err}") from err
    for i in range(len(words) - 1):
        if words[i] == "-m" and words[i + 1] == "raytrack.tune":
            return words[i + 2 :]
    return None


def operators_after_the_search(command: str) -> list[str]:
    """The shell's operators (``|``, ``&&``, ``;``, ``>``...) after ``-m raytrack.tune`` in
    ``command``, quoted text aside. Those before it (``cd DIR &&``) are the user's business;
    after it they would take the options the head appends (``| tee log --storage ...``)."""
    lexer = shlex.shlex(command, posix=False, punctuation_chars=True)  # keeps quotes on words
    lexer.whitespace_split = True
    words = list(lexer)
    start = next(
        (i for i in range(1, len(words)) if words[i - 1 : i + 1] == ["-m", "raytrack.tune"]), 0
    )
    return [word for word in words[start:] if set(word) <= set(lexer.punctuation_chars)]


def parse_tune_arguments(command: str, arguments: list[str]) -> argparse.Namespace:
    """``arguments`` read by raytrack.tune's own parser (every spelling it accepts: --name=X,
    --stor X), with None for a --storage or --name not given."""
    from raytrack.tune import build_parser  # imports Ray Tune: only for a search driver

    if operators_after_the_search(command):
        raise DriverError(
            f"DRIVER {command!r}: a raytrack.tune driver must end with that command, without "
            "shell operators (| ; & > <) after it: the head adds --storage, --name and --resume "
            "to its end, and its output already goes to the job's log"
        )
    parser = build_parser()
    parser.set_defaults(storage=None, name=None)
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(errors):
            return parser.parse_args(arguments)
    except SystemExit:  # argparse's error (or --help): its message says what is wrong
        message = errors.getvalue().strip().splitlines()
        reason = message[-1] if message else "not a raytrack.tune command line"
        raise DriverError(f"DRIVER {command!r}: {reason}") from None


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
    except TerminatedError as stop:
        log(f"signal {stop.signum}: leaving the cluster")
        return 128 + stop.signum
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        # Without its head's GCS, a raylet's graceful exit waits for it in vain (the grace).
        stop_node(tag, temp_dir, STOP_GRACE_SECONDS if _reachable(address) else 1.0)


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
        failures = 0 if _reachable(address) else failures + 1
        if failures >= HEAD_GONE_CHECKS:
            log(f"the head at {address} is gone: leaving")
            return 1


def _reachable(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=3):
            return True
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in ("head", "worker"):
        print("usage: ray_bootstrap.sh head|worker", file=sys.stderr)
        return 2
    env = dict(os.environ)
    return run_head(env) if args[0] == "head" else run_worker(env)


if __name__ == "__main__":
    sys.exit(main())
