"""Day-2 operations by server id: status, logs, walbc, exec and shell."""

from __future__ import annotations

import json
import os
import posixpath
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from walbctr.compose import LABEL, container_name
from walbctr.containers import Observed, group_containers
from walbctr.engine import Engine
from walbctr.errors import WalbctrError
from walbctr.fleet import Fleet
from walbctr.server import Server

if TYPE_CHECKING:
    from walbctr.layout import Layout


# --- status ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    id: str
    role: str
    host: str
    endpoint: str
    state: str  # running, exited, ..., absent (no container), unknown (host unreachable)
    health: str
    image: str
    walb_version: str
    uptime_s: float | None
    drift: bool  # the container runs another configuration than the layout's
    note: str = ""


def status_rows(layout: Layout, only_host: str | None = None) -> list[Row]:
    """One row per server of the layout; an unreachable host marks its servers unknown."""
    fleet = Fleet(layout, only_host)
    from walbctr.deploy import desired_hashes

    wanted = desired_hashes(layout, fleet.hosts)
    groups = fleet.engine_groups()
    results = fleet.each([hosts[0] for hosts in groups.values()],
                         lambda h: _observe_with_versions(fleet.engines[h], layout.group))
    seen: dict[str, tuple[Observed, str]] = {}
    down: dict[str, str] = {}
    for hosts in groups.values():
        outcome = results[hosts[0]]
        if isinstance(outcome, Exception):
            reason = getattr(outcome, "message", str(outcome))
            for h in hosts:
                down[h] = reason
        else:
            seen.update(outcome)
    rows = []
    for s in layout.servers:
        if s.host not in fleet.hosts:
            continue
        if s.host in down:
            rows.append(Row(s.id, s.role.value, s.host, s.endpoint, "unknown", "", "", "",
                            None, False, f"host unreachable: {down[s.host]}"))
            continue
        found = seen.get(s.id)
        if found is None:
            rows.append(Row(s.id, s.role.value, s.host, s.endpoint, "absent", "", "", "",
                            None, False))
            continue
        obs, version = found
        rows.append(Row(s.id, s.role.value, s.host, s.endpoint, obs.status, obs.health or "",
                        obs.image, version, obs.uptime_seconds(),
                        obs.config_hash != wanted.get(s.id)))
    known = {s.id for s in layout.servers}
    for sid, (obs, version) in sorted(seen.items()):
        if sid not in known:
            rows.append(Row(sid, "?", "?", "", obs.status, obs.health or "", obs.image,
                            version, obs.uptime_seconds(), True,
                            "not in the layout: 'walbctr down' removes it"))
    return rows


def _observe_with_versions(engine: Engine, group: str) -> dict[str, tuple[Observed, str]]:
    found = group_containers(engine, group)
    versions: dict[str, str] = {}
    out = {}
    for sid, obs in found.items():
        if obs.image_id not in versions:
            try:
                labels = engine.api.images.get(obs.image_id).labels or {}
            except Exception:  # an image removed under a container: version unknown
                labels = {}
            versions[obs.image_id] = labels.get("org.opencontainers.image.version", "")
        out[sid] = (obs, versions[obs.image_id])
    return out


def rows_json(rows: list[Row]) -> str:
    return json.dumps([asdict(r) for r in rows], indent=2) + "\n"


def format_uptime(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d"


# --- finding a server's container ---------------------------------------------------------


def server_container(layout: Layout, server_id: str) -> tuple[Server, Engine, Any]:
    server = layout.server(server_id)
    host = layout.hosts[server.host]
    engine = Engine(host.engine, server.host, host.tls)
    from docker.errors import NotFound

    try:
        container = engine.api.containers.get(container_name(layout, server))
    except NotFound:
        raise WalbctrError(f"{server.id} has no container on {server.host}",
                           f"start it with 'walbctr up {layout.source}'") from None
    return server, engine, container


def _require_running(server: Server, container: Any, layout: Layout) -> None:
    if container.status != "running":
        raise WalbctrError(f"{server.id} is not running (its container is {container.status})",
                           f"see 'walbctr logs {layout.source} {server.id}', start it with "
                           f"'walbctr up {layout.source}'")


# --- logs -----------------------------------------------------------------------------------


def log_tail(engine: Engine, layout: Layout, server: Server, lines: int) -> list[str]:
    """The last lines of a server's log, from the container log or its log file."""
    if not server.logs_to_file:
        container = engine.api.containers.get(container_name(layout, server))
        raw: bytes = container.logs(tail=lines, stdout=True, stderr=True)
        return raw.decode(errors="replace").splitlines()
    # Read the file through a throwaway container: the host may be another machine, and
    # the server's own container may be restarting.
    log_dir = posixpath.dirname(server.log_path)
    out = engine.api.containers.run(
        layout.image, ["sh", "-c", f'tail -n {int(lines)} "$0" 2>/dev/null || true',
                       server.log_path],
        volumes={log_dir: {"bind": log_dir, "mode": "ro"}}, remove=True,
        network_mode="none", labels={f"{LABEL}.probe": "logs"})
    return bytes(out).decode(errors="replace").splitlines()


def stream_logs(layout: Layout, server_id: str, follow: bool, tail: int | None) -> Iterator[str]:
    server, engine, container = server_container(layout, server_id)
    if server.logs_to_file:
        if follow:
            _require_running(server, container, layout)
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


# --- walbc, exec, shell -------------------------------------------------------------------


def walbc(layout: Layout, server_id: str, args: list[str]) -> int:
    """Run walbc against `server_id` from inside its own container; return walbc's status.

    Inside the container, addresses in the arguments resolve as the servers see them
    (bridge networks included), and the server itself is 127.0.0.1.
    """
    server, _engine, container = server_container(layout, server_id)
    _require_running(server, container, layout)
    cmd = ["walbc", "-a", "127.0.0.1", "-p", str(server.port), *args]
    result = container.exec_run(cmd, demux=True)
    out, err = result.output
    if out:
        sys.stdout.write(out.decode(errors="replace"))
    if err:
        sys.stderr.write(err.decode(errors="replace"))
    return int(result.exit_code)


def exec_argv(layout: Layout, server_id: str, command: list[str],
              interactive: bool) -> tuple[list[str], dict[str, str]]:
    """`docker exec` argv and environment for a command in the server's container."""
    server, engine, container = server_container(layout, server_id)
    _require_running(server, container, layout)
    flags = ["-i"] + (["-t"] if interactive and sys.stdin.isatty() else [])
    return ["docker", *engine.cli_flags(), "exec", *flags, container.name, *command], \
        engine.env()


def replace_process(argv: list[str], env: dict[str, str]) -> None:
    """Hand the terminal to `docker exec` (signals, TTY and exit status pass through)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(argv[0], argv, env)
