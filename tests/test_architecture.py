"""The layering of the code, held by tests: who may import whom, and no import cycles.

* ``service.engine`` (numpy, Pillow, ONNX Runtime) imports nothing else of the service: not the API, not jobs;
* API routes import no other route module; jobs import nothing of the API; only ``service.api`` itself and
  ``service.cli`` (which starts the server) import ``service.api``;
* the service never imports ``training``; ``training`` imports ``service.engine`` and nothing else of the service
  (one tiling, one decoder, one candidate implementation for training and serving);
* no import cycle among the modules of ``service`` and ``training``, counting imports inside functions too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("service", "training")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}


def imported(path: Path, known: set[str]) -> Iterator[str]:
    """Every module ``path`` imports, anywhere in it; ``from a import b`` names ``a.b`` when that is a module."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            for alias in node.names:
                if f"{node.module}.{alias.name}" in known:
                    yield f"{node.module}.{alias.name}"


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    known = set(modules)
    return {name: {m for m in imported(path, known) if m in known} for name, path in modules.items()}


def all_imports() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: set(imported(path, set(modules))) for name, path in modules.items()}


def _under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_engine_imports_nothing_else_of_the_service() -> None:
    for module, targets in all_imports().items():
        if _under(module, "service.engine"):
            others = {t for t in targets if _under(t, "service") and not _under(t, "service.engine")}
            assert not others, f"{module} imports {sorted(others)}"


def test_routes_import_no_other_route_and_jobs_nothing_of_the_api() -> None:
    for module, targets in all_imports().items():
        if _under(module, "service.api.routes") and module != "service.api.routes":
            routes = {t for t in targets if _under(t, "service.api.routes") and t != "service.api.routes"}
            assert not routes - {module}, f"{module} imports {sorted(routes)}"
        if _under(module, "service.jobs"):
            api = {t for t in targets if _under(t, "service.api")}
            assert not api, f"{module} imports {sorted(api)}"


def test_only_the_api_and_the_cli_import_the_api() -> None:
    for module, targets in all_imports().items():
        if _under(module, "service.api") or module == "service.cli":
            continue
        api = {t for t in targets if _under(t, "service.api")}
        assert not api, f"{module} imports {sorted(api)}: only service.api and service.cli may"


def test_the_service_never_imports_training_and_training_only_the_engine() -> None:
    for module, targets in all_imports().items():
        if _under(module, "service"):
            assert not {t for t in targets if _under(t, "training")}, f"{module} imports training"
        if _under(module, "training"):
            service = {t for t in targets if _under(t, "service") and not _under(t, "service.engine")}
            assert not service, f"{module} imports {sorted(service)}: training may use service.engine only"


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module, or a module importing itself (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    graph = import_graph()
    # a package's __init__ importing its own modules is not a cycle of the code's layers
    for name in graph:
        graph[name] = {
            t for t in graph[name] if not (_under(t, name) and t != name and (ROOT / name.replace(".", "/")).is_dir())
        }
    assert find_cycles(graph) == []
