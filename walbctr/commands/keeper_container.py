"""The keeper's container on its host: checked before `up`, started after the storages,
removed first by `down`. Not a server: it carries the label io.walbctr.keeper instead of
io.walbctr.group, so the server-level code (status table, tiers, orphans) never sees it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from walbctr.docker.containers import exec_in, observe
from walbctr.docker.state import maintained_servers
from walbctr.errors import WalbctrError, last_line
from walbctr.layout.monitor import (
    KEEPER_LABEL,
    KEEPER_SERVICE,
    MAINTENANCE_FILE,
    POLICY_PAUSE_FILE,
)
from walbctr.render.compose import LABEL, compose_project, project_name
from walbctr.render.keeper_service import image_of, monitor_of

if TYPE_CHECKING:
    from walbctr.docker.engine import Engine
    from walbctr.docker.fleet import Fleet
    from walbctr.layout.spec import Layout

SETTLE_S = 3.0  # a keeper that exits at once (a bad configuration) does so within this


def keeper_containers(engine: Engine, group: str) -> list[Any]:
    """The group's keeper containers on `engine` (docker-py), whatever their state."""
    return list(engine.api.containers.list(all=True, filters={"label": f"{KEEPER_LABEL}={group}"}))


def missing_image(layout: Layout, fleet: Fleet) -> str | None:
    """Why the keeper cannot start on its host (its image is not there), or None."""
    m = monitor_of(layout)
    if m is None or m.host not in fleet.hosts:
        return None
    image = image_of(layout)
    if fleet.engines[m.host].image_or_none(image) is None:
        return (f"host {m.host}: the keeper's image {image} is not on its engine ('walbctr "
                "build' makes it with the walb-tools image, 'walbctr push' copies it there; "
                "or set monitor.image)")
    return None


def _wanted_hash(layout: Layout, host: str) -> str:
    svc = compose_project(layout, host)["services"][KEEPER_SERVICE]
    return str(svc["labels"][f"{LABEL}.config-hash"])


def current(layout: Layout, fleet: Fleet) -> bool:
    """True when the keeper runs as the layout says (or there is none and none is wanted)."""
    m = monitor_of(layout)
    for host in fleet.hosts:
        found = [c for c in keeper_containers(fleet.engines[host], layout.group)
                 if c.labels.get(f"{LABEL}.host") == host]
        wanted = m is not None and m.host == host
        if not wanted and found:
            return False
        if not wanted:
            continue
        image = fleet.engines[host].image_or_none(image_of(layout))
        if (len(found) != 1 or found[0].status != "running" or image is None
                or found[0].labels.get(f"{LABEL}.config-hash") != _wanted_hash(layout, host)
                or found[0].attrs.get("Image") != image.id):
            return False
    return True


def start(layout: Layout, fleet: Fleet, paths: dict[str, Path]) -> str | None:
    """Bring the keeper up as the layout says (after every server is up); remove one the
    layout no longer has. Returns what was done, for the report, or None."""
    m = monitor_of(layout)
    removed = remove(layout, fleet, keep_host=m.host if m is not None else None)
    if m is None or m.host not in fleet.hosts:
        return "keeper removed" if removed else None
    engine = fleet.engines[m.host]
    before = {c.id for c in keeper_containers(engine, layout.group)}
    engine.compose_up(paths[m.host], project_name(layout, m.host), [KEEPER_SERVICE])
    deadline = time.monotonic() + SETTLE_S
    while True:
        found = keeper_containers(engine, layout.group)
        if not found:
            raise WalbctrError(f"host {m.host}: the keeper's container did not appear")
        c = found[0]
        c.reload()
        if observe(c.attrs).exited_since(0):
            tail = c.logs(tail=10).decode(errors="replace").strip().splitlines()
            code = c.attrs["State"].get("ExitCode")
            raise WalbctrError(
                f"host {m.host}: the keeper exits at start"
                + (f" (last exit code {code})" if code else "") + "; the servers are up. "
                "Its last log lines:\n  " + "\n  ".join(tail or ["-"]),
                f"see 'docker logs {c.name}'; fix the layout's monitor block and run "
                "'walbctr up' again")
        if time.monotonic() > deadline:
            done = "keeper unchanged" if c.id in before else "keeper started"
            held = {sid: r.host for sid, r in maintained_servers(layout.group).items()}
            # A new keeper's /tmp is empty: it learns the hosts in maintenance again.
            if held and c.id not in before:
                problem = tell_maintenance(layout, engine, held)
                done += f" ({problem})" if problem else " (told the hosts in maintenance)"
            return done
        time.sleep(0.25)


# Written whole, then renamed: the keeper never reads half a file.
_WRITE = ("import os, sys; p = sys.argv[1]; t = p + '.new'; f = open(t, 'w'); "
          "f.write(sys.argv[2]); f.close(); os.replace(t, p)")
_REMOVE = "import os, sys; os.path.exists(sys.argv[1]) and os.remove(sys.argv[1])"


def pause_policy(layout: Layout, fleet: Fleet, why: str | None) -> str | None:
    """Pause the keeper's policy tasks (`why`: who asks, e.g. 'upgrade'), or resume them
    (None); why it could not be told, None when told or there is nothing to tell. A task
    under way finishes; walb's own actions are never stopped."""
    m = monitor_of(layout)
    if m is None or layout.spec.policy is None or m.host not in fleet.hosts:
        return None
    engine = fleet.engines[m.host]
    running = [c for c in keeper_containers(engine, layout.group) if c.status == "running"]
    if not running:
        return None
    argv = ["python3", "-c", _WRITE, POLICY_PAUSE_FILE, why] if why is not None else \
        ["python3", "-c", _REMOVE, POLICY_PAUSE_FILE]
    code, out = exec_in(engine, running[0].id, argv)
    return None if code == 0 else f"the keeper could not be told ({last_line(out)})"


def tell_maintenance(layout: Layout, engine: Engine, servers: dict[str, str]) -> str | None:
    """Tell the keeper (on `engine`, its host's) which servers are in maintenance
    (id -> host): a file in its /tmp, the one place it may write, that it reads again at
    every probe. Returns why it could not be told, None when told or there is no keeper.

    The file lives as long as the keeper's container run: a keeper that walbctr
    recreates is told again (`start`); one that Docker itself restarts forgets it until
    the next `walbctr maintenance` command, and the Alertmanager silence covers that.
    """
    m = monitor_of(layout)
    if m is None:
        return None
    running = [c for c in keeper_containers(engine, layout.group)
               if c.labels.get(f"{LABEL}.host") == m.host and c.status == "running"]
    if not running:
        return (f"the keeper (host {m.host}) is not running, so it was not told; 'walbctr "
                "up' starts it and tells it")
    text = json.dumps({"group": layout.group, "servers": dict(sorted(servers.items()))})
    code, out = exec_in(engine, running[0].id, ["python3", "-c", _WRITE, MAINTENANCE_FILE,
                                                text])
    if code != 0:
        return f"the keeper could not be told ({last_line(out)})"
    return None


def remove(layout: Layout, fleet: Fleet, keep_host: str | None = None) -> list[str]:
    """Stop and remove the group's keeper containers (except on `keep_host`)."""
    removed = []
    seen: set[str] = set()
    for host in fleet.hosts:
        for c in keeper_containers(fleet.engines[host], layout.group):
            where = c.labels.get(f"{LABEL}.host")
            if c.id in seen or where == keep_host or where not in fleet.hosts:
                continue
            seen.add(c.id)
            c.update(restart_policy={"Name": "no"})
            c.stop(timeout=10)
            c.remove()
            removed.append(c.name)
    return removed
