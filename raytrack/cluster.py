"""Joining or starting the Ray instance that every command runs on."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import ray

DEFAULT_DASHBOARD_PORT = 8265
#: Ports tried after 8265 when it is taken (a shared login node runs several dashboards).
DASHBOARD_PORTS_TRIED = 50


def connect(
    address: str | None = None,
    *,
    dashboard_host: str | None = None,
    dashboard_port: int | None = None,
) -> str | None:
    """Use the Ray instance this process already has, join ``address``, or start a local one.

    ``address`` is ``auto`` (the cluster this node belongs to) or ``HOST:PORT``; ``None``
    starts a local instance with every CPU and GPU of this machine, with a dashboard when
    ``dashboard_host`` is given (bind it to 127.0.0.1 unless you mean to expose it), on
    ``dashboard_port`` or else on the first free port from 8265 on. Ray 2.60 enables token
    authentication for a local instance by default (see :func:`token_location`), so other users
    cannot submit work. Returns the dashboard's URL when this call started or joined Ray and
    there is one.
    """
    if ray.is_initialized():
        return None
    if address is not None:
        context = ray.init(address=address, logging_level=logging.WARNING)
    elif dashboard_host is not None:
        context = ray.init(
            include_dashboard=True,
            dashboard_host=dashboard_host,
            dashboard_port=choose_dashboard_port(dashboard_host, dashboard_port),
            logging_level=logging.WARNING,
        )
    else:
        context = ray.init(include_dashboard=False, logging_level=logging.WARNING)
    url = context.dashboard_url
    return f"http://{url}" if url else None


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
