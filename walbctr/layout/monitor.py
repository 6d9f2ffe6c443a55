"""The layout's `monitor` block: the keeper that watches a group and does walb's recovery
duties. What it renders to (the keeper's configuration and compose service) is
walbctr.render.keeper_service's; the rules that need the servers are validation's.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Annotated, Literal

from pydantic import Field

from walbctr.layout.basemodel import Model
from walbctr.layout.values import PlainPath

KEEPER_SERVICE = "walb-keeper"  # the compose service; no server may take this id
KEEPER_LABEL = "io.walbctr.keeper"  # its container's label (value: the group)
DEFAULT_PORT = 9580
CONFIG_ENV = "WALBCTR_KEEPER_CONFIG"
# Where walbctr tells the keeper which servers are in maintenance (walbctr.keeper.duties
# reads the same path; a test holds the two together).
MAINTENANCE_FILE = "/tmp/walbctr-maintenance.json"
# Present while `upgrade` runs: the keeper starts no policy task (walbctr.keeper.policy).
POLICY_PAUSE_FILE = "/tmp/walbctr-policy-paused"

Seconds = Annotated[float, Field(gt=0, le=86400)]


class MonitorSpec(Model):
    """A keeper for the group: health and backup lag as Prometheus metrics, and walb's
    recovery kicks (doc/recover.md) done as soon as a server comes back."""

    host: str = Field(description="layout host that runs the keeper (one that runs servers)")
    port: int = Field(DEFAULT_PORT, ge=1, le=65535,
                      description="port of the keeper's Prometheus metrics (/metrics)")
    interval: Seconds = Field(30, description="seconds between volume scans (the questions "
                              "of one walbc batch per server)")
    probe_interval: Seconds = Field(0.25, description="seconds between reachability probes "
                                    "(get host-type) of each server, which is how the "
                                    "keeper sees a restart: one shorter than this goes unseen")
    ask: Literal["wire", "walbc"] = Field(
        "wire", description="how the keeper asks its probes and scans: 'wire' speaks walb's "
        "protocol from inside the keeper (no process per question), 'walbc' runs a walbc "
        "process per question, as the keeper first did (a server that does not speak the "
        "protocol the keeper knows is asked through walbc anyway)")
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
    alertmanager_url: str | None = Field(
        None, max_length=2048, description="base URL of an Alertmanager (http:// or "
        "https://, e.g. http://alertmanager:9093): 'walbctr maintenance enter' silences "
        "the alerts of the host's servers there, and 'exit' expires the silence")
    image: str | None = Field(None, description="keeper image (default: walbctr/walb-keeper "
                              "with the tag of the layout's image; 'walbctr build' makes both)")


_URL_CHAR = re.compile(r"[A-Za-z0-9._~:/\[\]@%+-]")


def url_problem(url: str) -> str | None:
    """Why `url` is not the base URL of an HTTP service, or None when it is one."""
    bad = next((c for c in url if not _URL_CHAR.fullmatch(c)), None)
    if bad is not None:
        return f"has the character {bad!r}, which a base URL does not need"
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return "is not an http:// or https:// URL"
    if not parts.hostname:
        return "names no host"
    if "@" in parts.netloc:
        return "carries a user name or password, which a layout file must not hold"
    try:
        parts.port  # noqa: B018 (the property checks the port)
    except ValueError:
        return "has a port that is not a number from 1 to 65535"
    return None
