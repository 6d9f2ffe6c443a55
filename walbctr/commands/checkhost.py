"""`walbctr check-host`: what each host must offer before the group is deployed there.

Every check runs on every host (in parallel) and all results are reported together,
the way cephadm's check-host collects every error before failing.

A check leaves a host as it found it. It runs throwaway probe containers (probe.py) that
mount only what the check needs, read-only unless the check is a write test, never
create a missing host path, and are removed whatever happens; layout values reach them
only as arguments or as mount sources, never pasted into a script. No network, compose
file or directory is created, and the write test removes its file at once.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Final, Literal

from docker.errors import APIError, ContainerError

from walbctr.commands.lab import lab_vgs
from walbctr.docker.containers import group_containers
from walbctr.docker.engine import Engine, require_compose
from walbctr.docker.fleet import Fleet
from walbctr.docker.throwaway import MissingHostPathError, ProbeResult, busy_ports, probe, sh
from walbctr.errors import WalbctrError, explain, last_line
from walbctr.layout.server import Role, Server
from walbctr.render.compose import ARCHIVE_CAPS, DEVICE_RULES, LABEL
from walbctr.walb.driver import StorageHostView, kernel_support

if TYPE_CHECKING:
    from walbctr.layout.spec import Layout

Result = Literal["ok", "warn", "FAIL"]
OK: Final = "ok"
WARN: Final = "warn"
FAIL: Final = "FAIL"
PROBE_GROUP_LABEL: Final = f"{LABEL}.probe-group"  # which group's check ran a probe

Add = Callable[[str, Result, str], None]


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
    results = fleet.each(fleet.hosts, lambda h: _check_host(layout, fleet.engines[h], h))
    for host in fleet.hosts:
        outcome = results[host]
        if isinstance(outcome, Exception):
            checks.append(Check(host, "engine", FAIL, explain(outcome)))
        else:
            checks += outcome
    return checks


def checks_json(checks: list[Check]) -> str:
    """`check-host --json`: a list of {host, check, result, detail}."""
    return json.dumps([{"host": c.host, "check": c.name, "result": c.result,
                        "detail": c.detail} for c in checks], indent=1) + "\n"


def _check_host(layout: Layout, engine: Engine, host: str) -> list[Check]:
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
    check = _Probes(engine, layout)
    servers = layout.servers_on(host)
    if any(s.privileged for s in servers):
        _guard("privileged", add, lambda: _privileged(check, add))
    views: list[StorageHostView] = []
    for s in servers:
        if s.role is Role.ARCHIVE:
            _guard(f"{s.id}: volume group", add, partial(_volume_group, check, s, add))
        elif s.role is Role.STORAGE:
            _guard(f"{s.id}: walb driver", add, partial(_storage, check, s, add, views))
    if any(s.role is Role.STORAGE for s in servers):
        _guard("kernel", add, lambda: _kernel(engine, views, add))
    _guard("directories", add, lambda: _directories(check, servers, add))
    _guard("ports", add, lambda: _ports(engine, layout, servers, add))
    return out


def check_server(layout: Layout, server: Server) -> list[Check]:
    """The checks of one server of the layout on its host, before it is first started
    there (`replace` moves a server to a host): image, privileges, its VG or its volumes'
    devices, its directories and its port."""
    out: list[Check] = []

    def add(name: str, result: Result, detail: str) -> None:
        out.append(Check(server.host, name, result, detail))

    engine = Fleet(layout, server.host).engines[server.host]
    if engine.image_or_none(layout.image) is None:
        add("image", FAIL, f"{layout.image} is not there: 'walbctr build', or 'walbctr push'")
        return out
    check = _Probes(engine, layout)
    if server.privileged:
        _guard("privileged", add, lambda: _privileged(check, add))
    if server.role is Role.ARCHIVE:
        _guard(f"{server.id}: volume group", add, partial(_volume_group, check, server, add))
    elif server.role is Role.STORAGE:
        _guard(f"{server.id}: walb driver", add, partial(_storage, check, server, add, []))
    _guard("directories", add, lambda: _directories(check, (server,), add))
    _guard("ports", add, lambda: _ports(engine, layout, (server,), add))
    return out


def _guard(name: str, add: Add, work: Callable[[], object]) -> None:
    """Run one check; a failure of the check itself is that check's FAIL, not the host's."""
    try:
        work()
    except MissingHostPathError as err:
        add(name, FAIL, f"{err.path} does not exist on this host")
    except (APIError, ContainerError, WalbctrError) as err:
        add(name, FAIL, explain(err)[-300:])


class _Probes:
    """Probe containers of one check run on one host, labelled with the group."""

    def __init__(self, engine: Engine, layout: Layout) -> None:
        self.engine = engine
        self.layout = layout

    def run(self, argv: list[str], volumes: dict[str, Any] | None = None,
            **options: Any) -> ProbeResult:
        return probe(self.engine, self.layout.image, argv, purpose="check", volumes=volumes,
                     labels={PROBE_GROUP_LABEL: self.layout.group}, **options)


def _privileged(check: _Probes, add: Add) -> None:
    try:
        ran = check.run(["true"], privileged=True)
        why = "" if ran.status == 0 else last_line(ran.stderr, f"exit status {ran.status}")
    except APIError as err:
        why = explain(err)[-200:]
    if not why:
        add("privileged", OK, "privileged containers start")
    else:
        add("privileged", FAIL, f"privileged containers are refused ({why}); set "
            "'privileged: false' under defaults for archives and storages")


def archive_privileges(server: Server) -> dict[str, Any]:
    """The archive's own privileges (as compose.py grants them): what its vgs runs with."""
    if server.privileged:
        return {"privileged": True}
    return {"cap_drop": ["ALL"], "cap_add": list(ARCHIVE_CAPS),
            "device_cgroup_rules": list(DEVICE_RULES)}


# --readonly --nolocking: read the metadata from the devices without taking a lock, so
# the probe needs neither the host's lock dir nor write access to anything.
_LVM_READ = "--readonly --nolocking --noheadings"
_VG_SCRIPT = (f'/sbin/vgs {_LVM_READ} -o vg_name,vg_size,vg_free -- "$1" || exit; '
              f'[ -z "$2" ] || /sbin/lvs {_LVM_READ} -o lv_name,lv_attr,lv_size -- "$1/$2"')


def _volume_group(check: _Probes, s: Server, add: Add) -> None:
    vg = str(s.options.get("vg", ""))
    tp = s.options.get("thinpool")
    name = f"{s.id}: volume group"
    what = f"VG {vg}" + (f" with thin pool {tp}" if tp else "")
    # The host's /dev, read-only, with the archive's lvm.conf: the devices and metadata the
    # archive's own vgs and lvs will find.
    result = check.run(sh(_VG_SCRIPT, vg, str(tp or "")),
                       {"/dev": {"bind": "/dev", "mode": "ro"}}, **archive_privileges(s))
    lines = [" ".join(line.split()) for line in result.stdout.splitlines() if line.strip()]
    lab = next((lab for lab in lab_vgs(check.layout) if s.id in lab.archives), None)
    if (result.status != 0 or not lines) and lab is not None:
        add(name, OK, f"{what} is not there yet: 'walbctr up' makes it on a {lab.vg.size} "
            f"loop file (lab_vg_size; labs and tests only)")
        return
    if result.status != 0 or not lines:
        said = next((line.strip() for line in result.stderr.splitlines() if line.strip()),
                    f"exit status {result.status}")  # LVM's first line names the problem
        add(name, FAIL, f"{what} not found as {s.id} would see it ({said}); create it "
            f"(vgcreate {vg} DEVICE"
            + (f", lvcreate --type thin-pool -L SIZE -n {tp} {vg}" if tp else "") + ")")
        return
    if tp:
        attr = lines[-1].split()[1] if len(lines) > 1 and len(lines[-1].split()) > 1 else ""
        if not attr.startswith("t"):
            add(name, FAIL, f"{vg}/{tp} exists but is not a thin pool (lv_attr {attr or '?'}); "
                f"name a thin pool of {vg} or make one (lvcreate --type thin-pool -L SIZE -n "
                f"POOL {vg})")
            return
    add(name, OK, f"{what}: {'; '.join(lines)}")


# Lists what walb-storage will need at start (see walbdriver.py), base64 so that any
# name or file content stays on its line. The host's /dev is at /host-dev, the storage's
# base dir (when it exists) at /base; nothing of the layout is in the script.
_STORAGE_SCRIPT = r"""
b() { printf ':%s' "$(base64 -w0 "$@")"; }
[ -c /host-dev/walb/control ] && echo control
for d in /host-dev/walb/* /host-dev/walb/.[!.]*; do
  [ -e "$d" ] && { printf 'dev '; printf %s "${d##*/}" | b; echo; }
done
for d in /sys/block/walb!*; do
  [ -e "$d/walb/lsids" ] && { printf 'lsids '; printf %s "${d#/sys/block/walb!}" | b; echo; }
done
[ -d /base ] || exit 0
for v in /base/* /base/.[!.]* /base/..?*; do
  [ -d "$v" ] || continue
  printf 'vol '; printf %s "${v##*/}" | b
  for f in path state; do
    if [ -f "$v/$f" ] && [ -r "$v/$f" ]; then printf ' '; b "$v/$f"; else printf ' -'; fi
  done
  echo
done
"""


def _storage(check: _Probes, s: Server, add: Add, views: list[StorageHostView]) -> None:
    volumes = {"/dev": {"bind": "/host-dev", "mode": "ro"},
               s.base_dir: {"bind": "/base", "mode": "ro"}}
    try:
        result = check.run(sh(_STORAGE_SCRIPT), volumes)
    except MissingHostPathError as err:
        if err.path != s.base_dir:
            raise
        del volumes[s.base_dir]  # no base dir yet: walb-storage will create it, empty
        result = check.run(sh(_STORAGE_SCRIPT), volumes)
    if result.status != 0:
        raise WalbctrError(f"the storage probe failed: {last_line(result.stderr)}", "")
    view = StorageHostView.parse(result.stdout)
    problems = view.start_problems()
    if view.control:
        add(f"{s.id}: walb driver", OK, "/dev/walb/control exists: the walb driver is loaded")
    else:
        add(f"{s.id}: walb driver", WARN, "/dev/walb/control is missing: the walb driver is "
            "not loaded. A storage whose base dir holds no volume starts and answers without "
            "it, but cannot create or serve WalB devices (wdevc) until walb-mod, built for "
            "this kernel, is loaded")
    if problems:
        add(f"{s.id}: volumes", FAIL, f"{s.id} would exit 1 at start and restart forever: "
            "walb-storage opens the WalB device of every volume in its base dir as it starts. "
            + "; ".join(problems) + ". Load the walb driver and re-create the volumes' "
            "devices (wdevc create-wdev LDEV DDEV -n NAME) before 'walbctr up'")
    elif view.volumes:
        names = ", ".join(f"{v.name} ({v.state or '?'})" for v in view.volumes)
        add(f"{s.id}: volumes", OK, f"{names}: their WalB devices are present")
    else:
        add(f"{s.id}: volumes", OK, f"none in {s.base_dir}: {s.id} starts without WalB "
            "devices")
    views.append(view)


def _kernel(engine: Engine, views: list[StorageHostView], add: Add) -> None:
    release = str(engine.api.info().get("KernelVersion", "?"))
    supported, detail = kernel_support(release)
    if supported:
        add("kernel", OK, detail)
    elif any(v.control for v in views):
        add("kernel", OK, f"{detail}, but a walb driver is loaded here: a port to this kernel")
    else:
        add("kernel", WARN, f"{detail}. Storages here need a walb driver ported to this kernel "
            "(or a host running Linux 4.14 to 4.x with walb-driver v1.5.x)")


_WRITE_SCRIPT = ('[ -d /probe ] || { echo "not a directory" >&2; exit 3; }; '
                 't=$(mktemp -p /probe .walbctr-check.XXXXXX) && rm -f "$t"')


def _directories(check: _Probes, servers: tuple[Server, ...], add: Add) -> None:
    """Base dirs and log dirs: each one, or its nearest existing ancestor, must take a file.

    The ancestor is found by asking the engine to mount each path in turn (it refuses a
    missing one and creates nothing), so no wider part of the host is ever mounted.
    """
    wanted: dict[str, str] = {}
    for s in servers:
        wanted.setdefault(s.base_dir, "base dir")
        if s.logs_to_file:
            wanted.setdefault(posixpath.dirname(s.log_path), "log dir")
    missing: set[str] = set()
    tested: dict[str, ProbeResult] = {}
    for path, kind in sorted(wanted.items()):
        anc = path
        while anc not in tested:
            if anc in missing:
                anc = posixpath.dirname(anc)
                continue
            try:
                tested[anc] = check.run(sh(_WRITE_SCRIPT), {anc: {"bind": "/probe",
                                                                  "mode": "rw"}})
            except MissingHostPathError:
                if anc == "/":
                    raise
                missing.add(anc)
        result = tested[anc]
        name = f"{kind} {path}"
        if result.status == 0:
            add(name, OK, "exists, writable" if anc == path else
                f"writable: 'walbctr up' creates it under {anc}")
        elif result.status == 3:
            add(name, FAIL, f"{anc} exists and is not a directory")
        else:
            add(name, FAIL, f"{anc} is not writable: {last_line(result.stderr)}")


def _ports(engine: Engine, layout: Layout, servers: tuple[Server, ...], add: Add) -> None:
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
