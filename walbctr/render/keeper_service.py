"""The keeper's configuration and compose service, rendered from the layout's `monitor` block.

Pure: a layout in, the keeper's configuration and its compose service out. The keeper
itself (walbctr/keeper/duties.py) runs inside its own image and reads the configuration as
JSON; this module and that one share no code, only the JSON's keys, which a test holds
together.
"""

from __future__ import annotations

import json
import posixpath
from typing import Any

from walbctr.layout.imagetag import keeper_image
from walbctr.layout.monitor import CONFIG_ENV, KEEPER_LABEL, KEEPER_SERVICE, MonitorSpec
from walbctr.layout.spec import Layout


def monitor_of(layout: Layout) -> MonitorSpec | None:
    return layout.spec.monitor


def image_of(layout: Layout) -> str:
    m = monitor_of(layout)
    return m.image if m is not None and m.image else keeper_image(layout.image)


WEB_DIR = "/etc/walb-keeper/web"  # where the web config's directory is bound


def listen_address(layout: Layout) -> str:
    """Where the keeper serves /metrics: in bridge mode every interface of its own network
    namespace (`publish` decides what the host shows); in host mode `monitor.listen`, or
    the host's layout address, never every interface of the host by default."""
    m = monitor_of(layout)
    assert m is not None
    if layout.network_mode == "bridge":
        return "0.0.0.0"
    return m.listen or layout.hosts[m.host].address


def local_address(layout: Layout) -> str:
    """Where a client inside the keeper's own container (its health check, `walbctr
    collect`) reaches /metrics: loopback when it listens on every interface."""
    address = listen_address(layout)
    return "127.0.0.1" if address == "0.0.0.0" else address


def metrics_url(layout: Layout) -> str:
    """/metrics from inside the keeper's container; https when a web config is given."""
    m = monitor_of(layout)
    assert m is not None
    scheme = "https" if m.web_config is not None else "http"
    return f"{scheme}://{local_address(layout)}:{m.port}/metrics"


def keeper_config(layout: Layout) -> dict[str, Any]:
    """What the keeper needs to know: the servers as walbc reaches them, and its cadence."""
    m = monitor_of(layout)
    assert m is not None
    web = {} if m.web_config is None else {
        "web_config": posixpath.join(WEB_DIR, posixpath.basename(m.web_config))}
    return {
        "listen": listen_address(layout),
        **web,
        "group": layout.group,
        "port": m.port,
        "interval": m.interval,
        "probe_interval": m.probe_interval,
        "lag_threshold": m.lag_threshold,
        "servers": [{"id": s.id, "role": s.role.value, "address": s.address,
                     "port": s.port} for s in layout.servers],
        # only with a policy: a keeper without one keeps its configuration (and container)
        **({} if layout.spec.policy is None else {"policy": layout.spec.policy.for_keeper()}),
        **({} if m.ask == "wire" else {"ask": m.ask}),  # likewise for the default way of asking
    }


def health_check(layout: Layout) -> str:
    """The keeper's health check: bash's /dev/tcp, because a python3 started every 10 s
    cost the keeper more CPU than its own probes. Plain HTTP asks /-/healthy for a 200;
    with TLS or basic auth it can only connect (it holds no password, only the hashes)."""
    m = monitor_of(layout)
    assert m is not None
    connect = f"exec 3<>/dev/tcp/{local_address(layout)}/{m.port}"
    if m.web_config is not None:
        return connect
    return (f"{connect} && printf 'GET /-/healthy HTTP/1.0\\r\\n\\r\\n' >&3 && "
            "read -r -t 4 status <&3 && [[ $status == 'HTTP/1.'?' 200 '* ]]")


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
    if m.web_config is not None:
        svc["volumes"] = [{"type": "bind", "source": posixpath.dirname(m.web_config),
                           "target": WEB_DIR, "read_only": True}]
    svc["healthcheck"] = {"test": ["CMD", "bash", "-c", health_check(layout), "-"],
                          "interval": "10s", "timeout": "5s", "retries": 3,
                          "start_period": "10s"}
    svc["logging"] = {"driver": "json-file", "options": {"max-size": "20m", "max-file": "5"}}
    svc["labels"] = {KEEPER_LABEL: layout.group, "io.walbctr.host": m.host}
    return svc
