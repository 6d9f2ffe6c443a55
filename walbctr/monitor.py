"""The layout's `monitor` block: the keeper that watches a group and does walb's recovery
duties, and the compose service that runs it.

Pure: a layout in, the keeper's configuration and its compose service out. The keeper
itself (walbctr/keeper.py) runs inside its own image and reads the configuration as JSON;
this module and that one share no code, only the JSON's keys, which a test holds together.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from walbctr.errors import Problem
from walbctr.imagetag import keeper_image
from walbctr.model import Model

if TYPE_CHECKING:
    from walbctr.layout import Layout

KEEPER_SERVICE = "walb-keeper"  # the compose service; no server may take this id
KEEPER_LABEL = "io.walbctr.keeper"  # its container's label (value: the group)
DEFAULT_PORT = 9580
CONFIG_ENV = "WALBCTR_KEEPER_CONFIG"

Seconds = Annotated[float, Field(gt=0, le=86400)]


class MonitorSpec(Model):
    """A keeper for the group: health and backup lag as Prometheus metrics, and walb's
    recovery kicks (doc/recover.md) done as soon as a server comes back."""

    host: str = Field(description="layout host that runs the keeper (one that runs servers)")
    port: int = Field(DEFAULT_PORT, ge=1, le=65535,
                      description="port of the keeper's Prometheus metrics (/metrics)")
    interval: Seconds = Field(30, description="seconds between volume scans (one walbc "
                              "batch per server)")
    probe_interval: Seconds = Field(0.25, description="seconds between reachability probes "
                                    "(walbc get host-type) of each server, which is how the "
                                    "keeper sees a restart: one shorter than this goes unseen")
    lag_threshold: int = Field(600, ge=1, description="backup lag (ts-delta, seconds) above "
                               "which a volume is reported as lagging")
    publish: bool | str = Field(True, description="bridge mode: publish the metrics port on "
                                "the host; true means 127.0.0.1, a string is the address")
    image: str | None = Field(None, description="keeper image (default: walbctr/walb-keeper "
                              "with the tag of the layout's image; 'walbctr build' makes both)")


def monitor_of(layout: Layout) -> MonitorSpec | None:
    return layout.spec.monitor


def problems(layout: Layout) -> Iterator[Problem]:
    """What is wrong with the monitor block, given the servers it watches."""
    m = monitor_of(layout)
    if m is None:
        return
    if m.host not in layout.used_hosts:
        yield Problem("monitor.host", f"host {m.host!r} runs no server",
                      fix="put the keeper on one of the hosts that run servers: "
                      + ", ".join(layout.used_hosts))
    for s in layout.servers:
        if s.id == KEEPER_SERVICE:
            yield Problem(f"{s.role.section}[{s.index}].id",
                          f"the id {KEEPER_SERVICE!r} is the keeper's service name",
                          fix="give the server another id")
        if (layout.network_mode == "host" and s.host == m.host and s.port == m.port):
            yield Problem("monitor.port", f"port {m.port} is {s.id}'s port on {m.host}",
                          fix="give the keeper's metrics another port")
    if layout.network_mode == "host" and m.publish is not True and "publish" in \
            m.model_fields_set:
        yield Problem("monitor.publish", "publish applies to bridge mode only",
                      fix="in host mode the keeper listens on the host network already; "
                      "remove it")
    if m.probe_interval > m.interval:
        yield Problem("monitor.probe_interval",
                      f"probe_interval {m.probe_interval:g} s is longer than interval "
                      f"{m.interval:g} s", fix="probe at least as often as the volume scan")


def image_of(layout: Layout) -> str:
    m = monitor_of(layout)
    return m.image if m is not None and m.image else keeper_image(layout.image)


def keeper_config(layout: Layout) -> dict[str, Any]:
    """What the keeper needs to know: the servers as walbc reaches them, and its cadence."""
    m = monitor_of(layout)
    assert m is not None
    return {
        "group": layout.group,
        "port": m.port,
        "interval": m.interval,
        "probe_interval": m.probe_interval,
        "lag_threshold": m.lag_threshold,
        "servers": [{"id": s.id, "role": s.role.value, "address": s.address,
                     "port": s.port} for s in layout.servers],
    }


def container_name(layout: Layout) -> str:
    return f"walbctr-{layout.group}-keeper"


def keeper_service(layout: Layout, network: str | None) -> dict[str, Any]:
    """The keeper's compose service: unprivileged, read-only, no Docker socket.

    It sees the servers only through the walb protocol, as any walbc client does, so it
    needs no capability, no device and no writable path but /tmp.
    """
    m = monitor_of(layout)
    assert m is not None
    config = json.dumps(keeper_config(layout), separators=(",", ":"), sort_keys=True)
    svc: dict[str, Any] = {
        "image": image_of(layout),
        "pull_policy": "never",
        "container_name": container_name(layout),
        "command": ["python3", "-m", "walbctr.keeper"],
        "init": True,
        "restart": "unless-stopped",
        "user": "65534:65534",
        "read_only": True,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "tmpfs": ["/tmp"],
        "stop_grace_period": "10s",
        "environment": {CONFIG_ENV: config},
    }
    if network is not None:
        svc["hostname"] = KEEPER_SERVICE
        svc["networks"] = {network: {"aliases": [KEEPER_SERVICE]}}
        if m.publish is not False:
            address = "127.0.0.1" if m.publish is True else m.publish
            svc["ports"] = [{"target": m.port, "published": str(m.port), "host_ip": address,
                             "protocol": "tcp"}]
    else:
        svc["network_mode"] = "host"
    probe = (f"import urllib.request; urllib.request.urlopen("
             f"'http://127.0.0.1:{m.port}/metrics', timeout=3)")
    svc["healthcheck"] = {"test": ["CMD", "python3", "-c", probe], "interval": "10s",
                          "timeout": "5s", "retries": 3, "start_period": "10s"}
    svc["logging"] = {"driver": "json-file", "options": {"max-size": "20m", "max-file": "5"}}
    svc["labels"] = {KEEPER_LABEL: layout.group, "io.walbctr.host": m.host}
    return svc
