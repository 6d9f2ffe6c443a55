"""The archive role: keeps the backup history in an LVM volume group (optionally thin)."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, StringConstraints

from walbctr.server import CommonOptions, PositiveInt, ServerSpec

# LVM's own rule for VG and LV names (lvm(8) "VALID NAMES"), minus a leading '-'.
LvmName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9+_.][A-Za-z0-9+_.-]{0,126}$")]


class ArchiveOptions(CommonOptions):
    vg: LvmName | None = Field(
        None, description="LVM volume group the archive keeps volumes in (-vg); must exist"
    )
    thinpool: LvmName | None = Field(
        None, description="thin pool in the volume group for thin provisioning (-tp)"
    )
    wn: PositiveInt | None = Field(None, description="max wdiff files to send at once (-wn)")
    discard: Literal["ignore", "passdown", "zero"] | None = Field(
        None, description="discard behaviour (-discard)"
    )
    fi: PositiveInt | None = Field(None, description="fsync interval in bytes (-fi)")
    autoresize: bool | None = Field(None, description="resize base images as needed")
    keep_one_cold_snap: bool | None = Field(
        None, description="keep just one cold snapshot per volume (-keep-one-cold-snap)"
    )
    maxopen: PositiveInt | None = Field(None, description="max wdiff files open together")
    maxopen_virt: PositiveInt | None = Field(
        None, description="max wdiff files open together for virtual scan (-maxopen-virt)"
    )
    apply_sleep_pct: Annotated[int, Field(ge=0, le=100)] | None = Field(
        None, description="sleep percentage while applying diffs (-apply-sleep-pct)"
    )
    sync_cmpr: str | None = Field(
        None, description="compression for full/hash replication, e.g. 'snappy:0:1'"
    )
    lock_time_th: PositiveInt | None = Field(
        None, description="lock wait/hold seconds above which to log (-lock-time-th)"
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
