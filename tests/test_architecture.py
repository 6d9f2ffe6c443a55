"""The shape of the package: no import cycles, a core without I/O, a README that maps it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = ROOT / "walbctr"

# The pure core: layout in, command lines, compose files and plans out. No Docker, no
# processes, no sockets, no files written.
CORE = ("layout", "validation", "values", "cmdline", "compose", "archive", "proxy", "storage",
        "host", "server", "model", "tiers", "readiness", "volumes", "walblib", "imagetag",
        "yamlsource", "errors", "monitor", "walbdriver", "columns")
EDGE_LIBRARIES = ("docker", "python_on_whales", "subprocess", "socket", "rich")


def _runtime_imports(path: Path) -> set[str]:
    """Modules imported when `path` runs (imports under `if TYPE_CHECKING:` never do)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            if node.module == "walbctr":
                found |= {f"walbctr.{alias.name}" for alias in node.names}
    return found


def _graph() -> dict[str, set[str]]:
    graph = {}
    for path in sorted(PACKAGE.glob("*.py")):
        name = path.stem
        graph[name] = {m.split(".")[1] for m in _runtime_imports(path)
                       if m.startswith("walbctr.") and m.split(".")[1] != name}
    return graph


def test_walbctr_modules_import_each_other_without_cycles() -> None:
    graph = _graph()
    state: dict[str, str] = {}
    cycles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append([*trail[trail.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = "done"

    for node in graph:
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_core_does_no_io() -> None:
    offenders = {}
    for name in CORE:
        path = PACKAGE / f"{name}.py"
        if not path.exists():
            continue
        bad = {m for m in _runtime_imports(path) if m.split(".")[0] in EDGE_LIBRARIES}
        edges = {m for m in _runtime_imports(path) if m.startswith("walbctr.")
                 and m.split(".")[1] not in CORE}
        if bad or edges:
            offenders[name] = sorted(bad | edges)
    assert not offenders, f"core modules importing edges: {offenders}"


def test_readme_module_map_names_every_module() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("### Module map")
    end = readme.find("\n## ", start)
    section = readme[start:end if end > 0 else len(readme)]
    mapped = set(re.findall(r"`(\w+)\.py`", section))
    actual = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__"}
    assert not actual - mapped, f"modules missing from README's module map: {actual - mapped}"
    assert not mapped - actual, f"README maps modules that do not exist: {mapped - actual}"
