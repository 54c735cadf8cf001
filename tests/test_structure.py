"""The code's shape: imports point one way (flows -> tasks -> llara) and form no circle (static import graph over
llara/, tasks/, flows/, every import statement counted, also those inside functions or ``if`` blocks, and modules
named in strings for a lazy import such as ``"llara.recommenders.sasrec:SASRec"``); no module is longer than
MAX_LINES."""

from __future__ import annotations

from pathlib import Path

import pytest

from llara.code_key import imported_names

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("llara", "tasks", "flows")
LAYER = {"llara": 0, "tasks": 1, "flows": 2}
MAX_LINES = 400  # one readable file per concern: a longer module has two


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> project modules it imports (a name resolves to the longest project module it starts with)."""
    mods = modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for module, path in mods.items():
        targets = {resolve(name) for name in imported_names(path, module)}
        graph[module] = {t for t in targets if t and t != module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_cycle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle():
    assert cycles(import_graph()) == []


def test_imports_point_one_way():
    """flows -> tasks -> llara; the library imports neither Prefect nor the adapters; tasks never use llara.cli."""
    graph = import_graph()
    upward = [(m, t) for m, targets in graph.items() for t in targets if LAYER[t.split(".")[0]] > LAYER[m.split(".")[0]]]
    assert upward == []
    into_cli = [(m, t) for m, targets in graph.items() for t in targets
                if t.startswith("llara.cli") and not m.startswith(("llara.cli", "llara.__main__"))]
    assert into_cli == []
    for module, path in modules().items():
        if module.startswith("llara"):
            assert not any(n.split(".")[0] == "prefect" for n in imported_names(path, module)), module


@pytest.mark.parametrize("package", PACKAGES)
def test_every_package_is_parsed(package):
    assert any(m.split(".")[0] == package for m in modules())


def test_no_module_over_the_line_limit():
    long = {str(path.relative_to(ROOT)): n for path in modules().values()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}, f"modules over {MAX_LINES} lines (split them by concern): {long}"
