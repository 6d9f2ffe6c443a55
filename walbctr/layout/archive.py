"""The archive role: keeps the backup history in an LVM volume group (optionally thin)."""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from walbctr.layout.server import CommonOptions, NonNegativeInt, PositiveInt, ServerSpec
from walbctr.layout.values import CompressOpt, Finding, LvName, VgName, checked, pattern, show

# A loop file's size as truncate(1) and the lab VG take it: whole MiB, GiB or TiB.
LAB_VG_SIZE_PATTERN = r"^[1-9][0-9]{0,6}[MGT]$"
LAB_VG_MIN_MIB = 64  # room for LVM's metadata and a few walb volumes
_MIB = {"M": 1, "G": 1024, "T": 1024 * 1024}


def lab_vg_size(value: str) -> Finding:
    fix = f"write a size such as 512M, 2G or 1T; at least {LAB_VG_MIN_MIB}M"
    if not re.fullmatch(LAB_VG_SIZE_PATTERN, value):
        return f"{show(value)} is not a size in M, G or T", fix
    if int(value[:-1]) * _MIB[value[-1]] < LAB_VG_MIN_MIB:
        return f"{show(value)} is too small for a volume group", fix
    return None


LabVgSize = Annotated[str, checked(lab_vg_size), pattern(LAB_VG_SIZE_PATTERN)]


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

    # Per entry, not a default: each lab VG is one archive's volume group.
    lab_vg_size: LabVgSize | None = Field(
        None, description="labs and tests only: when the volume group `vg` does not exist, "
        "walbctr up makes it on a sparse loop file of this size (e.g. '1G') in its state "
        "directory, and 'walbctr down --purge-lab' removes it; never for real data"
    )
