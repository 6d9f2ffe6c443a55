"""What runs: the group's containers on each engine, read through the Engine API.

One list call per engine finds a group's containers (labels and state are in it); the
details that only `inspect` has (restart count and policy, health output) are read for
those containers in parallel. What a container's earlier runs did (exit status, times)
comes from the engine's events, because a restarted container's own state forgets it.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from docker.errors import APIError, NotFound

from walbctr.docker.engine import Engine
from walbctr.errors import WalbctrError, explain
from walbctr.render.compose import IDENTITY_LABEL, LABEL, container_name
from walbctr.walb.readiness import answers_as, batch_answers, batch_argv, host_type_argv

if TYPE_CHECKING:
    from walbctr.layout.server import Server
    from walbctr.layout.spec import Layout

# The restart policy every server runs with; `down` and `restart` lift it for a moment,
# and `up` puts it back if one of them was interrupted.
RESTART_POLICY = "unless-stopped"
_INSPECT_THREADS = 8


@dataclass(frozen=True)
class Listed:
    """A container as one list call shows it: enough to follow a start, not to report."""

    server: str
    container_id: str
    status: str  # created, running, restarting, exited, dead, paused, removing


@dataclass(frozen=True)
class Observed:
    """One server's container as the engine reports it."""

    server: str
    container_id: str
    name: str
    status: str  # created, running, restarting, exited, dead, paused, removing
    health: str | None  # starting, healthy, unhealthy, or None without a health check
    exit_code: int
    restart_count: int
    started_at: str
    finished_at: str
    created: str
    image_id: str
    image: str
    config_hash: str
    health_output: str
    restart_policy: str
    layout: str = ""  # the layout it was started from (IDENTITY_LABEL); "" when unknown

    @property
    def healthy(self) -> bool:
        return self.status == "running" and self.health == "healthy"

    @property
    def policy_drift(self) -> bool:
        """The restart policy is not walbctr's: a `down` or `restart` was interrupted."""
        return self.restart_policy != RESTART_POLICY

    def exited_since(self, restarts_before: int = 0) -> bool:
        """Whether the server's process ended since the engine counted `restarts_before`
        restarts: stopped, dead, being restarted, or restarted meanwhile. The one test
        of "did it fail at start" for up, restart, upgrade, status and the keeper."""
        return self.status in ("exited", "dead", "restarting") or \
            self.restart_count > restarts_before

    def failure(self, restarts_before: int = 0) -> str | None:
        """Why this container counts as failed, or None while it may still come up.

        The exit code is left out: a restarted container reports 0 for the run that failed
        (see last_run for the real one).
        """
        if self.status in ("exited", "dead"):
            return "exited"
        if self.exited_since(restarts_before):
            return "exited and is being restarted"
        if self.health == "unhealthy":
            return "is unhealthy: " + (self.health_output or "health check failed")
        return None

    def uptime_seconds(self, now: datetime | None = None) -> float | None:
        if self.status != "running" or not self.started_at:
            return None
        return ((now or datetime.now(UTC)) - parse_time(self.started_at)).total_seconds()


def parse_time(text: str) -> datetime:
    """Docker's RFC 3339 times with nanoseconds, to the microsecond."""
    return datetime.fromisoformat(text[:26].rstrip("Z") + "+00:00")


def observe(attrs: dict[str, Any]) -> Observed:
    """Observed state from `docker inspect` attributes."""
    state = attrs.get("State", {})
    health = state.get("Health") or {}
    log = health.get("Log") or []
    config = attrs.get("Config", {})
    labels = config.get("Labels") or {}
    policy = (attrs.get("HostConfig", {}).get("RestartPolicy") or {}).get("Name", "")
    return Observed(
        server=labels.get(f"{LABEL}.server", ""),
        container_id=attrs.get("Id", ""),
        name=attrs.get("Name", "").lstrip("/"),
        status=state.get("Status", "unknown"),
        health=health.get("Status"),
        exit_code=int(state.get("ExitCode", 0)),
        restart_count=int(attrs.get("RestartCount", 0)),
        started_at=state.get("StartedAt", ""),
        finished_at=state.get("FinishedAt", ""),
        created=attrs.get("Created", ""),
        image_id=attrs.get("Image", ""),
        image=config.get("Image", ""),
        config_hash=labels.get(f"{LABEL}.config-hash", ""),
        layout=labels.get(IDENTITY_LABEL, ""),
        health_output=(log[-1].get("Output", "").strip() if log else ""),
        restart_policy=policy or "no",
    )


def list_group(engine: Engine, group: str) -> dict[str, Listed]:
    """server id -> its container on `engine`, from a single list call."""
    found: dict[str, Listed] = {}
    for c in engine.api.api.containers(all=True, filters={"label": f"{LABEL}.group={group}"}):
        labels = c.get("Labels") or {}
        # One-off containers (`compose run`) carry the service's labels but are not the
        # server.
        if labels.get("com.docker.compose.oneoff") == "True":
            continue
        sid = labels.get(f"{LABEL}.server", "")
        found[sid] = Listed(sid, c["Id"], c.get("State", "unknown"))
    return found


def inspect(engine: Engine, container_id: str) -> Observed | None:
    """One container in detail, or None when it is gone."""
    try:
        return observe(engine.api.api.inspect_container(container_id))
    except NotFound:
        return None


def group_containers(engine: Engine, group: str) -> dict[str, Observed]:
    """server id -> its container on `engine`, for every container of `group` there."""
    listed = list(list_group(engine, group).values())
    if not listed:
        return {}
    with ThreadPoolExecutor(max_workers=min(_INSPECT_THREADS, len(listed))) as pool:
        seen = pool.map(lambda c: inspect(engine, c.container_id), listed)
        return {obs.server: obs for obs in seen if obs is not None}


@dataclass(frozen=True)
class Run:
    """One finished run of a container: when its log begins and ends, its exit status."""

    since: float | None  # seconds since the epoch; None: from the container's first line
    finished: float
    exit_code: int


def last_run(engine: Engine, obs: Observed) -> Run | None:
    """The container's most recent finished run, from the engine's `die` events.

    Inspect shows the current run only (a restarted container reports exit code 0);
    the engine keeps recent events, which is where the run that failed is recorded. A
    run's log begins after the previous run died: its `start` event comes only once the
    process already runs, after its first lines.
    """
    since = parse_time(obs.created).timestamp() if obs.created else 0
    try:
        events = engine.api.api.events(
            since=since, until=datetime.now(UTC).timestamp(), decode=True,
            filters={"container": obs.container_id, "event": "die"})
        dies = [(e["timeNano"] / 1e9, ((e.get("Actor") or {}).get("Attributes") or {}))
                for e in events]
    except APIError:
        return None
    if not dies:
        return None
    finished, attrs = dies[-1]
    code = str(attrs.get("exitCode", ""))
    return Run(dies[-2][0] if len(dies) > 1 else since or None, finished,
               int(code) if code.lstrip("-").isdigit() else obs.exit_code)


def exec_in(engine: Engine, container_id: str, argv: Sequence[str]) -> tuple[int, str]:
    """Run argv in a container: its exit status and output (stdout and stderr together).

    The one way walbctr runs a command in a server's container. -1 means it could not
    run (the container is not running, or the engine refused): the output says why.
    """
    api = engine.api.api
    try:
        exec_id = api.exec_create(container_id, list(argv))["Id"]
        out = api.exec_start(exec_id)
        code = api.exec_inspect(exec_id).get("ExitCode")
    except APIError as err:
        return -1, explain(err)
    return (int(code) if code is not None else -1), bytes(out).decode(errors="replace")


def answers(engine: Engine, container_id: str, server: Server) -> bool:
    """Whether the server in this container answers the readiness probe now (a failure
    to run it means no: the caller sees why from the container's state)."""
    code, out = exec_in(engine, container_id, host_type_argv(server.port, timeout_s=1))
    return answers_as(server.role, code, out)


def answers_many(engine: Engine, prober_id: str,
                 targets: dict[str, tuple[Server, str]]) -> dict[str, bool]:
    """Whether each (server, address) answers the readiness probe now, all asked from one
    exec in the prober's container: one exec a poll for a whole tier on an engine. A
    prober that stopped answers nothing; the next poll asks again."""
    argv = batch_argv([(sid, address, s.port) for sid, (s, address) in targets.items()])
    _code, out = exec_in(engine, prober_id, argv)
    return batch_answers(out, {sid: s.role for sid, (s, _) in targets.items()})


def server_container(layout: Layout, server_id: str) -> tuple[Server, Engine, Any]:
    """A server of the layout, its host's engine and its container (docker-py)."""
    server = layout.server(server_id)
    host = layout.hosts[server.host]
    engine = Engine(host.engine, server.host, host.tls)
    try:
        container = engine.api.containers.get(container_name(layout, server))
    except NotFound:
        raise WalbctrError(f"{server.id} has no container on {server.host}",
                           f"start it with 'walbctr up {layout.source}'") from None
    return server, engine, container


def require_running(layout: Layout, server: Server, container: Any) -> None:
    if container.status != "running":
        raise WalbctrError(f"{server.id} is not running (its container is {container.status})",
                           f"see 'walbctr logs {layout.source} {server.id}', start it with "
                           f"'walbctr up {layout.source}'")
