"""The import graph of ``src/modelport``: no circles (type-only imports included), and arrows
that point one way: front doors → runtime → model → frameworks, the store below the runtime."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "modelport"

LAYERS: dict[str, tuple[str, ...]] = {
    # package -> packages it must never import, even for types
    "modelport.frameworks": ("runtime", "server", "store", "integrations", "cli", "deploy"),
    "modelport.model": ("runtime", "server", "store", "integrations", "cli", "frameworks"),
    "modelport.store": ("runtime", "server", "integrations", "cli", "report"),
    "modelport.runtime": ("server", "integrations", "cli", "deploy"),
    "modelport.protocol": ("runtime", "server", "store", "integrations", "cli"),
    "modelport.report": ("runtime", "server", "integrations", "cli"),
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        if "_grpc" in path.parts:  # generated stubs
            continue
        name = ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        found[name] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """Module → the modelport modules it imports anywhere (functions, TYPE_CHECKING blocks)."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                target = ".".join([*base, *([node.module] if node.module else [])])
                for alias in node.names:
                    full = f"{target}.{alias.name}"
                    graph[name].add(full if full in modules else target)
            elif isinstance(node, ast.Import):
                graph[name].update(a.name for a in node.names)
        graph[name] = {m for m in graph[name] if m in modules and m != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circles() -> None:
    assert cycles(import_graph()) == []


def test_the_check_finds_a_circle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_arrows_point_down(layer: str) -> None:
    banned = tuple(f"modelport.{p}" for p in LAYERS[layer])
    wrong = sorted(
        f"{module} -> {target}"
        for module, targets in import_graph().items()
        if module == layer or module.startswith(f"{layer}.")
        for target in targets
        if target.startswith(banned)
    )
    assert wrong == []
