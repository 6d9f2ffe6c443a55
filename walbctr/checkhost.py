"""`walbctr check-host`: what each host must offer before the group is deployed there.

Every check runs on every host (in parallel) and all results are reported together,
the way cephadm's check-host collects every error before failing.
"""

from __future__ import annotations

import contextlib
import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

from docker.errors import APIError, ContainerError

from walbctr.compose import project_name
from walbctr.containers import group_containers
from walbctr.deploy import ensure_network
from walbctr.engine import Engine, require_compose
from walbctr.errors import WalbctrError, explain, last_line
from walbctr.files import write_compose_files
from walbctr.fleet import Fleet
from walbctr.probe import busy_ports, run_probe
from walbctr.server import Role, Server

if TYPE_CHECKING:
    from walbctr.layout import Layout

Result = Literal["ok", "warn", "FAIL"]
OK: Final = "ok"
WARN: Final = "warn"
FAIL: Final = "FAIL"


@dataclass(frozen=True)
class Check:
    host: str
    name: str
    result: Result
    detail: str


def check_hosts(layout: Layout, only_host: str | None = None) -> list[Check]:
    fleet = Fleet(layout, only_host)
    compose: Check
    try:
        require_compose()
        compose = Check("(controller)", "compose v2", OK, "docker compose plugin present")
    except WalbctrError as err:
        compose = Check("(controller)", "compose v2", FAIL, f"{err.message}; {err.fix}")
    checks = [compose]
    if layout.network_mode == "bridge":
        # One network for the group; created once here so the probes below can join it.
        with contextlib.suppress(Exception):  # an unreachable engine is reported below
            ensure_network(layout, fleet.engines[fleet.hosts[0]])
    results = fleet.each(fleet.hosts, lambda h: _check_host(layout, fleet, h))
    for host in fleet.hosts:
        outcome = results[host]
        if isinstance(outcome, Exception):
            checks.append(Check(host, "engine", FAIL, explain(outcome)))
        else:
            checks += outcome
    return checks


def _check_host(layout: Layout, fleet: Fleet, host: str) -> list[Check]:
    engine = fleet.engines[host]
    out: list[Check] = []

    def add(name: str, result: Result, detail: str) -> None:
        out.append(Check(host, name, result, detail))

    version = engine.api.version()
    add("engine", OK, f"Docker {version.get('Version', '?')} (API {version.get('ApiVersion')})"
        f" at {engine.engine or 'the local socket'}")
    if engine.image_or_none(layout.image) is None:
        add("image", FAIL, f"{layout.image} is not there: 'walbctr build', or 'walbctr push'")
        return out  # the remaining checks run in containers of that image
    add("image", OK, layout.image)
    servers = layout.servers_on(host)
    if any(s.privileged for s in servers):
        _privileged(engine, layout, add)
    for s in servers:
        if s.role is Role.ARCHIVE:
            _volume_group(engine, layout, s, add)
        elif s.role is Role.STORAGE:
            _walb_driver(engine, layout, s, add)
    _base_dirs(engine, layout, servers, add)
    _ports(engine, layout, servers, add)
    return out


def _privileged(engine: Engine, layout: Layout, add: Callable[[str, Result, str], None]) -> None:
    try:
        run_probe(engine, layout.image, ["true"], purpose="check", privileged=True)
        add("privileged", OK, "privileged containers start")
    except (APIError, ContainerError) as err:
        add("privileged", FAIL, f"privileged containers are refused ({explain(err)[-200:]}); set "
            "'privileged: false' under defaults for archives and storages")


def _service_run(engine: Engine, layout: Layout, server: Server, script: str) -> tuple[int, str]:
    """Run `script` in a one-off container with the server's own mounts and privileges."""
    path = write_compose_files(layout, [server.host])[server.host]
    return engine.compose_run(path, project_name(layout, server.host), server.id,
                              ["sh", "-c", script])


def _volume_group(engine: Engine, layout: Layout, s: Server,
                  add: Callable[[str, Result, str], None]) -> None:
    vg = s.options.get("vg", "")
    tp = s.options.get("thinpool")
    script = f"/sbin/vgs --noheadings -o vg_name,vg_size,vg_free {vg}"
    if tp:
        script += f" && /sbin/lvs --noheadings -o lv_name,lv_attr {vg}/{tp}"
    code, text = _service_run(engine, layout, s, script)
    what = f"VG {vg}" + (f" with thin pool {tp}" if tp else "")
    if code == 0:
        add(f"{s.id}: volume group", OK, f"{what}: {' '.join(text.split())}")
    else:
        add(f"{s.id}: volume group", FAIL, f"{what} not found as {s.id} would see it: "
            f"{last_line(text)}; create it (vgcreate {vg} DEVICE"
            + (f", lvcreate --type thin-pool -L SIZE -n {tp} {vg}" if tp else "") + ")")


def _walb_driver(engine: Engine, layout: Layout, s: Server,
                 add: Callable[[str, Result, str], None]) -> None:
    code, _ = _service_run(engine, layout, s, "test -c /dev/walb/control")
    if code == 0:
        add(f"{s.id}: walb driver", OK, "/dev/walb/control exists")
    else:
        add(f"{s.id}: walb driver", WARN, "/dev/walb/control is missing: the walb kernel "
            "driver is not loaded. The storage starts and answers, but WalB devices cannot "
            "be created (wdevc) or served until walb-mod, built for this kernel, is loaded")


def _base_dirs(engine: Engine, layout: Layout, servers: tuple[Server, ...],
               add: Callable[[str, Result, str], None]) -> None:
    """Each base dir's nearest existing ancestor (seen read-only), then a write test there."""
    parents = sorted({posixpath.dirname(s.base_dir) for s in servers})
    find = "; ".join(f'd="{p}"; while [ ! -d "/host$d" ]; do d=$(dirname "$d"); done; '
                     f'echo "{p} $d"' for p in parents)
    found = dict(line.split() for line in _probe(
        engine, layout, find, {"/": {"bind": "/host", "mode": "ro"}}).splitlines())
    for existing in sorted(set(found.values())):
        test = ('t=$(mktemp -p /probe .walbctr-check.XXXXXX 2>&1) && rm -f "$t" && echo ok '
                '|| echo "$t"')
        result = _probe(engine, layout, test, {existing: {"bind": "/probe", "mode": "rw"}})
        for parent, anc in found.items():
            if anc != existing:
                continue
            if result.strip() == "ok":
                made = "" if anc == parent else f" ({parent} will be created under {anc})"
                add(f"base dir parent {parent}", OK, "writable" + made)
            else:
                add(f"base dir parent {parent}", FAIL, f"{anc} is not writable: "
                    f"{last_line(result)}")


def _ports(engine: Engine, layout: Layout, servers: tuple[Server, ...],
           add: Callable[[str, Result, str], None]) -> None:
    running = {sid for sid, o in group_containers(engine, layout.group).items()
               if o.status == "running"}
    candidates = [s for s in servers if s.id not in running and
                  (layout.network_mode == "host" or s.publish is not None)]
    busy = {s.id for s in busy_ports(engine, layout, candidates)}
    for s in candidates:
        if s.id in busy:
            add(f"{s.id}: port {s.port}", FAIL, "in use by another program")
        else:
            add(f"{s.id}: port {s.port}", OK, "free")
    for s in servers:
        if s.id in running:
            add(f"{s.id}: port {s.port}", OK, "served by its running container")


def _probe(engine: Engine, layout: Layout, script: str, volumes: dict[str, Any]) -> str:
    return run_probe(engine, layout.image, ["sh", "-c", script], purpose="check",
                     volumes=volumes)

