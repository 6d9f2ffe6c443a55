"""What every WalB server has, whatever its role: identity, place, port, dirs, common tunables."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, ClassVar

from pydantic import Field, StringConstraints

from walbctr.model import Model


class Role(StrEnum):
    ARCHIVE = "archive"
    PROXY = "proxy"
    STORAGE = "storage"

    @property
    def executable(self) -> str:
        return f"walb-{self.value}"

    @property
    def section(self) -> str:
        """The layout's list of servers of this role."""
        return "proxies" if self is Role.PROXY else f"{self.value}s"

    @property
    def earlier(self) -> tuple[Role, ...]:
        """The roles that must be listening before this one starts."""
        return START_ORDER[:START_ORDER.index(self)]

    @property
    def later(self) -> tuple[Role, ...]:
        """The roles that start only once this one is up."""
        return START_ORDER[START_ORDER.index(self) + 1:]


# Start order is the upstream rule: proxies connect to archives and storages to proxies in
# the background, so each tier must be listening before the next one starts.
START_ORDER: tuple[Role, ...] = (Role.ARCHIVE, Role.PROXY, Role.STORAGE)

# An id names a compose service, a container and (in bridge mode) a DNS name, and is passed
# to walb as -id: letters, digits, '-' and '_', starting with a letter or digit.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"
ID_RE = re.compile(ID_PATTERN)

ServerId = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
PositiveInt = Annotated[int, Field(ge=1)]
Port = Annotated[int, Field(ge=1, le=65535)]
Seconds = Annotated[int, Field(ge=1)]


class KeepAlive(Model):
    """TCP keep-alive for the server's connections (walb -ka, -kaidle, -kaintvl, -kacnt)."""

    idle: Seconds | None = Field(None, description="keep-alive idle time in seconds (-kaidle)")
    interval: Seconds | None = Field(None, description="probe interval in seconds (-kaintvl)")
    count: PositiveInt | None = Field(None, description="probes before giving up (-kacnt)")


class CommonOptions(Model):
    """Settings every role accepts; all optional so that defaults can fill them in layers."""

    port: Port | None = Field(None, description="TCP port the server listens on (-p)")
    base_dir: str | None = Field(
        None,
        description="absolute host directory for the server's metadata and data (-b); "
        "placeholders {id}, {host}, {role}, {group}",
    )
    log_path: str | None = Field(
        None,
        description="'-' for the container log (docker logs), or an absolute host file "
        "path (-l); placeholders as in base_dir",
    )
    fg: PositiveInt | None = Field(None, description="max concurrent foreground tasks (-fg)")
    maxconn: PositiveInt | None = Field(None, description="max connections (-maxconn)")
    timeout: Seconds | None = Field(None, description="socket timeout in seconds (-to)")
    debug: bool | None = Field(None, description="log debug messages (-debug)")
    keepalive: KeepAlive | bool | None = Field(
        None, description="true for TCP keep-alive with walb's defaults, or its settings"
    )
    publish: bool | str | None = Field(
        None,
        description="bridge mode only: publish the port on the host; true means 127.0.0.1, "
        "a string is the host address to bind",
    )
    stop_grace_period: Seconds | None = Field(
        None, description="seconds to wait after SIGTERM before killing the server"
    )
    nofile: Annotated[int, Field(ge=1024)] | None = Field(
        None, description="open-files limit of the server's container (default 65536)"
    )
    privileged: bool | None = Field(
        None,
        description="archives and storages: run privileged (default true); false grants "
        "only the capabilities and device access walb and LVM need, for engines that refuse "
        "privileged containers. Proxies never run privileged.",
    )

    # (field, walb flag) in the order they appear on command lines, after the role's own.
    FLAGS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("fg", "-fg"),
        ("maxconn", "-maxconn"),
        ("timeout", "-to"),
        ("debug", "-debug"),
        ("keepalive", "-ka"),
    )


class ServerSpec(Model):
    """Identity and placement, shared by every server entry."""

    id: ServerId = Field(description="server id: compose service name and walb -id")
    host: str = Field(description="the host (a key of `hosts`) this server runs on")


@dataclass(frozen=True)
class Server:
    """A server with every default applied and every template expanded: what will run."""

    role: Role
    id: str
    host: str
    index: int  # position in its role's list: the primary archive and proxy priority
    address: str  # how peers and the controller reach it (host address, or id in bridge mode)
    port: int
    base_dir: str
    log_path: str
    options: Mapping[str, Any]  # role tunables that are set, by field name
    flags: tuple[tuple[str, str], ...]  # (field, walb flag) for this role, in order
    publish: str | None  # host address to publish the port on (bridge mode), or None
    stop_grace_period: int
    privileged: bool  # archives and storages by default; never a proxy
    nofile: int
    origins: Mapping[str, str]  # field -> layout path it was set at (absent: built in)

    @property
    def loc(self) -> tuple[str | int, ...]:
        return (self.role.section, self.index)

    @property
    def endpoint(self) -> str:
        """HOST:PORT as walb-tools takes it in -archive and -proxy."""
        return f"{self.address}:{self.port}"

    @property
    def logs_to_file(self) -> bool:
        return self.log_path != "-"
