"""condor/ray_bootstrap.sh in a simulated HTCondor allocation: one head and two workers on
127.0.0.1, each with its own fake _CONDOR_* environment (scratch dir, machine ad, port range,
no GPUs), meeting through a cluster directory as the jobs of one HTCondor cluster would."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from raytrack.condor.node import node_processes, node_tag

REPO = Path(__file__).resolve().parents[2]
BOOTSTRAP = REPO / "condor" / "ray_bootstrap.sh"
CLUSTER_ID = "4242"
# The head counts its workers, and a worker checks on its head, every POLL seconds (5 on a real
# pool): the simulated allocation's nodes find each other and leave within seconds.
POLL = "0.5"
# Each test starts a three-node Ray cluster of its own.
pytestmark = pytest.mark.slow


@dataclass
class Node:
    name: str
    process: subprocess.Popen
    low_port: int
    log: Path

    @property
    def tag(self) -> str:
        return node_tag(CLUSTER_ID, self.process.pid)  # bash execs the bootstrap: same pid

    def output(self) -> str:
        return self.log.read_text()


def start_node(
    role: str,
    name: str,
    cpus: int,
    low_port: int,
    root: Path,
    driver: str = "",
    min_workers: int = 2,
) -> Node:
    home = root / name
    (home / "scratch").mkdir(parents=True)
    ad = home / "machine.ad"
    ad.write_text(f"Cpus = {cpus}\nMemory = 1536\nGPUs = 0\n")
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(home),
        "_CONDOR_SCRATCH_DIR": str(home / "scratch"),
        "_CONDOR_MACHINE_AD": str(ad),
        "_CONDOR_AssignedGPUs": "",
        "_CONDOR_LOWPORT": str(low_port),
        "_CONDOR_HIGHPORT": str(low_port + 99),
        "RAYTRACK_NODE_IP": "127.0.0.1",
        "RAYTRACK_CLUSTER_ID": CLUSTER_ID,
        "RAYTRACK_CLUSTER_DIR": str(root / "cluster"),
        "RAYTRACK_STORAGE": str(root / "runs"),
        "RAYTRACK_MIN_WORKERS": str(min_workers),
        "RAYTRACK_WAIT_TIMEOUT": "180",
        "RAYTRACK_POLL_SECONDS": POLL,
        "RAYTRACK_DRIVER": driver,
    }
    log = home / "bootstrap.log"
    with open(log, "w") as out:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            [str(BOOTSTRAP), role],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Node(name, process, low_port, log)


def wait_for(condition, timeout: float, what: str, step: float = 0.5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def cluster_python(code: str, root: Path, token: bool = True, timeout: float = 120):
    """Run ``code`` as a client of the simulated cluster (with or without its token)."""
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(root),
        "RAY_AUTH_MODE": "token",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    if token:
        env["RAY_AUTH_TOKEN_PATH"] = str(root / "cluster" / "token")
    else:
        env["RAY_AUTH_TOKEN"] = "not-the-token"
        # A refused Ray client retries three times, 5, 10 and 15 s apart: 1 s apart here. The
        # server is up (the client with the token got in), so a refusal is the token's.
        env["RAY_CLIENT_INITIAL_CONNECTION_TIMEOUT_S"] = "1"
        env["RAY_CLIENT_MAX_CONNECTION_TIMEOUT_S"] = "1"
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout
    )


def kill_node(node: Node) -> None:
    """What HTCondor does to a job it kills: every process of it, at once."""
    for pid in [node.process.pid, *node_processes(node.tag)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def allocation(tmp_path):
    nodes: list[Node] = []
    yield tmp_path, nodes
    for node in nodes:
        kill_node(node)


NODES_CODE = """
import json, ray
ray.init(address="auto", logging_level="ERROR")
print(json.dumps([{"id": n["NodeID"], "cpus": n["Resources"].get("CPU", 0)}
                  for n in ray.nodes() if n["Alive"]]))
"""


def test_simulated_allocation_runs_a_search_on_the_workers(allocation, classic_dataset):
    root, nodes = allocation
    nodes_file = root / "nodes.json"
    python = sys.executable
    driver = (
        f"{python} -c '{NODES_CODE}' > {nodes_file} && {python} -m raytrack.tune "
        f"--search presets --data {classic_dataset} --max-epochs 40 --time-budget 3 "
        f"--scheduler none --max-failures 3 --address auto"
    )
    nodes.append(start_node("head", "head", 1, 46000, root, driver=driver))
    nodes.append(start_node("worker", "w1", 2, 46200, root))
    nodes.append(start_node("worker", "w2", 3, 46400, root))
    head, w1, w2 = nodes
    wait_for(lambda: nodes_file.exists() and nodes_file.read_text().strip(), 180, "the driver")
    cluster_nodes = json.loads(nodes_file.read_text())
    assert sorted(n["cpus"] for n in cluster_nodes) == [1.0, 2.0, 3.0]  # the fake slots

    # SIGTERM to a worker while one of its trials runs: it leaves, the trial is retried elsewhere.
    experiment = root / "runs" / f"condor-{CLUSTER_ID}"
    w1_id = next(n["id"] for n in cluster_nodes if n["cpus"] == 2.0)

    def trial_on_w1():
        return any(
            f'"node_id": "{w1_id}"' in f.read_text()
            for f in experiment.glob("run_trial*/result.json")
        )

    wait_for(trial_on_w1, 180, "a trial on w1", step=0.1)
    os.kill(w1.process.pid, signal.SIGTERM)
    assert w1.process.wait(timeout=60) == 128 + signal.SIGTERM
    assert wait_for(lambda: not node_processes(w1.tag), 30, "w1's Ray processes to go")

    assert head.process.wait(timeout=600) == 0, head.output()[-3000:]
    rows = json.loads((experiment / "leaderboard.json").read_text())
    # Every preset trained to its end: its epochs, early stopping (the path base leaves a
    # classic-leg network little to learn: its validation loss stops improving within 40 epochs
    # on a fast machine), or the 3 s that bound each trial here (the wide presets would take
    # minutes of the suite's two cores). Never an error, a failure or a trial left unfinished.
    statuses = {r["name"]: r["status"] for r in rows}
    assert len(rows) == 5, statuses
    assert set(statuses.values()) <= {"finished", "early_stopped", "time_budget"}, statuses
    worker_ids = {n["id"] for n in cluster_nodes if n["cpus"] > 1}
    results = [
        json.loads(line)
        for f in experiment.glob("run_trial*/result.json")
        for line in f.read_text().splitlines()
    ]
    assert worker_ids & {r["node_id"] for r in results}  # trials ran on the workers
    assert w2.process.wait(timeout=60) == 0  # the head finished: the worker leaves
    assert (root / "cluster" / "finished").read_text() == "exit 0"
    assert not node_processes(head.tag) and not node_processes(w2.tag)


def test_the_token_is_required_and_workers_leave_when_the_head_is_killed(allocation):
    root, nodes = allocation
    nodes.append(start_node("head", "head", 1, 47000, root, driver="sleep 600"))
    nodes.append(start_node("worker", "w1", 1, 47200, root))
    nodes.append(start_node("worker", "w2", 2, 47400, root))
    head, w1, w2 = nodes
    wait_for(lambda: "joined" in w1.output() and "joined" in w2.output(), 180, "workers to join")
    wait_for(lambda: "driver: sleep 600" in head.output(), 120, "the driver")

    # The dashboard (head's second port) and the Ray client (third) want the token. Checked on
    # a quiet cluster: under load the Ray client server may start too slowly for its timeout.
    dashboard = f"http://127.0.0.1:{head.low_port + 1}/api/version"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(dashboard, timeout=10)
    assert refused.value.code in (401, 403)
    token = (root / "cluster" / "token").read_text()
    request = urllib.request.Request(dashboard, headers={"Authorization": f"Bearer {token}"})
    assert urllib.request.urlopen(request, timeout=10).status == 200
    client = f"import ray; ray.init(address='ray://127.0.0.1:{head.low_port + 2}'); print('IN')"
    # With the token the client gets in; a client started while the machine is busy can fail
    # on its own (seen: psutil.ZombieProcess inside ray.init), so a second try is allowed.
    wait_for(lambda: "IN" in cluster_python(client, root, token=True).stdout, 240, "the client", 1)
    assert "IN" not in cluster_python(client, root, token=False, timeout=180).stdout

    # HTCondor kills the head job: every process of it.
    killed_at = time.time()
    kill_node(head)
    for worker in (w1, w2):
        code = worker.process.wait(timeout=90 - (time.time() - killed_at))
        assert code == 1  # non-zero: HTCondor requeues it for the head's next run
        assert not node_processes(worker.tag)
    assert time.time() - killed_at < 90
