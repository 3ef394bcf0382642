"""python -m raytrack.train: train one model on one dataset into a run directory.

    python -m raytrack.train --data data/classic --preset small --out runs/small --time-budget 600

Writes RUN_DIR with the checkpoint, the metrics history, the evaluation report and the exports
(model.onnx, model_jacobian.onnx, model.bin, metadata.json). Run the same command again to resume
an interrupted run; a finished run is left as it is.

The exported weights are those of the best epoch: the lowest validation P95 position error,
the figure python -m raytrack.tune ranks its trials by.

One GPU of several: --device cuda:1 (torch's numbering), or CUDA_VISIBLE_DEVICES=1 in the
environment (the process then sees that GPU alone, as cuda).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

from raytrack.cli import (
    HelpFormatter,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)
from raytrack.data import DatasetError, load
from raytrack.devices import check_device
from raytrack.evaluate import print_summary
from raytrack.files import check_writable
from raytrack.models.formulation import BASES, INPUT_SETS
from raytrack.models.mlp import TARGET_MODES
from raytrack.models.presets import get_preset, load_presets
from raytrack.models.train_config import LOSSES, PRECISIONS, SCHEDULES, TrainConfig
from raytrack.run.directory import OUTPUTS, RunSpec, checkpoint_summary, finished_run
from raytrack.run.pipeline import json_report, train_run

#: With a time budget the clock ends the run (and drives the cosine schedule), not an epoch count.
UNLIMITED_EPOCHS = 1_000_000


def build_parser() -> argparse.ArgumentParser:
    defaults = TrainConfig()
    p = argparse.ArgumentParser(
        prog="python -m raytrack.train",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    p.add_argument("--data", required=True, help="dataset directory (python -m raytrack.generate)")
    p.add_argument("--preset", default="small", help=f"one of {sorted(load_presets())}")
    p.add_argument("--out", required=True, help="run directory (new, or this run's to resume)")
    p.add_argument(
        "--epochs",
        type=positive_int,
        help=f"default {defaults.epochs}, or unlimited with --time-budget",
    )
    p.add_argument("--batch", type=positive_int, default=defaults.batch_size, help="batch size")
    p.add_argument("--lr", type=positive_float, default=defaults.lr, help="peak learning rate")
    p.add_argument(
        "--weight-decay",
        type=non_negative_float,
        default=defaults.weight_decay,
        help="AdamW weight decay",
    )
    p.add_argument("--schedule", choices=SCHEDULES, default=defaults.schedule, help="LR schedule")
    p.add_argument(
        "--patience", type=positive_int, default=defaults.patience, help="early-stopping epochs"
    )
    p.add_argument(
        "--time-budget", type=positive_float, help="seconds of training (schedule follows it)"
    )
    p.add_argument(
        "--precision", choices=PRECISIONS, default=defaults.precision, help="of the matmuls"
    )
    p.add_argument("--seed", type=non_negative_int, default=defaults.seed, help="random seed")
    p.add_argument(
        "--jacobian-weight",
        type=non_negative_float,
        default=defaults.jacobian_weight,
        help="weight of the Jacobian-matching loss term (needs data from generate --jacobian)",
    )
    p.add_argument(
        "--loss",
        choices=LOSSES,
        default=defaults.loss,
        help="huber: targets scaled by their spread without the outer 1 %%, loss linear beyond "
        "it; mse: full standard deviation, mean squared error",
    )
    p.add_argument("--target", choices=TARGET_MODES, help="override the preset's target mode")
    p.add_argument("--activation", help="override the preset's activation")
    p.add_argument("--base", choices=BASES, help="override the preset's physics base")
    p.add_argument("--inputs", choices=tuple(INPUT_SETS), help="override the preset's inputs")
    p.add_argument(
        "--leg-power", type=float, help="override the preset's leg scaling of the targets"
    )
    p.add_argument(
        "--device",
        help="cpu, cuda or cuda:N, e.g. cuda:1 for the second GPU (default: cuda when this torch "
        "sees a GPU, else cpu); CUDA_VISIBLE_DEVICES=N also picks one",
    )
    p.add_argument(
        "--threads", type=positive_int, help="torch CPU threads (default: torch's choice)"
    )
    return p


def spec_from_args(args: argparse.Namespace) -> RunSpec:
    model = get_preset(args.preset)
    chosen = {
        "target": args.target,
        "activation": args.activation,
        "base": args.base,
        "inputs": args.inputs,
        "leg_power": args.leg_power,
    }
    overrides = {k: v for k, v in chosen.items() if v is not None}
    model = dataclasses.replace(model, **overrides)
    epochs = args.epochs or (UNLIMITED_EPOCHS if args.time_budget else TrainConfig().epochs)
    train = TrainConfig(
        epochs=epochs,
        batch_size=args.batch,
        lr=args.lr,
        weight_decay=args.weight_decay,
        schedule=args.schedule,
        patience=args.patience,
        time_budget=args.time_budget,
        precision=args.precision,
        seed=args.seed,
        jacobian_weight=args.jacobian_weight,
        loss=args.loss,
    )
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    check_device(device)
    return RunSpec(data_dir=args.data, model=model, train=train, name=args.preset, device=device)


def print_epoch(metrics: dict[str, float], _checkpoint) -> None:
    print(
        f"epoch {int(metrics['epoch']):4d}  loss {metrics['train_loss']:.3e}  "
        f"val {metrics['val_loss']:.3e}  pos mean {metrics['val_pos_mean_mm']:.4f} mm  "
        f"P95 {metrics['val_pos_p95_mm']:.4f} mm  P99 {metrics['val_pos_p99_mm']:.4f} mm  "
        f"{metrics['seconds']:.0f} s",
        flush=True,
    )


def checkpoint_epoch(run_dir: str | Path) -> int | None:
    """The epochs done in ``run_dir``'s checkpoint; None without a readable one."""
    summary = checkpoint_summary(run_dir)
    return None if summary is None else int(summary["epoch"])


def print_finished(out: str, summary: dict) -> None:
    """What a rerun of a finished run says instead of training, evaluating and exporting."""
    reason = f": {summary['reason']}" if summary["reason"] else ""
    best = summary["best"]
    print(
        f"run {out} is finished ({summary['status']}{reason}) after {summary['epoch']} epochs; "
        f"best epoch {int(best['epoch'])}, validation P95 {best['val_pos_p95_mm']:.4f} mm. "
        "Nothing to do."
    )
    print(f"its outputs are in {out}: {', '.join(OUTPUTS)}, evaluation/ (plots)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        spec = spec_from_args(args)
        check_writable(args.out, "--out")
        # The dataset's manifest (no shard is read) and the run directory are checked before
        # anything is said about training; finished_run refuses another run's directory.
        load(spec.data_dir, splits=(), jacobian=spec.train.jacobian_weight > 0)
        finished = finished_run(args.out, spec)
        if finished is not None:
            print_finished(args.out, finished)
            return 0
        print(
            f"training {spec.name} {list(spec.model.hidden)} ({spec.model.weight_count} weights) "
            f"on {spec.device}"
        )
        done = checkpoint_epoch(args.out)
        if done is not None:
            print(f"resuming from epoch {done} (the last checkpoint in {args.out})", flush=True)
        result = train_run(args.out, spec, callback=print_epoch)
    except (ValueError, DatasetError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # Checkpoints are written atomically after every epoch: nothing is lost but the epoch
        # in progress, and the same command goes on from the last one.
        done = checkpoint_epoch(args.out)
        since = "" if done is None else f" from epoch {done}"
        message = f"interrupted: run the same command again to resume {args.out}{since}"
        print(f"\n{message}", file=sys.stderr)
        return 130
    print(f"run {result.status}{': ' + result.reason if result.reason else ''}")
    if result.status == "failed":
        return 2
    print_summary(json_report(Path(args.out)))
    exports = "model.onnx, model_jacobian.onnx, model.bin, metadata.json"
    print(f"wrote {args.out}: {exports}, evaluation/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
