"""What runs: the group's containers on each engine, read through the Engine API."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from docker.errors import NotFound

from walbctr.compose import LABEL, container_name
from walbctr.engine import Engine
from walbctr.errors import WalbctrError

if TYPE_CHECKING:
    from walbctr.layout import Layout
    from walbctr.server import Server


@dataclass(frozen=True)
class Observed:
    """One server's container as the engine reports it."""

    server: str
    container_id: str
    name: str
    status: str  # created, running, restarting, exited, dead, paused
    health: str | None  # starting, healthy, unhealthy, or None without a health check
    exit_code: int
    restart_count: int
    started_at: str
    image_id: str
    image: str
    config_hash: str
    health_output: str

    @property
    def healthy(self) -> bool:
        return self.status == "running" and self.health == "healthy"

    def failure(self, restarts_before: int = 0) -> str | None:
        """Why this container counts as failed, or None while it may still come up."""
        if self.status in ("exited", "dead"):
            return f"exited with code {self.exit_code}"
        if self.status == "restarting" or self.restart_count > restarts_before:
            return f"exited with code {self.exit_code} and is being restarted"
        if self.health == "unhealthy":
            return "is unhealthy: " + (self.health_output or "health check failed")
        return None

    def uptime_seconds(self, now: datetime | None = None) -> float | None:
        if self.status != "running" or not self.started_at:
            return None
        started = datetime.fromisoformat(self.started_at[:26].rstrip("Z") + "+00:00")
        return ((now or datetime.now(UTC)) - started).total_seconds()


def observe(attrs: dict[str, Any]) -> Observed:
    """Observed state from `docker inspect` attributes."""
    state = attrs.get("State", {})
    health = state.get("Health") or {}
    log = health.get("Log") or []
    labels = attrs.get("Config", {}).get("Labels") or {}
    return Observed(
        server=labels.get(f"{LABEL}.server", ""),
        container_id=attrs.get("Id", ""),
        name=attrs.get("Name", "").lstrip("/"),
        status=state.get("Status", "unknown"),
        health=health.get("Status"),
        exit_code=int(state.get("ExitCode", 0)),
        restart_count=int(attrs.get("RestartCount", 0)),
        started_at=state.get("StartedAt", ""),
        image_id=attrs.get("Image", ""),
        image=attrs.get("Config", {}).get("Image", ""),
        config_hash=labels.get(f"{LABEL}.config-hash", ""),
        health_output=(log[-1].get("Output", "").strip() if log else ""),
    )


def group_containers(engine: Engine, group: str) -> dict[str, Observed]:
    """server id -> its container on `engine`, for every container of `group` there."""
    found: dict[str, Observed] = {}
    listed = engine.api.containers.list(all=True, sparse=True,
                                        filters={"label": f"{LABEL}.group={group}"})
    for c in listed:
        # One-off containers (`compose run`, as check-host uses) carry the service's labels
        # but are not the server; they may also vanish between listing and inspecting.
        if (c.attrs.get("Labels") or {}).get("com.docker.compose.oneoff") == "True":
            continue
        try:
            attrs = engine.api.api.inspect_container(c.id)
        except NotFound:
            continue
        obs = observe(attrs)
        found[obs.server] = obs
    return found


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
