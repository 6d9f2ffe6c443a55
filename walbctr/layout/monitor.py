"""The layout's `monitor` block: the keeper that watches a group and does walb's recovery
duties. What it renders to (the keeper's configuration and compose service) is
walbctr.render.keeper_service's; the rules that need the servers are validation's.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from walbctr.layout.basemodel import Model
from walbctr.layout.values import PlainPath

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
    listen: str | None = Field(None, description="host mode: the address /metrics is served "
                               "on (default: the monitor host's layout address; 127.0.0.1 "
                               "keeps it to that host)")
    web_config: PlainPath | None = Field(
        None, description="absolute path, on the keeper's host, of a Prometheus web config "
        "file (tls_server_config, basic_auth_users); its directory is bound read-only into "
        "the keeper, so name the certificate and key in it relative to it")
    image: str | None = Field(None, description="keeper image (default: walbctr/walb-keeper "
                              "with the tag of the layout's image; 'walbctr build' makes both)")
