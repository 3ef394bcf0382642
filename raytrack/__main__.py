"""python -m raytrack: the commands raytrack has, one line each.

Each line is the first sentence of the command's own module docstring, read from its source
file without importing it: the overview answers at once, without torch or Ray.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

#: Each command: the module whose ``main`` runs it (``python -m raytrack.NAME`` and the
#: ``raytrack-NAME`` console script both end there) and whose docstring describes it.
COMMANDS = {
    "generate": "raytrack.generate",
    "train": "raytrack.train",
    "evaluate": "raytrack.evaluate.cli",
    "export": "raytrack.export.cli",
    "tune": "raytrack.tune",
    "report": "raytrack.report.cli",
    "bench": "raytrack.bench",
}

GPU_NOTE = (
    "One GPU of several: train --device cuda:1, or CUDA_VISIBLE_DEVICES=1 in the environment\n"
    "(the process then sees that GPU alone; Ray gives each tune trial its own this way)."
)


def module_file(module: str) -> Path:
    """The source file of ``module`` (a module or a package) under this package, not imported."""
    base = Path(__file__).resolve().parent.joinpath(*module.split(".")[1:])
    plain = base.with_suffix(".py")
    return plain if plain.is_file() else base / "__init__.py"


def summary(module: str) -> str:
    """The first sentence of ``module``'s docstring, without its ``python -m ...:`` usage
    prefix and parentheticals."""
    source = module_file(module).read_text(encoding="utf-8")
    text = ast.get_docstring(ast.parse(source)) or ""
    first = " ".join(text.split("\n\n")[0].split())
    if first.startswith(("python -m ", "``python -m ")) and ": " in first:
        first = first.split(": ", 1)[1]
    first = re.sub(r" \([^)]*\)", "", first)
    return first.split(". ")[0].rstrip(".") + "."


def overview() -> str:
    width = max(map(len, COMMANDS))
    lines = [
        "raytrack: the commands (python -m raytrack.NAME or raytrack-NAME; --help on each)",
        "",
    ]
    lines += [f"  {name:<{width}}  {summary(module)}" for name, module in COMMANDS.items()]
    return "\n".join([*lines, "", GPU_NOTE])


def main(argv: list[str] | None = None) -> int:
    """Print the overview; any argument but --help is refused, with the overview."""
    args = sys.argv[1:] if argv is None else argv
    known = not args or args[0] in ("-h", "--help")
    print(overview(), file=sys.stdout if known else sys.stderr)
    if not known:
        print(
            f"\nraytrack: unknown argument {args[0]!r}; run one of the commands above",
            file=sys.stderr,
        )
    return 0 if known else 2


if __name__ == "__main__":
    sys.exit(main())
