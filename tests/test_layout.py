"""The package layout (README "Architecture"): sub-packages by role, imports in one direction.

Every import in `streams/callpulse/` is read from the source (also those inside functions, which
run later but still tie the modules together): a module may import its own package and the
packages above it in LAYERS, never one below; no modules import each other in a circle; `kpi/`
imports no third-party package but orjson, `export/` no Kafka or Faust; the top package's
`__init__.py` imports no sub-package; no import names a callpulse module that does not exist.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "streams" / "callpulse"
# In data-flow order: each may import those before it.
LAYERS = ("kpi", "events", "config", "sources", "export", "pipeline", "tools", "cli", "__main__")
FORBIDDEN = {"export": {"faust", "mode", "aiokafka"}}
KPI_THIRD_PARTY = {"orjson"}  # kpi/ may import the standard library, these, and itself


def module_sources(root: Path = PACKAGE) -> dict[str, str]:
    """{dotted module name: source} of every module of the package."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = ("callpulse",) + path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path.read_text(encoding="utf-8")
    return out


def imports_of(name: str, source: str, modules: set[str]) -> set[str]:
    """Every module `name` imports: callpulse modules by their full name, others by their top."""
    is_package = name == "callpulse" or f"{name}.__init__" in modules or any(m.startswith(name + ".") for m in modules)
    package = name if is_package else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from package import module` imports the module; `from module import name` the module
            subs = {f"{target}.{alias.name}" for alias in node.names} & modules
            found.update(subs or {target})
    # a callpulse module that does not exist keeps its name (violations() reports it)
    return {m if m in modules or m.startswith("callpulse.") else m.split(".")[0] for m in found}


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None  # None: the top package `callpulse` itself


def violations(sources: dict[str, str]) -> list[str]:
    """What breaks the layout: wrong directions, forbidden libraries, import cycles."""
    modules = set(sources)
    graph = {name: imports_of(name, source, modules) for name, source in sources.items()}
    problems = []
    for name, targets in sorted(graph.items()):
        layer = layer_of(name)
        for target in sorted(targets):
            if target.startswith("callpulse.") and target not in modules:
                problems.append(f"{name} imports {target}, which does not exist")
            elif layer is None:
                if target in modules and target != "callpulse":
                    problems.append(f"{name} imports {target}: the top package imports no sub-package")
            elif target in modules:
                other = layer_of(target)
                if other is not None and LAYERS.index(other) > LAYERS.index(layer):
                    problems.append(f"{name} imports {target}: {layer} may not import {other} (see LAYERS)")
            elif target in FORBIDDEN.get(layer, ()) or (
                    layer == "kpi" and target not in sys.stdlib_module_names and target not in KPI_THIRD_PARTY):
                problems.append(f"{name} imports {target}: {layer}/ may not import {target}")
    problems += [f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(graph)]
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected group of modules (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in graph:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 or node in graph.get(node, ()):
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [group + [group[0]] for group in groups]


def test_the_package_imports_in_one_direction_without_cycles():
    assert violations(module_sources()) == []


def test_every_sub_package_says_what_it_holds_and_what_it_may_import():
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc and len(doc) > 80 and "May import" in doc, (
            f"{init.relative_to(PACKAGE)}: a docstring saying what the package holds and what it may import")
    assert {p.parent.name for p in PACKAGE.glob("*/__init__.py")} - {"schemas"} <= set(LAYERS)


@pytest.mark.parametrize(("extra", "expected"), [
    ({"callpulse.kpi.model": "import faust\n"}, "callpulse.kpi.model imports faust: kpi/ may not import faust"),
    ({"callpulse.kpi.model": "from prometheus_client import Gauge\n"}, "kpi/ may not import prometheus_client"),
    ({"callpulse.kpi.model": "import numpy\n"}, "kpi/ may not import numpy"),
    ({"callpulse.kpi.model": "def f():\n    from ..app import app\n"}, "imports callpulse.app, which does not exist"),
    ({"callpulse": "from .pipeline import app\n"}, "the top package imports no sub-package"),
    ({"callpulse.kpi.staffing": "from ..pipeline import state\n"},
     "callpulse.kpi.staffing imports callpulse.pipeline.state: kpi may not import pipeline"),
    ({"callpulse.kpi.model": "def f():\n    from ..export.metrics import QueueCollector\n"},
     "kpi may not import export"),
    ({"callpulse.kpi.model": "from . import staffing\n", "callpulse.kpi.staffing": "from .model import WINDOWS\n"},
     "import cycle: callpulse.kpi.model -> callpulse.kpi.staffing -> callpulse.kpi.model"),
])
def test_the_check_fails_on_a_forbidden_import_or_a_cycle(extra, expected):
    """The check itself: each of these changes to the real package is found."""
    sources = module_sources()
    for name, code in extra.items():
        sources[name] = sources[name] + "\n" + code
    assert any(expected in problem for problem in violations(sources)), violations(sources)
