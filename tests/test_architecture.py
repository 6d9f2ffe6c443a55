"""The shape of the package: layers that import only downwards, no cycles, a README that maps it."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = ROOT / "walbctr"

# What each layer may import of walbctr ("errors" and "display" are top-level modules).
# The pure layers (layout, render, walb) come first; keeper and walb ship in the keeper
# image, which holds nothing else of walbctr.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "layout": {"layout", "errors"},
    "walb": {"walb"},
    "render": {"render", "layout", "walb", "errors"},
    "docker": {"docker", "layout", "render", "walb", "errors"},
    "display": {"image"},  # it shows the build log's steps
    "image": {"image", "docker", "layout", "render", "walb", "errors", "display"},
    "keeper": {"keeper", "walb"},
    # the Python 3 API: volumes through the layout, for scripts and for `walbctr volume`
    "group": {"docker", "layout", "walb", "errors"},
    "commands": {"commands", "group", "docker", "image", "layout", "render", "walb",
                 "errors", "display"},
    "cli": {"cli", "commands", "group", "docker", "image", "layout", "render", "walb",
            "errors", "display"},
}
PURE = ("errors", "layout", "render", "walb")
EDGE_LIBRARIES = ("docker", "python_on_whales", "subprocess", "socket", "rich",
                  "prometheus_client", "click")


def _modules() -> dict[str, Path]:
    """Dotted name below walbctr (e.g. `layout.spec`) -> file."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).with_suffix("")
        if rel.parts[0].startswith("_"):
            continue
        found[".".join(rel.parts)] = path
    return found


def _imports(path: Path, with_type_checking: bool = True) -> set[str]:
    """Modules `path` imports; those under `if TYPE_CHECKING:` only when asked (they count
    for cycles, since a cycle hidden from the interpreter still ties two modules together)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped: set[int] = set()
    if not with_type_checking:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                skipped |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            if node.module.startswith("walbctr"):
                found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def _internal(path: Path, modules: dict[str, Path], with_type_checking: bool = True) -> set[str]:
    out = set()
    for m in _imports(path, with_type_checking):
        if m.startswith("walbctr."):
            name = m.removeprefix("walbctr.")
            if name in modules:
                out.add(name)
    return out


def _layer(module: str) -> str:
    return module.split(".", maxsplit=1)[0]


def test_walbctr_modules_import_each_other_without_cycles_even_for_type_checking() -> None:
    modules = _modules()
    graph = {name: _internal(path, modules) - {name} for name, path in modules.items()}
    # A package's __init__ is imported by its modules' imports; it must not import them.
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


def test_each_layer_imports_only_the_layers_below_it() -> None:
    modules = _modules()
    offenders = {}
    for name, path in modules.items():
        layer = _layer(name)
        if layer not in ALLOWED:
            offenders[name] = [f"{layer} is no known layer: add it to ALLOWED and the README"]
            continue
        bad = sorted(m for m in _internal(path, modules) if _layer(m) not in ALLOWED[layer]
                     and _layer(m) != layer)
        if bad:
            offenders[name] = bad
    assert not offenders, f"imports across layers the wrong way: {offenders}"


def test_the_pure_layers_import_no_docker_process_socket_or_terminal_library() -> None:
    offenders = {}
    for name, path in _modules().items():
        if _layer(name) not in PURE:
            continue
        bad = {m for m in _imports(path, with_type_checking=False)
               if m.split(".")[0] in EDGE_LIBRARIES}
        if bad:
            offenders[name] = sorted(bad)
    assert not offenders, f"pure modules importing edge libraries: {offenders}"


def _keeper_image_modules() -> set[str]:
    """The Python modules the keeper image's Debian packages (KEEPER_DEPS) provide."""
    dockerfile = (ROOT / "images" / "walb-tools" / "Dockerfile").read_text()
    deps = re.search(r'^ARG KEEPER_DEPS="([^"]*)"', dockerfile, flags=re.M)
    assert deps, "images/walb-tools/Dockerfile has no KEEPER_DEPS"
    return {p.removeprefix("python3-").replace("-", "_") for p in deps.group(1).split()
            if p.startswith("python3-")}


def test_the_keeper_image_packages_need_only_what_the_keeper_image_installs() -> None:
    allowed = set(sys.stdlib_module_names) | {"walbctr"} | _keeper_image_modules()
    assert "prometheus_client" in allowed
    offenders = {}
    for name, path in _modules().items():
        if _layer(name) not in ("keeper", "walb"):
            continue
        bad = {m for m in _imports(path) if m.split(".")[0] not in allowed}
        bad |= {m for m in _imports(path) if m.startswith("walbctr.")
                and _layer(m.removeprefix("walbctr.")) not in ("keeper", "walb")}
        if _layer(name) == "walb":
            bad |= {m for m in _imports(path) if m.startswith("prometheus_client")}
        if bad:
            offenders[name] = sorted(bad)
    assert not offenders, f"modules the keeper image cannot run: {offenders}"


def test_every_package_says_in_one_docstring_what_it_may_import() -> None:
    missing = []
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        if init.parent.name.startswith("_"):
            continue
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        if "import" not in doc.lower():
            missing.append(init.parent.name)
    assert not missing, f"packages whose docstring does not say what they import: {missing}"


def test_readme_package_map_names_every_module_and_no_other() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("### Package map")
    end = readme.find("\n## ", start)
    section = readme[start:end if end > 0 else len(readme)]
    # A bullet "- `pkg/` ... `mod.py` ..." maps pkg/mod.py; one naming no package, top-level.
    mapped = set()
    for bullet in re.split(r"\n- ", section)[1:]:
        package = re.match(r"`(\w+)/`", bullet)
        prefix = f"{package.group(1)}/" if package else ""
        mapped |= {prefix + m for m in re.findall(r"`(\w+\.py)`", bullet)}
    actual = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
              if p.name not in ("__init__.py", "__main__.py")
              and not p.relative_to(PACKAGE).parts[0].startswith("_")}
    assert not actual - mapped, f"modules missing from README's package map: {actual - mapped}"
    assert not mapped - actual, f"README maps modules that do not exist: {mapped - actual}"
