"""`walbctr space`: the free space of each archive's volume group and thin pool, for people
and for Prometheus (node_exporter's textfile collector).

The keeper cannot export this: it sees the servers only through walbc, and an archive
tells walbc the names of its VG and thin pool (`get volume-group`, `get thinpool`), never
their space; walbc's `exec` runs commands only on servers started with -allow-exec, which
upstream calls NOT SECURE. walbctr reaches each archive host's engine, so it asks LVM there,
in a throwaway container with the archive's own privileges and the host's /dev read-only
(as `check-host` does): it reads the space whether the archive runs or not, and changes
nothing. Run it from cron or a systemd timer with --textfile into node_exporter's
--collector.textfile.directory; the alert rules predict from those series when a VG or thin
pool runs out.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from walbctr.commands.checkhost import archive_privileges
from walbctr.docker.fleet import Fleet
from walbctr.docker.throwaway import probe, sh
from walbctr.errors import WalbctrError, explain
from walbctr.layout.server import Role, Server

if TYPE_CHECKING:
    from walbctr.layout.spec import Layout

# --readonly --nolocking: the metadata from the devices, no lock, nothing written.
_LVM = "--readonly --nolocking --noheadings --units b --nosuffix"
_SCRIPT = (f'/sbin/vgs {_LVM} -o vg_size,vg_free -- "$1" || exit; '
           f'[ -z "$2" ] || /sbin/lvs {_LVM} -o lv_size,data_percent,lv_attr -- "$1/$2"')

# name -> help; every series has the labels group, archive, vg (+ thinpool for the pool)
METRICS = {
    "walb_archive_vg_size_bytes": "size of the archive's LVM volume group",
    "walb_archive_vg_free_bytes": "free space of the archive's volume group (vgs vg_free)",
    "walb_archive_thinpool_size_bytes": "data size of the archive's thin pool",
    "walb_archive_thinpool_free_bytes": "free data space of the archive's thin pool "
                                        "(lv_size less data_percent)",
    "walb_archive_space_ok": "1 when walbctr space could read the archive's VG (and pool)",
}


@dataclass(frozen=True)
class ArchiveSpace:
    archive: str
    host: str
    vg: str
    thinpool: str | None
    vg_size: int | None = None
    vg_free: int | None = None
    pool_size: int | None = None
    pool_free: int | None = None
    error: str | None = None  # why it could not be read


def parse_lvm(out: str, thinpool: str | None) -> tuple[int, int, int | None, int | None]:
    """vg_size, vg_free and the pool's size and free bytes from the script's output."""
    lines = [line.split() for line in out.splitlines() if line.strip()]
    try:
        vg_size, vg_free = (int(v) for v in lines[0])
        if thinpool is None:
            return vg_size, vg_free, None, None
        attr = lines[1][-1]  # a plain LV has no data_percent: two fields only
        if not attr.startswith("t"):
            raise ValueError(f"{thinpool} is not a thin pool (lv_attr {attr})")
        pool, percent = int(lines[1][0]), float(lines[1][1])
    except (IndexError, ValueError) as err:
        if "thin pool" in str(err):
            raise
        raise ValueError(f"unexpected vgs/lvs output: {out.strip()[:200]!r}") from None
    used = math.ceil(pool * percent / 100)
    return vg_size, vg_free, pool, pool - used


def read_space(layout: Layout, only_host: str | None = None) -> list[ArchiveSpace]:
    """Every archive's space (of `only_host`'s archives), hosts in parallel."""
    fleet = Fleet(layout, only_host)
    archives = {h: [s for s in layout.servers_on(h) if s.role is Role.ARCHIVE]
                for h in fleet.hosts}
    found = fleet.each([h for h, a in archives.items() if a],
                       lambda h: [_one(layout, fleet, s) for s in archives[h]])
    rows: list[ArchiveSpace] = []
    for host, result in found.items():
        if isinstance(result, Exception):  # the engine itself: every archive there
            rows += [_unread(s, explain(result)) for s in archives[host]]
        else:
            rows += result
    return sorted(rows, key=lambda r: r.archive)


def _unread(s: Server, why: str) -> ArchiveSpace:
    pool = s.options.get("thinpool")
    return ArchiveSpace(s.id, s.host, str(s.options.get("vg", "")),
                        str(pool) if pool else None, error=why)


def _one(layout: Layout, fleet: Fleet, s: Server) -> ArchiveSpace:
    row = _unread(s, "")
    try:
        ran = probe(fleet.engines[s.host], layout.image, sh(_SCRIPT, row.vg, row.thinpool or ""),
                    purpose="space", volumes={"/dev": {"bind": "/dev", "mode": "ro"}},
                    **archive_privileges(s))
    except WalbctrError as err:
        return _unread(s, err.message)
    if ran.status != 0:
        said = next((ln.strip() for ln in ran.stderr.splitlines() if ln.strip()),
                    f"exit status {ran.status}")
        return _unread(s, f"LVM cannot read {row.vg}: {said}")
    try:
        vg_size, vg_free, pool_size, pool_free = parse_lvm(ran.stdout, row.thinpool)
    except ValueError as err:
        return _unread(s, str(err))
    return ArchiveSpace(s.id, s.host, row.vg, row.thinpool, vg_size, vg_free, pool_size,
                        pool_free)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def exposition(group: str, rows: list[ArchiveSpace]) -> str:
    """The rows in Prometheus' text format, as node_exporter's textfile collector reads it."""
    series: dict[str, list[str]] = {name: [] for name in METRICS}
    for r in rows:
        base = f'group="{_label(group)}",archive="{_label(r.archive)}"'
        vg = f'{base},vg="{_label(r.vg)}"'
        pool = f'{vg},thinpool="{_label(r.thinpool or "")}"'
        series["walb_archive_space_ok"].append(f"{{{base}}} {int(r.error is None)}")
        for name, labels, value in (("walb_archive_vg_size_bytes", vg, r.vg_size),
                                    ("walb_archive_vg_free_bytes", vg, r.vg_free),
                                    ("walb_archive_thinpool_size_bytes", pool, r.pool_size),
                                    ("walb_archive_thinpool_free_bytes", pool, r.pool_free)):
            if value is not None:
                series[name].append(f"{{{labels}}} {value}")
    out = []
    for name, lines in series.items():
        out += [f"# HELP {name} {METRICS[name]}", f"# TYPE {name} gauge"]
        out += [name + line for line in lines]
    return "\n".join(out) + "\n"


def check_textfile(path: Path) -> None:
    """Refuse a --textfile node_exporter would never read, before anything is asked."""
    if not path.parent.is_dir():
        raise WalbctrError(f"--textfile {path}: the directory {path.parent} does not exist",
                           "give a file in node_exporter's --collector.textfile.directory "
                           "(ending in .prom)")
    if path.suffix != ".prom":
        raise WalbctrError(f"--textfile {path}: node_exporter reads only files ending in "
                           ".prom", f"name it e.g. {path.with_suffix('.prom')}")


def write_textfile(path: Path, text: str) -> None:
    """Replace `path` at once: the collector must never read half a file."""
    check_textfile(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
