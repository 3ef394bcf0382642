"""The package's layers: each module imports only below it (no import circles)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "raytrack"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """raytrack module -> the raytrack modules it imports, also inside functions (lazy imports
    hide a circle from the interpreter, not from the reader)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:  # ``from raytrack.models import run`` names a module
                    submodule = f"{node.module}.{alias.name}"
                    if submodule in modules:
                        targets.add(submodule)
                    elif node.module in modules:
                        targets.add(node.module)
        graph[name] = targets - {name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_models_never_import_evaluation_export_or_the_run_pipeline():
    upward = ("raytrack.evaluate", "raytrack.export", "raytrack.run", "raytrack.search")
    graph = import_graph()
    offending = {
        (module, target)
        for module, targets in graph.items()
        if module.startswith("raytrack.models")
        for target in targets
        if target.startswith(upward)
    }
    assert not offending


def test_no_import_circle_through_training_evaluation_or_export():
    layers = ("raytrack.models", "raytrack.evaluate", "raytrack.export", "raytrack.run")
    assert [c for c in circles(import_graph()) if any(m.startswith(layers) for m in c)] == []
