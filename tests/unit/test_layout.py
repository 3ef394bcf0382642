"""The house: no import circle anywhere in raytrack/ (each layer imports only below it), the
models below evaluation, export, the run pipeline and the search, every package installed, and
no module too long to read (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "raytrack"
#: Longer modules do several jobs: split them along those jobs (docs/architecture.md).
MAX_MODULE_LINES = 500


def _module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(
    node: ast.Import | ast.ImportFrom, module: str, is_package: bool, modules: set[str]
) -> set[str]:
    """The modules of ``modules`` that an import statement in ``module`` loads."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names} & modules
    base = node.module or ""
    if node.level:  # relative: resolve against the importing module's package
        parts = module.split(".")
        parts = parts[: len(parts) + is_package - node.level]
        base = ".".join(parts + ([node.module] if node.module else []))
    # ``from a import b`` loads the module a.b when there is one, else takes the name b from a.
    found = {
        f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
        for alias in node.names
    }
    return found & modules


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Each module of ``package`` -> the modules of ``package`` it imports.

    Imports inside functions count too: a lazy import hides a circle from the interpreter, not
    from the reader (nor from the next change that moves it to the top of the file).
    """
    paths = {_module_name(p, package): p for p in package.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in paths.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        imports = (n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom))
        is_package = path.name == "__init__.py"
        targets = set().union(*(_imported(n, module, is_package, set(paths)) for n in imports))
        graph[module] = targets - {module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a path ``[a, b, ..., a]``, or None (depth-first, three colours)."""
    done: set[str] = set()
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if target in path:
                return path[path.index(target) :] + [target]
            if target not in done and (cycle := visit(target)):
                return cycle
        path.pop()
        done.add(module)
        return None

    for module in sorted(graph):
        if module not in done and (cycle := visit(module)):
            return cycle
    return None


def test_the_graph_sees_imports_of_every_kind(tmp_path):
    # A guard for the guard: a graph that missed imports would pass the test below vacuously.
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "from pkg.top import thing\n",
        "top.py": "import os\nfrom pkg.sub import low\n",
        "sub/__init__.py": "",
        "sub/low.py": "def later():\n    from .. import lazy\n",
        "lazy.py": "from . import sub\nfrom .sub.low import later\n",
    }
    for name, text in files.items():
        (package / name).write_text(text)
    assert import_graph(package) == {
        "pkg": {"pkg.top"},
        "pkg.top": {"pkg.sub.low"},
        "pkg.sub": set(),
        "pkg.sub.low": {"pkg.lazy"},  # relative, inside a function
        "pkg.lazy": {"pkg.sub", "pkg.sub.low"},
    }
    assert find_cycle(import_graph(package)) == ["pkg.sub.low", "pkg.lazy", "pkg.sub.low"]


def test_find_cycle_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_circle_in_raytrack():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_every_package_is_installed():
    # pyproject lists packages by hand (search_spaces/ is mapped in), so a new subpackage that
    # is not listed would be missing from a wheel while an editable install still finds it.
    import tomllib

    listed = set(
        tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"][
            "packages"
        ]
    )
    found = {_module_name(p, PACKAGE) for p in PACKAGE.rglob("__init__.py")}
    assert found <= listed, f"not in pyproject's packages: {sorted(found - listed)}"


def test_models_never_import_evaluation_export_or_the_run_pipeline():
    upward = ("raytrack.evaluate", "raytrack.export", "raytrack.run", "raytrack.search")
    offending = {
        (module, target)
        for module, targets in import_graph().items()
        if module.startswith("raytrack.models")
        for target in targets
        if target.startswith(upward)
    }
    assert not offending


def test_no_module_is_longer_than_a_reader_can_hold():
    too_long = {
        str(path.relative_to(PACKAGE.parent)): lines
        for path in PACKAGE.rglob("*.py")
        if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not too_long
