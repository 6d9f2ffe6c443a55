"""The generated walb-config.py, executed against walblib's documented constructor API."""

from __future__ import annotations

import re
import sys
import types
import warnings
from typing import Any

import pytest

from tests.conftest import EXAMPLES
from walbctr.layout.loader import load_layout, read_layout
from walbctr.layout.spec import Layout
from walbctr.render.walblib import walblib_config


def fake_walblib() -> types.ModuleType:
    """Records constructor calls with walblib's signatures (walblib itself is Python 2)."""
    mod = types.ModuleType("walblib")
    mod.K_STORAGE, mod.K_PROXY, mod.K_ARCHIVE = 0, 1, 2  # type: ignore[attr-defined]

    class ServerConnectionParam:
        def __init__(self, name: str, address: str, port: int, kind: int) -> None:
            self.args = (name, address, port, kind)

    class ServerStartupParam:
        def __init__(self, connParam: Any, binDir: str, dataDir: str,  # noqa: N803
                     logPath: str | None = None, vg: str | None = None,  # noqa: N803
                     tp: str | None = None) -> None:
            self.args = (connParam.args, binDir, dataDir, logPath, vg, tp)

    class ServerLayout:
        def __init__(self, storageL: list[Any], proxyL: list[Any],  # noqa: N803
                     archiveL: list[Any]) -> None:  # noqa: N803
            self.lists = (storageL, proxyL, archiveL)

    class Controller:
        def __init__(self, controllerPath: str, sLayout: Any, isDebug: bool = False,  # noqa: N803
                     timeoutS: int = 0) -> None:  # noqa: N803
            self.path, self.layout = controllerPath, sLayout

    for cls in (ServerConnectionParam, ServerStartupParam, ServerLayout, Controller):
        setattr(mod, cls.__name__, cls)
    mod.__all__ = [n for n in vars(mod) if not n.startswith("_")]  # type: ignore[attr-defined]
    return mod


def run_config(text: str) -> dict[str, Any]:
    sys.modules["walblib"] = fake_walblib()
    try:
        scope: dict[str, Any] = {}
        exec(compile(text, "walb-config.py", "exec"), scope)
        return scope
    finally:
        del sys.modules["walblib"]


def test_seed_large_layout() -> None:
    scope = run_config(walblib_config(read_layout(EXAMPLES / "seed-large.yaml")))
    storages, proxies, archives = scope["sLayout"].lists
    assert [s.args[0][0] for s in storages] == ["s0", "s1"]
    assert [p.args[0][0] for p in proxies] == ["p0", "p1"]
    assert [a.args[0][0] for a in archives] == ["a0", "a1"]
    assert archives[0].args == (("a0", "hostA0", 10000, 2), "/usr/local/bin/", "/var/walb/a0/",
                                "/var/walb/a0.log", "vg0", None)
    assert scope["walbc"].path == "/usr/local/bin/walbc"


def test_thinpool_and_bin_dir() -> None:
    scope = run_config(walblib_config(read_layout(EXAMPLES / "thinpool.yaml"), "/opt/walb"))
    (a0,) = scope["sLayout"].lists[2]
    assert a0.args[1] == "/opt/walb/"
    assert a0.args[4:] == ("vg0", "tp0")
    assert a0.args[0][1] == "192.0.2.10"


def test_ids_that_are_not_identifiers() -> None:
    text = "group: g\narchives: [{id: 0a-x, host: h, vg: v}]\nproxies: [{id: 0a_x, host: h, " \
           "port: 10001}]\n"
    scope = run_config(walblib_config(load_layout(text)))
    assert scope["s_0a_x"].args[0][0] == "0a-x"
    assert scope["s_0a_x_"].args[0][0] == "0a_x"


# --- valid Python 2 whatever the ids (issue 11) -------------------------------------------

# Python 2.7's keywords, written out here rather than taken from walbctr, so that the test
# checks the rule instead of repeating it.
PYTHON2_KEYWORDS = [
    "and", "as", "assert", "break", "class", "continue", "def", "del", "elif", "else",
    "except", "exec", "finally", "for", "from", "global", "if", "import", "in", "is",
    "lambda", "not", "or", "pass", "print", "raise", "return", "try", "while", "with",
    "yield",
]
# Assignable in Python 2 (True, False) or not (None), and never to be a server there.
CONSTANTS = ["None", "True", "False"]
# Ids whose derived names meet: 's' wants 'sc' for its connection, which is 'sc' itself;
# 'exe' + 'c' is a keyword; names the script uses after the servers.
COLLIDING = [["s", "sc"], ["sc", "s"], ["exe"], ["a-0", "a_0"], ["0a", "s_0a"],
             ["walbc", "sLayout", "binDir", "Controller", "K_ARCHIVE", "walbcPath"],
             ["elif", "elifc", "elif_"], ["nonlocal", "async", "await"]]

ASSIGNMENT = re.compile(r"^([^\s=#]+) = ", re.M)
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def python2_problems(text: str) -> list[str]:
    """What Python 2.7 would refuse in `text`, by its grammar (lib2to3's Python 2 grammar,
    with print and exec statements) and by the rules its grammar leaves to the compiler."""
    problems = []
    if not text.isascii():
        problems.append("non-ASCII text without an encoding declaration")
    names = ASSIGNMENT.findall(text)
    for name in names:
        if not IDENTIFIER.match(name):
            problems.append(f"{name!r} is not an identifier")
        if name in PYTHON2_KEYWORDS or name in CONSTANTS:
            problems.append(f"{name!r} is assigned")
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        problems.append(f"assigned twice: {sorted(dupes)}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from lib2to3 import pygram, pytree
            from lib2to3.pgen2 import driver, parse
    except ImportError:  # removed in Python 3.13; the rules above still hold
        return problems
    grammar = driver.Driver(pygram.python_grammar, convert=pytree.convert)
    try:
        grammar.parse_string(text if text.endswith("\n") else text + "\n")
    except parse.ParseError as err:
        problems.append(f"Python 2 grammar: {err}")
    return problems


def layout_with_ids(ids: list[str]) -> Layout:
    entries = "".join(f"  - {{id: {sid!r}, host: h{i}, vg: v}}\n" for i, sid in enumerate(ids))
    return load_layout(f"group: g\narchives:\n{entries}", "t.yaml")


def test_the_python2_check_can_fail() -> None:
    assert python2_problems("print = 1\n")
    assert python2_problems("None = 1\n")
    assert python2_problems("x = 1\nx = 2\n")
    assert python2_problems("x = '\u00e9'\n")
    assert python2_problems('print "ok"\nexec "x = 1"\n') == []


@pytest.mark.parametrize("ids", [PYTHON2_KEYWORDS, CONSTANTS, *COLLIDING],
                         ids=["py2-keywords", "constants",
                              *("-".join(c) for c in COLLIDING)])
def test_any_valid_ids_give_valid_python2_with_distinct_names(ids: list[str]) -> None:
    text = walblib_config(layout_with_ids(ids))
    assert python2_problems(text) == []
    scope = run_config(text)
    archives = scope["sLayout"].lists[2]
    assert [a.args[0][0] for a in archives] == ids
    assert len({id(a) for a in archives}) == len(ids)
    assert scope["walbc"].path == "/usr/local/bin/walbc"  # the script's own names survive


def test_examples_give_valid_python2() -> None:
    for example in sorted(EXAMPLES.glob("*.yaml")):
        assert python2_problems(walblib_config(read_layout(example))) == [], example.name
