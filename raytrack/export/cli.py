"""python -m raytrack.export RUN_DIR --header OUT.h: a trained model as a GPU-trigger header.

RUN_DIR: a run of ``python -m raytrack.train``, a search's ``best/`` (``runs/NAME/best``), one of
its Ray Tune trial directories (its latest checkpoint), or a model.bin file. Writes one
self-contained C++17/CUDA header: the weights, normalisation and field tables as constant
arrays (``__constant__`` under nvcc) and ``predict`` / ``predict_with_jacobian``, callable from
host code and from CUDA kernels (docs/trigger_header.md). A model whose constant data exceeds
the 64 KB of CUDA constant memory is refused.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from raytrack.cli import HelpFormatter
from raytrack.export.header import DEFAULT_NAMESPACE, check_namespace, load_model, write_header
from raytrack.export.header_data import CONSTANT_MEMORY_BYTES, PRECISIONS
from raytrack.files import check_writable


def _namespace(text: str) -> str:
    try:
        return check_namespace(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m raytrack.export", description=__doc__, formatter_class=HelpFormatter
    )
    parser.add_argument(
        "run_dir",
        metavar="RUN_DIR",
        help="a run of python -m raytrack.train, a search's best/, one of its trial "
        "directories, or a model.bin",
    )
    parser.add_argument(
        "--header", required=True, metavar="OUT.h", help="the C++17/CUDA header to write"
    )
    parser.add_argument(
        "--namespace",
        type=_namespace,
        default=DEFAULT_NAMESPACE,
        help="C++ namespace of the header's arrays and functions (a or a::b)",
    )
    parser.add_argument(
        "--precision",
        choices=sorted(PRECISIONS),
        default="float32",
        help="arithmetic and table storage of the formulation (the network is float32 always)",
    )
    args = parser.parse_args(argv)
    try:
        check_writable(args.header, "--header", is_file=True)
        model = load_model(args.run_dir)
        data = write_header(
            model, args.header, args.namespace, args.precision, origin=str(args.run_dir)
        )
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(
        f"wrote {Path(args.header)}: namespace {args.namespace}, {model.weight_count} weights, "
        f"constant data {data.total} of {CONSTANT_MEMORY_BYTES} bytes ({data.describe()})"
        + (f"; {data.describe_global()}" if data.field_tables else "")
    )
    return 0
