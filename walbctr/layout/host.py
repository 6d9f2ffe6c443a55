"""Hosts: where servers run, how peers reach them, and which Docker engine runs them."""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import Field

from walbctr.layout.basemodel import Model
from walbctr.layout.values import PlainPath, first_outside

# Docker's own rule for a context name.
_CONTEXT_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.+-]*$")
ENGINE_SCHEMES = ("ssh://", "tcp://", "unix://")


class TlsSpec(Model):
    """Client TLS for a tcp:// engine (dockerd --tlsverify)."""

    ca: PlainPath = Field(description="CA certificate that signed the engine's certificate")
    cert: PlainPath = Field(description="client certificate")
    key: PlainPath = Field(description="client key")
    verify: bool = Field(True, description="verify the engine's certificate against ca")


class HostSpec(Model):
    address: str | None = Field(
        None,
        description="name or IPv4 address that peers and the controller use to reach this "
        "host (default: the host's key)",
    )
    engine: str | None = Field(
        None,
        description="the host's Docker engine: ssh://user@host, tcp://host:2376, "
        "unix:///path, or a docker context name (default: the local engine)",
    )
    tls: TlsSpec | None = Field(None, description="client TLS for a tcp:// engine")
    insecure: bool = Field(False, description="allow a tcp:// engine without tls: plain HTTP "
                           "to a root-equivalent API, for a lab on a private network only")


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    engine: str | None  # None: the local engine (DOCKER_HOST or the default socket)
    tls: TlsSpec | None = None
    insecure: bool = False

    @property
    def engine_key(self) -> str:
        """Hosts with equal keys are served by one engine."""
        return self.engine or "local"


# What engine references use: URL parts, host names, IPv6 brackets, socket paths.
_ENGINE_CHAR = re.compile(r"[A-Za-z0-9._@:/\[\]+-]")
_ADDRESS_CHAR = re.compile(r"[A-Za-z0-9.-]")


def engine_problem(engine: str) -> str | None:
    """Why `engine` is not an engine reference, or None when it is one."""
    ch = first_outside(engine, _ENGINE_CHAR)
    if ch is not None:
        return f"has the character {ch!r}, which no engine reference needs"
    if len(engine) > 4095:
        return f"has {len(engine)} characters, more than any engine reference needs"
    if engine.startswith(ENGINE_SCHEMES):
        rest = engine.split("://", 1)[1]
        if not rest:
            return "names a scheme but no host or path"
        if engine.startswith("unix://") and not rest.startswith("/"):
            return "names a relative socket path (write unix:///path/to/docker.sock)"
        return None
    if "://" in engine:
        return "has a scheme walbctr does not know (use ssh://, tcp:// or unix://)"
    if not _CONTEXT_RE.match(engine):
        return "is neither an ssh://, tcp:// or unix:// URL nor a docker context name"
    return None


def address_problem(address: str) -> str | None:
    """Why walb-tools could not take `address` in HOST:PORT, or None when it can."""
    if ":" in address:
        return "is an IPv6 literal or has a port; walb-tools takes HOST:PORT with no brackets, " \
            "so give a host name that resolves to it"
    ch = first_outside(address, _ADDRESS_CHAR)
    if ch is not None:
        return f"has the character {ch!r}, which no host name or IPv4 address holds"
    if len(address) > 253:  # the most a DNS name may have (RFC 1035)
        return f"has {len(address)} characters; a host name has at most 253"
    if not re.match(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$", address):
        return "is not a host name or IPv4 address"
    return None

