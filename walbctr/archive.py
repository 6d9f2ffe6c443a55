"""The archive role: keeps the backup history in an LVM volume group (optionally thin)."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from walbctr.server import CommonOptions, NonNegativeInt, PositiveInt, ServerSpec
from walbctr.values import CompressOpt, LvName, VgName


class ArchiveOptions(CommonOptions):
    vg: VgName | None = Field(
        None, description="LVM volume group the archive keeps volumes in (-vg); must exist"
    )
    thinpool: LvName | None = Field(
        None, description="thin pool in the volume group for thin provisioning (-tp)"
    )
    # wn and fi must not be 0 (binsrc/walb-archive.cpp:79-80).
    wn: PositiveInt | None = Field(None, description="max wdiff files to send at once (-wn)")
    # The three names parseDiscardType knows (src/discard_type.hpp:15-19).
    discard: Literal["ignore", "passdown", "zero"] | None = Field(
        None, description="discard behaviour (-discard)"
    )
    fi: PositiveInt | None = Field(None, description="fsync interval in bytes (-fi)")
    autoresize: bool | None = Field(None, description="resize base images as needed")
    keep_one_cold_snap: bool | None = Field(
        None, description="keep just one cold snapshot per volume (-keep-one-cold-snap)"
    )
    # 0 is upstream's default and means unlimited (src/constant.hpp:31-32).
    maxopen: NonNegativeInt | None = Field(
        None, description="max wdiff files open together, 0 for unlimited (-maxopen)")
    maxopen_virt: NonNegativeInt | None = Field(
        None, description="max wdiff files open together for virtual scan, 0 for unlimited "
        "(-maxopen-virt)"
    )
    # walb-archive refuses 100 and above (binsrc/walb-archive.cpp:83-86).
    apply_sleep_pct: Annotated[int, Field(ge=0, le=99)] | None = Field(
        None, description="sleep percentage while applying diffs, 0 to 99 (-apply-sleep-pct)"
    )
    sync_cmpr: CompressOpt | None = Field(
        None, description="compression for full/hash replication, TYPE:LEVEL:CPU, e.g. "
        "'snappy:0:1' (-sync-cmpr)"
    )
    # A double read by an istream (binsrc/walb-archive.cpp:36,64), which takes neither inf
    # nor nan; a negative threshold would log every lock, as 0 does.
    lock_time_th: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = Field(
        None, description="lock wait/hold seconds above which to log, e.g. 0.5 "
        "(-lock-time-th; walb's default 10)"
    )

    FLAGS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("vg", "-vg"),
        ("thinpool", "-tp"),
        ("wn", "-wn"),
        ("discard", "-discard"),
        ("fi", "-fi"),
        ("autoresize", "-autoresize"),
        ("keep_one_cold_snap", "-keep-one-cold-snap"),
        ("maxopen", "-maxopen"),
        ("maxopen_virt", "-maxopen-virt"),
        ("apply_sleep_pct", "-apply-sleep-pct"),
        ("sync_cmpr", "-sync-cmpr"),
        ("lock_time_th", "-lock-time-th"),
        *CommonOptions.FLAGS,
    )


class ArchiveSpec(ServerSpec, ArchiveOptions):
    """An archive server entry; the first one in `archives` is the primary archive."""
