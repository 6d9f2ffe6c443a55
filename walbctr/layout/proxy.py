"""The proxy role: buffers write logs between storages and archives. Touches no device."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from walbctr.layout.server import (
    CommonOptions,
    DelaySeconds,
    MebiBytes,
    NonNegativeInt,
    PositiveInt,
    ServerSpec,
)


class ProxyOptions(CommonOptions):
    # bg, wd and wn must not be 0 (binsrc/walb-proxy.cpp:69-72).
    bg: PositiveInt | None = Field(None, description="max concurrent background tasks (-bg)")
    stop: bool | None = Field(None, description="start with every volume stopped (-stop)")
    wd: MebiBytes | None = Field(None, description="max MiB of wdiff files to send (-wd)")
    wn: PositiveInt | None = Field(None, description="max wdiff files to send at once (-wn)")
    delay: DelaySeconds | None = Field(
        None, description="min seconds before a retry (-delay; walb's default 1)")
    # A maxdelay below delay is raised to delay with a warning (binsrc/walb-proxy.cpp:74-78);
    # validation says so before the server does.
    maxdelay: DelaySeconds | None = Field(
        None, description="max seconds before a retry (-maxdelay; walb's default 300)")
    rto: NonNegativeInt | None = Field(
        None, description="retry timeout, total seconds (-rto; walb's default 1800)")

    FLAGS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("stop", "-stop"),
        ("wd", "-wd"),
        ("wn", "-wn"),
        ("delay", "-delay"),
        ("maxdelay", "-maxdelay"),
        ("rto", "-rto"),
        *CommonOptions.FLAGS,
        ("bg", "-bg"),
    )


class ProxySpec(ServerSpec, ProxyOptions):
    """A proxy server entry; list order in `proxies` is the storages' priority order."""
