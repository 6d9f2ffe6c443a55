"""The layout's `policy` block: what the keeper does to keep each volume's history in shape
and its second copies current, the duties of upstream's walb-worker (python/walb_worker.py):
apply diffs older than a keep period, merge small diffs, replicate from the primary archive
to the others, and verify that the latest snapshot restores.

    policy:
      keep_period: 14d          # apply diffs older than this into the base image
      merge: {max_diffs: 10, max_size: 1G, threshold: 20, interval: 1h}
      replicate: {to: [a1], interval: 10m, max_send_size: 1G}
      verify: {interval: 1d}
      volumes:                  # per volume, any of the keys above
        vol0: {keep_period: 30d}

Durations are seconds, or a number with s, m, h or d (walb-worker's form; hh:mm:ss too);
sizes are bytes, or a number with K, M or G (powers of 1024). What needs the servers (the
archives named in replicate.to) is validation's.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, WithJsonSchema

from walbctr.layout.basemodel import Model

_DURATION = re.compile(r"^(\d+)([smhd]?)$")
_HMS = re.compile(r"^(\d+):([0-5]\d):([0-5]\d)$")
_SIZE = re.compile(r"^(\d+)([KMG]?)$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_UNIT_B = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
MAX_DURATION_S = 366 * 86400


def seconds(value: Any) -> int:
    """A duration: an integer of seconds, '90s', '10m', '1h', '14d' or 'hh:mm:ss'."""
    if isinstance(value, bool):
        raise ValueError("a duration, not true/false")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str) and (m := _DURATION.match(value.strip())):
        n = int(m.group(1)) * _UNIT_S[m.group(2)]
    elif isinstance(value, str) and (m := _HMS.match(value.strip())):
        n = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + int(m.group(3))
    else:
        raise ValueError(f"not a duration: {value!r} (seconds, or e.g. 90s, 10m, 1h, 14d)")
    if not 0 < n <= MAX_DURATION_S:
        raise ValueError(f"{value!r} is out of range (1 s to 366 d)")
    return n


def size_bytes(value: Any) -> int:
    """A size: an integer of bytes, or '512K', '64M', '1G'."""
    if isinstance(value, bool):
        raise ValueError("a size, not true/false")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str) and (m := _SIZE.match(value.strip())):
        n = int(m.group(1)) * _UNIT_B[m.group(2)]
    else:
        raise ValueError(f"not a size: {value!r} (bytes, or e.g. 512K, 64M, 1G)")
    if not 0 <= n < 1 << 62:
        raise ValueError(f"{value!r} is out of range")
    return n


Duration = Annotated[int, BeforeValidator(seconds), WithJsonSchema(
    {"anyOf": [{"type": "integer", "minimum": 1},
               {"type": "string", "pattern": r"^\d+[smhd]?$|^\d+:[0-5]\d:[0-5]\d$"}]})]
Size = Annotated[int, BeforeValidator(size_bytes), WithJsonSchema(
    {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": r"^\d+[KMG]?$"}]})]


class MergePolicy(Model):
    """walb-worker's merge: join runs of small mergeable diffs into one."""

    max_diffs: int = Field(10, ge=2, le=10000, description="most diffs joined by one merge")
    max_size: Size = Field(1 << 30, description="most bytes of diffs joined by one merge")
    threshold: int = Field(20, ge=2, description="a volume with this many diffs is merged "
                           "first, before replication")
    interval: Duration = Field(3600, description="otherwise, at most one merge of a volume "
                               "per this long")


class ReplicatePolicy(Model):
    """walb-worker's repl: keep the other archives' copies of each volume current."""

    to: list[str] | None = Field(None, description="archive ids that get copies (default: "
                                 "every archive but the primary)")
    interval: Duration = Field(600, description="at most one replication of a volume to an "
                               "archive per this long")
    max_send_size: Size = Field(0, description="most bytes of diffs sent by one "
                                "replication (0: all that is missing)")


class VerifyPolicy(Model):
    """Restore the latest snapshot on an archive, checksum it, delete it again."""

    interval: Duration = Field(86400, description="how often each volume is verified")
    archive: str | None = Field(None, description="the archive restores are made on "
                                "(default: the primary)")


class VolumePolicy(Model):
    """The policy of one volume: what it sets replaces the group's."""

    keep_period: Duration | None = None
    apply_interval: Duration | None = None
    merge: MergePolicy | None = None
    replicate: ReplicatePolicy | None = None
    verify: VerifyPolicy | None = None
    paused: bool = Field(False, description="no policy task for this volume")


class PolicySpec(Model):
    """What the keeper does to the archives' history (off unless given)."""

    keep_period: Duration | None = Field(None, description="apply diffs older than this into "
                                         "the base image, so the VG does not fill (off: none)")
    apply_interval: Duration = Field(86400, description="at most one apply of a volume per "
                                     "this long")
    merge: MergePolicy | None = Field(None, description="merge small diffs (off unless given)")
    replicate: ReplicatePolicy | None = Field(None, description="replicate to the other "
                                              "archives (off unless given)")
    verify: VerifyPolicy | None = Field(None, description="restore verification (off unless "
                                        "given)")
    max_tasks: int = Field(1, ge=1, le=16, description="tasks at once per archive (walb-worker "
                           "runs one)")
    volumes: dict[str, VolumePolicy] = Field(default_factory=dict,
                                             description="per volume overrides, by name")

    def for_keeper(self) -> dict[str, Any]:
        """Plain JSON for the keeper: bytes and seconds, and of each volume's overrides only
        what it sets (walbctr.walb.worker.parse_policy reads it)."""
        return {**self.model_dump(exclude={"volumes"}),
                "volumes": {n: v.model_dump(exclude_unset=True) for n, v in self.volumes.items()}}
