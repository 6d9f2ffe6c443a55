"""Throwaway probe containers: short checks run on a host through its own engine.

A probe runs the layout's image, so it needs nothing on the host but Docker, works the
same on remote engines, and sees paths and ports as the servers will. Layout values
reach a probe only as arguments (`sh -c SCRIPT sh ARG...`), never pasted into a script.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from walbctr.compose import LABEL

if TYPE_CHECKING:
    from walbctr.engine import Engine
    from walbctr.layout import Layout
    from walbctr.server import Server


def run_probe(engine: Engine, image: str, argv: Sequence[str], *, purpose: str,
              volumes: dict[str, Any] | None = None, network_mode: str = "none",
              **options: Any) -> str:
    """Run `argv` in a removed-on-exit container of `image`; its standard output."""
    out = engine.api.containers.run(image, list(argv), volumes=volumes or {}, remove=True,
                                    network_mode=network_mode,
                                    labels={f"{LABEL}.probe": purpose}, **options)
    return bytes(out).decode(errors="replace")


def sh(script: str, *args: str) -> list[str]:
    """argv for a constant shell script that gets its values as $1, $2, ..."""
    return ["sh", "-c", script, "sh", *args]


def _port_busy_locally(port: int) -> bool:
    for family, addr in ((socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")):
        try:
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((addr, port))
                return False
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                return True
            continue  # no IPv6 here: try IPv4
    return False


_PORTS_SCRIPT = ('for p in "$@"; do (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && echo "$p";'
                 ' done; true')


def _ports_busy_remotely(engine: Engine, image: str, ports: list[int]) -> list[int]:
    out = run_probe(engine, image, ["bash", "-c", _PORTS_SCRIPT, "bash", *map(str, ports)],
                    purpose="ports", network_mode="host")
    return [int(x) for x in out.split()]


def busy_ports(engine: Engine, layout: Layout, servers: Sequence[Server]) -> list[Server]:
    """Servers (not running yet) whose port something else already listens on."""
    if not servers:
        return []
    ports = {s.port: s for s in servers}
    if engine.engine is None:
        return [s for p, s in ports.items() if _port_busy_locally(p)]
    return [ports[p] for p in _ports_busy_remotely(engine, layout.image, sorted(ports))]
