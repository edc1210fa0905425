"""The house as floors: the import graph of ``studio/`` is a ladder with no way back up.

Every import counts, at module level, inside a function or under ``TYPE_CHECKING``: a newcomer reads the
package from its ground floor up (docs/architecture.md) and never meets a module that needs one above it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "studio"


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _imports(name: str) -> list[tuple[str, list[str], int]]:
    """(module imported, names taken from it, line) for every import statement in module ``name``."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            found.append((base, [a.name for a in node.names], node.lineno))
    return found


def _edges() -> dict[str, set[str]]:
    """Module -> the studio modules it imports (``from studio import x`` counts as importing studio.x)."""
    edges: dict[str, set[str]] = {name: set() for name in MODULES}
    for name in MODULES:
        for base, names, _ in _imports(name):
            targets = [f"{base}.{n}" for n in names if f"{base}.{n}" in MODULES]
            if not targets and base in MODULES:
                targets = [base]
            edges[name].update(t for t in targets if t != name)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
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
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_graph_reader_sees_function_level_imports(tmp_path):
    # the reader itself: an import inside a function is an edge like any other
    assert "studio.config" in _edges()["studio.validation"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_between_modules():
    assert _cycles(_edges()) == []


def test_config_is_the_ground_floor():
    assert _edges()["studio.config"] == set()


@pytest.mark.parametrize("name", [n for n in MODULES if not n.startswith("studio.ui")])
def test_the_core_never_imports_gradio(name):
    offending = [line for base, _, line in _imports(name) if base.split(".")[0] in ("gradio", "gradio_client")]
    assert offending == [], f"{name} imports gradio at lines {offending}"


def test_no_private_name_crosses_a_module():
    crossing = []
    for name in MODULES:
        for base, names, line in _imports(name):
            if not base.startswith("studio"):
                continue
            private_module = any(part.startswith("_") and not part.startswith("__") for part in base.split("."))
            private_names = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private_module or private_names:
                crossing.append(f"{name}:{line} imports {base} {private_names}")
    assert crossing == []


def _documented_order() -> list[str]:
    """Module names in the order docs/architecture.md lists them (one table row each)."""
    text = (PACKAGE.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    names = []
    for path in re.findall(r"^\| `(studio/[\w/]+\.py)` \|", text, flags=re.M):
        parts = Path(path).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_every_module_is_on_the_floor_plan_once():
    order = _documented_order()
    assert sorted(order) == sorted(MODULES), (set(MODULES) - set(order), set(order) - set(MODULES))


def test_each_module_imports_only_what_the_floor_plan_lists_above_it():
    order = _documented_order()
    place = {name: i for i, name in enumerate(order)}
    edges = _edges()
    upward = [f"{name} imports {dep}" for name in order for dep in sorted(edges[name]) if place[dep] > place[name]]
    assert upward == []
