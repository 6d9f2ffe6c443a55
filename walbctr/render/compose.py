"""Compose files: one per host, one service per server, least privilege per role.

Rendering is pure: a Layout in, file names and text out. The same `server_args` that
`walbctr cmdline` prints is what the services run.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import yaml

from walbctr.layout.hostpaths import LVM_BINDS, UDEV_DIR
from walbctr.layout.monitor import KEEPER_SERVICE
from walbctr.layout.server import Role, Server
from walbctr.layout.validation import host_slug
from walbctr.render.cmdline import server_args
from walbctr.render.keeper_service import keeper_service, monitor_of
from walbctr.walb.readiness import host_type_argv

if TYPE_CHECKING:
    from walbctr.layout.spec import Layout

LABEL = "io.walbctr"
# Which layout file started a container (controller:path). Not part of the config hash:
# moving a layout file must not recreate its servers.
IDENTITY_LABEL = f"{LABEL}.layout"
GENERATED = "# generated from "  # every rendered file's first words; pruning relies on them
# Docker's health check is the steady-state check: walbctr probes readiness itself while
# it starts servers (readiness.py), so Docker need not ask every 2 s forever. Engines from
# Docker 25 (API 1.44) on ask every START_INTERVAL_S until the first success, so that
# `docker compose up --wait` by hand is quick there too; older ones refuse the key.
# Without start_interval, the interval alone decides how soon Docker (and so `depends_on`
# by hand) sees a started server healthy, so those engines get a shorter one.
HEALTH_INTERVAL_S = 30
OLD_ENGINE_INTERVAL_S = 10
START_INTERVAL_S = 1

ARCHIVE_CAPS = ("SYS_ADMIN", "SYS_RAWIO", "MKNOD", "CHOWN", "DAC_OVERRIDE", "FOWNER",
                "IPC_LOCK", "SYS_NICE")
STORAGE_CAPS = ("SYS_ADMIN", "SYS_RAWIO", "MKNOD", "DAC_OVERRIDE")
# Block devices, and misc character devices (device-mapper, loop-control, walb control).
DEVICE_RULES = ("b *:* rwm", "c 10:* rwm")


def project_name(layout: Layout, host: str) -> str:
    return f"walbctr-{layout.group}-{host_slug(host)}"


def container_name(layout: Layout, server: Server) -> str:
    return f"walbctr-{layout.group}-{server.id}"


def network_name(layout: Layout) -> str:
    return f"walbctr-{layout.group}"


def file_name(host: str) -> str:
    return f"{host}.yaml"


def render(layout: Layout, old_engines: Collection[str] = ()) -> dict[str, str]:
    """host -> compose file text, for every host that runs servers.

    `old_engines`: hosts whose engine predates API 1.44 (no health start_interval).
    """
    return {host: dump(layout, compose_project(layout, host, host not in old_engines))
            for host in layout.used_hosts}


def compose_project(layout: Layout, host: str, start_interval: bool = True,
                    identity: str | None = None,
                    kept: Mapping[str, str] | None = None) -> dict[str, Any]:
    """One host's compose project.

    `identity` (controller:layout path) labels each new server, so that a `down` of
    another layout with the same group leaves it alone. `kept`: server id -> the identity
    its existing container carries ("" for none), written back unchanged, because Compose
    recreates a container whose labels changed and moving a layout file must not restart
    walb servers."""
    bridge = layout.network_mode == "bridge"
    servers = layout.servers_on(host)
    project: dict[str, Any] = {
        "name": project_name(layout, host),
        "services": {s.id: service(layout, s, servers, start_interval) for s in servers},
    }
    if identity is not None:
        for sid in project["services"]:
            label = (kept or {}).get(sid, identity)
            if label:
                project["services"][sid]["labels"][IDENTITY_LABEL] = label
    monitor = monitor_of(layout)
    if monitor is not None and monitor.host == host:
        keeper = keeper_service(layout, "walb" if bridge else None)
        keeper["labels"][f"{LABEL}.config-hash"] = config_hash(keeper)
        project["services"][KEEPER_SERVICE] = keeper
    if bridge:
        project["networks"] = {"walb": {"name": network_name(layout), "external": True}}
    return project


def service(layout: Layout, server: Server, neighbours: tuple[Server, ...],
            start_interval: bool = True) -> dict[str, Any]:
    svc: dict[str, Any] = {
        "image": layout.image,
        "pull_policy": "never",  # sites without a registry: a missing image is an error
        "container_name": container_name(layout, server),
        "command": FlowList(server_args(server, layout)),
        "init": True,
        "restart": "unless-stopped",
        "stop_signal": "SIGTERM",
        "stop_grace_period": f"{server.stop_grace_period}s",
        # The image's entrypoint turns the stop signal into a graceful shutdown and must
        # force the server before this period ends, which it cannot read by itself.
        "environment": {"WALBCTR_STOP_GRACE_S": str(server.stop_grace_period)},
        "ulimits": {"nofile": {"soft": server.nofile, "hard": server.nofile}},
    }
    if layout.network_mode == "bridge":
        svc["hostname"] = server.id
        svc["networks"] = {"walb": {"aliases": [server.id]}}
        if server.publish is not None:
            svc["ports"] = [{"target": server.port, "published": str(server.port),
                             "host_ip": server.publish, "protocol": "tcp"}]
    else:
        svc["network_mode"] = "host"
    svc.update(_privileges(server))
    svc["volumes"] = _volumes(server)
    svc["healthcheck"] = healthcheck(server, start_interval)
    svc["logging"] = {"driver": "json-file", "options": {"max-size": "20m", "max-file": "5"}}
    deps = _depends_on(server, neighbours)
    if deps:
        svc["depends_on"] = deps
    svc["labels"] = {
        f"{LABEL}.group": layout.group,
        f"{LABEL}.server": server.id,
        f"{LABEL}.role": server.role.value,
        f"{LABEL}.host": server.host,
    }
    svc["labels"][f"{LABEL}.config-hash"] = config_hash(svc)
    return svc


def desired_hashes(layout: Layout, hosts: Iterable[str],
                   old_engines: Collection[str] = ()) -> dict[str, str]:
    """server id -> the config hash its service would carry, for the given hosts."""
    out = {}
    for host in hosts:
        project = compose_project(layout, host, host not in old_engines)
        for sid, svc in project["services"].items():
            out[sid] = svc["labels"][f"{LABEL}.config-hash"]
    return out


def config_hash(svc: Mapping[str, Any]) -> str:
    """A digest of everything that defines the service, for drift detection."""
    # Hashed as written (escaped), so the escaping itself never reads as drift. JSON writes
    # a '$' as itself and keys hold none, so escaping the text is escaping the values.
    text = json.dumps(svc, sort_keys=True, separators=(",", ":"), default=list)
    text = text.replace("$", "$$")
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _privileges(server: Server) -> dict[str, Any]:
    if server.role is Role.PROXY:
        # A proxy only talks TCP and writes its base dir: nothing else is granted.
        out: dict[str, Any] = {
            "read_only": True,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges:true"],
            "tmpfs": ["/tmp"],
        }
        if server.port < 1024:
            out["cap_add"] = ["NET_BIND_SERVICE"]
        return out
    out = {"privileged": True} if server.privileged else {
        # Where privileged containers are refused (or not wanted): the capabilities that
        # device-mapper, LVM and walb's ioctls need, and access to block devices and to
        # misc character devices (device-mapper control, loop-control, walb control).
        "cap_drop": ["ALL"],
        "cap_add": list(ARCHIVE_CAPS if server.role is Role.ARCHIVE else STORAGE_CAPS),
        "device_cgroup_rules": list(DEVICE_RULES),
    }
    if server.role is Role.STORAGE:
        # /dev/walb/* and /sys/block/walb!* need device access; the root stays read-only.
        return {**out, "read_only": True, "tmpfs": ["/tmp"]}
    return {**out, "ipc": "host"}


def _bind(path: str, *, create: bool = True, read_only: bool = False) -> dict[str, Any]:
    vol: dict[str, Any] = {"type": "bind", "source": path, "target": path}
    if read_only:
        vol["read_only"] = True
    vol["bind"] = {"create_host_path": create}
    return vol


def _volumes(server: Server) -> list[dict[str, Any]]:
    vols = [_bind(server.base_dir)]
    if server.logs_to_file:
        log_dir = posixpath.dirname(server.log_path)
        if log_dir != server.base_dir and not log_dir.startswith(server.base_dir + "/"):
            vols.append(_bind(log_dir))
    if server.role is not Role.PROXY:
        # A privileged container sees a snapshot of /dev taken at start; the bind makes
        # devices created later (LVs, /dev/walb/NAME) appear inside.
        vols.append(_bind("/dev", create=False))
    if server.role is Role.ARCHIVE:
        vols.append(_bind(UDEV_DIR, read_only=True))
        vols += [_bind(p) for p in LVM_BINDS]
    return sorted(vols, key=lambda v: str(v["target"]))


def healthcheck(server: Server, start_interval: bool = True) -> dict[str, Any]:
    # upstream's own readiness check: cheap, touches no device. dump() writes the '$' as
    # '$$', compose's escape, so the shell gets the command substitution;
    # the port is an int, so nothing from the layout reaches the shell as text.
    probe = " ".join(host_type_argv(server.port))
    check: dict[str, Any] = {
        "test": ["CMD-SHELL", f'test "$({probe})" = {server.role.value}'],
        "interval": f"{HEALTH_INTERVAL_S if start_interval else OLD_ENGINE_INTERVAL_S}s",
        "timeout": "5s",
        "retries": 3,
        "start_period": f"{server.start_period}s",
    }
    if start_interval:
        check["start_interval"] = f"{START_INTERVAL_S}s"
    return check


def _depends_on(server: Server, neighbours: tuple[Server, ...]) -> dict[str, Any]:
    return {s.id: {"condition": "service_healthy"} for s in neighbours
            if s.role in server.role.earlier}


class FlowList(list[str]):
    """A list dumped on one line: a command reads better as [walb-proxy, -p, '10000']."""


class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    pass


def _flow_list(dumper: Any, data: FlowList) -> Any:
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)


_Dumper.add_representer(FlowList, _flow_list)


def _escaped_str(dumper: Any, data: str) -> Any:
    """Every string as Compose must read it literally: Compose interpolates '$VAR',
    '${VAR}' and '$$' in every value of a file, and '$$' is one '$'. Done as strings are
    written, not by copying the tree first. Keys are escaped too, harmlessly: they are
    Compose's own words or validated ids, none holding a '$'."""
    return dumper.represent_str(data.replace("$", "$$"))


_Dumper.add_representer(str, _escaped_str)


def comment_text(text: str) -> str:
    """`text` fit for a one-line comment: no line breaks, nothing outside ASCII."""
    return ascii(text)[1:-1]


def dump(layout: Layout, project: Mapping[str, Any]) -> str:
    head = (
        f"{GENERATED}{comment_text(layout.source)} by walbctr; do not edit.\n"
        f"# host {_host_of(project)} of backup group {layout.group!r}; "
        "'walbctr up' applies it in tier order across hosts.\n"
    )
    if layout.network_mode == "bridge":
        head += (f"# bridge mode: the network {network_name(layout)} is created by "
                 "'walbctr up' (by hand: docker network create "
                 f"{network_name(layout)}).\n")
    body = yaml.dump(project, Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                     width=1000, allow_unicode=True)
    return head + body


def _host_of(project: Mapping[str, Any]) -> str:
    services = project["services"]
    first = next(iter(services.values()))
    return str(first["labels"][f"{LABEL}.host"])
