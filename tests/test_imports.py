"""No import circles in ``detector/`` or ``training/`` (issue 23).

Every module is parsed with :mod:`ast` (nothing is imported) and every import statement
in it counts, wherever it sits: at the top, inside a function, under ``if
TYPE_CHECKING:`` or in a ``try``. A function-level import only postpones a circle to
run time, and a type-checking-only one is still a two-way dependency between the
modules, so neither is allowed to close a loop.

An import of ``a.b.c`` depends on ``a.b.c`` and on the packages ``a`` and ``a.b`` whose
``__init__`` Python runs first, except the importer's own packages (initialised before
it in any case). Imports of anything outside the two trees are ignored.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("detector", "training")

Graph = dict[str, set[str]]


def module_name(path: Path, root: Path) -> str:
    """``detector/io/wire.py`` -> ``detector.io.wire``; a package's ``__init__.py`` -> the package."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def imported_names(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Every dotted name ``tree`` imports (relative imports resolved against ``module``).

    ``from a import b`` yields both ``a`` and ``a.b``: which of them is a module is for
    :func:`import_graph` to decide.
    """
    names: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return names


def import_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> Graph:
    """Module -> the modules of ``packages`` it imports (see the module docstring)."""
    files = {
        module_name(p, root): p
        for pkg in packages
        for p in sorted((root / pkg).rglob("*.py"))
        if "__pycache__" not in p.parts
    }
    graph: Graph = {}
    for mod, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        own = set(_ancestors(mod))
        deps: set[str] = set()
        for name in imported_names(tree, mod, path.name == "__init__.py"):
            if name not in files or name in own:
                continue
            deps.add(name)
            deps.update(a for a in _ancestors(name) if a in files and a not in own)
        deps.discard(mod)
        graph[mod] = deps
    return graph


def find_cycles(graph: Graph) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected component that has one."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def strongconnect(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                components.append(comp)

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)

    cycles = []
    for comp in components:
        members = set(comp)
        start = min(comp)
        # breadth-first from start back to start inside the component: a shortest cycle
        prev: dict[str, str] = {}
        frontier = [start]
        found = None
        while frontier and found is None:
            nxt = []
            for v in frontier:
                for w in sorted(graph.get(v, ())):
                    if w == start:
                        found = v
                        break
                    if w in members and w not in prev:
                        prev[w] = v
                        nxt.append(w)
                if found is not None:
                    break
            frontier = nxt
        assert found is not None
        path = [found]
        while path[-1] != start:
            path.append(prev[path[-1]])
        cycles.append([*reversed(path), start])
    return sorted(cycles)


def describe(cycles: list[list[str]]) -> str:
    return "import circles:\n" + "\n".join("  " + " -> ".join(c) for c in cycles)


# ---------------------------------------------------------------- the real trees
def test_no_import_circles() -> None:
    graph = import_graph(ROOT)
    assert "detector.pipeline" in graph and "training.train" in graph
    cycles = find_cycles(graph)
    assert not cycles, describe(cycles)


def test_detector_top_level_holds_only_the_pipeline() -> None:
    """Issue 23's layout: stages live in subpackages; pipeline, stream and config on top."""
    top = {p.name for p in (ROOT / "detector").iterdir() if p.name != "__pycache__"}
    packages = {p for p in top if (ROOT / "detector" / p / "__init__.py").exists()}
    assert top - packages == {"__init__.py", "pipeline.py", "stream.py", "config.py", "py.typed", "data"}


# ---------------------------------------------------------------- the checker can fail
def test_find_cycles_on_a_synthetic_graph() -> None:
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"a"}}) == [["a", "a"]]
    two = find_cycles({"a": {"b"}, "b": {"a"}, "x": {"y"}, "y": {"x", "a"}})
    assert two == [["a", "b", "a"], ["x", "y", "x"]]
    with pytest.raises(AssertionError, match=r"a -> b -> a"):
        assert not two, describe(two)


def test_function_level_and_type_checking_imports_count(tmp_path: Path) -> None:
    pkg = tmp_path / "detector"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "top.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from detector.sub.leaf import X\n"
    )
    (pkg / "sub" / "leaf.py").write_text("def f():\n    from .. import top\n    return top\n")
    (pkg / "sub" / "other.py").write_text("import numpy\nfrom detector.sub import leaf\n")
    graph = import_graph(tmp_path, ("detector",))
    assert graph["detector.top"] == {"detector.sub", "detector.sub.leaf"}
    assert graph["detector.sub.leaf"] == {"detector.top"}
    assert graph["detector.sub.other"] == {"detector.sub.leaf"}  # own package, numpy: no edge
    assert find_cycles(graph) == [["detector.sub.leaf", "detector.top", "detector.sub.leaf"]]


def test_readme_and_docs_name_modules_that_exist() -> None:
    """Every ``detector/....py`` path and ``detector.x.y`` module the docs name is in the tree."""
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    modules = set(import_graph(ROOT))
    missing = []
    for doc in docs:
        text = doc.read_text()
        for path in re.findall(r"\b(?:detector|training)/[\w/]+\.py\b", text):
            if not (ROOT / path).is_file():
                missing.append(f"{doc.name}: {path}")
        for mod in re.findall(r"(?<![\w/.])(?:detector|training)(?:\.[a-z_]\w*)+", text):
            # the longest prefix that is a module; what follows is an attribute
            parts = mod.split(".")
            if not any(".".join(parts[:i]) in modules for i in range(2, len(parts) + 1)):
                missing.append(f"{doc.name}: {mod}")
    assert not missing, missing
