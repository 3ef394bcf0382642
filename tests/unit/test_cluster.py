"""Starting and joining Ray: what reaches the console, and where Ray's own output goes."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

import pytest

from raytrack.cluster import ray_output_to

START = """
import sys
from raytrack.cluster import connect
connect(log=sys.argv[1])
print("up")
"""


@pytest.mark.slow
def test_a_local_start_keeps_rays_words_off_the_console(tmp_path):
    """Issue 25, item 5: every command opened with Ray's token-authentication WARNING (and its
    start's other lines); they go to the start's log file."""
    log = tmp_path / "ray.log"
    # As a user's shell: Ray marks the token mode in the environment of a process it started in
    # (this one, when the session's Ray runs here), and stays silent where it is set.
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    done = subprocess.run(
        [sys.executable, "-c", START, str(log)], env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == "up\n" and done.stderr == "", done.stderr
    assert "Token authentication" in log.read_text()


def test_rays_forwarded_output_and_log_records_go_to_the_file(ray_cluster, tmp_path, capfd):
    """Issue 25, item 5: "(raylet) worker_pool.cc ...", "(run_trial pid=...) Restored on ..."
    and Tune's "WARNING util.py:212 -- The on_step_begin operation took 1.684 s" came between
    the rows of the live table: while a search runs they go to its ray.log."""
    import ray

    @ray.remote
    def chatty() -> int:
        print("a line a worker prints", flush=True)
        return 1

    log = tmp_path / "ray.log"
    capfd.readouterr()
    with ray_output_to(log):
        assert ray.get(chatty.remote()) == 1
        logging.getLogger("ray.tune.utils.util").warning("The on_step_begin operation took 2 s")
        deadline = time.time() + 60  # the worker's line reaches the driver on its own time
        while "a line a worker prints" not in log.read_text() and time.time() < deadline:
            time.sleep(0.2)
    console = capfd.readouterr()
    text = log.read_text()
    assert "a line a worker prints" in text and "on_step_begin operation took 2 s" in text
    assert "a line a worker prints" not in console.out + console.err
    assert "on_step_begin" not in console.out + console.err
