"""No import cycle among gencompare's modules.

A cycle works only as long as each side imports the other late enough (a function-level
import, a name looked up after both finished loading), and breaks in confusing ways when
someone moves an import. The graph is read with ``ast`` from the sources, not by importing
them: module-level and function-level imports alike, absolute (``import gencompare.x``,
``from gencompare.x import y``, ``from gencompare import x``) and relative (``from . import
x``, ``from ..x import y``). Imports under ``if TYPE_CHECKING:`` never run and are left out.

An edge goes to the module that is named: ``from gencompare.report import runs`` to the
submodule ``gencompare.report.runs`` when there is one, ``from gencompare.report import
compare`` to the package's ``__init__``. Importing a submodule also runs its package's
``__init__``, but that is no edge: a package ``__init__`` that imports its own submodules
is not a cycle by itself.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "gencompare"


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported module
    line: int
    scope: str  # "module level" or "in <function>"

    def __str__(self) -> str:
        return f"{self.source} -> {self.target}  (line {self.line}, {self.scope})"


def module_names(package_dir: Path) -> dict[str, Path]:
    """Dotted name -> file for every module of the package at ``package_dir``."""
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        if "__pycache__" in parts:
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class _ImportCollector(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, modules: set[str]):
        self.module, self.modules = module, modules
        self.package = module if is_package else module.rpartition(".")[0]
        self.scopes: list[str] = []
        self.imports: list[Import] = []

    def _known(self, name: str) -> str | None:
        """``name`` or its nearest enclosing module of the package (None: not ours)."""
        while name:
            if name in self.modules:
                return name
            name = name.rpartition(".")[0]
        return None

    def _add(self, target: str | None, node: ast.stmt) -> None:
        if target is not None and target != self.module:
            scope = f"in {self.scopes[-1]}" if self.scopes else "module level"
            self.imports.append(Import(self.module, target, node.lineno, scope))

    def _scoped(self, node) -> None:
        self.scopes.append(node.name if not self.scopes else f"{self.scopes[-1]}.{node.name}")
        self.generic_visit(node)
        self.scopes.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _scoped

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):  # never executed: only its else branch counts
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(self._known(alias.name), node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base_parts = self.package.split(".")
            if node.level > 1:
                base_parts = base_parts[: -(node.level - 1)]
            base = ".".join([*base_parts, *([node.module] if node.module else [])])
        else:
            base = node.module or ""
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            self._add(submodule if submodule in self.modules else self._known(base), node)


def import_graph(package_dir: Path) -> dict[str, list[Import]]:
    """Module -> the imports of other modules of the same package it makes."""
    modules = module_names(package_dir)
    graph: dict[str, list[Import]] = {}
    for name, path in modules.items():
        collector = _ImportCollector(name, path.name == "__init__.py", set(modules))
        collector.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        graph[name] = collector.imports
    return graph


def find_cycles(graph: dict[str, list[Import]]) -> list[list[Import]]:
    """One shortest cycle for each group of modules that import each other (each strongly
    connected component of more than one module), as the imports that close it."""
    successors = {m: sorted({i.target for i in imports}) for m, imports in graph.items()}
    # Tarjan's strongly connected components (iterative)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(successors[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(successors.get(child, []))))
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
                    components.append(sorted(component))
    cycles = []
    for component in components:
        members = set(component)
        first = component[0]
        # breadth-first from `first` back to itself, within the component
        previous: dict[str, str] = {}
        frontier = [first]
        while first not in previous:
            next_frontier = []
            for node in frontier:
                for child in successors[node]:
                    if child in members and child not in previous:
                        previous[child] = node
                        next_frontier.append(child)
            frontier = next_frontier
        path = [first]
        while True:
            path.append(previous[path[-1]])
            if path[-1] == first:
                break
        path.reverse()  # first -> ... -> first
        cycles.append([next(i for i in graph[a] if i.target == b) for a, b in zip(path, path[1:])])
    return cycles


def describe(cycles: list[list[Import]]) -> str:
    lines = []
    for cycle in cycles:
        lines.append("import cycle: " + " -> ".join([cycle[0].source, *(i.target for i in cycle)]))
        lines.extend(f"    {i}" for i in cycle)
    return "\n".join(lines)


def test_gencompare_has_no_import_cycle():
    graph = import_graph(PACKAGE_DIR)
    # the reader sees the package: modules, subpackages, and the imports between them
    assert {"gencompare", "gencompare.cli", "gencompare.train.loop", "gencompare.models.base"} <= set(graph)
    assert "gencompare.errors" in {i.target for i in graph["gencompare.cli"]}
    assert any(i.scope != "module level" for imports in graph.values() for i in imports), "function-level imports"
    cycles = find_cycles(graph)
    if cycles:
        pytest.fail("\n" + describe(cycles), pytrace=False)


def write_package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def edges(graph: dict[str, list[Import]]) -> set[tuple[str, str, str]]:
    return {(i.source, i.target, i.scope) for imports in graph.values() for i in imports}


def test_reader_resolves_every_import_form(tmp_path):
    pkg = write_package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "import os\nimport pkg.b\nfrom pkg.sub import c\nfrom pkg import d as dee\n",
        "pkg/b.py": "def f():\n    from .sub.c import thing\n    from . import d\n",
        "pkg/d.py": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import x\nelse:\n"
                     "    from pkg.sub import e\nclass K:\n    def m(self):\n        import pkg.sub.c.nothing\n"),
        "pkg/sub/__init__.py": "from .c import thing\nfrom pkg.sub import e\nfrom .. import b\n",
        "pkg/sub/c.py": "from ..b import f\nfrom pkg.sub import helper\n",
        "pkg/sub/e.py": "from . import *\n",
    })
    assert edges(import_graph(pkg)) == {
        ("pkg.a", "pkg.b", "module level"),
        ("pkg.a", "pkg.sub.c", "module level"),        # from package import submodule
        ("pkg.a", "pkg.d", "module level"),
        ("pkg.b", "pkg.sub.c", "in f"),                # relative, function level
        ("pkg.b", "pkg.d", "in f"),
        ("pkg.d", "pkg.sub.e", "module level"),        # the TYPE_CHECKING branch is left out
        ("pkg.d", "pkg.sub.c", "in K.m"),
        ("pkg.sub", "pkg.sub.c", "module level"),
        ("pkg.sub", "pkg.sub.e", "module level"),
        ("pkg.sub", "pkg.b", "module level"),          # `from .. import b` in a package __init__
        ("pkg.sub.c", "pkg.b", "module level"),
        ("pkg.sub.c", "pkg.sub", "module level"),      # a name of the package's __init__
        ("pkg.sub.e", "pkg.sub", "module level"),
    }


def test_cycle_through_a_function_level_import_is_reported(tmp_path):
    """The shape of gencompare.runner <-> gencompare.evaluate before it was removed."""
    pkg = write_package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/runner.py": "from pkg.evaluate import evaluate\n",
        "pkg/evaluate.py": "def evaluate_run():\n    from pkg.runner import load\n",
        "pkg/report/__init__.py": "from pkg.report.tables import table\n",   # a package importing its modules:
        "pkg/report/tables.py": "from pkg.report import formatting\n",     # no cycle
        "pkg/report/formatting.py": "",
    })
    cycles = find_cycles(import_graph(pkg))
    assert describe(cycles) == ("import cycle: pkg.evaluate -> pkg.runner -> pkg.evaluate\n"
                                "    pkg.evaluate -> pkg.runner  (line 2, in evaluate_run)\n"
                                "    pkg.runner -> pkg.evaluate  (line 1, module level)")


@pytest.mark.parametrize("init", ["from pkg.report import tables\n", "from . import tables\n"])
def test_package_init_and_a_module_that_needs_its_names_is_a_cycle(tmp_path, init):
    pkg = write_package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/report/__init__.py": init + "SHARED = 1\n",
        "pkg/report/tables.py": "from pkg.report import SHARED\n",
    })
    (cycle,) = find_cycles(import_graph(pkg))
    assert [(i.source, i.target) for i in cycle] == [("pkg.report", "pkg.report.tables"),
                                                      ("pkg.report.tables", "pkg.report")]
