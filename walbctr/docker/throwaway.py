"""Throwaway probe containers: short checks run on a host through its own engine.

A probe runs the layout's image, so it needs nothing on the host but Docker, works the
same on remote engines, and sees paths and ports as the servers will. Layout values
reach a probe only as arguments (`sh -c SCRIPT sh ARG...`), never pasted into a script,
and a probe changes nothing on its host: no host path is created for its mounts and its
container is always removed.
"""

from __future__ import annotations

import contextlib
import errno
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from docker.errors import APIError, ContainerError
from docker.types import LogConfig, Mount

from walbctr.errors import WalbctrError
from walbctr.render.compose import LABEL

if TYPE_CHECKING:
    from walbctr.docker.engine import Engine
    from walbctr.layout.server import Server
    from walbctr.layout.spec import Layout


class MissingHostPathError(Exception):
    """A probe was asked to mount a host path that does not exist (and never creates it)."""

    def __init__(self, path: str) -> None:
        super().__init__(f"{path} does not exist")
        self.path = path


@dataclass(frozen=True)
class ProbeResult:
    status: int
    stdout: str
    stderr: str


def probe(engine: Engine, image: str, argv: Sequence[str], *, purpose: str,
          volumes: dict[str, Any] | None = None, network_mode: str = "none",
          labels: dict[str, str] | None = None, timeout: float = 120,
          create_missing: bool = False, **options: Any) -> ProbeResult:
    """Run `argv` in a throwaway container of `image`: its status and output.

    A probe leaves nothing behind: `volumes` ({host path: {"bind": path, "mode": "ro"}})
    become mounts that refuse a missing host path (MissingHostPathError) where the Engine
    API's binds would create it (`create_missing` asks for those binds), and the container
    is removed whatever happens, also when it could not start or did not finish in
    `timeout` seconds.
    """
    where: dict[str, Any] = {"volumes": volumes or {}} if create_missing else {"mounts": [
        Mount(spec["bind"], src, type="bind", read_only=spec.get("mode", "rw") == "ro")
        for src, spec in (volumes or {}).items()]}
    try:
        container = engine.api.containers.create(
            image, list(argv), network_mode=network_mode,
            labels={f"{LABEL}.probe": purpose, **(labels or {})},
            log_config=LogConfig(type="json-file"), **where, **options)
    except APIError as err:
        missing = _MISSING.search(str(err.explanation or err))
        if missing:
            raise MissingHostPathError(missing.group(1) or missing.group(2)) from None
        raise
    try:
        container.start()
        try:
            status = int(container.wait(timeout=timeout)["StatusCode"])
        except OSError:  # the HTTP read timed out: requests' errors are OSErrors
            raise WalbctrError(f"host {engine.label}: a {purpose} probe did not finish in "
                               f"{timeout:.0f} s", "see what hangs on that host (an LVM "
                               "lock, a stale mount)") from None
        out, errs = (bytes(container.logs(stdout=o, stderr=not o)).decode(errors="replace")
                     for o in (True, False))
        return ProbeResult(status, out, errs)
    finally:
        with contextlib.suppress(APIError):
            container.remove(force=True)


# A missing path, or one under a file (which cannot exist either), as the engine says it.
_MISSING = re.compile(r"bind source path does not exist: (.*)|stat (.*): not a directory")


def run_probe(engine: Engine, image: str, argv: Sequence[str], *, purpose: str,
              volumes: dict[str, Any] | None = None, network_mode: str = "none",
              create_missing: bool = True, **options: Any) -> str:
    """Run `argv` in a throwaway container (see probe); its standard output.

    A non-zero exit raises docker's ContainerError (stderr in bytes), as
    `containers.run` does; like it, missing host paths are created unless told otherwise.
    """
    result = probe(engine, image, argv, purpose=purpose, volumes=volumes,
                   network_mode=network_mode, create_missing=create_missing, **options)
    if result.status != 0:
        raise ContainerError(None, result.status, list(argv), image, result.stderr.encode())
    return result.stdout


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
