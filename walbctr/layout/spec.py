"""The layout's shape: the models of one backup group, and `Layout`, its servers resolved.

Reading a file into a `Layout` is walbctr.layout.loader's; the rules that span servers are
walbctr.layout.validation's. Both import this module; it imports neither.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field

from walbctr.errors import Problem, WalbctrError
from walbctr.layout.archive import ArchiveOptions, ArchiveSpec
from walbctr.layout.basemodel import Model
from walbctr.layout.host import Host, HostSpec
from walbctr.layout.imagetag import DEFAULT_IMAGE
from walbctr.layout.monitor import MonitorSpec
from walbctr.layout.policy import PolicySpec
from walbctr.layout.proxy import ProxyOptions, ProxySpec
from walbctr.layout.server import CommonOptions, Role, Server
from walbctr.layout.storage import StorageOptions, StorageSpec
from walbctr.layout.values import GroupName

DEFAULT_LAYOUT_PATH = "layout.yaml"

# What a server gets when neither the layout's defaults nor the server say otherwise. The
# port and base dir are the seed document's; logs go to the container log so that
# `docker logs` and `walbctr logs` work without a file on the host.
BUILTIN_DEFAULTS: Mapping[str, Any] = {
    "port": 10000,
    "base_dir": "/var/walb/{id}",
    "log_path": "-",
    "stop_grace_period": 120,
    "nofile": 65536,
}
# An archive listens only after vgs/lvs and recovering every volume: minutes on a large one.
START_PERIOD_S: Mapping[Role, int] = {Role.ARCHIVE: 600, Role.PROXY: 60, Role.STORAGE: 120}

ROLE_SPECS: Mapping[Role, type[ArchiveSpec | ProxySpec | StorageSpec]] = {
    Role.ARCHIVE: ArchiveSpec,
    Role.PROXY: ProxySpec,
    Role.STORAGE: StorageSpec,
}
ROLE_OPTIONS: Mapping[Role, type[CommonOptions]] = {
    Role.ARCHIVE: ArchiveOptions,
    Role.PROXY: ProxyOptions,
    Role.STORAGE: StorageOptions,
}


class Defaults(CommonOptions):
    """Settings for every server, then per role; a server's own settings win."""

    archive: ArchiveOptions | None = Field(None, description="defaults for archives only")
    proxy: ProxyOptions | None = Field(None, description="defaults for proxies only")
    storage: StorageOptions | None = Field(None, description="defaults for storages only")


class NetworkSpec(Model):
    mode: Literal["host", "bridge"] = Field(
        "host",
        description="host: servers use the host network and the hosts' addresses "
        "(production); bridge: one private network per group where server ids are the "
        "addresses (a lab on one engine)",
    )
    publish: bool | str = Field(
        False,
        description="bridge mode: publish every server's port on the host; true means "
        "127.0.0.1, a string is the host address to bind",
    )


class LayoutSpec(Model):
    """A WalB backup group: which servers run where, and how."""

    version: Literal[1] = Field(1, description="layout file format version")
    group: GroupName = Field(
        description="backup group name: compose project names and labels are made from it"
    )
    image: str | None = Field(
        None, description=f"image every server runs (default: {DEFAULT_IMAGE})"
    )
    network: NetworkSpec = NetworkSpec()
    hosts: dict[str, HostSpec | None] | None = Field(
        None,
        description="host name -> how to reach it; when given, every server's host must be "
        "here",
    )
    defaults: Defaults = Defaults()
    archives: list[ArchiveSpec] = Field(
        default_factory=list, description="archive servers; the first is the primary archive"
    )
    proxies: list[ProxySpec] = Field(
        default_factory=list, description="proxy servers, highest priority first"
    )
    storages: list[StorageSpec] = Field(default_factory=list, description="storage servers")
    monitor: MonitorSpec | None = Field(
        None, description="a keeper that watches the group: metrics, and walb's recovery "
        "kicks after a server restarts (off unless given)")
    policy: PolicySpec | None = Field(
        None, description="what the keeper does to the archives' history: apply, merge, "
        "replicate, verify (walb-worker's duties; off unless given, needs monitor)")

    def specs(self, role: Role) -> list[ArchiveSpec] | list[ProxySpec] | list[StorageSpec]:
        if role is Role.ARCHIVE:
            return self.archives
        return self.proxies if role is Role.PROXY else self.storages


@dataclass(frozen=True)
class Layout:
    """A valid layout with every server resolved, in start order."""

    source: str
    spec: LayoutSpec
    servers: tuple[Server, ...]
    hosts: Mapping[str, Host]
    warnings: tuple[Problem, ...] = field(default=())

    @property
    def group(self) -> str:
        return self.spec.group

    @property
    def image(self) -> str:
        return self.spec.image or DEFAULT_IMAGE

    @property
    def network_mode(self) -> str:
        return self.spec.network.mode

    def of_role(self, role: Role) -> tuple[Server, ...]:
        return tuple(s for s in self.servers if s.role is role)

    @property
    def primary_archive(self) -> Server:
        """The first archive listed: where every storage sends its volumes."""
        return self.of_role(Role.ARCHIVE)[0]

    @property
    def proxies_by_priority(self) -> tuple[Server, ...]:
        """Proxies in list order, which storages try first to last."""
        return self.of_role(Role.PROXY)

    def server(self, server_id: str) -> Server:
        for s in self.servers:
            if s.id == server_id:
                return s
        known = ", ".join(s.id for s in self.servers)
        raise WalbctrError(
            f"{self.source}: no server with id {server_id!r}", f"the servers are: {known}"
        )

    def servers_on(self, host: str) -> tuple[Server, ...]:
        return tuple(s for s in self.servers if s.host == host)

    @property
    def used_hosts(self) -> tuple[str, ...]:
        """Hosts that run at least one server, in first-use (start) order."""
        return tuple(dict.fromkeys(s.host for s in self.servers))

    def select_hosts(self, only: str | None) -> tuple[str, ...]:
        """The hosts a command works on: `only`, or every host that runs servers."""
        if only is None:
            return self.used_hosts
        if only not in self.used_hosts:
            raise WalbctrError(f"{self.source}: no server runs on host {only!r}",
                               "hosts with servers: " + ", ".join(self.used_hosts))
        return (only,)


