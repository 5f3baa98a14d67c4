"""The package's shape, read from its source with `ast`: no import cycles anywhere in `ferkit`, nothing outside
`ferkit.apps` imports `ferkit.apps`, evaluation sits below training, and no module is a grab bag."""

from __future__ import annotations

import ast
from pathlib import Path

import ferkit

ROOT = Path(ferkit.__file__).resolve().parent  # src/ferkit
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imports_in(source: str, module: str, is_package: bool, known) -> set[str]:
    """Every module of `known` that the code `source` of `module` imports, at module level or inside
    functions; relative imports resolved.

    `from A import b` counts as an import of A.b when that is a module, else of A. A package's own
    __init__ running before its submodules is not counted: it is not an edge a cycle can run through.
    """
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            for alias in node.names:
                full = f"{origin}.{alias.name}"
                found.add(full if full in known else origin)
    return {m for m in found if m in known and m != module}


def imports_of(name: str) -> set[str]:
    path = MODULES[name]
    return imports_in(path.read_text(), name, path.name == "__init__.py", MODULES)


GRAPH = {name: imports_of(name) for name in MODULES}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_walker_sees_function_level_and_relative_imports():
    """The checks below mean something only if the walker finds imports wherever they are written."""
    assert "ferkit.train.export" in GRAPH["ferkit.apps.cli_eval"]  # imported inside the `export` command
    assert "ferkit.models.registry" in GRAPH["ferkit.models.cnn"]
    known = {"p", "p.a", "p.b", "p.sub", "p.sub.c"}
    code = "from . import c\ndef f():\n    from ..a import x\n    from .. import b\n"
    assert imports_in(code, "p.sub.d", False, known) == {"p.sub.c", "p.a", "p.b"}
    assert imports_in("from .sub import c\nfrom . import a\n", "p", True, known) == {"p.sub.c", "p.a"}
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    assert cycles(GRAPH) == []


def test_only_apps_import_apps():
    offenders = {name: sorted(m for m in deps if m.startswith("ferkit.apps"))
                 for name, deps in GRAPH.items() if not name.startswith("ferkit.apps")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_evaluation_sits_below_training():
    """Scoring never reaches into the training stack (training may use scoring)."""
    offenders = {name: sorted(m for m in deps if m.startswith("ferkit.train"))
                 for name, deps in GRAPH.items() if name.startswith("ferkit.evaluation")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_training_and_evaluation_modules_stay_small():
    owned = ("ferkit.train", "ferkit.evaluation", "ferkit.models", "ferkit.apps.cli_train", "ferkit.apps.cli_eval")
    long = {name: n for name, path in MODULES.items() if name.startswith(owned)
            and (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}
