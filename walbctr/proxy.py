"""The proxy role: buffers write logs between storages and archives. Touches no device."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from walbctr.server import CommonOptions, PositiveInt, Seconds, ServerSpec


class ProxyOptions(CommonOptions):
    bg: PositiveInt | None = Field(None, description="max concurrent background tasks (-bg)")
    stop: bool | None = Field(None, description="start with every volume stopped (-stop)")
    wd: PositiveInt | None = Field(None, description="max MiB of wdiff files to send (-wd)")
    wn: PositiveInt | None = Field(None, description="max wdiff files to send at once (-wn)")
    delay: Seconds | None = Field(None, description="min seconds before a retry (-delay)")
    maxdelay: Seconds | None = Field(None, description="max seconds before a retry")
    rto: Seconds | None = Field(None, description="retry timeout, total seconds (-rto)")

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
