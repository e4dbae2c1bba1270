"""The import graph of ``src/ssmvlm``: no import cycles, and no package imports from a package above it.

Imports are read from the source (every ``import`` statement, including those inside functions, which run
later but still tie the modules together); imports under ``if TYPE_CHECKING:`` are left out because they
never run. The layering order is the one docs/ARCHITECTURE.md draws ("Layers, bottom to top").
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "src" / "ssmvlm"
ARCHITECTURE = REPO / "docs" / "ARCHITECTURE.md"
LAYERS_HEADING = "Layers, bottom to top:"
ROOT_LAYER = "__init__"  # ssmvlm/__init__.py itself

Graph = Mapping[str, Iterable[str]]


def module_name(path: Path, root: Path = SOURCE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST) -> Iterable[ast.Import | ast.ImportFrom]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            yield from (n for child in node.orelse for n in _import_nodes(ast.Module([child], [])))
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        yield from _import_nodes(node)


def imports_of(path: Path, modules: set[str], root: Path = SOURCE) -> set[str]:
    """The modules of ``modules`` that ``path`` imports. ``from package import submodule`` is an import of the
    submodule; a parent package that Python initialises on the way is not counted (it is a package's own
    business what its ``__init__`` pulls in)."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            base = ".".join([*anchor, *([node.module] if node.module else [])])
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            found.add(submodule if submodule in modules else base)
    return {module for module in found if module in modules and module != name}


def import_graph(root: Path = SOURCE) -> dict[str, set[str]]:
    paths = sorted(root.rglob("*.py"))
    modules = {module_name(path, root) for path in paths}
    return {module_name(path, root): imports_of(path, modules, root) for path in paths}


def package_of(module: str) -> str:
    """``ssmvlm.study.runner`` → ``study``; top-level modules (``ssmvlm.config``) are their own package."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ROOT_LAYER


def package_graph(graph: Graph) -> dict[str, set[str]]:
    packages: dict[str, set[str]] = {}
    for module, targets in graph.items():
        edges = packages.setdefault(package_of(module), set())
        edges.update(package_of(target) for target in targets if package_of(target) != package_of(module))
    return packages


def find_cycles(graph: Graph) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def layer_violations(graph: Graph, layers: list[str]) -> list[str]:
    """Every import of a module from a package above its own (or from a package the layers do not name)."""
    rank = {layer: position for position, layer in enumerate(layers)}
    problems = []
    for module, targets in sorted(graph.items()):
        source = package_of(module)
        for target in sorted(targets):
            destination = package_of(target)
            if source not in rank or destination not in rank:
                unknown = source if source not in rank else destination
                problems.append(f"{module} → {target}: package {unknown!r} is not in the layers")
            elif rank[destination] > rank[source]:
                problems.append(f"{module} → {target}: {source} imports from {destination}, which is above it")
    return problems


def documented_layers(text: str) -> list[str]:
    """The layers on the line after the "Layers, bottom to top:" heading: ``a`` → ``b`` → ..."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(LAYERS_HEADING))
    line = next(line for line in lines[start + 1 :] if line.strip() and not line.startswith("```"))
    return [layer.strip().strip("`").removeprefix("ssmvlm/").removesuffix(".py") for layer in line.split("→")]


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_no_module_import_cycles(graph: dict[str, set[str]]) -> None:
    assert find_cycles(graph) == []


def test_no_package_import_cycles(graph: dict[str, set[str]]) -> None:
    assert find_cycles(package_graph(graph)) == []


def test_no_package_imports_from_a_package_above_it(graph: dict[str, set[str]]) -> None:
    layers = documented_layers(ARCHITECTURE.read_text(encoding="utf-8"))
    assert set(package_graph(graph)) <= set(layers), "docs/ARCHITECTURE.md's layers miss a package"
    assert layer_violations(graph, layers) == []


def test_the_checks_fail_on_a_bad_graph(tmp_path: Path) -> None:
    """A lazy upward import inside a function, and a cycle through ``from package import submodule``."""
    root = tmp_path / "ssmvlm"
    files = {
        "__init__.py": "",
        "low/__init__.py": "",
        "low/a.py": "from ssmvlm.low import b\n",
        "low/b.py": "def f():\n    from ssmvlm.high.c import g\n",
        "high/__init__.py": "",
        "high/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ssmvlm.low import a\n"
        "from ssmvlm.low.a import x\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    graph = import_graph(root)
    assert graph["ssmvlm.low.a"] == {"ssmvlm.low.b"} and graph["ssmvlm.high.c"] == {"ssmvlm.low.a"}
    assert find_cycles(graph) == [["ssmvlm.high.c", "ssmvlm.low.a", "ssmvlm.low.b"]]
    assert find_cycles(package_graph(graph)) == [["high", "low"]]
    assert layer_violations(graph, ["low", "high"]) == [
        "ssmvlm.low.b → ssmvlm.high.c: low imports from high, which is above it"
    ]
    assert layer_violations({"ssmvlm.x.m": {"ssmvlm.y.n"}}, ["x"]) == [
        "ssmvlm.x.m → ssmvlm.y.n: package 'y' is not in the layers"
    ]
    assert documented_layers("intro\nLayers, bottom to top:\n\n```\n`utils` → `ssmvlm/__init__.py` → `cli`\n```") == [
        "utils",
        "__init__",
        "cli",
    ]
