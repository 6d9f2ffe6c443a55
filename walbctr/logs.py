"""Server logs: the container log, or the server's own log file on its host."""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from walbctr.compose import container_name
from walbctr.containers import require_running, server_container
from walbctr.probe import MissingHostPathError, run_probe, sh

if TYPE_CHECKING:
    from walbctr.engine import Engine
    from walbctr.layout import Layout
    from walbctr.server import Server


def log_tail(engine: Engine, layout: Layout, server: Server, lines: int) -> list[str]:
    """The last lines of a server's log, from the container log or its log file."""
    if not server.logs_to_file:
        container = engine.api.containers.get(container_name(layout, server))
        raw: bytes = container.logs(tail=lines, stdout=True, stderr=True)
        return raw.decode(errors="replace").splitlines()
    # Read the file through a probe: the host may be another machine, and the server's own
    # container may be restarting.
    log_dir = posixpath.dirname(server.log_path)
    try:
        out = run_probe(engine, layout.image,
                        sh('tail -n "$1" "$2" 2>/dev/null || true', str(int(lines)),
                           server.log_path),
                        purpose="logs", volumes={log_dir: {"bind": log_dir, "mode": "ro"}},
                        create_missing=False)
    except MissingHostPathError:  # no log dir yet, so no log; a probe never creates it
        return []
    return out.splitlines()


def stream_logs(layout: Layout, server_id: str, follow: bool, tail: int | None) -> Iterator[str]:
    server, engine, container = server_container(layout, server_id)
    if server.logs_to_file:
        if follow:
            require_running(layout, server, container)
            count = "+1" if tail is None else str(tail)
            _, stream = container.exec_run(["tail", "-n", count, "-F", server.log_path],
                                           stream=True)
            for chunk in stream:
                yield chunk.decode(errors="replace")
            return
        for line in log_tail(engine, layout, server, tail if tail is not None else 10**9):
            yield line + "\n"
        return
    kwargs: dict[str, Any] = {"stdout": True, "stderr": True, "follow": follow, "stream": True}
    if tail is not None:
        kwargs["tail"] = tail
    for chunk in container.logs(**kwargs):
        yield chunk.decode(errors="replace")
