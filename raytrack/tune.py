"""python -m raytrack.tune: the five presets and Optuna-searched variants as Ray Tune trials.

    python -m raytrack.tune --search presets                       # the five presets
    python -m raytrack.tune --search optuna --num-samples 40       # TPE, search_spaces/default
    python -m raytrack.tune --search all --num-samples 40          # presets first, then TPE
    python -m raytrack.tune --search optuna --objective pareto-weights --max-weights 16384
    python -m raytrack.tune --resume --name NAME                   # continue an interrupted one

Without --data it generates the default dataset first (and reuses it next time).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import ray

from raytrack.cluster import connect
from raytrack.data import DatasetError, PhaseSpaceError, load_phase_space
from raytrack.data.pipeline import generate_dataset
from raytrack.data.shards import DatasetSpec
from raytrack.physics import DipoleField

DEFAULT_STORAGE = "runs"
DEFAULT_SAMPLES = 200_000


def build_parser() -> argparse.ArgumentParser:
    from raytrack.search.experiment import OBJECTIVES, SEARCHES

    p = argparse.ArgumentParser(prog="python -m raytrack.tune", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--search", choices=SEARCHES, default="presets")
    p.add_argument("--num-samples", type=int, default=8, help="Optuna trials (beyond the presets)")
    p.add_argument(
        "--space", default="default", help="search space: a name in search_spaces/ or a file"
    )
    p.add_argument(
        "--objective",
        choices=list(OBJECTIVES),
        default="p95",
        help="p95: validation P95 position error; pareto-*: P95 against weights or MACs",
    )
    p.add_argument("--max-weights", type=int, help="hard limit: no model above it is trained")
    p.add_argument("--max-epochs", type=int, default=30, help="epochs per trial")
    p.add_argument("--time-budget", type=float, help="seconds of training per trial")
    p.add_argument("--grace-epochs", type=int, default=3, help="ASHA: epochs before stopping")
    p.add_argument("--reduction-factor", type=int, default=3, help="ASHA reduction factor")
    p.add_argument(
        "--scheduler",
        choices=("asha", "none"),
        help="asha stops poor trials early (default for optuna and all); none gives every trial "
        "the whole budget (default for presets, so that they compare fairly)",
    )
    p.add_argument(
        "--gpus-per-trial", type=float, help="fractions share a GPU (default 1 with GPUs)"
    )
    p.add_argument("--cpus-per-trial", type=float, default=1.0, help="torch threads follow it")
    p.add_argument("--max-failures", type=int, default=2, help="retries of a crashed trial")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", help="dataset directory (default: generate the default dataset)")
    p.add_argument(
        "--samples",
        type=int,
        default=DEFAULT_SAMPLES,
        help="tracks of the generated dataset when --data is not given",
    )
    p.add_argument("--phase-space", default="default", help="of the generated dataset")
    p.add_argument("--storage", default=DEFAULT_STORAGE, help="experiments directory")
    p.add_argument("--name", help="experiment name (default: SEARCH-DATE-TIME)")
    p.add_argument("--resume", action="store_true", help="continue the experiment --name")
    p.add_argument("--address", help="join a Ray cluster: auto or HOST:PORT")
    p.add_argument("--dashboard-host", default="127.0.0.1", help="local Ray only")
    p.add_argument("--dashboard-port", type=int, default=8265, help="local Ray only")
    return p


def start_ray(args: argparse.Namespace) -> None:
    """Join ``--address`` or start a local Ray with its dashboard; print the dashboard URL."""
    if ray.is_initialized():
        return
    url = connect(
        args.address, dashboard_host=args.dashboard_host, dashboard_port=args.dashboard_port
    )
    print(f"Ray dashboard: {url}" if url else "Ray dashboard: not running", flush=True)


def ensure_dataset(args: argparse.Namespace) -> str:
    """--data, or the default dataset (generated now if absent, reused if complete)."""
    if args.data:
        return args.data
    out = Path(args.storage) / "datasets" / f"{args.phase_space}-{args.samples}-seed{args.seed}"
    print(
        f"no --data given: using the default dataset in {out} "
        f"({args.samples} tracks, phase space {args.phase_space!r}; generated if missing)"
    )
    spec = DatasetSpec(
        samples=args.samples,
        shards=10,
        seed=args.seed,
        phase_space=load_phase_space(args.phase_space),
        field=DipoleField(),
    )
    generate_dataset(spec, out, parameters={"by": "raytrack.tune", "samples": args.samples})
    return str(out)


def options_from_args(args: argparse.Namespace, data_dir: str):
    from raytrack.search.experiment import ExperimentOptions

    gpus = args.gpus_per_trial
    if gpus is None:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
    return ExperimentOptions(
        search=args.search, data_dir=data_dir, storage=args.storage,
        name=args.name or f"{args.search}-{time.strftime('%Y%m%d-%H%M%S')}",
        num_samples=args.num_samples, space=args.space, objective=args.objective,
        max_weights=args.max_weights, max_epochs=args.max_epochs, time_budget=args.time_budget,
        grace_epochs=args.grace_epochs, reduction_factor=args.reduction_factor,
        scheduler=args.scheduler, cpus_per_trial=args.cpus_per_trial, gpus_per_trial=gpus,
        max_failures=args.max_failures, seed=args.seed,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from raytrack.search.experiment import describe_resources, load_options, run_experiment
    from raytrack.search.space import SearchSpaceError, load_search_space

    try:
        if args.resume and not args.name:
            raise ValueError("--resume needs --name (the experiment directory under --storage)")
        if args.search != "presets" and not args.resume:  # a bad space file fails before Ray starts
            load_search_space(args.space, max_weights=args.max_weights)
        start_ray(args)
        if args.resume:
            options = load_options(args.storage, args.name)
        else:
            options = options_from_args(args, ensure_dataset(args))
        if ray.cluster_resources().get("GPU", 0) == 0:
            print("notice: no GPU in this Ray cluster; trials train on CPUs", flush=True)
        print(describe_resources(options), flush=True)
        run_experiment(options, resume=args.resume)
    except (ValueError, FileNotFoundError, DatasetError, PhaseSpaceError, SearchSpaceError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
