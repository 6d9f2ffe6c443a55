"""`walbctr status`: one row per server, read from each engine once."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from walbctr.compose import desired_hashes
from walbctr.containers import Observed, group_containers
from walbctr.errors import explain
from walbctr.fleet import Fleet

if TYPE_CHECKING:
    from walbctr.engine import Engine
    from walbctr.layout import Layout


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
    wanted = desired_hashes(layout, fleet.hosts)
    groups = fleet.engine_groups()
    results = fleet.each([hosts[0] for hosts in groups.values()],
                         lambda h: _observe_with_versions(fleet.engines[h], layout.group))
    seen: dict[str, tuple[Observed, str]] = {}
    down: dict[str, str] = {}
    for hosts in groups.values():
        outcome = results[hosts[0]]
        if isinstance(outcome, Exception):
            reason = explain(outcome)
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
