"""Joining or starting the Ray instance that every command runs on."""

from __future__ import annotations

import logging

import ray


def connect(
    address: str | None = None,
    *,
    dashboard_host: str | None = None,
    dashboard_port: int | None = None,
) -> str | None:
    """Use the Ray instance this process already has, join ``address``, or start a local one.

    ``address`` is ``auto`` (the cluster this node belongs to) or ``HOST:PORT``; ``None``
    starts a local instance with every CPU and GPU of this machine, with a dashboard when
    ``dashboard_host`` is given (bind it to 127.0.0.1 unless you mean to expose it). Ray 2.60
    enables token authentication by default (a token under ~/.ray), so other users cannot
    submit work. Returns the dashboard's URL when this call started or joined Ray and there is
    one.
    """
    if ray.is_initialized():
        return None
    if address is not None:
        context = ray.init(address=address, logging_level=logging.WARNING)
    elif dashboard_host is not None:
        context = ray.init(
            include_dashboard=True,
            dashboard_host=dashboard_host,
            dashboard_port=dashboard_port,
            logging_level=logging.WARNING,
        )
    else:
        context = ray.init(include_dashboard=False, logging_level=logging.WARNING)
    url = context.dashboard_url
    return f"http://{url}" if url else None
