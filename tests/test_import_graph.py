"""Imports run one way: engine <- indexer, engine <- webui, and no circle inside engine/, indexer/ or webui/
(read from the sources' import statements, lazy and type-checking ones included)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"engine": "babelsearch.engine", "indexer": "babelsearch.indexer", "webui": "babelsearch.webui"}
# circles issue 23 has still to take apart: a ratchet, so none is added and one taken apart is struck off
KNOWN_CIRCLES: list[set[str]] = [
    {"indexer.writer", "indexer.training", "indexer.tuning", "indexer.recovery"},
]


def modules() -> dict[str, Path]:
    found = {}
    for folder, package in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = [part for part in path.relative_to(ROOT / folder).with_suffix("").parts if part != "__init__"]
            found[".".join([package, *parts])] = path
    return found


def imported(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of ``known`` that ``module`` imports (a package's own parents left out: importing a
    submodule runs its package's __init__, which is no dependency of the submodule's code)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [target] + [f"{target}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        out |= {name for name in names if name in known and name != module and not module.startswith(name + ".")}
    return out


def circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {module: imported(module, path, known) for module, path in known.items()}


def short(name: str) -> str:
    return name.removeprefix("babelsearch.")


def test_no_import_circle_but_those_still_listed():
    found = [{short(name) for name in group} for group in circles(graph())]
    assert sorted(map(sorted, found)) == sorted(map(sorted, KNOWN_CIRCLES))


def test_the_query_layer_imports_neither_the_indexer_nor_the_web_ui():
    for module, targets in graph().items():
        if module.startswith("babelsearch.engine"):
            assert not [t for t in targets if not t.startswith("babelsearch.engine")], module
        if module.startswith("babelsearch.indexer"):
            assert not [t for t in targets if t.startswith("babelsearch.webui")], module


def test_the_circle_finder_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert circles({"a": {"b"}, "b": set()}) == []
