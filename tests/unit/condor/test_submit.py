"""The HTCondor submit files, read by HTCondor's own submit parser (the `htcondor` bindings).

The bindings parse a submit description and expand its macros, but keep only the first queue
statement and never expand it into jobs. So the per-job values are obtained the way
condor_submit obtains them: by setting ProcId (and ClusterId) and expanding each command again.
The role rule itself is read from the files, never restated here.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

try:
    import htcondor2
except ImportError as error:  # not installed, or a wheel that does not load on this platform
    pytest.skip(
        f"needs the htcondor bindings (pip install htcondor), HTCondor's submit parser: {error}",
        allow_module_level=True,
    )

REPO = Path(__file__).resolve().parents[3]
CONDOR = REPO / "condor"
SUBMIT_FILES = ("ray_cluster.sub", "generate.sub")
CLUSTER_ID = 4711


def submit_text(name: str, **macros: str) -> str:
    """The file's text with the given top-of-file macros replaced, as a user would edit them."""
    text = (CONDOR / name).read_text()
    for macro, value in macros.items():
        text, count = re.subn(
            rf"^{macro}[ \t]*=.*$", f"{macro} = {value}", text, flags=re.MULTILINE
        )
        assert count == 1, f"{name} should define {macro} once"
    return text


def parse(name: str, submit_file: str | None = None, **macros: str):
    """Parse like condor_submit: it defines SUBMIT_FILE (the path as typed) before the first line.

    condor_submit reads include files relative to its working directory: so does the binding,
    and the tests run with the working directory that goes with ``submit_file``.
    """
    submit_file = submit_file or str(CONDOR / name)
    text = f"SUBMIT_FILE = {submit_file}\n" + submit_text(name, **macros)
    sub = htcondor2.Submit(text)
    sub["ClusterId"] = str(CLUSTER_ID)
    return sub


def for_proc(sub, proc: int):
    """The submit description as condor_submit expands it for job ``proc`` of the cluster."""
    sub["ProcId"] = str(proc)
    sub["Process"] = str(proc)
    return sub


def split_new_style(value: str) -> list[str]:
    """Split an `arguments`/`environment` value in HTCondor's new syntax into its items.

    The whole value is in double quotes ("" is a literal double quote); items are separated by
    spaces or tabs; single quotes group spaces into one item ('' inside them is a literal ').
    """
    assert value.startswith('"') and value.endswith('"') and len(value) >= 2, value
    body = value[1:-1]
    assert '"' not in body.replace('""', ""), f"unescaped double quote in {value}"
    body = body.replace('""', '"')
    items: list[str] = []
    current: list[str] = []
    started = quoted = False
    i = 0
    while i < len(body):
        char = body[i]
        if char == "'":
            if quoted and body[i + 1 : i + 2] == "'":
                current.append("'")
                i += 2
                continue
            quoted = not quoted
            started = True
        elif char in " \t" and not quoted:
            if started:
                items.append("".join(current))
                current, started = [], False
        else:
            current.append(char)
            started = True
        i += 1
    assert not quoted, f"unbalanced single quote in {value}"
    if started:
        items.append("".join(current))
    return items


def environment(sub) -> dict[str, str]:
    pairs = [item.split("=", 1) for item in split_new_style(sub.expand("environment"))]
    assert all(len(pair) == 2 for pair in pairs), pairs
    return dict(pairs)


def same_path(a: str | Path, b: str | Path) -> bool:
    return os.path.normpath(a) == os.path.normpath(b)


def in_job(sub, path: str) -> Path:
    """Where a path of the submit description points for the job: relative to its initialdir."""
    return Path(os.path.normpath(Path.cwd() / sub.expand("initialdir") / path))


@pytest.mark.parametrize("name", SUBMIT_FILES)
def test_submit_file_parses_and_asks_for_its_macros(name):
    sub = parse(name)
    assert sub.expand("universe") == "vanilla"
    assert sub.expand("should_transfer_files").upper() == "NO"
    assert sub.expand("getenv").lower() == "false"
    assert sub.expand("request_cpus") == sub.expand("CPUS_PER_NODE")
    assert sub.expand("request_memory") == sub.expand("MEMORY_PER_NODE")
    assert sub.expand("request_gpus") == sub.expand("GPUS_PER_NODE")
    assert sub.expand("request_disk") == sub.expand("DISK_PER_NODE")
    gpu_memory = sub.expand("GPU_MEMORY_MB")
    assert sub.expand("require_gpus") == f"(GlobalMemoryMb >= {gpu_memory})"
    assert sub.expand("kill_sig") == "SIGTERM"
    # One queue statement (the bindings would silently keep only the first), one job per node.
    queues = re.findall(r"^[ \t]*queue\b.*$", submit_text(name), flags=re.IGNORECASE | re.MULTILINE)
    assert queues == ["queue $(NODES)"]
    assert sub.getQArgs().strip() == "$(NODES)"
    assert int(sub.expand("NODES")) >= 1
    assert not re.search(
        r"^[ \t]*queue\b", (CONDOR / "cluster_settings.sub").read_text(), flags=re.M | re.I
    )


# condor_submit condor/X.sub from the checkout, X.sub from condor/, or an absolute path.
WAYS_TO_SUBMIT = [(REPO, "condor/{}"), (CONDOR, "{}"), (Path("/"), str(CONDOR / "{}"))]


@pytest.mark.parametrize("name", SUBMIT_FILES)
@pytest.mark.parametrize(("cwd", "typed"), WAYS_TO_SUBMIT)
def test_paths_hold_wherever_one_submits_from(name, cwd, typed, monkeypatch):
    monkeypatch.chdir(cwd)
    sub = parse(name, submit_file=typed.format(name))  # the include is found, or this raises
    # condor_submit reads the executable and initialdir relative to its working directory ...
    assert same_path(cwd / sub.expand("executable"), CONDOR / "ray_bootstrap.sh")
    assert same_path(cwd / sub.expand("initialdir"), REPO)
    # ... and the logs relative to initialdir; the job's settings are read there too.
    label = sub.expand("JOB_LABEL")
    for proc in (0, 3):
        for_proc(sub, proc)
        for command, suffix in (("output", "out"), ("error", "err")):
            path = in_job(sub, sub.expand(command))
            assert path == CONDOR / "logs" / f"{label}-{CLUSTER_ID}.{proc}.{suffix}"
        log = in_job(sub, sub.expand("log"))
        assert log.parent == CONDOR / "logs" and str(CLUSTER_ID) in log.name
    assert in_job(sub, sub.expand("SHARED_DIR")) == REPO  # default: the checkout
    assert in_job(sub, sub.expand("VENV")) == REPO / ".venv"


def test_the_logs_directory_exists_in_a_clone():
    ignore = (CONDOR / "logs" / ".gitignore").read_text().split()
    assert "*" in ignore and "!.gitignore" in ignore


@pytest.mark.parametrize("name", SUBMIT_FILES)
def test_proc_zero_is_the_head_and_every_other_proc_a_worker(name):
    sub = parse(name)
    nodes = int(sub.expand("NODES"))
    cpus, memory = sub.expand("CPUS_PER_NODE"), sub.expand("MEMORY_PER_NODE")
    gpus = sub.expand("GPUS_PER_NODE")
    for proc in sorted({*range(nodes), 1, 2, 5, 17}):
        for_proc(sub, proc)
        role = "head" if proc == 0 else "worker"
        assert split_new_style(sub.expand("arguments")) == [role], proc
        assert sub.expand("MY.RaytrackRole") == f'"{role}"'
        assert (sub.expand("request_cpus"), sub.expand("request_memory")) == (cpus, memory)
        assert sub.expand("request_gpus") == gpus
        retries = int(sub.expand("max_retries"))
        if proc == 0:
            assert retries == 0  # the head's exit code is the driver's: reported, not retried
        else:
            assert retries == int(sub.expand("WORKER_RETRIES")) > 0


@pytest.mark.parametrize("name", SUBMIT_FILES)
def test_environment_passes_the_bootstrap_knobs(name):
    sub = parse(name, SHARED_DIR="/shared/me/raytrack", VENV="/shared/me/venv")
    for proc in (0, 2):
        env = environment(for_proc(sub, proc))
        assert env["RAYTRACK_CLUSTER_ID"] == str(CLUSTER_ID)
        assert env["RAYTRACK_CLUSTER_DIR"] == f"/shared/me/raytrack/clusters/{CLUSTER_ID}"
        assert env["RAYTRACK_STORAGE"] == "/shared/me/raytrack/runs"
        assert env["RAYTRACK_DRIVER"] == sub.expand("DRIVER")  # spaces survive the quoting
        assert env["RAYTRACK_MIN_WORKERS"] == sub.expand("MIN_WORKERS")
        assert env["RAYTRACK_WAIT_TIMEOUT"] == sub.expand("WAIT_TIMEOUT")
        assert env["RAYTRACK_VENV"] == "/shared/me/venv"


def test_default_drivers_join_the_cluster():
    search = parse("ray_cluster.sub").expand("DRIVER")
    assert search.startswith("python -m raytrack.tune --search presets")
    assert "--address auto" in search
    generate = parse("generate.sub")
    driver = generate.expand("DRIVER")
    assert driver.startswith("python -m raytrack.generate --samples ")
    assert "--address auto" in driver
    out = driver.split("--out ", 1)[1].split()[0]
    assert in_job(generate, out) == REPO / "data" / generate.expand("DATASET")


def test_a_driver_with_quotes_and_spaces_reaches_the_environment_intact():
    driver = "python -m raytrack.tune --search optuna --name ''my run'' --address auto"
    env = environment(for_proc(parse("ray_cluster.sub", DRIVER=driver), 0))
    assert env["RAYTRACK_DRIVER"] == driver.replace("''", "'")


def test_editing_the_macros_changes_the_requests_and_the_job_count():
    sub = parse(
        "ray_cluster.sub",
        NODES="7",
        CPUS_PER_NODE="3",
        MEMORY_PER_NODE="5GB",
        GPUS_PER_NODE="2",
        GPU_MEMORY_MB="40000",
        MIN_WORKERS="6",
    )
    assert sub.expand("NODES") == "7"
    for proc in (0, 6):
        for_proc(sub, proc)
        assert sub.expand("request_cpus") == "3"
        assert sub.expand("request_memory") == "5GB"
        assert sub.expand("request_gpus") == "2"
        assert sub.expand("require_gpus") == "(GlobalMemoryMb >= 40000)"
        assert environment(sub)["RAYTRACK_MIN_WORKERS"] == "6"
    assert split_new_style(sub.expand("arguments")) == ["worker"]


def test_no_gpu_requirement_without_gpus_or_without_a_memory_limit():
    sub = parse("ray_cluster.sub", GPUS_PER_NODE="0")
    assert sub.expand("request_gpus") == "0"
    assert "require_gpus" not in sub
    sub = parse("ray_cluster.sub", GPU_MEMORY_MB="0")
    assert sub.expand("request_gpus") == sub.expand("GPUS_PER_NODE") != "0"
    assert "require_gpus" not in sub


@pytest.mark.parametrize("name", SUBMIT_FILES)
def test_user_settings_sit_at_the_top_with_comments(name):
    lines = submit_text(name).splitlines()
    include = next(i for i, line in enumerate(lines) if line.startswith("include"))
    assert "cluster_settings.sub" in lines[include]
    settings = [i for i, line in enumerate(lines[:include]) if re.match(r"^[A-Z_]+ = ", line)]
    for index in settings:
        above = index - 1
        while re.match(r"^[A-Z_]+ = ", lines[above]):
            above -= 1
        assert lines[above].startswith("#"), f"{lines[index]!r} has no comment"
    names = {lines[i].split(" = ")[0] for i in settings}
    expected = {"NODES", "CPUS_PER_NODE", "MEMORY_PER_NODE", "GPUS_PER_NODE", "GPU_MEMORY_MB"}
    expected |= {"MIN_WORKERS", "WAIT_TIMEOUT", "DRIVER", "SHARED_DIR", "VENV"}
    assert expected <= names
    # Site attributes are placeholders: commented out, so a pool that lacks them still matches.
    sub = parse(name)
    for attribute in ("JobCategory", "UseOS"):
        assert any(re.match(rf"^# \+{attribute} = ", line) for line in lines[:include])
        assert f"MY.{attribute}" not in sub
