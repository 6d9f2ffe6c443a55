"""What every WalB server has, whatever its role: identity, place, port, dirs, common tunables."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, ClassVar

from pydantic import Field

from walbctr.layout.basemodel import Model
from walbctr.layout.values import HostName, LogPathTemplate, PathTemplate, ServerId


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

# Ranges below are walb-tools v1.0.19's; paths are upstream's. walb keeps its tunables in
# size_t or uint64_t (src/archive.hpp:254-265, src/proxy.hpp:179-188, src/storage.hpp:
# 215-225) and cybozu's option parser refuses a number that does not fit
# (cybozulib/include/cybozu/option.hpp:122-155), so nothing may exceed 2**64-1.
UINT64_MAX = 2**64 - 1
# "must not be 0" (util::verifyNotZero, src/walb_util.hpp:245) for most counts and sizes.
PositiveInt = Annotated[int, Field(ge=1, le=UINT64_MAX)]
NonNegativeInt = Annotated[int, Field(ge=0, le=UINT64_MAX)]
# MiB settings are multiplied by 2**20 in a 64-bit integer (src/proxy.cpp:360), so larger
# values would wrap around to small ones.
MebiBytes = Annotated[int, Field(ge=1, le=2**44 - 1)]
# Retry delays are turned into milliseconds in a size_t (src/proxy.cpp:508-510,
# src/storage.cpp:287-289); 0 is accepted upstream.
DelaySeconds = Annotated[int, Field(ge=0, le=UINT64_MAX // 1000)]
Port = Annotated[int, Field(ge=1, le=65535)]
Seconds = Annotated[int, Field(ge=1, le=10**9)]


class KeepAlive(Model):
    """TCP keep-alive for the server's connections (walb -ka, -kaidle, -kaintvl, -kacnt).

    The maxima are upstream's (src/constant.hpp:54-56, checked by KeepAliveParams::verify,
    src/walb_util.hpp:73-84). Upstream lets 0 through, but Linux refuses 0 for all three
    socket options (tcp(7)), so every connection would fail: 1 is the minimum here.
    """

    idle: Annotated[int, Field(ge=1, le=86400)] | None = Field(
        None, description="keep-alive idle time in seconds, 1 to 86400 (-kaidle; walb's "
        "default 1800)")
    interval: Annotated[int, Field(ge=1, le=3600)] | None = Field(
        None, description="probe interval in seconds, 1 to 3600 (-kaintvl; walb's default 60)")
    count: Annotated[int, Field(ge=1, le=100)] | None = Field(
        None, description="probes before giving up, 1 to 100 (-kacnt; walb's default 10)")


class CommonOptions(Model):
    """Settings every role accepts; all optional so that defaults can fill them in layers."""

    port: Port | None = Field(None, description="TCP port the server listens on (-p)")
    base_dir: PathTemplate | None = Field(
        None,
        description="absolute host directory for the server's metadata and data (-b); "
        "placeholders {id}, {host}, {role}, {group}",
    )
    log_path: LogPathTemplate | None = Field(
        None,
        description="'-' for the container log (docker logs), or an absolute host file "
        "path (-l); placeholders as in base_dir",
    )
    fg: PositiveInt | None = Field(None, description="max concurrent foreground tasks (-fg)")
    # walb-archive refuses 0 (binsrc/walb-archive.cpp:77); proxies and storages start with
    # it but then turn every connection away (src/server_util.cpp:36).
    maxconn: PositiveInt | None = Field(None, description="max connections (-maxconn)")
    # Sent to setsockopt as milliseconds in an int (src/walb_util.cpp:114,
    # cybozulib/include/cybozu/socket.hpp:348); 0 means no timeout.
    timeout: Annotated[int, Field(ge=0, le=2147483)] | None = Field(
        None, description="socket timeout in seconds, 0 for none (-to)")
    debug: bool | None = Field(None, description="log debug messages (-debug)")
    keepalive: KeepAlive | bool | None = Field(
        None, description="true (or {}) for TCP keep-alive with walb's defaults, or its "
        "settings; each setting left out takes walb's default"
    )
    publish: bool | str | None = Field(
        None,
        description="bridge mode only: publish the port on the host; true means 127.0.0.1, "
        "a string is the host address to bind",
    )
    stop_grace_period: Seconds | None = Field(
        None, description="seconds to wait after SIGTERM before killing the server"
    )
    start_period: Seconds | None = Field(
        None, description="seconds a starting server may take before it must answer: an "
        "archive scans its VG and recovers every volume before it listens (default: archive "
        "600, proxy 60, storage 120); 'walbctr up' waits this long, and Docker's health "
        "check counts no failure before it"
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
    host: HostName = Field(description="the host (a key of `hosts`) this server runs on")


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
    start_period: int
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
