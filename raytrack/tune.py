"""python -m raytrack.tune: the five presets and Optuna-searched variants as Ray Tune trials.

    python -m raytrack.tune --search presets                       # the five presets
    python -m raytrack.tune --search optuna --num-samples 40       # TPE, search_spaces/default
    python -m raytrack.tune --search all --num-samples 40          # presets first, then TPE
    python -m raytrack.tune --search optuna --objective pareto-weights --max-weights 16384
    python -m raytrack.tune --resume --name NAME                   # continue an interrupted one
    python -m raytrack.tune --search presets --mlflow              # and log the trials to MLflow

Without --data it generates the default dataset first (and reuses it next time). Every search
ends with a report, STORAGE/NAME/report/index.html (python -m raytrack.report writes it again).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import ray

from raytrack.cli import (
    HelpFormatter,
    non_negative_float,
    non_negative_int,
    number_at_least,
    port_number,
    positive_float,
    positive_int,
)
from raytrack.cluster import DEFAULT_DASHBOARD_PORT, connect, dashboard_notice
from raytrack.data import DatasetError, DatasetSplits, PhaseSpaceError, load, load_phase_space
from raytrack.data.pipeline import generate_dataset
from raytrack.data.schema import canonical_hash
from raytrack.data.shards import DatasetSpec
from raytrack.files import check_writable
from raytrack.physics import DipoleField

#: --mlflow without a URI (see raytrack.search.tracking.LOCAL; not imported: --help stays fast)
MLFLOW_LOCAL = "local"

if TYPE_CHECKING:  # imported where used: Ray Tune takes seconds to import, --help should not
    from raytrack.search.experiment_options import ExperimentOptions

DEFAULT_STORAGE = "runs"
DEFAULT_SAMPLES = 200_000
DEFAULT_SHARDS = 10  # of the generated default dataset
DEFAULT_GRACE_EPOCHS = 3
#: With --address, how long to wait for a node that fits a trial (nodes may still be joining).
JOIN_WAIT_S = 120.0
#: Filesystems the kernel provides, where no file can be made (``--storage`` there is refused).
KERNEL_FILESYSTEMS = frozenset({"proc", "sysfs", "cgroup", "cgroup2", "debugfs", "securityfs",
                                "configfs", "tracefs", "bpf", "pstore", "devpts"})  # fmt: skip
#: The exit status of an interrupted search (a shell's for a command ended by SIGINT).
INTERRUPTED = 130
#: Options of an experiment that --resume keeps (argparse dest -> ExperimentOptions field); the
#: dataset options (--data, --samples, --phase-space) and --mlflow are compared on their own.
KEPT_OPTIONS = ("search", "num_samples", "space", "objective", "max_weights", "max_epochs",
                "time_budget", "grace_epochs", "reduction_factor", "scheduler", "cpus_per_trial",
                "gpus_per_trial", "max_failures", "seed")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    from raytrack.search.experiment_options import OBJECTIVES, SEARCHES

    p = argparse.ArgumentParser(
        prog="python -m raytrack.tune", description=__doc__, formatter_class=HelpFormatter
    )
    p.add_argument("--search", choices=SEARCHES, default="presets", help="what to train")
    p.add_argument(
        "--num-samples", type=positive_int, default=8, help="Optuna trials (beyond the presets)"
    )
    p.add_argument(
        "--space", default="default", help="search space: a name in search_spaces/ or a file"
    )
    p.add_argument(
        "--objective",
        choices=list(OBJECTIVES),
        default="p95",
        help="p95: validation P95 position error; pareto-*: P95 against weights or MACs",
    )
    p.add_argument(
        "--max-weights", type=positive_int, help="hard limit: no model above it is trained"
    )
    p.add_argument("--max-epochs", type=positive_int, default=30, help="epochs per trial")
    p.add_argument("--time-budget", type=positive_float, help="seconds of training per trial")
    p.add_argument(
        "--grace-epochs",
        type=positive_int,
        help=f"ASHA: epochs before a trial may be stopped "
        f"(default: {DEFAULT_GRACE_EPOCHS}, at most --max-epochs)",
    )
    p.add_argument(
        "--reduction-factor", type=number_at_least(2), default=3, help="ASHA reduction factor"
    )
    p.add_argument(
        "--scheduler",
        choices=("asha", "none"),
        help="asha stops poor trials early (default for optuna and all); none gives every trial "
        "the whole budget (default for presets, so that they compare fairly)",
    )
    p.add_argument(
        "--gpus-per-trial",
        type=non_negative_float,
        help="fractions share a GPU (default: 1 when Ray sees a GPU, else 0)",
    )
    p.add_argument(
        "--cpus-per-trial", type=positive_float, default=1.0, help="torch threads follow it"
    )
    p.add_argument(
        "--max-failures", type=non_negative_int, default=2, help="retries of a crashed trial"
    )
    p.add_argument(
        "--seed", type=non_negative_int, default=0, help="of the searcher and the default dataset"
    )
    p.add_argument("--data", help="dataset directory (default: generate the default dataset)")
    p.add_argument(
        "--samples",
        type=number_at_least(DEFAULT_SHARDS),
        default=DEFAULT_SAMPLES,
        help=f"tracks of the generated dataset when --data is not given "
        f"(at least {DEFAULT_SHARDS}, one per shard)",
    )
    p.add_argument("--phase-space", default="default", help="of the generated dataset")
    p.add_argument("--storage", default=DEFAULT_STORAGE, help="experiments directory")
    p.add_argument("--name", help="experiment name (default: SEARCH-DATE-TIME)")
    p.add_argument("--resume", action="store_true", help="continue the experiment --name")
    p.add_argument(
        "--mlflow",
        nargs="?",
        const=MLFLOW_LOCAL,
        metavar="URI",
        help="log every trial as an MLflow run to the tracking URI (sqlite:///PATH, "
        "http://HOST:PORT); without URI to a local store, STORAGE/NAME/mlflow/mlflow.db; "
        "needs the mlflow extra",
    )
    p.add_argument(
        "--address",
        help=f"join a Ray cluster: auto or HOST:PORT; waits up to {JOIN_WAIT_S:.0f} s for a node "
        "that fits a trial (default: start a local Ray)",
    )
    p.add_argument("--dashboard-host", default="127.0.0.1", help="local Ray only")
    p.add_argument(
        "--dashboard-port",
        type=port_number,
        help=f"local Ray only (default: {DEFAULT_DASHBOARD_PORT}, or the next free port when it "
        "is taken; a port given here must be free)",
    )
    return p


@dataclasses.dataclass
class Plan:
    """What the command will run, checked before Ray starts (Ray takes seconds to start)."""

    options: ExperimentOptions
    splits: DatasetSplits | None  # --data (or the resumed experiment's), loaded and checked
    dataset: DatasetSpec | None  # the default dataset, generated (or completed) once Ray runs


def given_options(parser: argparse.ArgumentParser, argv: list[str] | None) -> set[str]:
    """The dests of the options ``argv`` gives, set to their default or not."""
    unset = object()
    dests = vars(parser.parse_args(argv))
    # argparse fills in a default only where the namespace has no value yet
    probe = parser.parse_args(argv, namespace=argparse.Namespace(**dict.fromkeys(dests, unset)))
    return {dest for dest, value in vars(probe).items() if value is not unset}


def plan_from_args(args: argparse.Namespace, given: set[str] | None = None) -> Plan:
    """Every check that needs no Ray: options, search space, dataset, experiment to resume.

    ``given``: the options the command line gives (see :func:`given_options`); with
    ``--resume``, one that differs from the experiment's is refused."""
    from raytrack.search.experiment_options import load_options
    from raytrack.search.space import load_search_space
    from raytrack.search.tracking import require_mlflow

    check_storage(args.storage)
    if args.resume:
        if not args.name:
            raise ValueError("--resume needs --name (the experiment directory under --storage)")
        options = load_options(args.storage, args.name)
        if args.mlflow and not options.mlflow:
            raise ValueError(
                f"--mlflow: {options.path} was started without it, and a resumed experiment "
                "keeps the options it started with; start a new experiment with --mlflow"
            )
        changed = changed_options(args, given or set(), options)
        if changed:
            raise ValueError(
                f"--resume continues {options.path} with the options it was started with, and "
                f"these differ: {', '.join(changed)}; leave them out to resume it, or start a "
                "new experiment (another --name) with them"
            )
        if options.mlflow:
            require_mlflow()
        if options.samples is not None and not dataset_complete(options.data_dir):
            # Ctrl-C while tune generated it: generation continues where it stopped
            spec = dataset_spec(options.samples, options.phase_space, options.seed)
            return Plan(options, None, spec)
        return Plan(options, load(options.data_dir), None)
    check_dataset_options(args, given)
    if args.mlflow:
        require_mlflow()
    if args.search != "presets":  # a bad space file is named before anything starts
        load_search_space(args.space, max_weights=args.max_weights)
    dataset = None if args.data else default_dataset(args)
    options = options_from_args(args, args.data or str(default_dataset_dir(args)))
    return Plan(options, load(args.data) if args.data else None, dataset)


def check_storage(storage: str) -> None:
    """Refuse a --storage that cannot be written, in a sentence that names the option and the
    cause: a kernel filesystem (/proc, /sys) takes no directory, whatever errno it answers."""
    try:
        check_writable(storage, "--storage")
    except ValueError:
        path = Path(storage).absolute()
        existing = next((p for p in (path, *path.parents) if p.exists()), Path("/"))
        kind = filesystem_type(existing)
        if kind in KERNEL_FILESYSTEMS:
            raise ValueError(
                f"--storage {storage}: cannot be written: {existing} is the kernel's {kind} "
                "filesystem, where no directory can be made; choose a directory on a disk "
                f"(the default is {DEFAULT_STORAGE}/ in the current directory)"
            ) from None
        raise


def filesystem_type(path: Path) -> str | None:
    """The type of the filesystem ``path`` lies on (the longest mount point above it in
    /proc/self/mounts), or None where that cannot be read."""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return None
    best, kind = "", None
    resolved = str(path.resolve())
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = resolved == point or resolved.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


def check_dataset_options(args: argparse.Namespace, given: set[str] | None) -> None:
    """Refuse --samples or --phase-space beside --data: they describe the dataset tune generates
    when --data is not given, and --data's dataset has its own. ``given``: the options the
    command line gives (None: those that differ from their defaults)."""
    if not args.data:
        return
    defaults = {"samples": DEFAULT_SAMPLES, "phase_space": "default"}
    if given is None:
        given = {dest for dest, default in defaults.items() if getattr(args, dest) != default}
    named = [f"--{dest.replace('_', '-')}" for dest in defaults if dest in given]
    if named:
        ignored, verb = " and ".join(named), "describe" if len(named) > 1 else "describes"
        raise ValueError(
            f"{ignored} with --data: {ignored} {verb} the dataset tune generates without "
            f"--data, and --data {args.data} is a dataset already; leave out {ignored}, or "
            "--data to generate one"
        )


def changed_options(
    args: argparse.Namespace, given: set[str], options: ExperimentOptions
) -> list[str]:
    """The options in ``given`` whose value differs from the experiment's ``options``, each as
    "--OPTION VALUE (it has VALUE)". A resumed search runs on Tune's saved state (the searcher,
    the scheduler, the number of trials), which keeps the options it was started with."""

    def differs(flag: str, value: object, kept: object) -> str:
        return f"{flag} {value} (it has {kept})"

    changed = []
    for dest in KEPT_OPTIONS:
        value, kept = getattr(args, dest), getattr(options, dest)
        if dest == "space" and _same_file(value, kept):
            continue
        if dest in given and value != kept:
            changed.append(differs("--" + dest.replace("_", "-"), value, kept))
    if "data" in given and Path(args.data).resolve() != Path(options.data_dir).resolve():
        changed.append(differs("--data", args.data, options.data_dir))
    for dest in ("samples", "phase_space"):  # of the dataset tune generated, if it did
        value, kept = getattr(args, dest), getattr(options, dest)
        if dest not in given or (dest == "phase_space" and _same_file(value, kept)):
            continue
        if kept is None:
            changed.append(
                differs(f"--{dest.replace('_', '-')}", value, f"--data {options.data_dir}")
            )
        elif value != kept:
            changed.append(differs(f"--{dest.replace('_', '-')}", value, kept))
    if "mlflow" in given and args.mlflow and options.mlflow:
        from raytrack.search.tracking import resolve_uri

        if resolve_uri(args.mlflow, options.path) != options.mlflow:
            changed.append(differs("--mlflow", args.mlflow, options.mlflow))
    return changed


def _same_file(a: str, b: str | None) -> bool:
    return b is not None and Path(a).is_file() and Path(a).resolve() == Path(b).resolve()


def resume_command(args: argparse.Namespace, options: ExperimentOptions) -> str:
    """The command that continues the experiment ``options`` started by ``args``."""
    words = ["python", "-m", "raytrack.tune", "--resume", "--name", options.name]
    if args.storage != DEFAULT_STORAGE:
        words += ["--storage", args.storage]
    if args.address:
        words += ["--address", args.address]
    return shlex.join(words)


def start_ray(args: argparse.Namespace, log: Path | None = None) -> None:
    """Join ``--address`` or start a local Ray with its dashboard; print the dashboard URL.
    What Ray writes on the console as it starts goes to the file ``log`` (see
    :func:`raytrack.cluster.connect`)."""
    if ray.is_initialized():
        return
    url = connect(
        args.address,
        dashboard_host=args.dashboard_host,
        dashboard_port=args.dashboard_port,
        log=log,
    )
    print(dashboard_notice(url), flush=True)


def default_dataset_dir(args: argparse.Namespace) -> Path:
    """STORAGE/datasets/PHASE-SPACE-SAMPLES-seedSEED, PHASE-SPACE a built-in's name or, for a
    TOML file, its stem and a hash of its content: two files of one stem never share one."""
    label = args.phase_space
    if Path(label).is_file():
        content = canonical_hash(load_phase_space(label).source)[:8]
        label = f"{Path(label).stem}-{content}"
    return Path(args.storage) / "datasets" / f"{label}-{args.samples}-seed{args.seed}"


def default_dataset(args: argparse.Namespace) -> DatasetSpec:
    """The dataset tune generates when --data is not given (checked here, made later)."""
    return dataset_spec(args.samples, args.phase_space, args.seed)


def dataset_spec(samples: int, phase_space: str, seed: int) -> DatasetSpec:
    return DatasetSpec(
        samples=samples,
        shards=DEFAULT_SHARDS,
        seed=seed,
        phase_space=load_phase_space(phase_space),
        field=DipoleField(),
    )


def dataset_complete(directory: str | Path) -> bool:
    """Whether ``directory`` holds a dataset whose generation ended."""
    manifest = Path(directory) / "manifest.json"
    try:
        return bool(json.loads(manifest.read_text()).get("complete"))
    except (OSError, ValueError, AttributeError):
        return False


def ensure_dataset(spec: DatasetSpec, options: ExperimentOptions) -> None:
    """Generate the default dataset ``spec`` in the experiment's ``data_dir`` (reused if
    complete, completed if interrupted)."""
    print(
        f"no --data given: using the default dataset in {options.data_dir} "
        f"({spec.samples} tracks, phase space {options.phase_space!r}; generated if missing)"
    )
    generate_dataset(
        spec, options.data_dir, parameters={"by": "raytrack.tune", "samples": spec.samples}
    )


def options_from_args(
    args: argparse.Namespace, data_dir: str, gpus: float | None = None
) -> ExperimentOptions:
    """The experiment's options; ``--gpus-per-trial`` when given, else ``gpus`` (else 0 until
    Ray tells how many GPUs there are)."""
    from raytrack.search.experiment_options import ExperimentOptions

    if args.gpus_per_trial is not None:
        gpus = args.gpus_per_trial
    grace = args.grace_epochs
    if grace is None:  # only an explicit --grace-epochs above --max-epochs is an error
        grace = min(DEFAULT_GRACE_EPOCHS, args.max_epochs)
    name = args.name or f"{args.search}-{time.strftime('%Y%m%d-%H%M%S')}"
    mlflow = None
    if args.mlflow:
        from raytrack.search.tracking import resolve_uri

        mlflow = resolve_uri(args.mlflow, Path(args.storage) / name)
    return ExperimentOptions(
        search=args.search, data_dir=data_dir, storage=args.storage, name=name, mlflow=mlflow,
        num_samples=args.num_samples, space=args.space, objective=args.objective,
        max_weights=args.max_weights, max_epochs=args.max_epochs, time_budget=args.time_budget,
        grace_epochs=grace, reduction_factor=args.reduction_factor,
        scheduler=args.scheduler, cpus_per_trial=args.cpus_per_trial, gpus_per_trial=gpus or 0.0,
        max_failures=args.max_failures, seed=args.seed,
        samples=None if args.data else args.samples,
        phase_space=None if args.data else args.phase_space,
    )  # fmt: skip


def open_mlflow(options: ExperimentOptions) -> None:
    """Open (or create) the experiment's MLflow experiment now, so that a wrong URI is named
    before Ray and the trials start."""
    from raytrack.search.tracking import MlflowStore

    try:
        MlflowStore(options.mlflow, options.name, options.path)
    except Exception as err:  # MLflow's own errors (MlflowException, ...)
        raise ValueError(f"--mlflow {options.mlflow}: {err}") from err
    print(f"MLflow: every trial is a run of experiment {options.name!r} in {options.mlflow}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from raytrack.search.experiment import SearchInterruptedError, run_experiment
    from raytrack.search.experiment_options import write_options
    from raytrack.search.layout import EXPERIMENT_FILE, RAY_LOG
    from raytrack.search.resources import check_trials_fit, describe_resources
    from raytrack.search.space import SearchSpaceError

    plan = None
    try:
        plan = plan_from_args(args, given_options(parser, argv))
        if plan.options.mlflow:
            open_mlflow(plan.options)
        start_ray(args, log=plan.options.path / RAY_LOG)
        options = plan.options
        gpus = ray.cluster_resources().get("GPU", 0)
        if not args.resume and args.gpus_per_trial is None and gpus >= 1:
            options = dataclasses.replace(options, gpus_per_trial=1.0)
        check_trials_fit(options, wait_s=JOIN_WAIT_S if args.address else 0.0)
        plan = dataclasses.replace(plan, options=options)
        write_options(options)  # from here on, Ctrl-C leaves an experiment --resume continues
        if plan.dataset is not None:
            ensure_dataset(plan.dataset, options)
        if gpus == 0:
            print("notice: no GPU in this Ray cluster; trials train on CPUs", flush=True)
        print(describe_resources(options), flush=True)
        run_experiment(options, resume=args.resume, splits=plan.splits)
    except SearchInterruptedError as err:  # its leaderboard and report are written
        print(f"{err}\nto continue it: {resume_command(args, err.options)}", flush=True)
        return INTERRUPTED
    except KeyboardInterrupt:  # before the search ran, or Ctrl-C again while it stopped
        print("\ninterrupted", file=sys.stderr)
        if plan is not None and (plan.options.path / EXPERIMENT_FILE).is_file():
            print(f"to continue it: {resume_command(args, plan.options)}", file=sys.stderr)
        return INTERRUPTED
    except (ValueError, FileNotFoundError, DatasetError, PhaseSpaceError, SearchSpaceError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
