"""The command line of ``python -m raytrack.bench``: one subcommand per benchmark module."""

from __future__ import annotations

import argparse
import functools
import math
import sys

from raytrack.bench import accuracy, all, deploy, generate, infer, train
from raytrack.cli import HelpFormatter, positive_float, positive_int


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m raytrack.bench",
        description=description,
        formatter_class=HelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    command = functools.partial(commands.add_parser, formatter_class=HelpFormatter)
    generate = command("generate", help="propagation throughput against scalar RK4")
    generate.add_argument(
        "--tracks", type=positive_int, default=200_000, help="tracks per measurement"
    )
    generate.add_argument(
        "--baseline-tracks", type=positive_int, default=20, help="tracks for the slow baseline"
    )
    train = command("train", help="fast-path training against a DataLoader loop")
    train.add_argument("--preset", default="small", help="model to train")
    train.add_argument("--tracks", type=positive_int, default=100_000, help="tracks (90%% train)")
    train.add_argument("--epochs", type=positive_int, default=2, help="epochs per loop")
    train.add_argument("--device", default="cpu", help="cpu or cuda")
    infer = command("infer", help="exported models against propagate, one core")
    infer.add_argument("--tracks", type=positive_int, default=8192, help="tracks timed")
    infer.add_argument(
        "--presets", nargs="+", help="presets to time (default: every preset in presets.toml)"
    )
    accuracy = command("accuracy", help="generate, train a preset briefly, test errors by |dz|")
    accuracy.add_argument("--samples", type=positive_int, default=200_000, help="tracks generated")
    accuracy.add_argument("--preset", default="small", help="model to train")
    accuracy.add_argument("--budget", type=positive_float, default=120, help="seconds of training")
    accuracy.add_argument("--device", default="cpu", help="cpu or cuda")
    add_deploy(
        command("deploy", help="models against the integrator at equal accuracy, Python and C++")
    )
    every = command("all", help="every benchmark, smaller sizes, one table of every figure")
    every.add_argument("--device", default="cpu", help="cpu or cuda: training and generation")
    every.add_argument(
        "--search",
        choices=("auto", "yes", "no"),
        default="auto",
        help="run a small tune --search all (auto: only with --device cuda)",
    )
    every.add_argument(
        "--generate-tracks", type=positive_int, default=100_000, help="generate: tracks"
    )
    every.add_argument(
        "--baseline-tracks", type=positive_int, default=20, help="generate: slow baseline"
    )
    every.add_argument("--train-preset", default="small", help="train: model")
    every.add_argument("--train-tracks", type=positive_int, default=60_000, help="train: tracks")
    every.add_argument("--train-epochs", type=positive_int, default=2, help="train: epochs")
    every.add_argument("--infer-tracks", type=positive_int, default=4096, help="infer: tracks")
    every.add_argument("--infer-presets", nargs="+", help="infer: presets (default: every preset)")
    every.add_argument(
        "--accuracy-samples", type=positive_int, default=100_000, help="accuracy: tracks generated"
    )
    every.add_argument("--accuracy-preset", default="small", help="accuracy: model")
    every.add_argument(
        "--accuracy-budget", type=positive_float, default=60, help="accuracy: training seconds"
    )
    every.add_argument(
        "--search-num-samples", type=positive_int, default=4, help="search: Optuna trials"
    )
    every.add_argument(
        "--search-samples", type=positive_int, default=200_000, help="search: dataset tracks"
    )
    every.add_argument(
        "--search-max-epochs", type=positive_int, default=5, help="search: epochs per trial"
    )
    every.add_argument(
        "--search-time-budget",
        type=positive_float,
        default=60,
        help="search: training seconds a trial at most (keeps the whole run under 10 minutes)",
    )
    every.add_argument(
        "--gpus-per-trial", type=positive_float, default=0.25, help="search: GPU share a trial"
    )
    return parser


def main(argv: list[str] | None = None, description: str | None = None) -> int:
    args = build_parser(description).parse_args(argv)
    if args.command == "all":
        return all.bench_all(args)
    try:
        if args.command == "generate":
            generate.bench_generate(args.tracks, args.baseline_tracks)
        elif args.command == "train":
            train.bench_train(args.preset, args.tracks, args.epochs, args.device)
        elif args.command == "infer":
            infer.bench_infer(args.tracks, args.presets)
        elif args.command == "deploy":
            deploy.bench_deploy(
                args.run_dirs,
                args.preset,
                args.samples,
                args.budget,
                args.tracks,
                tuple(args.tolerances),
                tuple(args.step_caps),
                args.rounds,
            )
        else:
            accuracy.bench_accuracy(args.samples, args.preset, args.budget, args.device)
    except (ValueError, FileNotFoundError, RuntimeError) as err:  # RuntimeError: no C++ compiler
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def step_cap(text: str) -> float:
    """An argparse ``type``: a step cap in mm, or ``none`` (no cap)."""
    if text.lower() == "none":
        return math.inf
    return positive_float(text)


def add_deploy(deploy_parser: argparse.ArgumentParser) -> None:
    deploy_parser.add_argument(
        "run_dirs",
        nargs="*",
        metavar="RUN_DIR",
        help="runs to measure (a run, a search's best/ or a trial), each on its dataset's field "
        "and phase space (default: train a model here on the default dipole and on the "
        "window-frame test map)",
    )
    deploy_parser.add_argument(
        "--preset", default="trigger", help="without RUN_DIR: the model trained on each field"
    )
    deploy_parser.add_argument(
        "--samples",
        type=positive_int,
        default=60_000,
        help="without RUN_DIR: tracks each model is trained on (90%%) and validated on",
    )
    deploy_parser.add_argument(
        "--budget",
        type=positive_float,
        default=90,
        help="without RUN_DIR: seconds of training on each field",
    )
    deploy_parser.add_argument(
        "--tracks", type=positive_int, default=4096, help="fresh tracks every figure is made on"
    )
    deploy_parser.add_argument(
        "--tolerances",
        type=positive_float,
        nargs="+",
        metavar="MM",
        default=list(deploy.TOLERANCES_MM),
        help="integrator position tolerances searched, mm (slopes: 1e-3 of it)",
    )
    deploy_parser.add_argument(
        "--step-caps",
        type=step_cap,
        nargs="+",
        metavar="MM|none",
        default=list(deploy.STEP_CAPS_MM),
        help="integrator step caps searched, mm, or none",
    )
    deploy_parser.add_argument(
        "--rounds", type=positive_int, default=5, help="turns the timed engines take"
    )
