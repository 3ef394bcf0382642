"""Joining or starting the Ray instance that every command runs on."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import ray

DEFAULT_DASHBOARD_PORT = 8265
#: Ports tried after 8265 when it is taken (a shared login node runs several dashboards).
DASHBOARD_PORTS_TRIED = 50
#: Every process of a Ray node that raytrack starts inherits this variable, with a value of its
#: own: the node's processes are found, and stopped, by it (never another instance's).
NODE_TAG = "RAYTRACK_NODE_TAG"
#: Local starts tried: Ray 2.60 gives a new node's raylet 30 s to register with the GCS, a wait
#: it hard-codes (``raylet_start_wait_time_s`` in ray/_private/node.py), and a machine busy with
#: other work may need longer; a second start finds Ray's files in the page cache.
START_ATTEMPTS = 2
#: SIGTERM to SIGKILL for the processes of a node that is stopped.
STOP_GRACE_SECONDS = 10.0
#: Ray's log records in a file (as its console handler writes them, with the date).
RAY_LOG_FORMAT = "%(asctime)s %(levelname)s %(filename)s:%(lineno)d -- %(message)s"
#: The name of the handler through which Ray prints its workers' forwarded output.
FORWARDED = "ray_print_logs"
#: Of a Ray instance that did not start: where its session's logs are, in Ray's message.
_SESSION_LOGS = re.compile(r"(/\S*session_[\w.-]+/logs)")


class RayStartError(ValueError):
    """Ray did not start (or join), in one line; every process the start began is stopped."""


def connect(
    address: str | None = None,
    *,
    dashboard_host: str | None = None,
    dashboard_port: int | None = None,
    log: str | Path | None = None,
) -> str | None:
    """Use the Ray instance this process already has, join ``address``, or start a local one.

    ``address`` is ``auto`` (the cluster this node belongs to) or ``HOST:PORT``; ``None``
    starts a local instance with every CPU and GPU of this machine, with a dashboard when
    ``dashboard_host`` is given (bind it to 127.0.0.1 unless you mean to expose it), on
    ``dashboard_port`` or else on the first free port from 8265 on. Ray 2.60 enables token
    authentication for a local instance by default (see :func:`token_location`), so other users
    cannot submit work. Returns the dashboard's URL when this call started or joined Ray and
    there is one.

    What Ray writes on the console while it starts goes to ``log`` (appended; default: a
    temporary file, removed once Ray is up). A start that fails raises :class:`RayStartError`,
    naming the cause and that file, once every process it began is stopped.
    """
    if ray.is_initialized():
        return None
    if address is not None:
        options = {"address": address}
    elif dashboard_host is not None:
        options = {
            "include_dashboard": True,
            "dashboard_host": dashboard_host,
            "dashboard_port": choose_dashboard_port(dashboard_host, dashboard_port),
        }
    else:
        options = {"include_dashboard": False}
    kept = log is not None
    if log is None:
        handle, log = tempfile.mkstemp(prefix="raytrack-ray-start-", suffix=".log")
        os.close(handle)
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            context = _start(options, log)
            break
        except RayStartError as err:
            if address is not None or attempt == START_ATTEMPTS or not _timed_out(err):
                raise RayStartError(f"{err}; Ray's output: {log}") from None
            print(f"notice: {err}; starting Ray again", file=sys.stderr, flush=True)
    if not kept:
        log.unlink(missing_ok=True)
    url = context.dashboard_url
    return f"http://{url}" if url else None


def _start(options: dict, log: Path):
    """``ray.init(**options)``, its console output appended to ``log``; a failure stops every
    process the start began and raises :class:`RayStartError` naming its cause."""
    tag = f"start-{os.getpid()}-{secrets.token_hex(4)}"
    saved = os.environ.get(NODE_TAG)
    os.environ[NODE_TAG] = tag  # the node's processes inherit it as they start
    try:
        with console_to(log):
            return ray.init(**options, logging_level=logging.WARNING)
    except BaseException as err:
        with contextlib.suppress(Exception):
            ray.shutdown()
        stop_tagged(tag)
        # Ctrl-C while Ray started; an AssertionError is a bug, whose traceback tells where
        if not isinstance(err, Exception) or isinstance(err, AssertionError):
            raise
        raise RayStartError(_start_failure(err, "address" in options)) from None
    finally:
        if saved is None:
            os.environ.pop(NODE_TAG, None)
        else:
            os.environ[NODE_TAG] = saved


def _start_failure(err: Exception, joining: bool) -> str:
    """One line: what Ray's exception says went wrong, and where its session's logs are."""
    message = str(err).strip()
    cause = message.splitlines()[0].strip() if message else type(err).__name__
    cause = re.sub(r"\s*Last \d+ lines of error files:\s*$", "", cause)
    failed_check = re.search(r"Check failed: \S*\s*(.+)", message)
    if failed_check:  # a Ray process's own words, after its bug-report boilerplate
        sentences = re.split(r"(?<=\.)\s+", failed_check.group(1).strip())
        cause = f"{cause.rstrip('.')}: {' '.join(sentences[:2])}"
    logs = _SESSION_LOGS.search(message)
    where = f" (Ray's logs: {logs.group(1)})" if logs else ""
    what = "Ray did not join the cluster" if joining else "Ray did not start"
    return f"{what}: {cause}{where}"


def _timed_out(err: RayStartError) -> bool:
    return "timed out during startup" in str(err)


@contextlib.contextmanager
def console_to(path: Path) -> Iterator[None]:
    """While Ray starts: what it writes on the console (its Python loggers, and its C++ core's
    lines written straight to the standard error) goes to ``path``, appended."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(path, "a") as out:
            os.dup2(out.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
    finally:
        os.close(saved)


@contextlib.contextmanager
def ray_output_to(path: Path) -> Iterator[None]:
    """While a command runs on Ray: Ray's log records in this process (its ``ray`` loggers,
    such as Tune's warnings of a slow step) go to ``path`` (appended) instead of the console,
    and so does what Ray's workers and raylets print, which Ray forwards to the driver's
    console: from then on, as those lines arrive late (the last of a search's workers' lines
    come after it ended), until another call sends them elsewhere."""
    ray_logger = logging.getLogger("ray")
    with open(path, "a", buffering=1) as out:
        handler = logging.StreamHandler(out)
        handler.setFormatter(logging.Formatter(RAY_LOG_FORMAT))
        saved_handlers = ray_logger.handlers[:]
        ray_logger.handlers = [handler]
        forward_worker_output_to(path)
        try:
            yield
        finally:
            ray_logger.handlers = saved_handlers


def forward_worker_output_to(path: Path) -> None:
    """What Ray forwards of its workers' and raylets' output to this driver goes to ``path``
    (appended) rather than the console, where Ray forwards it at all (``log_to_driver``, Ray's
    default)."""
    # Ray's private API: the dispatcher of forwarded output has no public handle in Ray 2.60
    from ray._private import ray_logging, worker

    def append(data: dict) -> None:
        with open(path, "a") as out:
            worker.print_worker_logs(data, out)

    dispatcher = ray_logging.global_worker_stdstream_dispatcher
    if any(name == FORWARDED for name, _ in dispatcher.handlers):
        dispatcher.remove_handler(FORWARDED)
        dispatcher.add_handler(FORWARDED, append)


def tagged_processes(tag: str, variable: str = NODE_TAG) -> list[int]:
    """PIDs of the processes carrying ``variable=tag`` in their environment (by default
    ``RAYTRACK_NODE_TAG=tag``, see :data:`NODE_TAG`), this process aside.

    ``ray stop`` would stop every Ray process of the user on the host, other instances'
    included; the tag limits a stop to one node.
    """
    marker = f"{variable}={tag}".encode()
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


def stop_tagged(tag: str, grace: float = STOP_GRACE_SECONDS) -> None:
    """Stop the processes tagged ``tag``: SIGTERM in ``ray stop``'s order, within ``grace`` s in
    all (the raylet, the node's other processes, the GCS server last: their shutdown talks to
    it; all at once, the GCS server hangs in its own shutdown until the SIGKILL), then SIGKILL
    for what is left."""
    deadline = time.time() + grace
    for group in range(3):
        pids = [pid for pid in tagged_processes(tag) if _stop_group(pid) == group]
        _signal_and_wait(tag, pids, signal.SIGTERM, deadline)
    _signal_and_wait(tag, tagged_processes(tag), signal.SIGKILL, time.time() + grace)


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
    while set(pids) & set(tagged_processes(tag)) and time.time() < deadline:
        time.sleep(0.1)


def choose_dashboard_port(host: str, pinned: int | None = None) -> int:
    """``pinned`` if it is free on ``host``, else the first free port from 8265 on.

    Checked here rather than left to Ray, whose refusal of a busy port names its own API
    (``ray.init(dashboard_port=...)``) instead of the option the user typed.
    """
    if pinned is not None:
        if not port_is_free(host, pinned):
            raise ValueError(
                f"--dashboard-port {pinned}: {host}:{pinned} is in use by another process; "
                "choose another port, or leave out --dashboard-port to take the next free one"
            )
        return pinned
    last = DEFAULT_DASHBOARD_PORT + DASHBOARD_PORTS_TRIED - 1
    for port in range(DEFAULT_DASHBOARD_PORT, last + 1):
        if port_is_free(host, port):
            return port
    raise ValueError(
        f"no free port for the Ray dashboard on {host} between {DEFAULT_DASHBOARD_PORT} and "
        f"{last}; choose one with --dashboard-port"
    )


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could listen on ``host:port`` now (the test Ray itself makes)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As Ray's dashboard does: a port left in TIME_WAIT by a finished server is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def token_location() -> str | None:
    """Where the token of Ray's token authentication is, for the dashboard's sign-in; ``None``
    when this process's Ray does not use token authentication.

    Ray reads the token from ``RAY_AUTH_TOKEN``, else the file ``RAY_AUTH_TOKEN_PATH``, else
    ``~/.ray/auth_token`` (created by the first local ``ray.init``), and marks token mode in
    ``RAY_AUTH_MODE`` of the process that connected.
    """
    if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
        return None
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "the RAY_AUTH_TOKEN environment variable"
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token"
    return str(path)


def dashboard_notice(url: str | None) -> str:
    """The lines printed at start: the dashboard URL and, with token authentication, where
    the token is that the dashboard asks for."""
    if not url:
        return "Ray dashboard: not running"
    token = token_location()
    if token is None:
        return f"Ray dashboard: {url}"
    return (
        f"Ray dashboard: {url}\n"
        f"  it asks for Ray's authentication token: the token is in {token} "
        "(`ray get-auth-token` prints it)"
    )
