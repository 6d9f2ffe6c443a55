"""The next walbc step of a volume procedure, decided from what the servers say now.

walblib's Controller (upstream's Python 2 `python/walblib`) runs each procedure as a fixed
script of walbc calls and waits. Here each procedure is a pure function of the states just
observed that answers one thing: run this command on that server (`Step`), wait for a
server to finish what it does (`Wait`), it is done (`Done`), or it cannot go on without the
operator (`Blocked`, naming the server, the volume, its state and the command that fixes
it). The caller observes, asks, carries out the answer, and asks again: a procedure that
was interrupted continues from where the servers are, and no decision is taken twice.

Pure: standard library only. State names and the transient states walb passes through are
walblib's (v1.0.19 `python/walblib/__init__.py`, `doc/state-action.md`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

# Steady states, by role.
S_CLEAR, S_SYNC_READY, S_STOPPED, S_TARGET, S_STANDBY = (
    "Clear", "SyncReady", "Stopped", "Target", "Standby")
P_CLEAR, P_STOPPED, P_STARTED = "Clear", "Stopped", "Started"
A_CLEAR, A_SYNC_READY, A_ARCHIVED, A_STOPPED = "Clear", "SyncReady", "Archived", "Stopped"

STEADY = frozenset({S_CLEAR, S_SYNC_READY, S_STOPPED, S_TARGET, S_STANDBY, P_STARTED,
                    A_ARCHIVED})

# Transient states a step passes through (walblib's sDuringFullSync, pDuringStop...).
STORAGE_DURING_FULL = ("FullSync", S_STOPPED, "StartTarget")
STORAGE_DURING_HASH = ("HashSync", S_STOPPED, "StartTarget")
STORAGE_TRANSIENT = ("InitVol", "ClearVol", "StartStandby", "StopStandby", "FullSync",
                     "HashSync", "StartTarget", "StopTarget", "Reset", "WlogSend", "WlogRemove")
PROXY_ACTIVE = (P_STARTED, "WlogRecv")
PROXY_TRANSIENT = ("Start", "Stop", "ClearVol", "AddArchiveInfo", "DeleteArchiveInfo",
                   "WlogRecv", "WaitForEmpty")
ARCHIVE_ACTIVE = (A_ARCHIVED, "WdiffRecv", "HashSync", "ReplSyncAsServer")
ARCHIVE_DURING_REPLICATE = ("ReplSyncAsServer", "FullSync", "Resync")
ARCHIVE_TRANSIENT = ("InitVol", "ClearVol", "ResetVol", "Resync", "FullSync", "HashSync",
                     "WdiffRecv", "ReplSyncAsServer", "Stop", "Start")


@dataclass(frozen=True)
class Step:
    """Run `walbc ARGS` on `server`, then wait while it is in one of `settle` (walb's
    transient states for that command) and expect one of `goal`."""

    server: str
    args: tuple[str, ...]
    why: str
    settle: tuple[str, ...] = ()
    goal: tuple[str, ...] = ()
    volume: str = ""
    progress_on: str = ""  # an archive whose `get progress` counts this step's work


@dataclass(frozen=True)
class Wait:
    """Nothing to run: `server` is busy with the volume; observe again shortly."""

    server: str
    why: str
    progress_on: str = ""
    volume: str = ""


@dataclass(frozen=True)
class Done:
    what: str


@dataclass(frozen=True)
class Blocked:
    """The procedure cannot go on from these states; `fix` is what the operator runs."""

    message: str
    fix: str


Next = Step | Wait | Done | Blocked


@dataclass(frozen=True)
class ProxySeen:
    state: str
    archives: tuple[str, ...] = ()  # its archive infos for the volume


@dataclass(frozen=True)
class AddSeen:
    """What `volume add` needs to know, observed on the volume's servers."""

    storage: str  # the storage's state of the volume
    archive: str  # the primary archive's
    proxies: Mapping[str, ProxySeen]  # in the storage's proxy order
    restorable: tuple[int, ...] = ()  # on the archive
    overflow: bool = False
    kicked: frozenset[str] = field(default_factory=frozenset)  # proxies kicked this run


@dataclass(frozen=True)
class AddPlan:
    """The fixed facts of one `volume add`: which servers, the device, full or hash."""

    volume: str
    storage: str
    archive: str
    archive_endpoint: str  # HOST:PORT the proxies reach the archive at
    device: str
    hash_backup: bool = False
    command: str = "walbctr volume"  # how the operator calls walbctr, for fixes


def next_add_step(plan: AddPlan, seen: AddSeen) -> Next:
    """walblib's init_storage + full_backup (or hash_backup), one step at a time."""
    s, a, vol = plan.storage, plan.archive, plan.volume
    if seen.storage in STORAGE_TRANSIENT:
        return Wait(s, f"{s} is in {seen.storage} for {vol}", progress_on=a, volume=vol)
    if seen.archive in ARCHIVE_TRANSIENT and seen.archive != "WdiffRecv":
        return Wait(a, f"{a} is in {seen.archive} for {vol}", progress_on=a, volume=vol)
    if seen.overflow and not plan.hash_backup:
        # walb-storage stops a Target volume whose log overflowed: only a hash backup
        # brings the archive's copy back (walb-facts: recovery duties).
        return Blocked(f"{s}'s log device for {vol} overflowed: its changes since then are "
                       "lost to the archive",
                       f"run '{plan.command} add {vol} --storage {s} --device {plan.device} "
                       "--hash' (a hash backup sends the blocks that differ)")
    if seen.storage == S_TARGET:
        return _after_backup(plan, seen)
    return _prepare(plan, seen)


def _prepare(plan: AddPlan, seen: AddSeen) -> Next:
    s, a, vol = plan.storage, plan.archive, plan.volume
    if seen.storage not in (S_CLEAR, S_STANDBY, S_STOPPED, S_SYNC_READY):
        return Blocked(f"{s} has {vol} in state {seen.storage}, which no backup starts from",
                       f"see '{plan.command} show {vol}'")
    # Refused before anything is touched: nothing half-done.
    refusal = _archive_refusal(plan, seen)
    if refusal is not None:
        return refusal
    storage = _storage_ready(plan, seen.storage)
    if storage is not None:
        return storage
    if seen.archive == A_CLEAR:
        return Step(a, ("init-vol", vol), f"initialize {vol} on {a}", settle=("InitVol",),
                    goal=(A_SYNC_READY,), volume=vol)
    if seen.archive == A_STOPPED:
        return Step(a, ("start", vol), f"start {vol} on {a}", settle=("Start",),
                    goal=ARCHIVE_ACTIVE, volume=vol)
    for pid, p in seen.proxies.items():
        proxy = _proxy_ready(plan, pid, p)
        if proxy is not None:
            return proxy
    if plan.hash_backup:
        return Step(s, ("hash-bkp", vol), f"hash backup of {vol} from {s} to {a}",
                    settle=STORAGE_DURING_HASH, goal=(S_TARGET,), volume=vol, progress_on=a)
    return Step(s, ("full-bkp", vol), f"full backup of {vol} from {s} to {a}",
                settle=STORAGE_DURING_FULL, goal=(S_TARGET,), volume=vol, progress_on=a)


def _storage_ready(plan: AddPlan, state: str) -> Step | None:
    """What brings the storage's volume to SyncReady, where a backup starts."""
    s, vol = plan.storage, plan.volume
    if state == S_CLEAR:
        return Step(s, ("init-vol", vol, plan.device), f"initialize {vol} on {s} ({plan.device})",
                    settle=("InitVol",), goal=(S_SYNC_READY,), volume=vol)
    if state == S_STANDBY:
        return Step(s, ("stop", vol), f"stop standby of {vol} on {s} for the backup",
                    settle=(S_STANDBY, "StopStandby"), goal=(S_SYNC_READY,), volume=vol)
    if state == S_STOPPED:
        return Step(s, ("reset-vol", vol), f"reset {vol} on {s} for the backup",
                    settle=("Reset",), goal=(S_SYNC_READY,), volume=vol)
    return None


def _archive_refusal(plan: AddPlan, seen: AddSeen) -> Blocked | None:
    a, vol, cmd = plan.archive, plan.volume, plan.command
    if plan.hash_backup and seen.archive in (A_CLEAR, A_SYNC_READY):
        return Blocked(f"{a} holds no backup of {vol} (state {seen.archive}): a hash backup "
                       "needs one to compare with",
                       f"run '{cmd} add {vol} --storage {plan.storage} --device "
                       f"{plan.device}' without --hash for a full backup")
    if not plan.hash_backup and seen.archive in ARCHIVE_ACTIVE:
        return Blocked(f"{a} already holds a backup of {vol} (state {seen.archive}), and a "
                       "full backup needs an empty archive volume",
                       f"run '{cmd} add {vol} --storage {plan.storage} --device "
                       f"{plan.device} --hash' to resynchronize it by hash backup (only "
                       "differing blocks are sent)")
    return None


def _proxy_ready(plan: AddPlan, pid: str, p: ProxySeen) -> Step | Wait | None:
    a, vol = plan.archive, plan.volume
    if p.state in PROXY_TRANSIENT and p.state not in PROXY_ACTIVE:
        return Wait(pid, f"{pid} is in {p.state} for {vol}", volume=vol)
    if a not in p.archives:
        if p.state in PROXY_ACTIVE:
            return Step(pid, ("stop", vol, "force"), f"stop {vol} on {pid} to add {a}",
                        settle=("Stop", "WaitForEmpty", *PROXY_ACTIVE), goal=(P_STOPPED,),
                        volume=vol)
        return Step(pid, ("archive-info", "add", vol, a, plan.archive_endpoint),
                    f"tell {pid} to send {vol} to {a} at {plan.archive_endpoint}",
                    settle=("AddArchiveInfo",), goal=(P_STOPPED,), volume=vol)
    if p.state == P_STOPPED:
        return Step(pid, ("start", vol), f"start {vol} on {pid}", settle=("Start",),
                    goal=PROXY_ACTIVE, volume=vol)
    return None


def _after_backup(plan: AddPlan, seen: AddSeen) -> Next:
    s, a, vol = plan.storage, plan.archive, plan.volume
    if plan.hash_backup and (seen.overflow or seen.archive not in ARCHIVE_ACTIVE):
        # The remedy for a lost log (walb-facts: overflow -> hash backup): stop, reset,
        # then compare with the archive.
        return Step(s, ("stop", vol), f"stop {vol} on {s} for a hash backup",
                    settle=(S_TARGET, "StopTarget"), goal=(S_STOPPED,), volume=vol)
    if seen.archive not in ARCHIVE_ACTIVE:
        return Blocked(f"{s} sends {vol} (state Target) but {a} holds no backup of it "
                       f"(state {seen.archive})",
                       f"run '{plan.command} add {vol} --storage {s} --device {plan.device} "
                       "--hash' (or stop and reset it on the storage for a full backup)")
    if seen.restorable:
        return Done(f"{vol} is backed up on {a}: latest restorable snapshot gid "
                    f"{max(seen.restorable)}")
    for pid, p in seen.proxies.items():
        if pid not in seen.kicked and p.state in PROXY_ACTIVE:
            return Step(pid, ("kick", vol, a), f"kick {pid} to send {vol} to {a} now",
                        volume=vol)
    return Wait(a, f"waiting for {a}'s first restorable snapshot of {vol}", volume=vol)


# --- one-server checks ---------------------------------------------------------------------


def require(server: str, volume: str, state: str, allowed: Sequence[str], doing: str,
            fix: str) -> Blocked | None:
    """Blocked unless `server`'s `volume` is in one of `allowed` for `doing`."""
    if state in allowed:
        return None
    steady = [a for a in allowed if a in STEADY] or list(allowed)
    return Blocked(f"{server} has {volume} in state {state}; {doing} needs "
                   f"{' or '.join(steady)}", fix)


def replicate_kind(dest_state: str) -> str | None:
    """How walb replicates to an archive in `dest_state`: 'init' (init-vol it first),
    'copy' (a full or diff replication), 'wait' (one is running) or None (cannot)."""
    if dest_state == A_CLEAR:
        return "init"
    if dest_state in ARCHIVE_DURING_REPLICATE:
        return "wait"
    if dest_state in (A_SYNC_READY, A_ARCHIVED):
        return "copy"
    return None
