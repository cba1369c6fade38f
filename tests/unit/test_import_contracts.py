"""The import contracts in `.importlinter` hold (the package's parts import downwards, the API and the engines
are independent, engine modules only through the registry, the llama.cpp entrypoint free of the operator's
dependencies), and no import circle is left, type-only imports included (docs/architecture.md, "Layers")."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import grimp
from importlinter.cli import lint_imports

REPO = Path(__file__).resolve().parents[2]


def test_import_contracts_are_kept() -> None:
    assert lint_imports(config_filename=str(REPO / ".importlinter"), no_cache=True) == 0


def circles(nodes: Iterable[str], imports: Callable[[str], Iterable[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan, iterative): each an import circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(sorted(imports(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            child = next(edges, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(imports(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_circles_finds_one() -> None:
    graph = {"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}
    assert circles(graph, lambda n: graph[n]) == [["a", "b", "c"]]


def _graph() -> grimp.ImportGraph:
    return grimp.build_graph("modeldeploy", exclude_type_checking_imports=False, cache_dir=None)


def test_no_module_imports_itself_through_others() -> None:
    graph = _graph()
    assert circles(sorted(graph.modules), graph.find_modules_directly_imported_by) == []


def test_no_circle_between_the_packages_parts() -> None:
    graph = _graph()

    def part(module: str) -> str:
        return ".".join(module.split(".")[:2])

    parts = sorted({part(m) for m in graph.modules} - {"modeldeploy"})
    edges: dict[str, set[str]] = {p: set() for p in parts}
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            if part(module) in edges and part(imported) in edges and part(module) != part(imported):
                edges[part(module)].add(part(imported))
    assert circles(parts, lambda p: edges[p]) == []
