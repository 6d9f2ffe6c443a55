"""`walbctr volume`: the Group API's operations with tables, JSON and progress."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING

from pydantic import BaseModel

from walbctr.display import StepProgress
from walbctr.render.columns import columns

if TYPE_CHECKING:
    from walbctr.group import Progress, ServerVolume, VolumeInfo, VolumeSummary


def progress_of(display: StepProgress) -> Callable[[Progress], None]:
    def show(p: Progress) -> None:
        display.update(p.step, p.done_lb, p.total_lb)
    return show


def list_table(rows: list[VolumeSummary], server_ids: list[str]) -> str:
    if not rows:
        return "no volumes\n"
    headers = ["VOLUME", *server_ids, "RESTORABLE", "LATEST SNAPSHOT"]
    cells = []
    for r in rows:
        rest = ", ".join(f"{a} {n}" for a, n in sorted(r.restorable.items())) or "-"
        latest = ", ".join(f"{a} {t:%Y-%m-%d %H:%M:%S}" for a, t in sorted(r.latest.items())) \
            or "-"
        cells.append([r.name, *(r.states.get(i, "-") for i in server_ids), rest, latest])
    return columns(headers, cells)


def _detail(s: ServerVolume) -> str:
    detail = []
    if s.error:
        detail.append(f"error: {s.error}")
    if s.overflow:
        detail.append("LOG OVERFLOWED (hash backup needed)")
    if s.archives:
        detail.append("sends to " + ", ".join(s.archives))
    if s.base:
        detail.append(f"base {s.base}")
    if s.size_lb:
        detail.append(f"{s.size_lb * 512 / 2**20:.0f} MiB")
    if s.restored:
        detail.append("restored " + ", ".join(map(str, s.restored)))
    return "; ".join(detail)


def show_text(info: VolumeInfo) -> str:
    lines = [f"volume {info.name}"]
    rows = [[s.server, s.role, s.host, s.state, _detail(s)] for s in info.servers]
    lines.append(columns(["SERVER", "ROLE", "HOST", "STATE", "DETAIL"], rows).rstrip("\n"))
    for s in info.servers:
        if s.restorable:
            lines.append(f"restorable on {s.server}:")
            lines += [f"  gid {x.gid:<8} {x.time.isoformat() if x.time else '---'}"
                      for x in s.restorable]
        if s.diffs:
            total = sum(d.size for d in s.diffs)
            lines.append(f"diffs on {s.server}: {len(s.diffs)}, {total} bytes")
            lines += [f"  {d.begin}-->{d.end} {'M' if d.mergeable else '-'}"
                      f"{'C' if d.compared else '-'} {d.time.isoformat() if d.time else '---'}"
                      f" {d.size}" for d in s.diffs]
    latest = info.latest_snapshot
    lines.append(f"latest snapshot: gid {latest.gid} at "
                 f"{latest.time.isoformat() if latest.time else '---'}" if latest
                 else "latest snapshot: none")
    return "\n".join(lines) + "\n"


def as_json(obj: object) -> str:
    if isinstance(obj, BaseModel):
        return obj.model_dump_json(indent=2) + "\n"
    if isinstance(obj, list):
        return json.dumps([o.model_dump(mode="json") if isinstance(o, BaseModel) else o
                           for o in obj], indent=2) + "\n"
    return json.dumps(obj, indent=2) + "\n"
