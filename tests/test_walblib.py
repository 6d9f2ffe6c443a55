"""The generated walb-config.py, executed against walblib's documented constructor API."""

from __future__ import annotations

import sys
import types
from typing import Any

from tests.conftest import EXAMPLES
from walbctr.layout import load_layout, read_layout
from walbctr.walblib import walblib_config


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
