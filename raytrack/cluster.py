"""Joining or starting the Ray instance that every command runs on."""

from __future__ import annotations

import logging

import ray


def connect(address: str | None = None, *, dashboard: bool = False) -> None:
    """Use the Ray instance this process already has, join ``address``, or start a local one.

    ``address`` is ``auto`` (the cluster this node belongs to) or ``HOST:PORT``; ``None``
    starts a local instance with every CPU and GPU of this machine. Ray 2.60 enables token
    authentication by default (a token under ~/.ray), so other users cannot submit work.
    """
    if ray.is_initialized():
        return
    if address is None:
        ray.init(include_dashboard=dashboard, logging_level=logging.WARNING)
    else:
        ray.init(address=address, logging_level=logging.WARNING)
