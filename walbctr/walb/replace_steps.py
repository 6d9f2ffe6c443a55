"""Which walb steps replace a server by a new one on another host, in which order, per
role: upstream's doc/replace.md, decided from what the servers say now.

The procedures (walb-tools v1.0.19, doc/replace.md, with walblib's Controller methods):

- proxy p0 -> p2: start p2; copy_archive_info(p0, vol, p2) for every volume; `stop vol
  empty` on p0 (it sends every wdiff it holds first) and wait until Stopped; clear it
  there; restart the storages with the new `-proxy`; p0 can go.
- primary archive a0 -> a2: start a2; replicate(a0, vol, a2, synchronizing=True) for
  every volume; restart the storages with the new `-archive`; stop_synchronizing(a0,
  vol); a0 can go (its backups stay).
- secondary archive a1 -> a2: replicate(a1, vol, a2, is_synchronizing(a1, vol)); then
  stop_synchronizing(a1, vol) where it synchronized.
- storage s0 -> s2: the walb devices exist on s2's host (replicas); go_standby(s0, vol)
  for every target volume; init_storage(s2, vol, device) for every volume; hash_backup(s2,
  vol) for every target volume; s0 can go.

`plan_replace` turns the states observed on the servers into that list of actions, or
into refusals (a volume walb is busy with, a state the procedure cannot start from),
before anything is touched. Each action is one of the Group API's operations or a
container action, with the walbc commands it runs in words for --dry-run. A replace run
again after an interruption plans only what is left: every decision is taken from the
states, never from a record of what ran.

Pure: standard library only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from walbctr.walb.steps import (
    A_ARCHIVED,
    A_CLEAR,
    A_STOPPED,
    A_SYNC_READY,
    ARCHIVE_TRANSIENT,
    P_CLEAR,
    PROXY_ACTIVE,
    PROXY_TRANSIENT,
    S_CLEAR,
    S_STANDBY,
    S_STOPPED,
    S_SYNC_READY,
    S_TARGET,
    STORAGE_TRANSIENT,
    Blocked,
)

ARCHIVE, PROXY, STORAGE = "archive", "proxy", "storage"
UNKNOWN = "unknown"  # a state the server did not tell
# A proxy volume stopping already (a replace that was interrupted while it emptied).
PROXY_STOPPING = ("Stop", "WaitForEmpty")
# Archive actions a replication must not overlap: another replication, a resize.
BLOCKING_ACTIONS = ("ReplSyncAsClient", "Resize")


@dataclass(frozen=True)
class VolumeSeen:
    """One volume of the replaced server, as the servers say now."""

    name: str
    state: str  # on the replaced server
    new_state: str = "Clear"  # on the new server (not Clear: a replace run again)
    archives: tuple[str, ...] = ()  # proxy: the archives it sends the volume to
    new_archives: tuple[str, ...] = ()  # proxy: the new proxy's
    send_errors: tuple[str, ...] = ()  # proxy: archives it failed to send to
    synchronizing: bool | None = False  # archive: every proxy sends it there; None: some
    restorable: bool = False  # archive: it holds a restorable snapshot
    actions: tuple[str, ...] = ()  # archive: walb actions running on it
    others: Mapping[str, str] = field(default_factory=dict)  # storage: other storages' states
    secondaries: tuple[str, ...] = ()  # storage: other archives synchronizing it
    device: str = ""  # storage: its walb device on the new host
    # storage: Standby everywhere while the primary archive holds its backup, which is where
    # a replace that stopped after go_standby leaves a target volume
    was_target: bool = False


@dataclass(frozen=True)
class ReplaceSeen:
    """The fixed facts of one replace and what the servers say."""

    role: str
    old: str
    new: str
    old_host: str
    new_host: str
    volumes: tuple[VolumeSeen, ...]
    primary_archive: str  # the group's primary archive now
    proxies: tuple[str, ...] = ()  # in priority order, after the replace
    storages: tuple[str, ...] = ()  # storages whose command line must change
    endpoints: Mapping[str, str] = field(default_factory=dict)  # id -> HOST:PORT
    new_running: bool = False  # the new server runs already (a replace run again)
    overflowed: tuple[str, ...] = ()  # 'STORAGE VOL' with an overflowed log
    command: str = "walbctr volume"  # how the operator calls walbctr, for fixes

    @property
    def primary(self) -> bool:
        return self.role == ARCHIVE and self.old == self.primary_archive


@dataclass(frozen=True)
class Action:
    """One operation of the replace: `op` names the Group API call or container action."""

    op: str  # deploy, copy-archive-info, stop-empty, wait-stopped, clear, recreate,
    #         replicate, stop-synchronizing, go-standby, init-storage, hash-backup, stop-server
    server: str  # the server it acts on
    what: str  # in the operator's words
    volume: str = ""
    source: str = ""  # copy-archive-info and replicate: where from
    sync: bool = False  # replicate: keep the destination synchronized
    device: str = ""  # init-storage
    calls: tuple[str, ...] = ()  # the walbc commands and container steps, in words


@dataclass(frozen=True)
class ReplacePlan:
    actions: tuple[Action, ...]
    refusals: tuple[Blocked, ...] = ()
    notes: tuple[str, ...] = ()


def plan_replace(seen: ReplaceSeen) -> ReplacePlan:
    """The actions that replace `seen.old` by `seen.new`, or why walb cannot do it now."""
    planner = {PROXY: _proxy_plan, STORAGE: _storage_plan}.get(seen.role)
    if planner is None:
        planner = _primary_plan if seen.primary else _secondary_plan
    actions, refusals, notes = planner(seen)
    refusals[:0] = [Blocked(f"{server} did not say the state of {v.name}", "see 'walbctr "
                            "status LAYOUT --volumes' and the server's log, then run again")
                    for v in seen.volumes for server, st in ((seen.old, v.state),
                                                             (seen.new, v.new_state))
                    if st == UNKNOWN]
    if refusals:
        return ReplacePlan((), tuple(refusals), tuple(notes))
    return ReplacePlan(tuple(actions), (), tuple(notes))


Planned = tuple[list[Action], list[Blocked], list[str]]


# --- shared pieces --------------------------------------------------------------------------


def _deploy(seen: ReplaceSeen) -> list[Action]:
    if seen.new_running:
        return []
    return [Action("deploy", seen.new, f"start {seen.new} ({seen.role}) on {seen.new_host} "
                   "and wait until it answers",
                   calls=(f"compose up {seen.new} on {seen.new_host}",
                          f"{seen.new}: get host-type"))]


def _recreate(seen: ReplaceSeen, flag: str) -> list[Action]:
    return [Action("recreate", s, f"restart {s} with its new {flag} ({seen.new} instead of "
                   f"{seen.old}), one storage at a time",
                   calls=(f"{s}: gate: no overflowed volume", f"{s}: shutdown graceful",
                          f"compose up {s} with the new command line",
                          f"{s}: get host-type; every volume in the state it had"))
            for s in seen.storages]


def _stop_old(seen: ReplaceSeen, keeps: str) -> Action:
    return Action("stop-server", seen.old, f"stop {seen.old} on {seen.old_host} gracefully; "
                  f"{keeps}", calls=(f"{seen.old}: shutdown graceful",))


def _overflow_refusals(seen: ReplaceSeen) -> list[Blocked]:
    """A storage restart would hide an overflow (the upgrade's gate); refused up front so
    that the replace does not stop half-way at the gate."""
    return [Blocked(f"{item.split()[0]}'s log device for {item.split()[1]} overflowed, and "
                    f"the replace restarts {item.split()[0]} with its new command line",
                    f"run '{seen.command} add {item.split()[1]} --storage {item.split()[0]} "
                    "--device DEVICE --hash' first (a hash backup is walb's remedy)")
            for item in seen.overflowed]


def _busy(seen: ReplaceSeen, vol: str, state: str, server: str = "") -> Blocked:
    return Blocked(f"{server or seen.old} has {vol} in state {state}: walb is still changing "
                   "it, and the replace starts only from settled states",
                   f"wait until it settles ('{seen.command} show {vol}'), then run the "
                   "replace again")


def _synchronize_calls(seen: ReplaceSeen, vol: str, dest: str, source: str) -> tuple[str, ...]:
    calls: list[str] = []
    for p in seen.proxies:
        calls += [f"{p}: stop {vol} empty (if started)",
                  f"{p}: archive-info add {vol} {dest} {seen.endpoints.get(dest, '?')}"]
    calls.append(f"{source}: replicate {vol} again (what arrived meanwhile)")
    calls += [f"{p}: start {vol}" for p in seen.proxies]
    calls.append("every storage: kick")
    return tuple(calls)


def _stop_sync_calls(seen: ReplaceSeen, vol: str, archive: str) -> tuple[str, ...]:
    calls: list[str] = []
    for p in seen.proxies:
        calls += [f"{p}: stop {vol} force (if started)", f"{p}: archive-info delete {vol} "
                  f"{archive}", f"{p}: start {vol} (if it still sends elsewhere)"]
    calls.append("every storage: kick")
    return tuple(calls)


# --- proxy ----------------------------------------------------------------------------------


def _proxy_plan(seen: ReplaceSeen) -> Planned:
    refusals = _overflow_refusals(seen)
    copies: list[Action] = []
    stops: list[Action] = []
    clears: list[Action] = []
    for v in seen.volumes:
        refusal = _proxy_refusal(seen, v)
        if refusal is not None:
            refusals.append(refusal)
            continue
        if v.state == P_CLEAR:
            continue
        copy = _copy_archive_info(seen, v)
        if copy is not None:
            copies.append(copy)
        if v.state in PROXY_ACTIVE:
            stops.append(Action("stop-empty", seen.old, f"stop {v.name} on {seen.old} "
                                "emptying it: every wdiff it holds goes to its archives first",
                                v.name, calls=(f"{seen.old}: stop {v.name} empty",
                                               f"{seen.old}: get state {v.name} (until Stopped)")))
        elif v.state in PROXY_STOPPING:
            stops.append(Action("wait-stopped", seen.old, f"wait until {v.name} is Stopped on "
                                f"{seen.old} (it is emptying)", v.name,
                                calls=(f"{seen.old}: get state {v.name} (until Stopped)",)))
        clears.append(Action("clear", seen.old, f"clear {v.name} on {seen.old}", v.name,
                             calls=tuple(f"{seen.old}: archive-info delete {v.name} {a}"
                                         for a in v.archives)))
    actions = [*_deploy(seen), *copies, *stops, *clears, *_recreate(seen, "-proxy"),
               _stop_old(seen, "its container and base dir stay")]
    return actions, refusals, []


def _proxy_refusal(seen: ReplaceSeen, v: VolumeSeen) -> Blocked | None:
    if v.state in PROXY_TRANSIENT and v.state not in (*PROXY_ACTIVE, *PROXY_STOPPING):
        return _busy(seen, v.name, v.state)
    if v.new_state in PROXY_TRANSIENT and v.new_state not in PROXY_ACTIVE:
        return _busy(seen, v.name, v.new_state, seen.new)
    if v.send_errors and v.state in PROXY_ACTIVE:
        archives = ", ".join(v.send_errors)
        return Blocked(f"{seen.old} failed to send {v.name} to {archives} (a wdiff send "
                       "error): emptying it would wait for ever",
                       f"kick it ('walbctr walbc LAYOUT {seen.old} kick {v.name}') once the "
                       "archive is back, check 'walbctr status LAYOUT --volumes', then run the "
                       "replace again")
    return None


def _copy_archive_info(seen: ReplaceSeen, v: VolumeSeen) -> Action | None:
    """walblib's copy_archive_info, except that a volume stopped on the old proxy stays
    stopped on the new one (the operator stopped it)."""
    start = v.state in PROXY_ACTIVE or v.state in PROXY_STOPPING
    missing = [a for a in v.archives if a not in v.new_archives]
    if not missing and (not start or v.new_state in PROXY_ACTIVE):
        return None
    calls = [f"{seen.new}: archive-info add {v.name} {a} {seen.endpoints.get(a, '?')} "
             f"(compression and delay as on {seen.old})" for a in missing]
    if start and v.new_state not in PROXY_ACTIVE:
        calls.append(f"{seen.new}: start {v.name}")
    return Action("copy-archive-info", seen.new, f"copy {seen.old}'s archive info of "
                  f"{v.name} ({', '.join(v.archives)}) to {seen.new}"
                  + ("" if start else f"; it stays Stopped there, as on {seen.old}"),
                  v.name, source=seen.old, calls=tuple(calls))


# --- archives -------------------------------------------------------------------------------


def _archive_refusal(seen: ReplaceSeen, v: VolumeSeen) -> Blocked | None:
    if v.state in ARCHIVE_TRANSIENT and v.state != "WdiffRecv":
        return _busy(seen, v.name, v.state)
    if v.new_state in ARCHIVE_TRANSIENT and v.new_state != "WdiffRecv":
        return _busy(seen, v.name, v.new_state, seen.new)
    if v.state == A_STOPPED:
        return Blocked(f"{seen.old} has {v.name} Stopped, and a replication copies only an "
                       "Archived volume", f"start it ('{seen.command} start {v.name} "
                       f"--server {seen.old}'), then run the replace again")
    busy = [a for a in v.actions if a in BLOCKING_ACTIONS]
    if busy:
        return Blocked(f"{seen.old} runs {', '.join(busy)} on {v.name}",
                       f"wait for it to finish ('walbctr walbc LAYOUT {seen.old} get "
                       "all-actions'), then run the replace again")
    if v.state == A_ARCHIVED and not v.restorable:
        return Blocked(f"{seen.old} has no restorable snapshot of {v.name} to replicate",
                       f"take one ('{seen.command} snapshot {v.name}'), then run the replace "
                       "again")
    if v.state == A_ARCHIVED and v.synchronizing is None:
        return Blocked(f"some proxies send {v.name} to {seen.old} and some do not, so it is "
                       "neither synchronizing nor not (walblib's is_synchronizing refuses it "
                       "too)", f"see which with '{seen.command} show {v.name}'; make them "
                       f"agree ('{seen.command} replicate {v.name} --to {seen.old} --sync' from "
                       "another archive, or remove it from the others), then run again")
    return None


def _replications(seen: ReplaceSeen, refusals: list[Blocked], notes: list[str]
                  ) -> tuple[list[Action], list[VolumeSeen]]:
    actions: list[Action] = []
    synced: list[VolumeSeen] = []
    for v in seen.volumes:
        refusal = _archive_refusal(seen, v)
        if refusal is not None:
            refusals.append(refusal)
            continue
        if v.state in (A_CLEAR, A_SYNC_READY):
            if v.state == A_SYNC_READY:
                notes.append(f"{v.name} holds no backup on {seen.old} yet (SyncReady): "
                             "nothing to copy")
            continue
        sync = bool(v.synchronizing)
        calls = [f"{seen.new}: init-vol {v.name}"] if v.new_state == A_CLEAR else []
        calls += [f"{seen.old}: replicate {v.name} gid LATEST "
                  f"{seen.endpoints.get(seen.new, '?')}",
                  f"{seen.new}: wait for the gid (get restorable {v.name})"]
        if sync:
            calls += _synchronize_calls(seen, v.name, seen.new, seen.old)
            synced.append(v)
        actions.append(Action(
            "replicate", seen.new, f"replicate {v.name} from {seen.old} to {seen.new}"
            + (" and keep it synchronized (every proxy sends its wdiffs there too)" if sync
               else " (not synchronizing, as on " + seen.old + ")"),
            v.name, source=seen.old, sync=sync, calls=tuple(calls)))
    return actions, synced


def _stop_synchronizing(seen: ReplaceSeen, volumes: list[VolumeSeen]) -> list[Action]:
    return [Action("stop-synchronizing", seen.old, f"stop synchronizing {v.name} at "
                   f"{seen.old}: the proxies stop sending its wdiffs there", v.name,
                   calls=_stop_sync_calls(seen, v.name, seen.old)) for v in volumes]


def _primary_plan(seen: ReplaceSeen) -> Planned:
    refusals = _overflow_refusals(seen)
    notes: list[str] = []
    replications, synced = _replications(seen, refusals, notes)
    actions = [*_deploy(seen), *replications, *_recreate(seen, "-archive"),
               *_stop_synchronizing(seen, synced),
               _stop_old(seen, "its container, base dir and backups (LVM volumes) stay")]
    return actions, refusals, notes


def _secondary_plan(seen: ReplaceSeen) -> Planned:
    refusals: list[Blocked] = []
    notes: list[str] = []
    replications, synced = _replications(seen, refusals, notes)
    actions = [*_deploy(seen), *replications, *_stop_synchronizing(seen, synced),
               _stop_old(seen, "its container, base dir and backups (LVM volumes) stay")]
    return actions, refusals, notes


# --- storage --------------------------------------------------------------------------------


def _storage_refusal(seen: ReplaceSeen, v: VolumeSeen) -> Blocked | None:
    if v.state in STORAGE_TRANSIENT:
        return _busy(seen, v.name, v.state)
    if v.new_state in STORAGE_TRANSIENT:
        return _busy(seen, v.name, v.new_state, seen.new)
    if v.state in (S_STOPPED, S_SYNC_READY):
        return Blocked(f"{seen.old} has {v.name} {v.state}: the replace carries target "
                       "volumes (by a hash backup from the new storage) and standby ones, "
                       "and this one is neither",
                       f"start it again ('{seen.command} start {v.name} --server {seen.old}') "
                       f"or back it up ('{seen.command} add {v.name} --storage {seen.old} "
                       "--device DEVICE --hash'), or remove it, then run the replace again")
    busy = {s: st for s, st in v.others.items() if st not in (S_STANDBY, S_CLEAR)}
    if (v.state == S_TARGET or v.was_target) and busy:
        where = ", ".join(f"{s} ({st})" for s, st in sorted(busy.items()))
        return Blocked(f"{v.name} is Target on {seen.old} but not Standby or Clear on "
                       f"{where}: a hash backup from {seen.new} needs every other storage "
                       "standing by", f"see '{seen.command} show {v.name}'")
    if not v.device:
        return Blocked(f"no walb device is known for {v.name} on {seen.new_host}",
                       f"give it with --device {v.name}=PATH")
    return None


def _storage_plan(seen: ReplaceSeen) -> Planned:
    refusals: list[Blocked] = []
    notes: list[str] = []
    standby: list[Action] = []
    inits: list[Action] = []
    backups: list[Action] = []
    a0 = seen.primary_archive
    for v in seen.volumes:
        if v.state == S_CLEAR and v.new_state == S_CLEAR:
            continue
        refusal = _storage_refusal(seen, v)
        if refusal is not None:
            refusals.append(refusal)
            continue
        target = v.state == S_TARGET or (v.state == S_STANDBY and v.was_target)
        if v.state == S_TARGET:
            standby.append(Action(
                "go-standby", seen.old, f"make {v.name} standby on {seen.old}", v.name,
                calls=(f"{seen.old}: stop {v.name} force",
                       *(f"{p}: archive-info delete {v.name} {a0}" for p in seen.proxies),
                       f"{seen.old}: reset-vol {v.name}", f"{seen.old}: start {v.name} standby")))
        if v.new_state == S_CLEAR:
            inits.append(Action(
                "init-storage", seen.new, f"initialize {v.name} on {seen.new} ({v.device})",
                v.name, device=v.device, calls=(f"{seen.new}: init-vol {v.name} {v.device}",
                                                f"{seen.new}: start {v.name} standby")))
        if target and v.new_state != S_TARGET:
            backups.append(Action(
                "hash-backup", seen.new, f"hash backup of {v.name} from {seen.new} to {a0} "
                "(only the blocks that differ are sent)", v.name, device=v.device,
                calls=(f"{seen.new}: stop {v.name} (standby)",
                       *(f"{s}: archive-info delete {v.name} {a} (stops its synchronization)"
                         for a in v.secondaries for s in seen.proxies),
                       *(f"{p}: archive-info add {v.name} {a0} {seen.endpoints.get(a0, '?')}; "
                         f"start {v.name}" for p in seen.proxies),
                       f"{seen.new}: hash-bkp {v.name}",
                       f"{a0}: wait for a new restorable snapshot of {v.name}")))
        notes += [f"{a} no longer synchronizes {v.name}: a hash backup stops every archive's "
                  f"synchronization but the primary's (walblib's hash_backup); "
                  f"'{seen.command} replicate {v.name} --to {a} --sync' brings it back"
                  for a in v.secondaries if target]
    actions = [*_deploy(seen), *standby, *inits, *backups,
               _stop_old(seen, "its container and base dir (its volumes, standby) stay")]
    return actions, refusals, notes


def describe(plan: ReplacePlan) -> list[str]:
    """The plan in words, every walbc step of each action indented under it."""
    lines = []
    for n, a in enumerate(plan.actions, 1):
        lines.append(f"  {n}. {a.what}")
        lines += [f"       {c}" for c in a.calls]
    return lines
