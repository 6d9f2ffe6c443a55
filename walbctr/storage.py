"""The storage role: runs beside the protected WalB devices and ships their logs."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from walbctr.server import CommonOptions, PositiveInt, Seconds, ServerSpec


class StorageOptions(CommonOptions):
    bg: PositiveInt | None = Field(None, description="max concurrent background tasks (-bg)")
    wl: PositiveInt | None = Field(None, description="max MiB of wlog to send at once (-wl)")
    snapintvl: Seconds | None = Field(
        None, description="implicit snapshot interval in seconds (-snapintvl)"
    )
    delay: Seconds | None = Field(None, description="min seconds before a retry (-delay)")
    maxdelay: Seconds | None = Field(None, description="max seconds before a retry")
    fst: PositiveInt | None = Field(
        None, description="default full-scan throughput in bytes/s (-fst)"
    )
    tsdintvl: Seconds | None = Field(
        None, description="ts-delta getter interval in seconds (-tsdintvl)"
    )
    sync_cmpr: str | None = Field(
        None, description="compression for full/hash sync, e.g. 'snappy:0:1' (-sync-cmpr)"
    )

    FLAGS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("wl", "-wl"),
        ("snapintvl", "-snapintvl"),
        ("delay", "-delay"),
        ("maxdelay", "-maxdelay"),
        ("fst", "-fst"),
        ("tsdintvl", "-tsdintvl"),
        ("sync_cmpr", "-sync-cmpr"),
        *CommonOptions.FLAGS,
        ("bg", "-bg"),
    )


class StorageSpec(ServerSpec, StorageOptions):
    """A storage server entry: it sends to the primary archive through the proxies."""
