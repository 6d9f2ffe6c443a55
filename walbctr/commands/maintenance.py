"""`walbctr maintenance enter|exit|list`: take one host's servers down on purpose, and
back, the way cephadm's `host maintenance` does.

`enter HOST` checks `upgrade`'s gates on every server of the host first (an archive's
running Merge/Apply/... is waited for, an overflow or a wdiff send error refuses unless
--force), records the host in the group's state dir (maintenance.json: when, which
servers in which order, their restart policies and volume states), tells the keeper, makes
an Alertmanager silence when the layout names one, then stops the servers storages first,
then proxies, then archives, each with `walbc shutdown graceful` and its restart policy
set to 'no', so that neither Docker nor a reboot brings them back. Containers stay;
nothing on disk is touched. Run again, it finishes an interrupted `enter` and tells the
keeper again.

`exit HOST` starts them archives first, each answering walbc before the next tier, puts
their restart policy back, checks every volume is in the state it had (a proxy volume
that was Stopped is stopped again: walb-proxy starts them all), sends walb's follow-ups
(after an archive, kick the proxies; after a proxy, kick the storages), then drops the
record, tells the keeper and expires the silence. A server failing its start keeps the
record: `exit` run again goes on from there.

While a host is in maintenance, `up`, `restart` and `upgrade` refuse to touch its
servers (state.refuse_maintained), and `status` shows them as 'maintenance'.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from walbctr.commands import keeper_container, silences
from walbctr.commands.upgrade import Options, Runner, Step
from walbctr.display import ServerBoard
from walbctr.docker.containers import RESTART_POLICY, Observed, inspect
from walbctr.docker.fleet import Fleet
from walbctr.docker.lifecycle import set_restart_policy, start_container, stop_container
from walbctr.docker.state import (
    GroupLock,
    Maintenance,
    maintained_servers,
    read_maintenance,
    write_maintenance,
)
from walbctr.errors import EXIT_BAD_INPUT, WalbctrError, explain
from walbctr.layout.server import Role
from walbctr.layout.tiers import start_tiers, stop_tiers
from walbctr.render.compose import container_name
from walbctr.render.keeper_service import monitor_of

if TYPE_CHECKING:
    from walbctr.display import ProgressMode
    from walbctr.docker.engine import Engine
    from walbctr.layout.server import Server
    from walbctr.layout.spec import Layout

DEFAULT_DURATION = "4h"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class BadHostError(WalbctrError):
    exit_code = EXIT_BAD_INPUT


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # warnings: the work itself was done
    seconds: float = 0.0


def parse_duration(text: str) -> float:
    """'4h', '90m', '1d12h', '3600' (seconds) -> seconds; ValueError when it is none."""
    text = text.strip().lower()
    if text.isdigit():
        seconds = float(text)
    else:
        parts = re.findall(r"(\d+)([smhd])", text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise ValueError(f"{text!r} is not a duration such as 4h, 90m or 1d12h")
        seconds = float(sum(int(n) * _UNITS[u] for n, u in parts))
    if seconds <= 0:
        raise ValueError("a duration must be longer than 0 s")
    return seconds


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def servers_of(layout: Layout, host: str) -> tuple[Server, ...]:
    """The servers of `host`; a host that is not one of the layout's is bad input."""
    if host not in layout.used_hosts:
        known = "is not a host of" if host not in layout.hosts else "runs no server in"
        raise BadHostError(
            f"host {host!r} {known} {layout.source}; nothing was changed",
            f"give one of the hosts that run servers: {', '.join(layout.used_hosts)} "
            f"('walbctr status {layout.source}' shows which servers each one runs)")
    return layout.servers_on(host)


def _tell_keeper(layout: Layout, report: Report) -> None:
    """The keeper learns the whole set (every host in maintenance), not a change."""
    m = monitor_of(layout)
    if m is None:
        return
    held = {sid: r.host for sid, r in maintained_servers(layout.group).items()}
    try:
        problem = keeper_container.tell_maintenance(
            layout, Fleet(layout, m.host).engines[m.host], held)
    except Exception as err:  # the keeper's host may be the one going down: not fatal
        problem = f"the keeper (host {m.host}) could not be told: {explain(err)}"
    if problem:
        report.notes.append(problem)


def _silence(layout: Layout, record: Maintenance, duration_s: float,
             report: Report) -> Maintenance:
    m = monitor_of(layout)
    url = m.alertmanager_url if m is not None else None
    if url is None or record.silence:
        return record
    body = silences.silence_body(layout.group, record.host, record.servers, duration_s)
    try:
        sid = silences.create(url, body)
    except silences.SilenceError as err:
        report.notes.append(f"warning: no Alertmanager silence for host {record.host} "
                            f"({url}: {err}); its servers' alerts may fire")
        return record
    report.lines.append(f"silenced the alerts of {', '.join(record.servers)} at {url} "
                        f"until {body['endsAt']} (silence {sid})")
    return replace(record, silence=sid)


def _unsilence(layout: Layout, record: Maintenance, report: Report) -> None:
    m = monitor_of(layout)
    url = m.alertmanager_url if m is not None else None
    if not record.silence:
        return
    if url is None:
        report.notes.append(f"warning: the Alertmanager silence {record.silence} stays until "
                            "it ends (the layout names no monitor.alertmanager_url now)")
        return
    try:
        silences.expire(url, record.silence)
    except silences.SilenceError as err:
        report.notes.append(f"warning: could not expire the Alertmanager silence "
                            f"{record.silence} at {url} ({err}); it ends by itself")
        return
    report.lines.append(f"expired the Alertmanager silence {record.silence}")


# --- enter ---------------------------------------------------------------------------------


def _observed(layout: Layout, fleet: Fleet, host: str,
              servers: tuple[Server, ...]) -> dict[str, Observed]:
    observed = fleet.observe()
    missing = [s.id for s in servers if s.id not in observed]
    if missing:
        raise WalbctrError(
            f"host {host}: no container for {', '.join(missing)}, so walbctr cannot hold it "
            "stopped; nothing was changed",
            f"create it with 'walbctr up {layout.source} --host {host}' first, then enter "
            "maintenance")
    return observed


def enter(layout: Layout, host: str, *, options: Options, duration_s: float,
          mode: ProgressMode) -> Report:
    started = time.monotonic()
    servers = servers_of(layout, host)
    fleet = Fleet(layout, host)
    engine = fleet.engines[host]
    report = Report()
    with GroupLock(layout.group, f"maintenance enter {host}"):
        records = read_maintenance(layout.group)
        observed = _observed(layout, fleet, host, servers)
        order = [s for _role, by_host in stop_tiers(layout, [s.id for s in servers])
                 for s in by_host[host]]
        runner = Runner(layout, fleet, "maintenance enter", options, mode, lambda: None)
        steps = {s.id: Step(s.id, s.role.value, host, observed[s.id].image,
                            observed[s.id].image_id, observed[s.id].image) for s in order}
        with ServerBoard([(s.id, s.role.value, s.host) for s in order], mode) as board:
            runner.board = board
            # Every gate before any stop: a server that may not stop now stops nothing.
            volumes: dict[str, dict[str, str]] = {}
            for s in order:
                if observed[s.id].status in ("running", "restarting"):
                    board.begin(s.id)
                    seen = runner.gate_before(steps[s.id], s, engine, observed[s.id], board)
                    volumes[s.id] = seen or {}
                    board.set(s.id, "gates passed")
            old = records.get(host)
            record = Maintenance(
                host, old.since if old else _now(), tuple(s.id for s in order),
                {**{s.id: observed[s.id].restart_policy for s in order},
                 **(old.policies if old else {})},
                old.silence if old else "", {**volumes, **(old.volumes if old else {})})
            records[host] = record
            write_maintenance(layout.group, records)  # first: an interrupted enter resumes
            _tell_keeper(layout, report)
            record = _silence(layout, record, duration_s, report)
            records[host] = record
            write_maintenance(layout.group, records)
            _stop_all(runner, engine, order, steps, board)
        report.notes += [n for st in steps.values() for n in st.notes]
    stopped = ", ".join(s.id for s in order)
    report.lines.insert(0, f"host {host} is in maintenance since {record.since}: stopped "
                        f"{stopped} (storages first, 'walbc shutdown graceful', restart "
                        "policy 'no'); 'walbctr maintenance exit "
                        f"{layout.source} {host}' brings them back")
    report.seconds = time.monotonic() - started
    return report


def _stop_all(runner: Runner, engine: Engine, order: list[Server], steps: dict[str, Step],
              board: ServerBoard) -> None:
    layout = runner.layout
    for s in order:
        obs = inspect(engine, container_name(layout, s))
        if obs is None:
            raise WalbctrError(f"{s.id}: its container vanished during 'maintenance enter'",
                               f"look with 'walbctr status {layout.source}'")
        if s.role is Role.ARCHIVE and obs.status == "running":
            # An action may have begun since the first look; wait for it again.
            runner.gate_before(steps[s.id], s, engine, obs, board)
        stop_container(engine, s, obs, board)


# --- exit ----------------------------------------------------------------------------------


def exit_(layout: Layout, host: str, *, options: Options, mode: ProgressMode) -> Report:
    started = time.monotonic()
    servers_of(layout, host)
    fleet = Fleet(layout, host)
    engine = fleet.engines[host]
    report = Report()
    with GroupLock(layout.group, f"maintenance exit {host}"):
        records = read_maintenance(layout.group)
        record = records.get(host)
        if record is None:
            held = ", ".join(sorted(records)) or "none"
            raise WalbctrError(f"host {host} is not in maintenance (hosts in maintenance: "
                               f"{held}); nothing was changed",
                               f"'walbctr maintenance list {layout.source}' shows them")
        known = {s.id for s in layout.servers_on(host)}
        gone = [sid for sid in record.servers if sid not in known]
        if gone:
            report.notes.append(f"{', '.join(gone)}: no longer on host {host} in "
                                f"{layout.source}; left as it is")
        ids = [sid for sid in record.servers if sid in known]
        observed = fleet.observe()
        absent = [sid for sid in ids if sid not in observed]
        if absent:
            report.notes.append(f"{', '.join(absent)}: no container (removed meanwhile?); "
                                f"'walbctr up {layout.source}' creates it")
        order = [s for _role, by_host in start_tiers(layout, [i for i in ids
                                                              if i not in absent])
                 for s in by_host[host]]
        runner = Runner(layout, fleet, "maintenance exit", options, mode, lambda: None)
        with ServerBoard([(s.id, s.role.value, s.host) for s in order], mode) as board:
            runner.board = board
            for _role, by_host in start_tiers(layout, [s.id for s in order]):
                for step in _start_tier(runner, engine, record, by_host[host], board):
                    report.notes += step.notes
        del records[host]
        write_maintenance(layout.group, records)
        _tell_keeper(layout, report)
        _unsilence(layout, record, report)
    report.lines.insert(0, f"host {host} is out of maintenance: {', '.join(s.id for s in order)}"
                        " answer walbc again, restart policy restored")
    report.seconds = time.monotonic() - started
    return report


def _start_tier(runner: Runner, engine: Engine, record: Maintenance,
                tier: tuple[Server, ...], board: ServerBoard) -> list[Step]:
    """Start one tier of the host, wait until each answers, then walb's follow-ups."""
    layout = runner.layout
    before: dict[str, Observed | None] = {}
    for s in tier:
        board.begin(s.id)
        obs = inspect(engine, container_name(layout, s))
        if obs is None:
            raise WalbctrError(f"{s.id}: its container vanished during 'maintenance exit'",
                               f"create it with 'walbctr up {layout.source}'")
        before[s.id] = obs
        if obs.status != "running":
            board.set(s.id, "starting")
            start_container(engine, s, obs.container_id)
    steps = []
    for s in tier:
        obs = runner.wait_ready(s, engine, before[s.id])
        policy = record.policies.get(s.id, RESTART_POLICY)
        if policy not in ("no", RESTART_POLICY):
            set_restart_policy(engine, s, obs.container_id, policy)
        step = Step(s.id, s.role.value, s.host, obs.image, obs.image_id, obs.image,
                    volumes=dict(record.volumes.get(s.id, {})))
        runner.gate_after(step, s, engine, obs, board)
        runner.kick_after(step, s)  # the runner says whom it kicked
        steps.append(step)
    return steps


# --- list ----------------------------------------------------------------------------------


def describe(layout: Layout) -> list[str]:
    records = read_maintenance(layout.group)
    if not records:
        return [f"group {layout.group}: no host is in maintenance"]
    lines = []
    for host, r in sorted(records.items()):
        silence = f", Alertmanager silence {r.silence}" if r.silence else ""
        lines.append(f"{host}: in maintenance since {r.since}: {', '.join(r.servers)} "
                     f"stopped{silence}")
    return lines
