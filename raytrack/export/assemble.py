"""The C++ headers built from their parts in ``raytrack/export/cpp/``.

``raytrack/export/include/raytrack_mlp.hpp`` (model.bin's single-header reader, which users
include) is generated from the template ``cpp/raytrack_mlp.template.hpp`` and the parts it
names, and committed; the trigger headers of :mod:`raytrack.export.header` are made from
``cpp/trigger_header.template.hpp`` and the same ``core.hpp``, so both run the same per-track
code. After editing a part, regenerate (a test checks that the committed header is current)::

    python -m raytrack.export.assemble          # rewrite include/raytrack_mlp.hpp
    python -m raytrack.export.assemble --check  # exit 1 if it is out of date

A part or template is C++ text with two kinds of directives, each on a line of its own:
``// @include NAME.hpp`` is replaced by that part (recursively), and a first line
``// @part ...`` (what the part holds) is dropped. A template's ``@name@`` placeholders take
the values :func:`assemble` is given, in one pass (a value is never scanned again).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from raytrack.files import write_bytes_atomic

#: The parts and templates.
PARTS_DIR = Path(__file__).resolve().parent / "cpp"
#: The generated single header, where users include it from (``-I`` its directory).
MLP_HEADER = Path(__file__).resolve().parent / "include" / "raytrack_mlp.hpp"
MLP_TEMPLATE = "raytrack_mlp.template.hpp"
_INCLUDE = re.compile(r"^// @include (\S+)$", re.MULTILINE)
_PART_NOTE = "// @part "
_PLACEHOLDER = re.compile(r"@([a-z_]+)@")


def part(name: str) -> str:
    """A part or template with its ``// @include`` lines expanded and its note dropped."""
    path = PARTS_DIR / name
    if path.parent != PARTS_DIR or not path.is_file():
        raise FileNotFoundError(f"{path}: no such C++ part")
    text = path.read_text()
    if text.startswith(_PART_NOTE):
        text = text.split("\n", 1)[1]
    return _INCLUDE.sub(lambda m: part(m.group(1)).removesuffix("\n"), text)


def assemble(template: str, values: dict[str, str] | None = None) -> str:
    """The text of ``template`` with its parts in and each ``@name@`` replaced by
    ``values[name]``; a placeholder without a value, or a value without a placeholder, is an
    error."""
    values = values or {}
    text = part(template)
    found = set(_PLACEHOLDER.findall(text))
    if found != set(values):
        raise ValueError(
            f"{template}: placeholders {sorted(found)} but values for {sorted(values)}"
        )
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


def mlp_header_source() -> str:
    """The text of ``raytrack_mlp.hpp`` as its parts make it."""
    return assemble(MLP_TEMPLATE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m raytrack.export.assemble",
        description="Generate raytrack/export/include/raytrack_mlp.hpp from raytrack/export/cpp/.",
    )
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if the header is out of date"
    )
    args = parser.parse_args(argv)
    text = mlp_header_source()
    current = MLP_HEADER.read_text() if MLP_HEADER.is_file() else None
    if args.check:
        if current != text:
            print(f"{MLP_HEADER} is out of date: run python -m raytrack.export.assemble")
            return 1
        print(f"{MLP_HEADER} is up to date")
        return 0
    if current != text:
        write_bytes_atomic(MLP_HEADER, text.encode())
    print(f"wrote {MLP_HEADER}" if current != text else f"{MLP_HEADER} was up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
