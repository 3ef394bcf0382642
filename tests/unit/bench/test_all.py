"""``bench all``: its options, one table of every figure, and going on after a failure (each
benchmark replaced by one that records its call: the benchmarks have their own tests)."""

from __future__ import annotations

import pytest

from raytrack import bench
from raytrack.bench import accuracy, common, generate, infer, search, train


def test_all_help_lists_its_options(capsys):
    with pytest.raises(SystemExit) as done:
        bench.main(["all", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    options = (
        "--device", "--search", "--generate-tracks", "--baseline-tracks", "--train-preset",
        "--train-tracks", "--train-epochs", "--infer-tracks", "--infer-presets",
        "--accuracy-samples", "--accuracy-preset", "--accuracy-budget", "--search-num-samples",
        "--search-samples", "--search-max-epochs", "--search-time-budget", "--gpus-per-trial",
    )  # fmt: skip
    for option in options:
        assert option in out, option


def fake_benches(monkeypatch, calls: list) -> None:
    """Each benchmark replaced by one that records its arguments and returns one figure."""

    def fake(name, fail=False):
        def run(*args):
            calls.append((name, args))
            if fail:
                raise RuntimeError(f"{name} broke")
            return [common.Figure(name, f"{name} figure", "1 unit", "2 x baseline")]

        return run

    modules = {"generate": generate, "train": train, "infer": infer, "search": search}
    for name, module in modules.items():
        monkeypatch.setattr(module, f"bench_{name}", fake(name))
    monkeypatch.setattr(accuracy, "bench_accuracy", fake("accuracy", fail=True))


def test_all_prints_one_table_and_goes_on_after_a_failure(monkeypatch, capsys):
    calls: list = []
    fake_benches(monkeypatch, calls)
    assert bench.main(["all", "--train-tracks", "123"]) == 1  # accuracy failed
    out = capsys.readouterr().out
    assert [name for name, _ in calls] == ["generate", "train", "infer", "accuracy"]  # no GPU
    assert calls[1][1][:2] == ("small", 123)
    tail = out[out.index("raytrack bench all") :]
    for name in ("generate", "train", "infer"):
        assert f"{name} figure" in tail
    assert "FAILED" in tail and "accuracy broke" in tail
    walls = [line.split()[1] for line in tail.splitlines() if line.startswith("wall")]
    assert walls == ["generate", "train", "infer", "accuracy", "total"]


def test_all_runs_the_search_when_asked_with_no_gpu_share_on_cpu(monkeypatch, capsys):
    calls: list = []
    fake_benches(monkeypatch, calls)
    bench.main(["all", "--search", "yes", "--gpus-per-trial", "0.5"])
    search = [args for name, args in calls if name == "search"]
    assert len(search) == 1
    assert search[0][3] == 0.0  # gpus per trial: none on a CPU run
    assert "search figure" in capsys.readouterr().out
