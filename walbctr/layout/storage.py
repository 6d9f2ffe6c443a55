"""The storage role: runs beside the protected WalB devices and ships their logs."""

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
from walbctr.layout.values import CompressOpt


class StorageOptions(CommonOptions):
    # bg, wl, snapintvl and tsdintvl must not be 0 (binsrc/walb-storage.cpp:80-84).
    bg: PositiveInt | None = Field(None, description="max concurrent background tasks (-bg)")
    wl: MebiBytes | None = Field(None, description="max MiB of wlog to send at once (-wl)")
    snapintvl: PositiveInt | None = Field(
        None, description="implicit snapshot interval in seconds (-snapintvl)"
    )
    delay: DelaySeconds | None = Field(
        None, description="min seconds before a retry (-delay; walb's default 1)")
    # Raised to delay with a warning when below it (binsrc/walb-storage.cpp:88-92).
    maxdelay: DelaySeconds | None = Field(
        None, description="max seconds before a retry (-maxdelay; walb's default 300)")
    # 0 is upstream's default and means unlimited (src/constant.hpp:41).
    fst: NonNegativeInt | None = Field(
        None, description="default full-scan throughput in bytes/s, 0 for unlimited (-fst)"
    )
    tsdintvl: PositiveInt | None = Field(
        None, description="ts-delta getter interval in seconds (-tsdintvl)"
    )
    sync_cmpr: CompressOpt | None = Field(
        None, description="compression for full/hash sync, TYPE:LEVEL:CPU, e.g. 'snappy:0:1' "
        "(-sync-cmpr)"
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
