"""What a search's trials ask of the Ray cluster: the notice printed at start, and the check that
one node can run a trial (Ray Tune would otherwise wait for one forever)."""

from __future__ import annotations

import math
import time

import ray

from raytrack.search.experiment_options import ExperimentOptions


def describe_resources(options: ExperimentOptions) -> str:
    """The notice printed at start: what a trial gets and how many run at once."""
    total = ray.cluster_resources()
    cpus, gpus = total.get("CPU", 0), total.get("GPU", 0)
    slots = math.floor(cpus / options.cpus_per_trial)
    if options.gpus_per_trial:
        slots = min(slots, math.floor(gpus / options.gpus_per_trial))
    where = (
        f"{options.gpus_per_trial:g} GPU + {options.cpus_per_trial:g} CPU per trial"
        if options.gpus_per_trial
        else f"{options.cpus_per_trial:g} CPU per trial"
    )
    return f"Ray sees {cpus:g} CPUs and {gpus:g} GPUs; {where}; up to {slots} trials at once"


def check_trials_fit(
    options: ExperimentOptions, wait_s: float = 0.0, poll_s: float = 5.0, log=print
) -> None:
    """Raise ``ValueError`` naming the option at fault unless one node of the Ray cluster has
    the CPUs and GPUs of a trial; Ray Tune would otherwise wait for them forever.

    ``wait_s`` > 0 (a joined cluster, where nodes may still be arriving) waits that long for
    such a node, saying so, before giving up.
    """
    deadline = time.monotonic() + wait_s
    waiting = False
    while (problem := _unfit_trial(options)) is not None:
        if time.monotonic() >= deadline:
            waited = f" after waiting {wait_s:.0f} s for nodes to join" if waiting else ""
            raise ValueError(f"{problem}{waited}")
        if not waiting:
            log(f"waiting up to {wait_s:.0f} s for a node that fits a trial: {problem}")
            waiting = True
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))


def _unfit_trial(options: ExperimentOptions) -> str | None:
    """Why no live node can run a trial, or ``None`` when one can."""
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    gpus = max((node.get("GPU", 0) for node in nodes), default=0)
    cpus = max((node.get("CPU", 0) for node in nodes), default=0)
    if any(
        node.get("CPU", 0) >= options.cpus_per_trial
        and node.get("GPU", 0) >= options.gpus_per_trial
        for node in nodes
    ):
        return None
    if options.gpus_per_trial > gpus:
        have = "no GPU" if gpus == 0 else f"at most {gpus:g} GPUs on a node"
        advice = "--gpus-per-trial 0 trains on CPUs" if gpus == 0 else "lower --gpus-per-trial"
        return f"--gpus-per-trial {options.gpus_per_trial:g}: this Ray cluster has {have}; {advice}"
    if options.cpus_per_trial > cpus:
        return (
            f"--cpus-per-trial {options.cpus_per_trial:g}: no node of this Ray cluster has that "
            f"many CPUs (at most {cpus:g}); lower --cpus-per-trial"
        )
    return (
        f"--cpus-per-trial {options.cpus_per_trial:g} with --gpus-per-trial "
        f"{options.gpus_per_trial:g}: no node of this Ray cluster has both; lower one of them"
    )
