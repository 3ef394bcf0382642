"""Starting and joining Ray: what reaches the console, and where Ray's own output goes."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

import pytest

from raytrack import tune
from raytrack.cluster import ray_output_to

from .commands import exit_code, refuse_to_start

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


@pytest.fixture
def listening():
    """A port on 127.0.0.1 held by another server."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    yield server.getsockname()[1]
    server.close()


class FakeContext:
    def __init__(self, port: int):
        self.dashboard_url = f"127.0.0.1:{port}"


def test_dashboard_takes_the_next_free_port_when_8265_is_taken(monkeypatch, capsys):
    import socket

    from raytrack.cluster import port_is_free

    started = {}

    def fake_init(**kwargs):
        started.update(kwargs)
        return FakeContext(kwargs["dashboard_port"])

    monkeypatch.setattr("raytrack.cluster.ray.is_initialized", lambda: False)
    monkeypatch.setattr("raytrack.cluster.ray.init", fake_init)
    monkeypatch.setattr("raytrack.tune.ray.is_initialized", lambda: False)
    with socket.socket() as server:  # 8265 taken (already, or by this test)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            server.bind(("127.0.0.1", 8265))
            server.listen()
        except OSError:
            pass
        from raytrack import tune

        tune.start_ray(tune.build_parser().parse_args([]))
        port = started["dashboard_port"]
        assert port != 8265 and port_is_free("127.0.0.1", port)
    assert f"Ray dashboard: http://127.0.0.1:{port}" in capsys.readouterr().out


def test_a_pinned_busy_dashboard_port_is_named(listening, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr("raytrack.cluster.ray.is_initialized", lambda: False)
    monkeypatch.setattr("raytrack.tune.ray.is_initialized", lambda: False)
    monkeypatch.setattr("raytrack.cluster.ray.init", refuse_to_start)
    code = exit_code(tune.main, ["--dashboard-port", str(listening), "--storage", str(tmp_path)])
    assert code == 1
    err = capsys.readouterr().err
    assert f"--dashboard-port {listening}: 127.0.0.1:{listening} is in use" in err


def test_dashboard_notice_says_where_the_token_is(monkeypatch, tmp_path):
    from raytrack.cluster import dashboard_notice

    url = "http://127.0.0.1:8265"
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")  # what ray.init sets for a local instance
    monkeypatch.setenv("HOME", str(tmp_path))
    assert f"token is in {tmp_path / '.ray' / 'auth_token'}" in dashboard_notice(url)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", "/etc/ray/token")
    assert "token is in /etc/ray/token" in dashboard_notice(url)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert dashboard_notice(url) == f"Ray dashboard: {url}"
    assert dashboard_notice(None) == "Ray dashboard: not running"
