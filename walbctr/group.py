"""Control a backup group from Python 3: the volume operations of upstream's walblib
Controller (Python 2 only), derived from the layout.

    from walbctr.group import Group

    group = Group.load("layout.yaml")
    group.add("vol0", storage="s0", device="/dev/walb/vol0")   # full backup, waits
    gid = group.snapshot("vol0")                                 # restorable on the archive
    group.restore("vol0", gid)                                   # a restored volume
    print(group.show("vol0").model_dump_json(indent=2))

Each operation checks the servers' states before it acts and after each step, runs walb's
own walbc commands in the order walblib does (from inside each server's container: the
caller needs no Docker knowledge and no route to the servers), and raises
`VolumeStateError` (naming the server, the volume, its state and the command that fixes
it) when walb cannot go on from where the volume is. Long operations take `timeout_s`
and a `progress` callback; an interrupted `add` continues when called again.
The records it returns are pydantic models (`.model_dump_json()` for scripts).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, Field

from walbctr.docker.walbc_calls import WalbcCalls, WalbcRefusedError
from walbctr.errors import WalbctrError
from walbctr.layout.loader import read_layout
from walbctr.layout.server import Role, Server
from walbctr.layout.spec import Layout
from walbctr.walb import history, steps
from walbctr.walb.steps import Blocked, Done, Next, Step
from walbctr.walb.volumes import (
    Answer,
    parse_names,
    parse_restorable,
    parse_state,
    walbc_error,
)

DEFAULT_TIMEOUT_S = 86400.0  # walblib's TIMEOUT_SEC: a full backup of a big device is slow
POLL_S = 0.25
RESTORED_PREFIX = "wr_"  # walblib's RESTORED_VOLUME_PREFIX: /dev/VG/wr_VOL_GID
VOLUME_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                              "0123456789_.+-")


class VolumeStateError(WalbctrError):
    """walb cannot do the step from the volume's current state; `fix` says what to run."""


class SnapshotRecord(BaseModel):
    gid: int
    time: datetime | None
    explicit: bool = True


class DiffRecord(BaseModel):
    begin: str = Field(description="the snapshot the diff starts from, |G| or |G0,G1|")
    end: str
    mergeable: bool
    compared: bool
    time: datetime | None
    size: int = Field(description="bytes")


class ServerVolume(BaseModel):
    """One server's view of one volume."""

    server: str
    role: str
    host: str
    state: str
    overflow: bool | None = None
    archives: list[str] = Field(default_factory=list, description="proxy: archive infos")
    restorable: list[SnapshotRecord] = Field(default_factory=list)
    restored: list[int] = Field(default_factory=list)
    diffs: list[DiffRecord] = Field(default_factory=list)
    base: str | None = None
    size_lb: int | None = None
    error: str | None = None


class VolumeInfo(BaseModel):
    name: str
    servers: list[ServerVolume]

    def on(self, server_id: str) -> ServerVolume:
        return next(s for s in self.servers if s.server == server_id)

    @property
    def latest_snapshot(self) -> SnapshotRecord | None:
        snaps = [x for s in self.servers for x in s.restorable]
        return max(snaps, key=lambda x: x.gid) if snaps else None


class VolumeSummary(BaseModel):
    """One row of `list`: a volume and its state on every server that knows it."""

    name: str
    states: dict[str, str]
    restorable: dict[str, int] = Field(default_factory=dict, description="archive -> count")
    latest: dict[str, datetime] = Field(default_factory=dict,
                                        description="archive -> newest restorable snapshot")


class Progress(BaseModel):
    """What a long operation is doing now, given to the `progress` callback."""

    step: str
    done_lb: int | None = None
    total_lb: int | None = None


ProgressFn = Callable[[Progress], None]


def _quiet(_p: Progress) -> None:
    return None


class Group:
    """A backup group's volumes, through its layout."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.calls = WalbcCalls(layout)
        self.command = f"walbctr volume --layout {layout.source}"

    @classmethod
    def load(cls, path: str | Path) -> Group:
        """The group of a layout file (raises LayoutError with every problem located)."""
        return cls(read_layout(path))

    # --- servers --------------------------------------------------------------------------

    def _server(self, server_id: str, role: Role | None = None) -> Server:
        server = self.layout.server(server_id)
        if role is not None and server.role is not role:
            ids = ", ".join(s.id for s in self.layout.of_role(role))
            raise WalbctrError(f"{server_id} is a {server.role.value}, not a {role.value}",
                               f"the {role.value}s are: {ids}")
        return server

    def _archive(self, archive_id: str | None) -> Server:
        if archive_id is None:
            return self.layout.primary_archive
        return self._server(archive_id, Role.ARCHIVE)

    def state(self, volume: str, server_id: str) -> str:
        return parse_state(self.calls.ask(server_id, "get", "state", _vol(volume)))

    def _parallel(self, ids: Sequence[str], work: Callable[[str], object]) -> list[object]:
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(ids)))) as pool:
            return list(pool.map(work, ids))

    def storage_of(self, volume: str) -> str:
        """The storage that sends `volume` (Target), else the one that knows it."""
        ids = [s.id for s in self.layout.of_role(Role.STORAGE)]
        states = dict(zip(ids, self._parallel(ids, lambda i: self.state(volume, i)),
                          strict=True))
        known = {i: st for i, st in states.items() if st != steps.S_CLEAR}
        for i, st in known.items():
            if st == steps.S_TARGET:
                return i
        if known:
            return next(iter(known))
        raise VolumeStateError(f"no storage of {self.layout.source} has a volume {volume!r}",
                               f"add it with '{self.command} add {volume} --storage ID "
                               "--device /dev/walb/NAME'")

    # --- reading --------------------------------------------------------------------------

    def volumes(self) -> list[VolumeSummary]:
        """Every volume any server knows, with its state on each (one exec per server: the
        batch query of `status --volumes`)."""
        servers = list(self.layout.servers)
        seen = self._parallel([s.id for s in servers], self.calls.batch)
        rows: dict[str, VolumeSummary] = {}
        for server, records in zip(servers, seen, strict=True):
            assert isinstance(records, list)
            for r in records:
                row = rows.setdefault(r.name, VolumeSummary(name=r.name, states={}))
                row.states[server.id] = r.state or "unknown"
                if server.role is Role.ARCHIVE and r.restorable:
                    row.restorable[server.id] = r.restorable
                    if r.latest_snapshot is not None:
                        row.latest[server.id] = r.latest_snapshot
        return [rows[n] for n in sorted(rows)]

    def show(self, volume: str) -> VolumeInfo:
        """The volume on every server: states, restorable and restored snapshots, diffs."""
        vol = _vol(volume)
        servers = list(self.layout.servers)
        views = self._parallel([s.id for s in servers], lambda i: self._view(i, vol))
        return VolumeInfo(name=vol, servers=[v for v in views if isinstance(v, ServerVolume)])

    def _view(self, server_id: str, vol: str) -> ServerVolume:
        server = self._server(server_id)
        view = ServerVolume(server=server.id, role=server.role.value, host=server.host,
                            state="unknown")
        try:
            answers = self.calls.query(server_id, _view_queries(server.role, vol))
        except WalbctrError as err:
            view.error = err.message
            return view
        _fill_view(view, answers)
        return view

    def restorable(self, volume: str, archive: str | None = None) -> list[SnapshotRecord]:
        a = self._archive(archive).id
        text = self.calls.run(a, "get", "restorable", _vol(volume), timeout_s=10)
        return [SnapshotRecord(gid=x.gid, time=x.time, explicit=x.explicit)
                for x in parse_restorable(text)]

    def restored(self, volume: str, archive: str | None = None) -> list[int]:
        """The gids restored on the archive (none while it holds no backup: walb refuses
        the question then, `getSnapshot:bad state`)."""
        a = self._archive(archive).id
        vol = _vol(volume)
        try:
            return history.parse_gids(self.calls.run(a, "get", "restored", vol, timeout_s=10))
        except WalbcRefusedError:
            if self.state(vol, a) not in steps.ARCHIVE_ACTIVE:
                return []
            raise

    def restored_path(self, volume: str, gid: int, archive: str | None = None) -> str:
        """Where walb-archive puts a restored volume: /dev/VG/wr_VOL_GID (walblib's
        get_restored_path)."""
        a = self._archive(archive).id
        vg = self.calls.ask(a, "get", "volume-group").strip()
        return f"/dev/{vg}/{RESTORED_PREFIX}{_vol(volume)}_{gid}"

    # --- add ------------------------------------------------------------------------------

    def add(self, volume: str, storage: str, device: str, *, hash_backup: bool = False,
            archive: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
            progress: ProgressFn = _quiet) -> int:
        """Init the volume on the storage and the primary archive, tell every proxy of the
        storage about the archive (in priority order), start them, and run a full backup
        (`hash_backup`: a hash backup, the remedy for an overflowed log) until the first
        restorable snapshot; its gid. Safe to call again after an interruption."""
        vol = _vol(volume)
        s = self._server(storage, Role.STORAGE)
        a = self.layout.primary_archive
        if archive is not None and self._archive(archive).id != a.id:
            raise WalbctrError(
                f"{archive} is not the primary archive: {s.id} sends its backups to {a.id} "
                f"(its -archive), so a full backup goes there",
                f"add the volume without --archive, then copy it with '{self.command} "
                f"replicate {vol} --to {archive}'")
        if not device.startswith("/"):
            raise WalbctrError(f"--device {device!r} is not an absolute path",
                               "give the walb device, e.g. /dev/walb/NAME")
        plan = steps.AddPlan(vol, s.id, a.id, a.endpoint, device, hash_backup, self.command)
        if self.state(vol, s.id) == steps.S_CLEAR and not self.calls.exists(s.id, device):
            raise WalbctrError(
                f"{device} does not exist on {s.id} (host {s.host}); walbctr changed nothing",
                f"make the walb device on {s.host} first (wdevc create-wdev LDEV DDEV -n "
                "NAME; it needs the walb kernel driver, and 'walbctr check-host' says whether "
                "the host has it), or give its path with --device")
        kicked: set[str] = set()

        def decide() -> Next:
            return steps.next_add_step(plan, self._add_seen(plan, frozenset(kicked)))

        def after(step: Step) -> None:
            if step.args[0] == "kick":
                kicked.add(step.server)

        self._drive(decide, timeout_s, progress, after)
        return max(x.gid for x in self.restorable(vol, a.id))

    def _add_seen(self, plan: steps.AddPlan, kicked: frozenset[str]) -> steps.AddSeen:
        vol = plan.volume
        proxies = [p.id for p in self.layout.proxies_by_priority]
        ids = [plan.storage, plan.archive, *proxies]
        queries: dict[str, list[tuple[str, Sequence[str]]]] = {
            plan.storage: [("state", ("get", "state", vol))],
            plan.archive: [("state", ("get", "state", vol)),
                           ("restorable", ("get", "restorable", vol))],
        }
        for p in proxies:
            queries[p] = [("state", ("get", "state", vol)),
                          ("archives", ("archive-info", "list", vol))]
        got = self._parallel(ids, lambda i: self.calls.query(i, queries[i]))
        answers = dict(zip(ids, got, strict=True))

        def state(i: str) -> str:
            ans = answers[i]
            assert isinstance(ans, dict)
            st = ans["state"]
            if not st.ok:
                raise WalbctrError(f"{i} cannot tell the state of {vol}: {st.error}",
                                   f"see 'walbctr logs {self.layout.source} {i}'")
            return parse_state(st.text)

        s_state = state(plan.storage)
        overflow = False
        if s_state not in (steps.S_CLEAR, *steps.STORAGE_TRANSIENT):
            overflow = self.calls.ask(plan.storage, "get", "is-overflow", vol).strip() == "1"
        arch = answers[plan.archive]
        assert isinstance(arch, dict)
        rest = arch["restorable"]
        gids = tuple(x.gid for x in parse_restorable(rest.text)) if rest.ok else ()
        seen_proxies = {}
        for p in proxies:
            ans = answers[p]
            assert isinstance(ans, dict)
            infos = ans["archives"]
            seen_proxies[p] = steps.ProxySeen(
                state(p), tuple(parse_names(infos.text)) if infos.ok else ())
        return steps.AddSeen(s_state, state(plan.archive), seen_proxies, gids, overflow, kicked)

    # --- the executor: no decisions ---------------------------------------------------------

    def _drive(self, decide: Callable[[], Next], timeout_s: float, progress: ProgressFn,
               after: Callable[[Step], None] = lambda _s: None) -> Done:
        deadline = time.monotonic() + timeout_s
        while True:
            nxt = decide()
            if isinstance(nxt, Done):
                progress(Progress(step=nxt.what))
                return nxt
            if isinstance(nxt, Blocked):
                raise VolumeStateError(nxt.message, nxt.fix)
            if isinstance(nxt, Step):
                progress(Progress(step=nxt.why))
                self._carry_out(nxt, deadline, progress)
                after(nxt)
                continue
            self._report(nxt.why, nxt.progress_on, nxt.volume, progress)
            self._check_deadline(deadline, nxt.why)
            time.sleep(POLL_S)

    def _carry_out(self, step: Step, deadline: float, progress: ProgressFn) -> None:
        self.calls.run(step.server, *step.args)
        if not step.settle:
            return
        while True:
            st = self.state(step.volume, step.server)
            if st not in step.settle:
                break
            self._report(step.why, step.progress_on, step.volume, progress)
            self._check_deadline(deadline, step.why)
            time.sleep(POLL_S)
        if step.goal and st not in step.goal:
            raise VolumeStateError(
                f"{step.why}: {step.server} ended in state {st}, not "
                f"{' or '.join(step.goal)}",
                f"see '{self.command} show {step.volume}' and 'walbctr logs "
                f"{self.layout.source} {step.server}'")

    def _report(self, why: str, archive: str, vol: str, progress: ProgressFn) -> None:
        done = total = None
        if archive:
            done, total = self._progress_lb(archive, vol)
        progress(Progress(step=why, done_lb=done, total_lb=total))

    def _progress_lb(self, archive: str, vol: str) -> tuple[int | None, int | None]:
        if not vol:
            return None, None
        try:
            ans = self.calls.query(archive, [("p", ("get", "progress", vol)),
                                             ("s", ("get", "vol-size", vol))])
        except WalbctrError:
            return None, None
        done = history.parse_number(ans["p"].text) if ans["p"].ok else None
        total = history.parse_number(ans["s"].text) if ans["s"].ok else None
        return done, total

    def _check_deadline(self, deadline: float, why: str) -> None:
        if time.monotonic() > deadline:
            raise WalbctrError(f"timed out: {why}",
                               "walb goes on in the background; run the same command again "
                               "to wait for it (an add continues where it is)")

    # --- the other procedures ---------------------------------------------------------------

    def snapshot(self, volume: str, *, timeout_s: float = 600.0,
                 progress: ProgressFn = _quiet) -> int:
        """Take a snapshot on the volume's storage; wait until the primary archive can
        restore it (walblib's snapshot). Its gid."""
        vol = _vol(volume)
        s = self.storage_of(vol)
        a = self.layout.primary_archive.id
        self._need(s, vol, (steps.S_TARGET,), "a snapshot",
                   f"back it up first: '{self.command} add {vol} --storage {s} --device ...'")
        self._need(a, vol, steps.ARCHIVE_ACTIVE, "a restorable snapshot",
                   f"see '{self.command} show {vol}'")
        gid = history.parse_number(self.calls.run(s, "snapshot", vol))
        progress(Progress(step=f"snapshot gid {gid} of {vol} taken on {s}"))
        self._wait_gid(a, vol, gid, "restorable", timeout_s, progress)
        return gid

    def _need(self, server: str, vol: str, allowed: Sequence[str], doing: str,
              fix: str) -> str:
        st = self.state(vol, server)
        blocked = steps.require(server, vol, st, allowed, doing, fix)
        if blocked is not None:
            raise VolumeStateError(blocked.message, blocked.fix)
        return st

    def _wait_gid(self, archive: str, vol: str, gid: int, which: str, timeout_s: float,
                  progress: ProgressFn, present: bool = True) -> None:
        deadline = time.monotonic() + timeout_s
        why = f"waiting for gid {gid} of {vol} to be {which} on {archive}"
        while True:
            gids = ([x.gid for x in self.restorable(vol, archive)] if which == "restorable"
                    else self.restored(vol, archive))
            if (gid in gids) == present:
                return
            progress(Progress(step=why))
            self._check_deadline(deadline, why)
            time.sleep(POLL_S)

    def restore(self, volume: str, gid: int, *, archive: str | None = None,
                timeout_s: float = DEFAULT_TIMEOUT_S, progress: ProgressFn = _quiet) -> None:
        """Restore snapshot `gid` as a new volume on the archive (walblib's restore)."""
        vol = _vol(volume)
        a = self._archive(archive).id
        self._need(a, vol, steps.ARCHIVE_ACTIVE, "a restore", f"see '{self.command} show {vol}'")
        gids = [x.gid for x in self.restorable(vol, a)]
        if gid not in gids:
            raise VolumeStateError(
                f"gid {gid} of {vol} is not restorable on {a}",
                f"restorable gids: {', '.join(map(str, gids)) or 'none'} "
                f"('{self.command} show {vol}')")
        if gid in self.restored(vol, a):
            raise VolumeStateError(f"gid {gid} of {vol} is restored on {a} already",
                                   f"it is at {self.restored_path(vol, gid, a)}; delete it "
                                   f"with '{self.command} del-restored {vol} {gid}'")
        self.calls.run(a, "restore", vol, str(gid))
        self._wait_gid(a, vol, gid, "restored", timeout_s, progress)

    def del_restored(self, volume: str, gid: int, *, archive: str | None = None) -> None:
        vol = _vol(volume)
        a = self._archive(archive).id
        if gid not in self.restored(vol, a):
            raise VolumeStateError(f"gid {gid} of {vol} is not restored on {a}",
                                   f"restored gids: {self.restored(vol, a) or 'none'}")
        self.calls.run(a, "del-restored", vol, str(gid))
        self._wait_gid(a, vol, gid, "restored", 100, _quiet, present=False)

    def replicate(self, volume: str, to: str, *, source: str | None = None,
                  sync: bool = False, timeout_s: float = DEFAULT_TIMEOUT_S,
                  progress: ProgressFn = _quiet) -> int:
        """Copy the volume's archive data to archive `to` up to the newest restorable gid
        (walblib's replicate_once); `sync` then keeps `to` synchronized through the
        proxies (walblib's synchronize). The gid replicated."""
        vol = _vol(volume)
        src = self._archive(source).id
        dst = self._server(to, Role.ARCHIVE)
        if dst.id == src:
            raise WalbctrError(f"--to {to} is the source archive", "name another archive")
        self._need(src, vol, steps.ARCHIVE_ACTIVE, "a replication",
                   f"back it up first: '{self.command} add {vol} ...'")
        gid = self._replicate_once(vol, src, dst, timeout_s, progress)
        if sync:
            gid = self._synchronize(vol, src, dst, timeout_s, progress)
        return gid

    def _replicate_once(self, vol: str, src: str, dst: Server, timeout_s: float,
                        progress: ProgressFn) -> int:
        gids = [x.gid for x in self.restorable(vol, src)]
        if not gids:
            raise VolumeStateError(f"{src} has no restorable snapshot of {vol} to replicate",
                                   f"take one: '{self.command} snapshot {vol}'")
        kind = steps.replicate_kind(self.state(vol, dst.id))
        if kind == "init":
            self.calls.run(dst.id, "init-vol", vol)
        elif kind is None:
            st = self.state(vol, dst.id)
            raise VolumeStateError(f"{dst.id} has {vol} in state {st}; a replication needs "
                                   "it Clear, SyncReady or Archived",
                                   f"start it: '{self.command} start {vol} --server {dst.id}'")
        gid = gids[-1]
        if kind != "wait":
            self.calls.run(src, "replicate", vol, "gid", str(gid), dst.endpoint, "0")
        progress(Progress(step=f"replicating {vol} from {src} to {dst.id} up to gid {gid}"))
        self._wait_replicated(src, dst.id, vol, gid, timeout_s, progress)
        return gid

    def _wait_replicated(self, src: str, dst: str, vol: str, gid: int, timeout_s: float,
                         progress: ProgressFn) -> None:
        deadline = time.monotonic() + timeout_s
        why = f"replicating {vol} from {src} to {dst} up to gid {gid}"
        while True:
            running = history.parse_number(self.calls.ask(
                src, "get", "num-action", vol, "ReplSyncAsClient"))
            st = self.state(vol, dst)
            if not running and st not in steps.ARCHIVE_DURING_REPLICATE:
                break
            done, total = self._progress_lb(dst, vol)
            progress(Progress(step=why, done_lb=done, total_lb=total))
            self._check_deadline(deadline, why)
            time.sleep(POLL_S)
        have = [x.gid for x in self.restorable(vol, dst)]
        if not have or max(have) < gid:
            raise WalbctrError(f"the replication of {vol} to {dst} ended without gid {gid} "
                               f"(it has {have or 'none'})",
                               f"see 'walbctr logs {self.layout.source} {src}'")

    def _synchronize(self, vol: str, src: str, dst: Server, timeout_s: float,
                     progress: ProgressFn) -> int:
        """walblib's synchronize: every proxy that does not send the volume to `dst` yet
        stops it emptied (so `src` has every wdiff) and learns `dst`; a second replication
        then takes what reached `src` meanwhile, and only then do the proxies start again,
        so `dst`'s history has no gap. The gid `dst` has."""
        stopped = []
        for p in self.layout.proxies_by_priority:
            if dst.id in self.archive_infos(vol, p.id):
                continue
            if self.state(vol, p.id) in steps.PROXY_ACTIVE:
                self.calls.run(p.id, "stop", vol, "empty")
                self._settle(p.id, vol, ("Stop", "WaitForEmpty", *steps.PROXY_ACTIVE),
                             timeout_s)
            self.calls.run(p.id, "archive-info", "add", vol, dst.id, dst.endpoint)
            stopped.append(p.id)
        if not stopped:
            return max(x.gid for x in self.restorable(vol, dst.id))
        gid = self._replicate_once(vol, src, dst, timeout_s, progress)
        for pid in stopped:
            if self.state(vol, pid) == steps.P_STOPPED:
                self.calls.run(pid, "start", vol)
            progress(Progress(step=f"{pid} now sends {vol} to {dst.id} too"))
        self.kick_storages()
        return gid

    def kick_storages(self) -> None:
        """walblib's kick_storage_all: every storage sends what it holds now."""
        for s in self.layout.of_role(Role.STORAGE):
            self.calls.run(s.id, "kick")

    def archive_infos(self, volume: str, proxy: str) -> list[str]:
        """The archives a proxy sends the volume to (none for a volume it does not know)."""
        vol = _vol(volume)
        if self.state(vol, proxy) == steps.P_CLEAR:
            return []
        return parse_names(self.calls.run(proxy, "archive-info", "list", vol))

    def _settle(self, server: str, vol: str, during: Sequence[str], limit_s: float = 100) -> str:
        deadline = time.monotonic() + limit_s
        while True:
            st = self.state(vol, server)
            if st not in during:
                return st
            self._check_deadline(deadline, f"{server} leaving {st} for {vol}")
            time.sleep(POLL_S)

    def stop(self, volume: str, server: str, mode: str = "graceful", *,
             timeout_s: float = 100) -> str:
        """Stop the volume on one server (walblib's stop); the state it ends in. A proxy
        stopped `empty` first sends every wdiff it holds: that may take `timeout_s`."""
        vol = _vol(volume)
        role = self._server(server).role
        if mode not in ("graceful", "force", "empty") or (mode == "empty" and
                                                         role is not Role.PROXY):
            raise WalbctrError(f"stop mode {mode!r} does not exist for a {role.value}",
                               "graceful or force (and empty on a proxy)")
        before = self.state(vol, server)
        allowed = {Role.STORAGE: (steps.S_TARGET, steps.S_STANDBY),
                   Role.PROXY: steps.PROXY_ACTIVE, Role.ARCHIVE: (steps.A_ARCHIVED,)}[role]
        self._need(server, vol, allowed, "a stop", f"see '{self.command} show {vol}'")
        self.calls.run(server, "stop", vol, mode)
        during = {Role.STORAGE: (before, "StopTarget", "StopStandby"),
                  Role.PROXY: ("Stop", "WaitForEmpty", *steps.PROXY_ACTIVE),
                  Role.ARCHIVE: ("Stop", steps.A_ARCHIVED)}[role]
        return self._settle(server, vol, during, timeout_s)

    def wait_stopped(self, volume: str, server: str, *, timeout_s: float = 100) -> str:
        """walblib's wait_for_stopped: until the volume leaves its stopping states on the
        server (a proxy emptying itself may take long); the state it ends in."""
        vol = _vol(volume)
        role = self._server(server).role
        during = {Role.STORAGE: ("StopTarget", "StopStandby"),
                  Role.PROXY: ("Stop", "WaitForEmpty"), Role.ARCHIVE: ("Stop",)}[role]
        return self._settle(server, vol, during, timeout_s)

    def start(self, volume: str, server: str) -> str:
        """Start the volume on one server (storage: as target); the state it ends in."""
        vol = _vol(volume)
        role = self._server(server).role
        allowed = {Role.STORAGE: (steps.S_STOPPED,), Role.PROXY: (steps.P_STOPPED,),
                   Role.ARCHIVE: (steps.A_STOPPED,)}[role]
        self._need(server, vol, allowed, "a start", f"see '{self.command} show {vol}'")
        args = ("start", vol, "target") if role is Role.STORAGE else ("start", vol)
        self.calls.run(server, *args)
        return self._settle(server, vol, ("StartTarget", "Start"))

    def reset(self, volume: str, server: str) -> str:
        """reset-vol on a storage or archive: back to SyncReady (for a new full or hash
        backup)."""
        vol = _vol(volume)
        role = self._server(server).role
        if role is Role.PROXY:
            raise WalbctrError("a proxy has no reset-vol", "stop and start it instead")
        self.calls.run(server, "reset-vol", vol)
        return self._settle(server, vol, ("Reset", "ResetVol"))

    def remove(self, volume: str, *, archive_data: Sequence[str] = ()) -> list[str]:
        """Forget the volume on every storage and proxy (walblib's clear), and on the
        archives named in `archive_data` only: that deletes their backups of it. The
        servers it was cleared on."""
        vol = _vol(volume)
        for a in archive_data:
            self._server(a, Role.ARCHIVE)
        cleared = []
        targets = [*self.layout.of_role(Role.STORAGE), *self.layout.of_role(Role.PROXY),
                   *(self._server(a) for a in archive_data)]
        for s in targets:
            if self._clear(s, vol):
                cleared.append(s.id)
        return cleared

    def _clear(self, s: Server, vol: str) -> bool:
        st = self.state(vol, s.id)
        if st == steps.S_CLEAR:
            return False
        if s.role is Role.STORAGE and st in (steps.S_TARGET, steps.S_STANDBY):
            self.calls.run(s.id, "stop", vol, "force")
            st = self._settle(s.id, vol, (st, "StopTarget", "StopStandby"))
        if s.role is Role.STORAGE and st == steps.S_STOPPED:
            self.calls.run(s.id, "reset-vol", vol)
            st = self._settle(s.id, vol, ("Reset",))
        if s.role is Role.PROXY and st in steps.PROXY_ACTIVE:
            self.calls.run(s.id, "stop", vol, "force")
            st = self._settle(s.id, vol, ("Stop", "WaitForEmpty", *steps.PROXY_ACTIVE))
        if s.role is Role.ARCHIVE and st == steps.A_ARCHIVED:
            self.calls.run(s.id, "stop", vol, "force")
            st = self._settle(s.id, vol, ("Stop", steps.A_ARCHIVED))
        if s.role is Role.PROXY:
            for a in parse_names(self.calls.run(s.id, "archive-info", "list", vol)):
                self.calls.run(s.id, "archive-info", "delete", vol, a)
            return True
        self.calls.run(s.id, "clear-vol", vol)
        return True

    # --- what upstream's doc/replace.md runs (walblib's names) ------------------------------

    def clear(self, volume: str, server: str) -> bool:
        """walblib's clear on one server: the volume is forgotten there (an archive's
        backups of it too). False when it was Clear already."""
        vol = _vol(volume)
        s = self._server(server)
        st = self.state(vol, s.id)
        transient = {Role.STORAGE: steps.STORAGE_TRANSIENT,
                     Role.PROXY: tuple(x for x in steps.PROXY_TRANSIENT
                                       if x not in steps.PROXY_ACTIVE),
                     Role.ARCHIVE: steps.ARCHIVE_TRANSIENT}[s.role]
        if st in transient:
            raise VolumeStateError(f"{s.id} has {vol} in state {st}; a clear needs a settled "
                                   "state", f"wait, then see '{self.command} show {vol}'")
        return self._clear(s, vol)

    def is_synchronizing(self, volume: str, archive: str) -> bool | None:
        """walblib's is_synchronizing: whether every proxy sends the volume to the archive
        (True), none does (False), or some do and some not (None, which walblib refuses)."""
        vol = _vol(volume)
        a = self._server(archive, Role.ARCHIVE).id
        proxies = [p.id for p in self.layout.proxies_by_priority]
        sends = [a in self.archive_infos(vol, p) for p in proxies]
        if all(sends):
            return True
        return False if not any(sends) else None

    def copy_archive_info(self, volume: str, source: str, dest: str, *,
                          start: bool | None = None) -> list[str]:
        """walblib's copy_archive_info: `dest` sends the volume to every archive `source`
        sends it to, with the same compression and delay, and is started (by default only
        when it runs on `source`: a volume the operator stopped stays stopped). The
        archives added."""
        vol = _vol(volume)
        src = self._server(source, Role.PROXY).id
        dst = self._server(dest, Role.PROXY).id
        src_state = self._need(src, vol, (*steps.PROXY_ACTIVE, steps.P_STOPPED, "Stop",
                                          "WaitForEmpty"), "copying its archive info",
                               f"see '{self.command} show {vol}'")
        self._need(dst, vol, (*steps.PROXY_ACTIVE, steps.P_STOPPED, steps.P_CLEAR),
                   "taking archive info", f"see '{self.command} show {vol}'")
        have = self.archive_infos(vol, dst)
        added = []
        for a in self.archive_infos(vol, src):
            if a in have:
                continue
            endpoint, options = self._archive_info(vol, src, a)
            if self.state(vol, dst) in steps.PROXY_ACTIVE:
                self.calls.run(dst, "stop", vol, "force")
                self._settle(dst, vol, ("Stop", "WaitForEmpty", *steps.PROXY_ACTIVE))
            self.calls.run(dst, "archive-info", "add", vol, a, endpoint, *options)
            added.append(a)
        wanted = start if start is not None else src_state != steps.P_STOPPED
        if wanted and self.state(vol, dst) == steps.P_STOPPED:
            self.calls.run(dst, "start", vol)
            self._settle(dst, vol, ("Start",))
        return added

    def _archive_info(self, vol: str, proxy: str, archive: str) -> tuple[str, list[str]]:
        """Where a proxy sends the volume for an archive, and the compression and delay
        options walb takes back (walblib's get_archive_info: 'HOST:PORT CMPR DELAY'). The
        address is the layout's when the archive is in it."""
        words = self.calls.run(proxy, "archive-info", "get", vol, archive).split()
        options = words[1:3] if len(words) == 3 else []
        if any(s.id == archive and s.role is Role.ARCHIVE for s in self.layout.servers):
            return self.layout.server(archive).endpoint, options
        if not words:
            raise WalbctrError(f"{proxy} gave no address for archive {archive} of {vol}",
                               f"see 'walbctr walbc {self.layout.source} {proxy} archive-info "
                               f"get {vol} {archive}'")
        return words[0], options

    def stop_synchronizing(self, volume: str, archive: str) -> list[str]:
        """walblib's stop_synchronizing: no proxy sends the volume to the archive any more
        (each is stopped, loses that archive info, and starts again if it still sends
        elsewhere), then every storage is kicked. The proxies changed."""
        vol = _vol(volume)
        a = self._server(archive, Role.ARCHIVE).id
        changed = []
        for p in self.layout.proxies_by_priority:
            if a not in self.archive_infos(vol, p.id):
                continue
            if self.state(vol, p.id) in steps.PROXY_ACTIVE:
                self.calls.run(p.id, "stop", vol, "force")
                self._settle(p.id, vol, ("Stop", "WaitForEmpty", *steps.PROXY_ACTIVE))
            self.calls.run(p.id, "archive-info", "delete", vol, a)
            if self.state(vol, p.id) == steps.P_STOPPED:
                self.calls.run(p.id, "start", vol)
                self._settle(p.id, vol, ("Start",))
            changed.append(p.id)
        self.kick_storages()
        return changed

    def go_standby(self, volume: str, storage: str) -> str:
        """walblib's go_standby: the volume becomes Standby on the storage from SyncReady,
        or from Target (stopped, no longer synchronized to the primary archive, reset)."""
        vol = _vol(volume)
        s = self._server(storage, Role.STORAGE).id
        st = self._need(s, vol, (steps.S_STANDBY, steps.S_SYNC_READY, steps.S_TARGET),
                        "going standby", f"see '{self.command} show {vol}'")
        if st == steps.S_TARGET:
            self.calls.run(s, "stop", vol, "force")
            st = self._settle(s, vol, (steps.S_TARGET, "StopTarget"))
            self.stop_synchronizing(vol, self.layout.primary_archive.id)
            if st == steps.S_STOPPED:
                self.calls.run(s, "reset-vol", vol)
                st = self._settle(s, vol, ("Reset",))
        if st == steps.S_SYNC_READY:
            self.calls.run(s, "start", vol, "standby")
            st = self._settle(s, vol, ("StartStandby",))
        if st != steps.S_STANDBY:
            raise VolumeStateError(f"{s} left {vol} in state {st}, not Standby",
                                   f"see 'walbctr logs {self.layout.source} {s}'")
        return st

    def init_storage(self, volume: str, storage: str, device: str) -> str:
        """walblib's init_storage: init-vol with the walb device, then standby."""
        vol = _vol(volume)
        s = self._server(storage, Role.STORAGE)
        st = self._need(s.id, vol, (steps.S_CLEAR, steps.S_SYNC_READY, steps.S_STANDBY),
                        "an init", f"see '{self.command} show {vol}'")
        if st == steps.S_CLEAR:
            if not self.calls.exists(s.id, device):
                raise WalbctrError(f"{device} does not exist on {s.id} (host {s.host})",
                                   f"make the walb device on {s.host} first (wdevc "
                                   "create-wdev LDEV DDEV -n NAME), or name it with --device")
            self.calls.run(s.id, "init-vol", vol, device)
            st = self._settle(s.id, vol, ("InitVol",))
        if st == steps.S_SYNC_READY:
            return self.go_standby(vol, s.id)
        return st

    def hash_backup(self, volume: str, storage: str, device: str, *,
                    timeout_s: float = DEFAULT_TIMEOUT_S,
                    progress: ProgressFn = _quiet) -> tuple[int, list[str]]:
        """walblib's hash_backup from this storage to the primary archive: every other
        storage stands by, every other archive stops synchronizing the volume (the hash
        backup's diff reaches the primary only), then hash-bkp, until the primary has a
        restorable snapshot newer than before. Its gid, and the archives that stopped
        synchronizing."""
        vol = _vol(volume)
        s = self._server(storage, Role.STORAGE).id
        a = self.layout.primary_archive.id
        for other in self.layout.of_role(Role.STORAGE):
            if other.id != s:
                self._need(other.id, vol, (steps.S_STANDBY, steps.S_CLEAR),
                           f"a hash backup from {s}", f"see '{self.command} show {vol}'")
        stopped = []
        for other in self.layout.of_role(Role.ARCHIVE):
            if other.id != a and self.is_synchronizing(vol, other.id) is not False:
                self.stop_synchronizing(vol, other.id)
                stopped.append(other.id)
        before = max((x.gid for x in self.restorable(vol, a)), default=-1)
        self.add(vol, s, device, hash_backup=True, timeout_s=timeout_s, progress=progress)
        return self._wait_newer(vol, a, before, timeout_s, progress), stopped

    def _wait_newer(self, vol: str, archive: str, before: int, timeout_s: float,
                    progress: ProgressFn) -> int:
        """Until the archive can restore a snapshot newer than `before`, kicking the
        proxies now and then (walblib's kick_proxy)."""
        deadline = time.monotonic() + timeout_s
        why = f"waiting for a snapshot of {vol} newer than gid {before} on {archive}"
        kicked = 0.0
        while True:
            gids = [x.gid for x in self.restorable(vol, archive)]
            if gids and max(gids) > before:
                return max(gids)
            if time.monotonic() - kicked > 5:
                for p in self.layout.proxies_by_priority:
                    if self.state(vol, p.id) in steps.PROXY_ACTIVE:
                        self.calls.run(p.id, "kick", vol, archive)
                kicked = time.monotonic()
            progress(Progress(step=why))
            self._check_deadline(deadline, why)
            time.sleep(POLL_S)


def _vol(volume: str) -> str:
    if not volume or not set(volume) <= VOLUME_NAME_CHARS or len(volume) > 64 \
            or volume[0] in ".-":
        raise WalbctrError(f"{volume!r} is not a walb volume name",
                           "use up to 64 letters, digits and _ . + - (walb names LVM "
                           "volumes after it), not starting with . or -")
    return volume


def _view_queries(role: Role, vol: str) -> list[tuple[str, Sequence[str]]]:
    q: list[tuple[str, Sequence[str]]] = [("state", ("get", "state", vol))]
    if role is Role.STORAGE:
        q.append(("overflow", ("get", "is-overflow", vol)))
    elif role is Role.PROXY:
        q.append(("archives", ("archive-info", "list", vol)))
    else:
        q += [("restorable", ("get", "restorable", vol)), ("restored", ("get", "restored", vol)),
              ("diff", ("get", "diff", vol)), ("base", ("get", "base", vol)),
              ("size", ("get", "vol-size", vol))]
    return q


def _fill_view(view: ServerVolume, answers: Mapping[str, Answer]) -> None:
    def ok(key: str) -> str | None:
        a = answers.get(key)
        return a.text if a is not None and a.ok else None

    st = answers.get("state")
    if st is None or not st.ok:
        view.error = walbc_error(st.text) if st is not None else "no answer"
        return
    view.state = parse_state(st.text)
    if view.state == steps.S_CLEAR:
        return
    if (text := ok("overflow")) is not None:
        view.overflow = text.strip() == "1"
    if (text := ok("archives")) is not None:
        view.archives = parse_names(text)
    _fill_archive_view(view, ok)


def _fill_archive_view(view: ServerVolume, ok: Callable[[str], str | None]) -> None:
    if (text := ok("restorable")) is not None:
        view.restorable = [SnapshotRecord(gid=x.gid, time=x.time, explicit=x.explicit)
                           for x in parse_restorable(text)]
    if (text := ok("restored")) is not None:
        view.restored = history.parse_gids(text)
    if (text := ok("diff")) is not None:
        view.diffs = [DiffRecord(begin=str(d.b), end=str(d.e), mergeable=d.mergeable,
                                 compared=d.compared, time=d.time, size=d.size)
                      for d in history.parse_diffs(text)]
    if (text := ok("base")) is not None:
        view.base = text.strip()
    if (text := ok("size")) is not None and text.strip().isdigit():
        view.size_lb = int(text)


__all__ = ["DiffRecord", "Group", "Progress", "ServerVolume", "SnapshotRecord",
           "VolumeInfo", "VolumeStateError", "VolumeSummary", "WalbcRefusedError"]
