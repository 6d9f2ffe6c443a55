"""`walbctr status`: one row per server, read from each engine once."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from walbctr.commands.upgrade import Plan, load_plan, pause_requested
from walbctr.docker.containers import Observed, answers, group_containers
from walbctr.docker.fleet import Fleet
from walbctr.docker.logs import failed_run
from walbctr.docker.state import Maintenance, lock_holder, maintained_servers, seen_ready
from walbctr.errors import WalbctrError, explain, last_line
from walbctr.render.compose import desired_hashes

if TYPE_CHECKING:
    from walbctr.docker.engine import Engine
    from walbctr.layout.server import Server
    from walbctr.layout.spec import Layout


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
    drift: bool  # the container differs from what the layout says ('walbctr up' fixes it)
    note: str = ""
    restarts: int = 0  # times the restart policy restarted it since it was created
    last_exit: int | None = None  # exit status of its last finished run, when it had one
    last_log: str = ""  # the last line that run logged: usually why it failed
    maintenance_since: str = ""  # its host is in maintenance (walbctr maintenance enter)


@dataclass(frozen=True)
class _Seen:
    obs: Observed
    version: str
    health: str
    last_exit: int | None
    last_log: str


def status_rows(layout: Layout, only_host: str | None = None) -> list[Row]:
    """One row per server of the layout; an unreachable host marks its servers unknown."""
    fleet = Fleet(layout, only_host)
    groups = fleet.engine_groups()
    results = fleet.each([hosts[0] for hosts in groups.values()],
                         lambda h: _observe_engine(fleet.engines[h], layout, groups[
                             layout.hosts[h].engine_key]))
    seen: dict[str, _Seen] = {}
    down: dict[str, str] = {}
    old: set[str] = set()
    for hosts in groups.values():
        outcome = results[hosts[0]]
        if isinstance(outcome, Exception):
            reason = explain(outcome)
            for h in hosts:
                down[h] = reason
        else:
            seen.update(outcome[0])
            if outcome[1]:
                old.update(hosts)
    wanted = desired_hashes(layout, [h for h in fleet.hosts if h not in down], old)
    held = maintained_servers(layout.group)
    rows = [_row(s, seen.get(s.id), down.get(s.host), held.get(s.id), wanted.get(s.id))
            for s in layout.servers if s.host in fleet.hosts]
    known = {s.id for s in layout.servers}
    for sid, f in sorted(seen.items()):
        if sid not in known:
            rows.append(Row(sid, "?", "?", "", f.obs.status, f.health, f.obs.image,
                            f.version, f.obs.uptime_seconds(), True,
                            _stray_note(f.obs), f.obs.restart_count))
    return rows


def _row(s: Server, found: _Seen | None, unreachable: str | None,
         record: Maintenance | None, wanted: str | None) -> Row:
    if record is not None and (unreachable or found is None
                               or found.obs.status != "running"):
        return _held_row(s, record, unreachable, found)
    if unreachable is not None:
        return Row(s.id, s.role.value, s.host, s.endpoint, "unknown", "", "", "", None, False,
                   f"host unreachable: {unreachable}")
    if found is None:
        return Row(s.id, s.role.value, s.host, s.endpoint, "absent", "", "", "", None, False)
    obs = found.obs
    notes = []
    if obs.policy_drift:
        notes.append(f"{s.id}: restart policy is '{obs.restart_policy}', not "
                     "'unless-stopped' (an interrupted down or restart?): 'walbctr up' "
                     "restores it")
    if record is not None:
        notes.append(f"{s.id}: its host {s.host} is in maintenance since {record.since}, yet "
                     "it runs (started by hand?); 'walbctr maintenance exit' ends the "
                     "maintenance")
    if found.last_log and (obs.status != "running" or obs.restart_count):
        notes.append(f"{s.id}: last run exited with status {found.last_exit}: "
                     f"{found.last_log}")
    return Row(s.id, s.role.value, s.host, s.endpoint, obs.status, found.health, obs.image,
               found.version, obs.uptime_seconds(),
               obs.config_hash != wanted or obs.policy_drift, "; ".join(notes),
               obs.restart_count, found.last_exit, found.last_log)


def _held_row(s: Server, record: Maintenance, unreachable: str | None,
              found: _Seen | None) -> Row:
    """A server stopped on purpose: 'maintenance', whatever its engine says (or cannot)."""
    note = f"host unreachable during its maintenance: {unreachable}" if unreachable else ""
    if found is None:
        return Row(s.id, s.role.value, s.host, s.endpoint, "maintenance", "", "", "", None,
                   False, note or f"{s.id}: no container", maintenance_since=record.since)
    obs = found.obs
    # Docker's health of a stopped container is its last check's: not worth showing.
    return Row(s.id, s.role.value, s.host, s.endpoint, "maintenance", "", obs.image,
               found.version, None, False, note, obs.restart_count, found.last_exit, "",
               record.since)


def _stray_note(obs: Observed) -> str:
    if obs.status == "running":
        return "not in the layout: 'walbctr down' removes it"
    return (f"not in the layout, {obs.status}: 'walbctr down' removes its container with the "
            f"group, or 'docker rm {obs.name}' alone (its data stays either way)")


def _observe_engine(engine: Engine, layout: Layout,
                    hosts: list[str]) -> tuple[dict[str, _Seen], bool]:
    """Every server container on one engine, and whether the engine is an old one.

    Docker's health is 'starting' until its first check, up to one interval after a
    start on engines without start_interval; such a run counts as healthy when walbctr
    saw it answer while starting it (state.seen_ready), and is asked the same probe
    else. A container that restarted or stopped gets its last run's exit status and
    last log line (from the engine's events and log).
    """
    found = group_containers(engine, layout.group)
    ready = seen_ready(layout.group)
    versions: dict[str, str] = {}
    ours = {s.id: s for h in hosts for s in layout.servers_on(h)}
    out = {}
    for sid, obs in found.items():
        if obs.image_id not in versions:
            try:
                labels = engine.api.images.get(obs.image_id).labels or {}
            except Exception:  # an image removed under a container: version unknown
                labels = {}
            versions[obs.image_id] = labels.get("org.opencontainers.image.version", "")
        health = obs.health or ""
        server = ours.get(sid)
        last_exit: int | None = None
        last_log = ""
        if server is not None:
            if obs.status == "running" and health == "starting" and (
                    ready.get(sid) == (obs.container_id, obs.started_at)
                    or answers(engine, obs.container_id, server)):
                health = "healthy"
            if obs.exited_since(0):
                run = failed_run(engine, layout, server, obs, lines=30)
                last_exit = run.exit_code
                # walb logs its reason for exiting as an ERROR line; a wrapper's own
                # last words ("... exited with status 1") say less.
                errors = [ln for ln in run.lines if " ERROR " in ln]
                last_log = last_line("\n".join(errors[-1:] or run.lines), "")
        out[sid] = _Seen(obs, versions[obs.image_id], health, last_exit, last_log)
    return out, not engine.has_start_interval


def rows_json(rows: list[Row]) -> str:
    return json.dumps([asdict(r) for r in rows], indent=2) + "\n"


def format_duration(seconds: float | None) -> str:
    """Seconds as status shows them (uptime, lag): 90s, 45m, 3h05m, 4d."""
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


# --- a group left part-way through an upgrade -------------------------------------------------


def upgrade_line(layout: Layout, rows: list[Row]) -> str | None:
    """One line when the group runs more than one version or its last upgrade (or rollback)
    is unfinished: its state, how many servers run which version, and the command to go on.
    """
    try:
        plan = load_plan(layout.group)
    except WalbctrError as err:
        return f"upgrade plan unreadable: {err.message}"
    if plan is not None and (plan.rolled_back if plan.rollback else plan.finished):
        plan = None
    target = None if plan is None else (
        plan.rollback[0].to_image if plan.rollback else plan.image)
    counts = _version_counts(rows, target)
    if plan is None:
        return None if len(counts) < 2 else "servers on different versions: " + \
            _counted(counts)
    return f"{_plan_state(layout, plan)}: {_counted(counts)}{_go_on(layout, plan)}"


def _version_counts(rows: list[Row], target: str | None) -> dict[str, int]:
    """Version (its image label, else the image) -> servers, the target's first (0 when none
    runs it yet)."""
    counts: dict[str, int] = {}
    label = {r.image: r.walb_version or r.image for r in rows if r.image}
    if target is not None:
        counts[label.get(target, target)] = 0
    for r in rows:
        if r.image and r.role != "?":
            counts[label[r.image]] = counts.get(label[r.image], 0) + 1
    return counts


def _counted(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    parts = [f"{n} of {total} servers on {v}" if i == 0 else f"{n} on {v}"
             for i, (v, n) in enumerate(counts.items())]
    return ", ".join(parts)


def _plan_state(layout: Layout, plan: Plan) -> str:
    kind = "rollback" if plan.rollback else "upgrade"
    holder = lock_holder(layout.group)
    asked = pause_requested(layout.group)
    if holder is not None and holder[0] == "upgrade":
        return f"{kind} running (pid {holder[1]})" + (", pause requested" if asked else "")
    if plan.paused:
        return f"{kind} paused ({plan.paused})"
    return f"{kind} unfinished" + (" (a pause is requested for the next run)" if asked else "")


def _go_on(layout: Layout, plan: Plan) -> str:
    src = layout.source
    if lock_holder(layout.group) is not None:
        return ""
    if plan.rollback:
        return f" (walbctr upgrade {src} --rollback to continue)"
    if plan.paused:
        return f" (walbctr upgrade {src} --resume to continue)"
    if not any(s.touched for s in plan.steps):
        return f" (walbctr upgrade {src} --resume to finish it)"
    return (f" (walbctr upgrade {src} --resume to finish it, or --rollback to return the "
            "servers it touched)")
