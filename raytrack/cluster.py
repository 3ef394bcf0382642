"""Joining or starting the Ray instance that every command runs on."""

from __future__ import annotations

import logging

import ray


def connect(address: str | None = None, *, dashboard: bool = False) -> None:
    """Use the Ray instance this process already has, join ``address``, or start a local one.

    ``address`` is ``auto`` (the cluster this node belongs to) or ``HOST:PORT``; ``None``
    starts a local instance with every CPU and GPU of this machine.
    """
    if ray.is_initialized():
        return
    ray.init(
        address=address,
        include_dashboard=dashboard if address is None else None,
        logging_level=logging.WARNING,
        log_to_driver=True,
    )
