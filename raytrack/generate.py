"""python -m raytrack.generate: make a Parquet dataset of propagated tracks on Ray Data.

    python -m raytrack.generate --samples 1000000 --out data/default
    python -m raytrack.generate --samples 200000 --out data/classic --phase-space classic
    python -m raytrack.generate --samples 1000000 --out data/default-jac --jacobian

Run the same command again after an interruption to finish the missing shards.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from raytrack.cli import HelpFormatter, positive_int
from raytrack.data.phase_space import PhaseSpaceError, load_phase_space
from raytrack.data.pipeline import generate_dataset
from raytrack.data.schema import DatasetError
from raytrack.data.shards import DatasetSpec
from raytrack.devices import check_device
from raytrack.files import check_writable
from raytrack.physics import field_from_spec

TRACKS_PER_DEFAULT_SHARD = 250_000


def default_shards(samples: int) -> int:
    """At least 10 shards (so splits by shard are fine-grained), at most 250k tracks each."""
    return min(samples, max(10, math.ceil(samples / TRACKS_PER_DEFAULT_SHARD)))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m raytrack.generate",
        description="Propagate tracks through the magnetic field and write Parquet shards.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--samples", type=int, required=True, help="tracks in the dataset")
    parser.add_argument(
        "--out", required=True, help="dataset directory (new, empty, or this dataset's)"
    )
    parser.add_argument("--shards", type=int, help="Parquet files (default: max(10, samples/250k))")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument(
        "--workers", type=positive_int, help="parallel tasks (default: every CPU Ray sees)"
    )
    parser.add_argument(
        "--phase-space",
        default="default",
        help="a built-in name (default, classic) or a TOML file (default: default)",
    )
    parser.add_argument(
        "--field",
        nargs="+",
        default=["default"],
        metavar="default|FILE",
        help="'default' (Gaussian dipole), LHCb's four quadrant .cdf files, or one x y z Bx By Bz "
        "table (.txt/.csv/.npz, needs --field-unit) (default: default)",
    )
    parser.add_argument("--field-unit", help="unit of a table's field values: T or gauss")
    parser.add_argument(
        "--polarity", choices=("down", "up"), default="down", help="of the default field only"
    )
    parser.add_argument(
        "--device", default="cpu", help="cpu or cuda (torch device of the integration)"
    )
    parser.add_argument(
        "--jacobian",
        action="store_true",
        help="also store the transport Jacobian d end / d start as 20 float64 columns "
        "J_<out>_<in> (out: x, y, tx, ty; in: x, y, tx, ty, qop); a dataset of its own",
    )
    parser.add_argument(
        "--address", help="join a Ray cluster: auto or HOST:PORT (default: start a local one)"
    )
    return parser


def spec_from_args(args: argparse.Namespace) -> DatasetSpec:
    if args.polarity != "down" and args.field != ["default"]:
        raise ValueError(
            "--polarity applies to the default field; a map is measured at one polarity"
        )
    if args.field_unit is not None and not _is_table(args.field):
        raise ValueError(
            "--field-unit applies to a table given with --field (.txt/.csv/.npz), not to the "
            "default field or LHCb's .cdf files"
        )
    if not (args.device == "cpu" or args.device.startswith("cuda")):
        raise ValueError(f"--device must be cpu or cuda, got {args.device!r}")
    if args.address is None:  # a local Ray runs the tasks with this process's torch
        check_device(args.device)
    return DatasetSpec(
        samples=args.samples,
        shards=args.shards if args.shards is not None else default_shards(args.samples),
        seed=args.seed,
        phase_space=load_phase_space(args.phase_space),
        field=field_from_spec(args.field, field_unit=args.field_unit, polarity=args.polarity),
        device=args.device,
        jacobian=args.jacobian,
    )


def _is_table(field: list[str]) -> bool:
    """Whether ``--field`` names one table file (the only field whose unit is given)."""
    return len(field) == 1 and field != ["default"] and not field[0].endswith(".cdf")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    parameters: dict[str, Any] = {
        k: v for k, v in vars(args).items() if k not in ("workers", "address")
    }
    try:
        spec = spec_from_args(args)
        check_writable(args.out, "--out")
        manifest = generate_dataset(
            spec, args.out, workers=args.workers, address=args.address, parameters=parameters
        )
    except (ValueError, DatasetError, PhaseSpaceError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\ninterrupted: run the same command again to finish {args.out}", file=sys.stderr)
        return 130
    rows = sum(r["rows"] for r in manifest["shards"].values())
    with_jacobian = " (with the Jacobian columns)" if spec.jacobian else ""
    print(
        f"dataset {manifest['dataset_id']}: {rows} tracks{with_jacobian} in "
        f"{len(manifest['shards'])} shards in {args.out}; dropped {manifest['dropped'] or 'none'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
