"""No import cycle in edgekv/: the layers import downwards only.

The graph is read from the source with ``ast``, so it sees every import a
module states: at module level, inside functions (an import moved into a
function to dodge a cycle is still a cycle) and under ``TYPE_CHECKING``
(a cycle that only the type checker sees is still two modules that cannot be
understood apart). Generated code (edgekv/v1) is left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "edgekv"
GENERATED = ("edgekv.v1",)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    found = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {
        name: path
        for name, path in found.items()
        if not any(name == g or name.startswith(g + ".") for g in GENERATED)
    }


def _submodules() -> set[str]:
    """Every importable module name, compiled ones (edgekv._speedups) included."""
    names = set()
    for path in PACKAGE.rglob("*"):
        if path.suffix in (".py", ".pyi", ".so", ".pyd"):
            stem = path.name.split(".", 1)[0]
            names.add(_module_name(path.with_name(stem + ".py")))
    return names


def _imports(name: str, path: Path, submodules: set[str]) -> set[str]:
    """The modules (edgekv or not) that ``name`` imports anywhere in its source."""
    is_package = path.name == "__init__.py"
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                # `from edgekv.server import node` imports the module edgekv.server.node.
                sub = f"{module}.{alias.name}"
                targets.add(sub if sub in submodules else module)
    return targets - {name}


def _graph() -> dict[str, set[str]]:
    """edgekv module -> the edgekv modules it imports (generated code left out)."""
    modules, submodules = _modules(), _submodules()
    return {
        name: {t for t in _imports(name, path, submodules) if t in modules}
        for name, path in modules.items()
    }


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
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


def test_import_graph_sees_known_edges() -> None:
    graph = _graph()
    # Absolute, `from package import module`, and a name from a package's __init__.
    assert "edgekv.errors" in graph["edgekv.server.peer_service"]
    assert "edgekv._fallback" in graph["edgekv.native"]
    assert "edgekv.server.view" in graph["edgekv.metrics"]
    assert "edgekv.v1" not in graph and "edgekv.client" in graph["edgekv"]


def test_no_import_cycle_in_edgekv() -> None:
    cycles = _cycles(_graph())
    assert not cycles, "import cycles in edgekv/:\n" + "\n".join(
        " <-> ".join(component) for component in cycles
    )
