"""Server logs: the container log, or the server's own log file on its host."""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from walbctr.docker.containers import Observed, Run, last_run, require_running, server_container
from walbctr.docker.throwaway import MissingHostPathError, run_probe, sh
from walbctr.render.compose import container_name

if TYPE_CHECKING:
    from walbctr.docker.engine import Engine
    from walbctr.layout.server import Server
    from walbctr.layout.spec import Layout


def log_tail(engine: Engine, layout: Layout, server: Server, lines: int,
             timestamps: bool = False) -> list[str]:
    """The last lines of a server's log, from the container log or its log file.
    `timestamps`: the engine's time before each container log line (a log file's lines
    carry walb's own)."""
    if not server.logs_to_file:
        container = engine.api.containers.get(container_name(layout, server))
        raw: bytes = container.logs(tail=lines, stdout=True, stderr=True,
                                    timestamps=timestamps)
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


RUN_LOG_SLACK_S = 0.08


@dataclass(frozen=True)
class FailedRun:
    """What an operator needs about a server's last finished run."""

    exit_code: int | None  # None when the engine no longer knows it
    restarts: int
    lines: list[str]  # its last log lines: that run's, not the restarted one's banner
    bounded: bool  # the lines are exactly that run's (container log with known times)

    def headline(self) -> str:
        code = "with an unknown status" if self.exit_code is None else \
            f"with status {self.exit_code}"
        again = f"; restarted {self.restarts} time{'s' if self.restarts != 1 else ''}" \
            if self.restarts else ""
        return f"exited {code}{again}"


def failed_run(engine: Engine, layout: Layout, server: Server, obs: Observed,
               lines: int = 20) -> FailedRun:
    """The last finished run of a server's container, whatever the restart policy did since.

    A restarted walb server prints its whole start-up banner again (about 30 lines for an
    archive), so the plain tail of the log shows the new run, not the error of the one
    that failed; the run's start and the next start bound its own lines.
    """
    run = last_run(engine, obs)
    if run is None:
        code = obs.exit_code if obs.status in ("exited", "dead") else None
        return FailedRun(code, obs.restart_count, log_tail(engine, layout, server, lines),
                         False)
    if server.logs_to_file:
        return FailedRun(run.exit_code, obs.restart_count,
                         log_tail(engine, layout, server, lines), False)
    return FailedRun(run.exit_code, obs.restart_count,
                     run_lines(engine, obs.container_id, run, lines), True)


def run_lines(engine: Engine, container_id: str, run: Run, lines: int) -> list[str]:
    # What a run printed reaches the log within moments of its exit; the restart policy
    # waits at least 100 ms before the next run, whose banner must not count. No `tail`:
    # the engine takes the file's last lines before it applies `until`, which would keep
    # only the newest run's lines and then drop them all.
    bounds: dict[str, float] = {"until": run.finished + RUN_LOG_SLACK_S}
    if run.since is not None:
        bounds["since"] = run.since
    raw: bytes = engine.api.api.logs(container_id, stdout=True, stderr=True, **bounds)
    return raw.decode(errors="replace").splitlines()[-lines:]


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
