"""`walbctr up` and `down`: a layout applied per host through Compose v2, in tiers across
hosts, with every server's health watched through the Engine API (one server's stop and
start are in docker/lifecycle.py, the rolling `restart` and `upgrade` in upgrade.py)."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from docker.errors import APIError, NotFound

from walbctr.commands import keeper_container as keeper_service
from walbctr.commands.waiting import ask_ready, wait_tier
from walbctr.display import ServerBoard
from walbctr.docker.compose_files import write_compose_files
from walbctr.docker.containers import (
    RESTART_POLICY,
    Observed,
)
from walbctr.docker.engine import require_compose
from walbctr.docker.fleet import Fleet
from walbctr.docker.lifecycle import (
    remove_container,
    set_restart_policy,
    start_container,
    stop_container,
)
from walbctr.docker.state import (
    GroupLock,
    read_maintenance,
    refuse_maintained,
    seen_ready,
    write_maintenance,
)
from walbctr.docker.throwaway import busy_ports
from walbctr.errors import WalbctrError, explain, warn
from walbctr.layout.server import Role, Server
from walbctr.layout.tiers import stale_storages, start_tiers, stop_tiers
from walbctr.render.compose import LABEL, desired_hashes, network_name, project_name
from walbctr.walb.readiness import POLL_S

if TYPE_CHECKING:
    from docker.models.networks import Network

    from walbctr.display import ProgressMode
    from walbctr.docker.engine import Engine
    from walbctr.layout.spec import Layout



@dataclass
class Outcome:
    created: list[str] = field(default_factory=list)
    recreated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)  # its stopped container started again
    repaired: list[str] = field(default_factory=list)  # restart policy put back
    seconds: float = 0.0


class ImageMissingError(WalbctrError):
    """The layout's image is missing on some hosts (and nothing else is wrong)."""

    remote = True  # False when only the local engine lacks it: pushing cannot help


def preflight(layout: Layout, fleet: Fleet, observed: dict[str, Observed]) -> None:
    """Everything that can be known before a container starts, checked on every host."""
    missing: list[str] = []

    def check(host: str) -> list[str]:
        engine = fleet.engines[host]
        if engine.image_or_none(layout.image) is None:
            missing.append(host)
            return []
        waiting = [s for s in layout.servers_on(host)
                   if s.id not in observed or observed[s.id].status != "running"]
        return _busy_port_problems(layout, engine, host, waiting)

    problems = _host_problems(fleet.each(fleet.hosts, check))
    missing.sort(key=fleet.hosts.index)  # threads finish in any order; report in order
    if missing and not problems:
        raise _image_missing(layout, missing)
    problems += [f"host {h}: image {layout.image} is not on its engine ('walbctr push' "
                 "copies it)" for h in missing]
    if problems:
        raise WalbctrError("nothing was started:\n  " + "\n  ".join(problems))


def _busy_port_problems(layout: Layout, engine: Engine, host: str,
                        waiting: list[Server]) -> list[str]:
    """The ports of servers about to start that another program holds: in host mode every
    server's own port, on a bridge network only the ports it publishes on the host."""
    if layout.network_mode == "host":
        return [f"host {host}: port {s.port} of {s.id} is already in use by another "
                "program; stop it, or give the server another port"
                for s in busy_ports(engine, layout, waiting)]
    published = [s for s in waiting if s.publish is not None]
    return [f"host {host}: port {s.port} that {s.id} publishes is already in use; stop "
            "that program, or publish another port"
            for s in busy_ports(engine, layout, published)]


def _host_problems(results: dict[str, list[str] | Exception]) -> list[str]:
    """Every host's problems in one list; a host that could not be checked is one."""
    problems: list[str] = []
    for host, result in results.items():
        if isinstance(result, WalbctrError):
            problems.append(result.message + (f" ({result.fix})" if result.fix else ""))
        elif isinstance(result, Exception):
            problems.append(f"host {host}: {explain(result)}")
        else:
            problems += result
    return problems


def _image_missing(layout: Layout, missing: list[str]) -> ImageMissingError:
    """The image is all that is missing: the fix depends on where, since pushing cannot
    help the local engine."""
    local = all(layout.hosts[h].engine is None for h in missing)
    err = ImageMissingError(
        f"image {layout.image} is not on the engine of {', '.join(missing)}; nothing "
        "was started",
        "build it on this machine with 'walbctr build' (or 'walbctr build --source "
        "DIR' from a copy of walb-tools)" if local else
        "copy it there with 'walbctr push' (or 'walbctr up --push'), or build it on "
        "this machine first with 'walbctr build'")
    err.remote = not local
    return err


def ensure_network(layout: Layout, engine: Engine) -> None:
    name = network_name(layout)
    if find_network(engine, name) is None:
        engine.api.networks.create(name, driver="bridge",
                                   labels={f"{LABEL}.group": layout.group})


def find_network(engine: Engine, name: str) -> Network | None:
    """The network called exactly `name`: the engine's name filter also matches longer
    names, so group `lab` would otherwise take group `lab2`'s network for its own."""
    return next((n for n in engine.api.networks.list(names=[name]) if n.name == name), None)


# --- up -----------------------------------------------------------------------------------


def up(layout: Layout, *, only_host: str | None, timeout: float | None,
       mode: ProgressMode, allow_image_change: bool = False) -> Outcome:
    """Apply the layout in tiers; `timeout` overrides each server's start_period."""
    started = time.monotonic()
    fleet = Fleet(layout, only_host)
    with GroupLock(layout.group, "up"):
        # Before anything is read from the engines: a host in maintenance may be down.
        refuse_maintained(layout.group, [s.id for s in layout.servers if s.host in fleet.hosts],
                          "up", layout.source)
        before = fleet.observe()
        for sid in sorted(set(before) - {s.id for s in layout.servers}):
            obs = before[sid]
            if fleet.owns(obs):
                how = "still runs" if obs.status == "running" else f"is {obs.status}"
                warn(f"warning: {sid} ({obs.name}) {how} but is no longer in "
                     f"{layout.source}; 'walbctr down {layout.source}' removes it with the "
                     "group (its data stays)")
            else:
                warn(stranger_warning(fleet.engines[fleet.hosts[0]], obs, layout))
        old = fleet.old_engines()
        wanted = desired_hashes(layout, fleet.hosts, old)
        servers = [s for s in layout.servers if s.host in fleet.hosts]
        outcome = Outcome()
        outcome.repaired = _restore_policies(fleet, servers, before)
        if _all_current(fleet, layout, servers, before, wanted) and \
                keeper_service.current(layout, fleet):
            outcome.unchanged = [s.id for s in servers]
            outcome.seconds = time.monotonic() - started
            return outcome
        if not allow_image_change:
            _refuse_image_only_change(layout, fleet, servers, before, wanted, old)
        require_compose()
        preflight(layout, fleet, before)
        no_keeper = keeper_service.missing_image(layout, fleet)
        if no_keeper:
            raise WalbctrError(f"nothing was started:\n  {no_keeper}")

        paths = write_compose_files(layout, fleet.hosts, old, before)
        if layout.network_mode == "bridge":
            ensure_network(layout, fleet.engines[fleet.hosts[0]])
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


def start_servers(layout: Layout, fleet: Fleet, ids: list[str], *, timeout: float | None,
                  mode: ProgressMode) -> Outcome:
    """Start only the servers `ids` as the layout says, in tier order, each waited for as
    `up` waits for a tier; every other server is left as it is (`replace` starts its new
    server so). The caller holds the group lock and has checked the hosts (preflight)."""
    started = time.monotonic()
    before = fleet.observe()
    require_compose()
    paths = write_compose_files(layout, fleet.hosts, fleet.old_engines(), before)
    if layout.network_mode == "bridge":
        ensure_network(layout, fleet.engines[fleet.hosts[0]])
    outcome = Outcome()
    rows = [(s.id, s.role.value, s.host) for s in layout.servers if s.id in ids]
    with ServerBoard(rows, mode) as board:
        for role, by_host in start_tiers(layout, ids):
            _start_tier(layout, fleet, paths, role, by_host, before, outcome, board, timeout)
    outcome.seconds = time.monotonic() - started
    return outcome


class ImageChangeError(WalbctrError):
    """`up` would replace running servers whose only difference is their image."""


def _refuse_image_only_change(layout: Layout, fleet: Fleet, servers: list[Server],
                              before: dict[str, Observed], wanted: dict[str, str],
                              old: frozenset[str]) -> None:
    """An image change is an upgrade: `walbctr upgrade` has the gates, kicks and rollback
    that recreating every tier at once has not."""
    changed: dict[str, str] = {}
    new_ids: dict[str, str | None] = {}
    for s in servers:
        obs = before.get(s.id)
        if obs is None or obs.status != "running":
            continue
        if s.host not in new_ids:
            image = fleet.engines[s.host].image_or_none(layout.image)
            new_ids[s.host] = image.id if image is not None else None
        if obs.config_hash == wanted[s.id]:
            if new_ids[s.host] is not None and obs.image_id != new_ids[s.host]:
                changed[s.id] = f"{obs.image} (rebuilt)"
            continue
        if obs.image == layout.image:
            continue
        was = dataclasses.replace(layout, spec=layout.spec.model_copy(
            update={"image": obs.image}))
        if desired_hashes(was, [s.host], old)[s.id] == obs.config_hash:
            changed[s.id] = obs.image
    if changed:
        olds = ", ".join(dict.fromkeys(changed.values()))
        raise ImageChangeError(
            f"only the image changed for {', '.join(changed)} ({olds} -> {layout.image}): "
            "'walbctr up' would recreate them tier by tier, without the upgrade's gates "
            "(running archive actions, overflows, send errors), kicks or way back; nothing "
            "was changed",
            f"run 'walbctr upgrade {layout.source}' (the safe path: one server at a time, "
            f"--rollback to go back), or 'walbctr up {layout.source} --yes' to recreate them "
            "anyway")


def _restore_policies(fleet: Fleet, servers: list[Server],
                      before: dict[str, Observed]) -> list[str]:
    """Put back the restart policy a `down` or `restart` lifted and did not restore."""
    fixed = []
    for s in servers:
        obs = before.get(s.id)
        if obs is not None and obs.policy_drift and obs.status != "removing":
            set_restart_policy(fleet.engines[s.host], s, obs.container_id, RESTART_POLICY)
            fixed.append(s.id)
    return fixed


def _all_current(fleet: Fleet, layout: Layout, servers: list[Server],
                 before: dict[str, Observed], wanted: dict[str, str]) -> bool:
    if not all(s.id in before and before[s.id].status == "running"
               and before[s.id].health in ("healthy", "starting")
               and before[s.id].config_hash == wanted[s.id] for s in servers):
        return False
    # Docker's health stays 'starting' until its first check, up to an interval after a
    # start; such a server is current when it answers the same probe now.
    seen = seen_ready(layout.group)
    starting = {s.id: (s, before[s.id].container_id) for s in servers
                if before[s.id].health == "starting"
                and seen.get(s.id) != (before[s.id].container_id, before[s.id].started_at)}
    if not all(ok is True for ok in ask_ready(fleet, starting).values()):
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
                outcome: Outcome, board: ServerBoard, timeout: float | None) -> None:
    """Start one tier on its hosts at once; compose recreates what its config hash says."""
    for servers in by_host.values():
        for s in servers:
            board.begin(s.id)
            board.set(s.id, "created")
    _compose_up(layout, fleet, paths, by_host, board)
    ids = [s.id for servers in by_host.values() for s in servers]
    now = wait_tier(layout, fleet, role, by_host, before, board, timeout)
    _tally(outcome, ids, before, now)


def _compose_up(layout: Layout, fleet: Fleet, paths: dict[str, Path],
                by_host: dict[str, tuple[Server, ...]], board: ServerBoard) -> None:
    """`compose up` of the tier's servers on every host at once; a host where it fails
    marks its servers failed and fails the tier (after every host has had its go)."""

    def apply(host: str) -> None:
        fleet.engines[host].compose_up(paths[host], project_name(layout, host),
                                       [s.id for s in by_host[host]])

    for host, result in fleet.each(by_host, apply).items():
        if isinstance(result, Exception):
            for s in by_host[host]:
                board.set(s.id, "failed")
            raise result


def _tally(outcome: Outcome, ids: list[str], before: dict[str, Observed],
           now: dict[str, Observed]) -> None:
    """What `up` did to each server, told by its container before and after."""
    for sid in ids:
        if sid not in before:
            outcome.created.append(sid)
        elif before[sid].container_id != now[sid].container_id:
            outcome.recreated.append(sid)
        elif before[sid].status != "running":
            outcome.started.append(sid)  # stopped by hand, or by an interrupted down
        else:
            outcome.unchanged.append(sid)


def _restart_stale_storages(layout: Layout, fleet: Fleet, outcome: Outcome,
                            board: ServerBoard, timeout: float | None) -> None:
    """On a bridge network a recreated peer has a new address the storages never saw."""
    stale = [s for s in stale_storages(layout, outcome.recreated, outcome.created)
             if s.host in fleet.hosts]
    if not stale:
        return
    seen = fleet.observe()
    for s in stale:
        engine = fleet.engines[s.host]
        stop_container(engine, s, seen[s.id], board)
        start_container(engine, s, seen[s.id].container_id)
        board.set(s.id, "starting")
        outcome.restarted.append(s.id)
        outcome.unchanged.remove(s.id)
    by_host: dict[str, tuple[Server, ...]] = {}
    for s in stale:
        by_host[s.host] = (*by_host.get(s.host, ()), s)
    wait_tier(layout, fleet, Role.STORAGE, by_host, fleet.observe(), board, timeout)


# --- down ---------------------------------------------------------------------------------


def stop_servers(layout: Layout, fleet: Fleet, ids: list[str] | None, mode: ProgressMode,
                 observed: dict[str, Observed]) -> list[Server]:
    """Stop the chosen servers in reverse tier order; return those that had containers."""
    servers = [s for s in layout.servers if s.host in fleet.hosts
               and (ids is None or s.id in ids) and s.id in observed]
    rows = [(s.id, s.role.value, s.host) for s in reversed(servers)]
    with ServerBoard(rows, mode) as board:
        for _role, by_host in stop_tiers(layout, [s.id for s in servers]):
            tier = [s for group in by_host.values() for s in group]
            results = fleet.each([s.id for s in tier], lambda sid: stop_container(
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
        for s in stopped:
            remove_container(fleet.engines[s.host], s, observed[s.id].container_id)
        removed = [s.id for s in stopped]
        if ids is None:
            _forget_maintenance(layout, fleet.hosts)
        whole = ids is None and only_host is None
        if whole:
            # Servers taken out of the layout since they were started go with the group;
            # the image's stop shim turns Docker's stop into a graceful walb shutdown.
            for engine, obs in fleet.not_in_layout():
                if fleet.owns(obs):
                    _remove_orphan(engine, obs)
                    removed.append(obs.server)
                else:
                    warn(stranger_warning(engine, obs, layout))
        if whole and layout.network_mode == "bridge":
            remove_network(fleet.engines[fleet.hosts[0]], network_name(layout))
        return removed


def _forget_maintenance(layout: Layout, hosts: tuple[str, ...]) -> None:
    """A host whose containers `down` removed has nothing left to hold stopped."""
    records = read_maintenance(layout.group)
    dropped = {h: r for h, r in records.items() if h in hosts}
    if not dropped:
        return
    write_maintenance(layout.group, {h: r for h, r in records.items() if h not in hosts})
    for h, r in sorted(dropped.items()):
        silence = (f"; its Alertmanager silence {r.silence} stays until it ends"
                   if r.silence else "")
        warn(f"note: host {h} was in maintenance since {r.since}; with its containers "
             f"removed, it no longer is{silence}")


# How long `down` waits for the engine to release the endpoints of containers just removed.
NETWORK_SETTLE_S = 3.0


def remove_network(engine: Engine, name: str) -> None:
    """Remove the group's bridge network once nothing is attached.

    By the time this runs every server is down and removed, so a network that stays is
    not worth failing `down` for: the next `up` reuses it. It can stay for two reasons, told
    apart in the warning: someone else's container is attached to it, or the engine still
    counts an endpoint that no container holds (moby/moby#42119, seen here on Docker 20.10
    after a 32-server down; only a daemon restart clears it)."""
    net = find_network(engine, name)
    if net is None:
        return
    deadline = time.monotonic() + NETWORK_SETTLE_S
    while True:
        try:
            net.reload()  # a listed network does not show what is attached
            attached = sorted(c.get("Name", cid[:12])
                              for cid, c in (net.attrs.get("Containers") or {}).items())
            if not attached:
                net.remove()
                return
        except NotFound:
            return
        except APIError as err:
            if "active endpoints" not in str(err):
                raise
            attached = []
        if time.monotonic() >= deadline:
            break
        time.sleep(POLL_S)
    if attached:
        why = f"{', '.join(attached)} still attached to it"
        fix = f"stop or disconnect those containers, then 'docker network rm {name}'"
    else:
        why = ("the engine still counts an endpoint on it that no container holds "
               "(a Docker fault, moby/moby#42119)")
        fix = "the next 'walbctr up' reuses it; a Docker daemon restart lets it be removed"
    warn(f"warning: host {engine.label}: the servers are down, but the network {name} "
         f"stays: {why}. It is harmless: {fix}.")


def stranger_warning(engine: Engine, obs: Observed, layout: Layout) -> str:
    """What to say of a container of this group that another layout file started."""
    return (f"warning: host {engine.label}: {obs.name} (server {obs.server} of group "
            f"{layout.group}) was started from another layout, {obs.layout}, so walbctr "
            f"leaves it. Two layouts should not share a group: give one another 'group:'. "
            f"'walbctr down' of that layout removes it; if that file is gone, "
            f"'docker stop -t 120 {obs.name} && docker rm {obs.name}' does (its data stays)")


def _remove_orphan(engine: Engine, obs: Observed) -> None:
    api = engine.api.api
    try:
        api.update_container(obs.container_id, restart_policy={"Name": "no"})
        api.stop(obs.container_id, timeout=120)
        api.remove_container(obs.container_id)
    except NotFound:
        pass
    except APIError as err:
        raise WalbctrError(f"host {engine.label}: could not remove {obs.name} (no longer in "
                           f"the layout): {explain(err)}", "run 'walbctr down' again") from None
