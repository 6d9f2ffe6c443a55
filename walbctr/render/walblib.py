"""walb-config.py for upstream's Python 2 walblib, describing the same servers.

Existing walblib scripts (Controller.run_ctl, init_storage, ...) then drive the
containerized group. walblib passes the layout's addresses to walbc and to the servers,
so the script must run where those addresses resolve as the servers see them.
"""

from __future__ import annotations

import keyword
import re
from typing import TYPE_CHECKING

from walbctr.layout.server import Role

if TYPE_CHECKING:
    from walbctr.layout.spec import Layout

_KIND = {Role.ARCHIVE: "K_ARCHIVE", Role.PROXY: "K_PROXY", Role.STORAGE: "K_STORAGE"}


def _py(value: str | None) -> str:
    """A literal both Pythons read alike: ascii() escapes anything outside ASCII, which
    Python 2 refuses in a file that declares no encoding."""
    return "None" if value is None else ascii(value)


# Python 2.7's keywords (its Lib/keyword.py); Python 3's are added below so the script
# also compiles where it is checked.
PY2_KEYWORDS = frozenset({
    "and", "as", "assert", "break", "class", "continue", "def", "del", "elif", "else",
    "except", "exec", "finally", "for", "from", "global", "if", "import", "in", "is",
    "lambda", "not", "or", "pass", "print", "raise", "return", "try", "while", "with",
    "yield",
})
# Names the script itself defines or uses after the servers: a server variable named like
# one would break it (None cannot be assigned at all; True and False can be in Python 2,
# which would turn isDebug=False into a server).
_RESERVED = frozenset({
    "binDir", "walbcPath", "wdevcPath", "sLayout", "walbc", "ServerConnectionParam",
    "ServerStartupParam", "ServerLayout", "Controller", "K_ARCHIVE", "K_PROXY", "K_STORAGE",
    "None", "True", "False",
})
TAKEN = PY2_KEYWORDS | frozenset(keyword.kwlist) | _RESERVED


def _variables(ids: list[str]) -> dict[str, str]:
    """Python names for server ids: ID for the startup parameters, IDc for the connection
    ('a-0' is an id but not an identifier; ids 's' and 'sc' would both want 'sc')."""
    out: dict[str, str] = {}
    taken = set(TAKEN)
    for sid in ids:
        name = re.sub(r"[^A-Za-z0-9_]", "_", sid)
        if name[0].isdigit():
            name = "s_" + name
        while name in taken or name + "c" in taken:
            name += "_"
        taken |= {name, name + "c"}
        out[sid] = name
    return out


def walblib_config(layout: Layout, bin_dir: str = "/usr/local/bin/") -> str:
    if not bin_dir.endswith("/"):
        bin_dir += "/"
    lines = [
        "#!/usr/bin/env python",
        f"# generated from {ascii(layout.source)[1:-1]} by walbctr; do not edit.",
        f"# Backup group {layout.group!r} for walb-tools' walblib (Python 2):",
        "#   python> execfile('walb-config.py')",
    ]
    if layout.network_mode == "bridge":
        lines.append(
            "# bridge mode: the addresses below are server ids on the group's private "
            "network; run scripts inside it (walbctr exec LAYOUT ID -- ...)."
        )
    lines += [
        "",
        "from walblib import *",
        "",
        f"binDir = {_py(bin_dir)}",
        "walbcPath = binDir + 'walbc'",
        "wdevcPath = binDir + 'wdevc'",
        "",
    ]
    var = _variables([s.id for s in layout.servers])
    for s in layout.servers:
        args = [f"{var[s.id]}c", "binDir", _py(s.base_dir + "/"), _py(s.log_path)]
        if s.role is Role.ARCHIVE:
            args += [_py(s.options.get("vg")), _py(s.options.get("thinpool"))]
        lines.append(
            f"{var[s.id]}c = ServerConnectionParam({_py(s.id)}, {_py(s.address)}, {s.port}, "
            f"{_KIND[s.role]})"
        )
        lines.append(f"{var[s.id]} = ServerStartupParam({', '.join(args)})")
    groups = [
        "[" + ", ".join(var[s.id] for s in layout.of_role(role)) + "]"
        for role in (Role.STORAGE, Role.PROXY, Role.ARCHIVE)
    ]
    lines += [
        "",
        "# storages, proxies (highest priority first), archives (the first is primary)",
        f"sLayout = ServerLayout({', '.join(groups)})",
        "walbc = Controller(walbcPath, sLayout, isDebug=False)",
        "",
    ]
    return "\n".join(lines)
