"""`walbctr up`, `down` and `restart`: a layout applied per host through Compose v2,
in tiers across hosts, with every server's health watched through the Engine API."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from walbctr import keeper_service
from walbctr.compose import LABEL, desired_hashes, network_name, project_name
from walbctr.containers import Observed, group_containers
from walbctr.display import ServerBoard
from walbctr.engine import require_compose
from walbctr.errors import WalbctrError, explain, warn
from walbctr.files import write_compose_files
from walbctr.fleet import Fleet
from walbctr.logs import log_tail
from walbctr.probe import busy_ports
from walbctr.server import Role, Server
from walbctr.state import GroupLock
from walbctr.tiers import start_tiers, stop_tiers, storages_pointing_at

if TYPE_CHECKING:
    from walbctr.display import ProgressMode
    from walbctr.engine import Engine
    from walbctr.layout import Layout

POLL_S = 0.25


@dataclass
class Outcome:
    created: list[str] = field(default_factory=list)
    recreated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)
    seconds: float = 0.0


class ImageMissingError(WalbctrError):
    """The layout's image is missing on some hosts (and nothing else is wrong)."""

    remote = True  # False when only the local engine lacks it: pushing cannot help


def preflight(layout: Layout, fleet: Fleet, observed: dict[str, Observed]) -> None:
    """Everything that can be known before a container starts, checked on every host."""
    problems: list[str] = []
    missing: list[str] = []

    def check(host: str) -> list[str]:
        engine = fleet.engines[host]
        found: list[str] = []
        if engine.image_or_none(layout.image) is None:
            missing.append(host)
            return found
        waiting = [s for s in layout.servers_on(host)
                   if s.id not in observed or observed[s.id].status != "running"]
        if layout.network_mode == "host":
            for s in busy_ports(engine, layout, waiting):
                found.append(f"host {host}: port {s.port} of {s.id} is already in use by "
                             "another program; stop it, or give the server another port")
        else:
            published = [s for s in waiting if s.publish is not None]
            for s in busy_ports(engine, layout, published):
                found.append(f"host {host}: port {s.port} that {s.id} publishes is already "
                             "in use; stop that program, or publish another port")
        return found

    for host, result in fleet.each(fleet.hosts, check).items():
        if isinstance(result, WalbctrError):
            problems.append(result.message + (f" ({result.fix})" if result.fix else ""))
        elif isinstance(result, Exception):
            problems.append(f"host {host}: {explain(result)}")
        else:
            problems += result
    missing.sort(key=fleet.hosts.index)  # threads finish in any order; report in order
    if missing and not problems:
        local = all(layout.hosts[h].engine is None for h in missing)
        err = ImageMissingError(
            f"image {layout.image} is not on the engine of {', '.join(missing)}; nothing "
            "was started",
            "build it on this machine with 'walbctr build' (or 'walbctr build --source "
            "DIR' from a copy of walb-tools)" if local else
            "copy it there with 'walbctr push' (or 'walbctr up --push'), or build it on "
            "this machine first with 'walbctr build'")
        err.remote = not local
        raise err
    problems += [f"host {h}: image {layout.image} is not on its engine ('walbctr push' "
                 "copies it)" for h in missing]
    if problems:
        raise WalbctrError("nothing was started:\n  " + "\n  ".join(problems))


def ensure_network(layout: Layout, engine: Engine) -> None:
    name = network_name(layout)
    if not engine.api.networks.list(names=[name]):
        engine.api.networks.create(name, driver="bridge",
                                   labels={f"{LABEL}.group": layout.group})


# --- up -----------------------------------------------------------------------------------


def up(layout: Layout, *, only_host: str | None, timeout: float,
       mode: ProgressMode) -> Outcome:
    started = time.monotonic()
    fleet = Fleet(layout, only_host)
    with GroupLock(layout.group, "up"):
        before = fleet.observe()
        for sid in sorted(set(before) - {s.id for s in layout.servers}):
            warn(f"warning: {sid} ({before[sid].name}) still runs but is no longer in "
                 f"{layout.source}; 'walbctr down {layout.source}' removes it with the "
                 "group (its data stays)")
        wanted = desired_hashes(layout, fleet.hosts)
        servers = [s for s in layout.servers if s.host in fleet.hosts]
        if _all_current(fleet, layout, servers, before, wanted) and \
                keeper_service.current(layout, fleet):
            return Outcome(unchanged=[s.id for s in servers],
                           seconds=time.monotonic() - started)
        require_compose()
        preflight(layout, fleet, before)
        no_keeper = keeper_service.missing_image(layout, fleet)
        if no_keeper:
            raise WalbctrError(f"nothing was started:\n  {no_keeper}")

        paths = write_compose_files(layout, fleet.hosts)
        if layout.network_mode == "bridge":
            ensure_network(layout, fleet.engines[fleet.hosts[0]])
        outcome = Outcome()
        rows = [(s.id, s.role.value, s.host) for s in servers]
        with ServerBoard(rows, mode) as board:
            for role, by_host in start_tiers(layout, [s.id for s in servers]):
                _start_tier(layout, fleet, paths, role, by_host, before, outcome, board,
                            timeout)
            if layout.network_mode == "bridge":
                _restart_stale_storages(layout, fleet, outcome, board, timeout)
        keeper_service.start(layout, fleet, paths)  # last: it kicks what is up
        outcome.seconds = time.monotonic() - started
        return outcome


def _all_current(fleet: Fleet, layout: Layout, servers: list[Server],
                 before: dict[str, Observed], wanted: dict[str, str]) -> bool:
    if not all(s.id in before and before[s.id].healthy
               and before[s.id].config_hash == wanted[s.id] for s in servers):
        return False
    image_ids: dict[str, str | None] = {}
    for s in servers:
        key = fleet.layout.hosts[s.host].engine_key
        if key not in image_ids:
            image = fleet.engines[s.host].image_or_none(layout.image)
            image_ids[key] = image.id if image is not None else None
        if before[s.id].image_id != image_ids[key]:
            return False
    return True


def _start_tier(layout: Layout, fleet: Fleet, paths: dict[str, Path], role: Role,
                by_host: dict[str, tuple[Server, ...]], before: dict[str, Observed],
                outcome: Outcome, board: ServerBoard, timeout: float) -> None:
    """Start one tier on its hosts at once; compose recreates what its config hash says."""
    for servers in by_host.values():
        for s in servers:
            board.begin(s.id)
            board.set(s.id, "created")

    def apply(host: str) -> None:
        fleet.engines[host].compose_up(paths[host], project_name(layout, host),
                                       [s.id for s in by_host[host]])

    for host, result in fleet.each(by_host, apply).items():
        if isinstance(result, Exception):
            for s in by_host[host]:
                board.set(s.id, "failed")
            raise result
    ids = [s.id for servers in by_host.values() for s in servers]
    now = _wait_healthy(layout, fleet, role, by_host, before, board, timeout)
    for sid in ids:
        if sid not in before:
            outcome.created.append(sid)
        elif before[sid].container_id != now[sid].container_id:
            outcome.recreated.append(sid)
        else:
            outcome.unchanged.append(sid)


def _wait_healthy(layout: Layout, fleet: Fleet, role: Role,
                  by_host: dict[str, tuple[Server, ...]], before: dict[str, Observed],
                  board: ServerBoard, timeout: float) -> dict[str, Observed]:
    """Wait for the tier's servers to be healthy; a restart since `before` is a failure."""
    deadline = time.monotonic() + timeout
    pending = {s.id: s for servers in by_host.values() for s in servers}
    done: dict[str, Observed] = {}
    engines = {layout.hosts[h].engine_key: h for h in by_host}
    while True:
        seen: dict[str, Observed] = {}
        for host in engines.values():
            seen.update(group_containers(fleet.engines[host], layout.group))
        failures = []
        for sid, server in list(pending.items()):
            obs = seen.get(sid)
            if obs is None:
                continue
            same = sid in before and before[sid].container_id == obs.container_id
            why = obs.failure(before[sid].restart_count if same else 0)
            if why is not None:
                board.set(sid, "failed")
                failures.append((server, obs, why))
            elif obs.healthy:
                board.set(sid, "healthy")
                done[sid] = obs
                del pending[sid]
            else:
                board.set(sid, "starting")
        if failures:
            raise tier_failure(layout, fleet, role, failures)
        if not pending:
            return done
        if time.monotonic() > deadline:
            late = [(s, seen.get(sid), "did not become healthy within "
                     f"{timeout:.0f} s") for sid, s in pending.items()]
            for sid in pending:
                board.set(sid, "failed")
            raise tier_failure(layout, fleet, role, late)
        board.tick()
        time.sleep(POLL_S)


def tier_failure(layout: Layout, fleet: Fleet, role: Role,
                 failures: Sequence[tuple[Server, Observed | None, str]]) -> WalbctrError:
    parts = []
    for server, obs, why in failures:
        text = f"{server.id} ({server.role.value} on {server.host}) {why}"
        if obs is not None and obs.health_output and "unhealthy" not in why:
            text += f"\n    last health check: {obs.health_output}"
        try:
            tail = log_tail(fleet.engines[server.host], layout, server, 20)
        except Exception as err:  # the report must not hide the failure it reports
            tail = [f"(could not read its log: {err})"]
        text += "\n    last log lines:\n      " + "\n      ".join(tail or ["(empty)"])
        parts.append(text)
    later = " and ".join(r.section for r in role.later) or "nothing else"
    later += " was" if not role.later else " were"
    first = failures[0][0].id
    source = layout.source
    return WalbctrError(
        f"the {role.value} tier failed:\n  " + "\n  ".join(parts)
        + f"\n{later.capitalize()} not started; what did start is left running for "
        "inspection.",
        f"look with 'walbctr logs {source} {first}' and 'walbctr status {source}'; stop "
        f"the group with 'walbctr down {source}'",
    )


def _restart_stale_storages(layout: Layout, fleet: Fleet, outcome: Outcome,
                            board: ServerBoard, timeout: float) -> None:
    """On a bridge network a recreated peer has a new address the storages never saw."""
    moved = outcome.recreated
    fresh = set(outcome.created) | set(outcome.recreated)
    stale = [s for s in storages_pointing_at(layout, moved) if s.id not in fresh
             and s.host in fleet.hosts]
    if not stale:
        return
    seen = fleet.observe()
    for s in stale:
        board.begin(s.id)
        board.set(s.id, "starting")
        fleet.engines[s.host].api.containers.get(seen[s.id].container_id).restart(
            timeout=s.stop_grace_period)
        outcome.restarted.append(s.id)
        outcome.unchanged.remove(s.id)
    by_host: dict[str, tuple[Server, ...]] = {}
    for s in stale:
        by_host[s.host] = (*by_host.get(s.host, ()), s)
    _wait_healthy(layout, fleet, Role.STORAGE, by_host, seen, board, timeout)


# --- down and restart ---------------------------------------------------------------------


def _graceful_stop(engine: Engine, server: Server, obs: Observed, board: ServerBoard) -> None:
    """walbc shutdown graceful, then SIGTERM after the grace period, then SIGKILL."""
    container = engine.api.containers.get(obs.container_id)
    board.begin(server.id)
    board.set(server.id, "stopping")
    # A server that exits on request must stay down, not be restarted by its policy.
    container.update(restart_policy={"Name": "no"})
    if obs.status == "running":
        with contextlib.suppress(Exception):
            container.exec_run(["walbc", "-a", "127.0.0.1", "-p", str(server.port), "-to",
                                "10", "shutdown", "graceful"])
        deadline = time.monotonic() + server.stop_grace_period
        while time.monotonic() < deadline:
            container.reload()
            if container.status != "running":
                break
            time.sleep(POLL_S)
        else:
            container.stop(timeout=10)
    board.set(server.id, "stopped")


def stop_servers(layout: Layout, fleet: Fleet, ids: list[str] | None, mode: ProgressMode,
                 observed: dict[str, Observed]) -> list[Server]:
    """Stop the chosen servers in reverse tier order; return those that were running."""
    servers = [s for s in layout.servers if s.host in fleet.hosts
               and (ids is None or s.id in ids) and s.id in observed]
    rows = [(s.id, s.role.value, s.host) for s in reversed(servers)]
    with ServerBoard(rows, mode) as board:
        for _role, by_host in stop_tiers(layout, [s.id for s in servers]):
            tier = [s for group in by_host.values() for s in group]
            results = fleet.each([s.id for s in tier], lambda sid: _graceful_stop(
                fleet.engines[layout.server(sid).host], layout.server(sid), observed[sid],
                board))
            errors = [r for r in results.values() if isinstance(r, Exception)]
            if errors:
                raise errors[0]
    return servers


def down(layout: Layout, ids: list[str] | None, *, only_host: str | None,
         mode: ProgressMode) -> list[str]:
    fleet = Fleet(layout, only_host)
    for sid in ids or []:
        layout.server(sid)  # an unknown id is an error before anything stops
    with GroupLock(layout.group, "down"):
        observed = fleet.observe()
        if ids is None:  # first, so that it does not report the servers' stops as outages
            keeper_service.remove(layout, fleet)
        stopped = stop_servers(layout, fleet, ids, mode, observed)
        stopped_ids: list[str] = []
        for s in stopped:
            fleet.engines[s.host].api.containers.get(observed[s.id].container_id).remove()
        whole = ids is None and only_host is None
        if whole:
            # Servers taken out of the layout since they were started go with the group.
            for engine, obs in fleet.orphans():
                container = engine.api.containers.get(obs.container_id)
                container.update(restart_policy={"Name": "no"})
                container.stop(timeout=30)
                container.remove()
                stopped_ids.append(obs.server)
        if whole and layout.network_mode == "bridge":
            engine = fleet.engines[fleet.hosts[0]]
            for net in engine.api.networks.list(names=[network_name(layout)]):
                net.reload()
                if not net.attrs.get("Containers"):
                    net.remove()
        return [s.id for s in stopped] + stopped_ids


def restart(layout: Layout, ids: list[str] | None, *, only_host: str | None,
            mode: ProgressMode, timeout: float) -> list[str]:
    fleet = Fleet(layout, only_host)
    for sid in ids or []:
        layout.server(sid)
    with GroupLock(layout.group, "restart"):
        observed = fleet.observe()
        missing = [s.id for s in layout.servers if s.host in fleet.hosts
                   and (ids is None or s.id in ids) and s.id not in observed]
        if missing:
            raise WalbctrError(f"no container for {', '.join(missing)}",
                               "start them with 'walbctr up'")
        stopped = stop_servers(layout, fleet, ids, mode, observed)
        rows = [(s.id, s.role.value, s.host) for s in stopped]
        with ServerBoard(rows, mode) as board:
            for role, by_host in start_tiers(layout, [s.id for s in stopped]):
                for servers in by_host.values():
                    for s in servers:
                        board.begin(s.id)
                        c = fleet.engines[s.host].api.containers.get(
                            observed[s.id].container_id)
                        c.update(restart_policy={"Name": "unless-stopped"})
                        c.start()
                        board.set(s.id, "starting")
                _wait_healthy(layout, fleet, role, by_host, observed, board, timeout)
        return [s.id for s in stopped]

