"""What an archive keeps of a volume's history, as walbc prints it: diffs, restored
snapshots, sizes in logical blocks.

Pure: no I/O, standard library only (it ships in the keeper's image, whose policy tasks
read the same answers). Formats of walb-tools v1.0.19:
- `get diff VOL [GID0 [GID1]]` and `get applicable-diff VOL [GID]`: one wdiff a line,
  `|B|-->|E| MC TIME SIZE`, a snapshot `|G|` (clean) or `|G0,G1|` (dirty), `M` mergeable
  or `-`, `C` compared (a hash-backup diff) or `-`, TIME `YYYY-MM-DDTHH:MM:SS` in UTC,
  SIZE in bytes (walblib's Diff.parse; src/meta.hpp);
- `get restored VOL`: one gid a line (walblib's get_restored);
- `get vol-size VOL`, `get progress VOL`: one integer, in 512-byte logical blocks;
  `get num-diff`, `get total-diff-size` (bytes), `snapshot VOL` (the new gid): one integer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from walbctr.walb.volumes import parse_time

LOGICAL_BLOCK = 512  # bytes: walb's sizes are counted in these
UINT64_MAX = (1 << 64) - 1

_SNAP = r"\|(\d+)(?:,(\d+))?\|"
_DIFF = re.compile(rf"{_SNAP}-->{_SNAP} ([M-])([C-]) (\S+) (\d+)")


@dataclass(frozen=True)
class GidRange:
    """A walb snapshot: `|G|` is clean (restorable), `|G0,G1|` dirty."""

    begin: int
    end: int

    @property
    def clean(self) -> bool:
        return self.begin == self.end

    def __str__(self) -> str:
        return f"|{self.begin}|" if self.clean else f"|{self.begin},{self.end}|"


@dataclass(frozen=True)
class Diff:
    """One wdiff an archive holds: the change from snapshot B to snapshot E."""

    b: GidRange
    e: GidRange
    mergeable: bool
    compared: bool  # made by a hash backup: walb will not merge it with the diff before
    time: datetime | None
    size: int  # bytes

    def __str__(self) -> str:
        stamp = self.time.strftime("%Y-%m-%dT%H:%M:%S") if self.time else "---"
        return (f"{self.b}-->{self.e} {'M' if self.mergeable else '-'}"
                f"{'C' if self.compared else '-'} {stamp} {self.size}")


def parse_diffs(text: str) -> list[Diff]:
    """`get diff VOL` or `get applicable-diff VOL`: oldest first, as walb prints them."""
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        m = _DIFF.fullmatch(line.strip())
        if m is None:
            raise ValueError(f"not a wdiff line (|B|-->|E| MC TIME SIZE): {line!r}")
        b0, b1, e0, e1, merge, comp, stamp, size = m.groups()
        out.append(Diff(GidRange(int(b0), int(b1 or b0)), GidRange(int(e0), int(e1 or e0)),
                        merge == "M", comp == "C", parse_time(stamp), int(size)))
    return out


def parse_gids(text: str) -> list[int]:
    """`get restored VOL`: one gid a line, nothing when none."""
    gids = []
    for line in text.splitlines():
        word = line.strip()
        if not word:
            continue
        if not word.isdigit():
            raise ValueError(f"not a gid: {word!r}")
        gids.append(int(word))
    return sorted(gids)


def parse_number(text: str) -> int:
    """One non-negative integer (`get vol-size`, `get progress`, `snapshot`...)."""
    value = text.strip()
    if not value.isdigit():
        raise ValueError(f"expected a number, got {value!r}")
    return int(value)
