"""Which policy task an archive should run next: walb-worker's choice
(upstream's python/walb_worker.py, Worker.selectTask), as a pure function.

In walb-worker's order, one task at a time:
1. an apply that was interrupted (the base is `<|B|-->|E|>`): finish it;
2. apply the diffs older than the keep period: the volume with the most bytes to apply;
3. merge a volume with `threshold` diffs or more (the one with most diffs);
4. replicate to an archive whose copy is behind: the pair replicated longest ago first,
   up to `max_send_size` of diffs at once;
5. merge small diffs of a volume not merged for `interval`;
and, walbctr's own, 6. verify a volume not verified for `verify.interval`.
Never on a volume with a running action or in a transient state; a merge never joins
across a gid a replica stands at (walb-worker's notMergeGidL), so replication can go on
from there.

Standard library only: it runs in the keeper, whose policy arrives as plain JSON.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from walbctr.walb.history import Diff, parse_diffs
from walbctr.walb.volumes import (
    Answer,
    parse_all_actions,
    parse_metastate,
    parse_names,
    parse_restorable,
    parse_state,
    split_sections,
)


@dataclass(frozen=True)
class Merge:
    max_diffs: int = 10
    max_size: int = 1 << 30
    threshold: int = 20
    interval: int = 3600


@dataclass(frozen=True)
class Replicate:
    to: tuple[str, ...] = ()
    interval: int = 600
    max_send_size: int = 0


@dataclass(frozen=True)
class Verify:
    interval: int = 86400
    archive: str | None = None


@dataclass(frozen=True)
class VolumePolicy:
    keep_period: int | None = None
    apply_interval: int = 86400
    merge: Merge | None = None
    replicate: Replicate | None = None
    verify: Verify | None = None
    paused: bool = False


@dataclass(frozen=True)
class Policy:
    group: VolumePolicy
    volumes: Mapping[str, VolumePolicy] = field(default_factory=dict)
    max_tasks: int = 1

    def of(self, volume: str) -> VolumePolicy:
        return self.volumes.get(volume, self.group)


def _volume_policy(d: Mapping[str, object], base: VolumePolicy | None = None,
                   replicas: tuple[str, ...] = ()) -> VolumePolicy:
    def sub(key: str, kind: type, fallback: object) -> object:
        if key not in d:
            return fallback
        value = d[key]
        if value is None:
            return None
        assert isinstance(value, dict)
        if kind is Replicate:
            to = value.get("to")
            value = {**value, "to": tuple(to) if to is not None else replicas}
        return kind(**value)

    b = base or VolumePolicy()
    keep = d.get("keep_period", b.keep_period)
    interval = d.get("apply_interval") or b.apply_interval
    return VolumePolicy(
        keep_period=int(keep) if isinstance(keep, int) else None,
        apply_interval=int(interval) if isinstance(interval, int) else b.apply_interval,
        merge=sub("merge", Merge, b.merge),  # type: ignore[arg-type]
        replicate=sub("replicate", Replicate, b.replicate),  # type: ignore[arg-type]
        verify=sub("verify", Verify, b.verify),  # type: ignore[arg-type]
        paused=bool(d.get("paused", False)))


def parse_policy(d: Mapping[str, object], replicas: Sequence[str]) -> Policy:
    """The policy as the keeper's configuration carries it (the layout's `policy` block,
    sizes and durations already in bytes and seconds); `replicas`: the non-primary
    archives, where `replicate.to` is not given."""
    reps = tuple(replicas)
    group = _volume_policy({k: v for k, v in d.items() if k not in ("volumes", "max_tasks")},
                           replicas=reps)
    vols = d.get("volumes") or {}
    assert isinstance(vols, dict)
    max_tasks = d.get("max_tasks", 1)
    return Policy(group, {name: _volume_policy(v, group, reps) for name, v in vols.items()},
                  int(max_tasks) if isinstance(max_tasks, int) else 1)


@dataclass(frozen=True)
class ArchiveVolume:
    """What the source archive says of one volume, and what the keeper remembers of it."""

    name: str
    state: str
    applying_to: int | None  # the base is being applied up to this gid
    snapshots: tuple[tuple[int, datetime | None], ...]  # `get restorable VOL all`, oldest first
    diffs: tuple[Diff, ...]  # `get applicable-diff VOL`
    busy: bool = False  # an action runs, or a transient state
    replica_gids: Mapping[str, int | None] = field(default_factory=dict)  # archive -> latest
    replica_states: Mapping[str, str] = field(default_factory=dict)
    last_done: Mapping[str, float] = field(default_factory=dict)  # "apply", "merge",
    # "verify", "replicate ARCHIVE" -> unix time


@dataclass(frozen=True)
class Task:
    kind: str  # apply, merge, replicate, verify
    volume: str
    args: tuple[str, ...]  # walbc arguments on the source archive (replicate: + HOST:PORT)
    reason: str
    gid: int = 0
    target: str = ""  # replicate: the destination archive; verify: the archive


ACTIVE = ("Archived",)


def next_task(vols: Sequence[ArchiveVolume], policy: Policy, now: float) -> Task | None:
    ready = [v for v in vols if not v.busy and v.state in ACTIVE
             and not policy.of(v.name).paused]
    for choose in (_resume_apply, _apply, _merge_many, _replicate, _merge_due, _verify):
        task = choose(ready, policy, now)
        if task is not None:
            return task
    return None


def _resume_apply(vols: Sequence[ArchiveVolume], _p: Policy, _now: float) -> Task | None:
    for v in vols:
        if v.applying_to is not None:
            return Task("apply", v.name, ("apply", v.name, str(v.applying_to)),
                        f"finish the apply of {v.name} up to gid {v.applying_to}",
                        v.applying_to)
    return None


def _due(v: ArchiveVolume, what: str, interval: int, now: float) -> bool:
    last = v.last_done.get(what)
    return last is None or now >= last + interval


def _apply(vols: Sequence[ArchiveVolume], policy: Policy, now: float) -> Task | None:
    best: tuple[int, ArchiveVolume, int] | None = None
    for v in vols:
        p = policy.of(v.name)
        if p.keep_period is None or not _due(v, "apply", p.apply_interval, now):
            continue
        older = [g for g, t in v.snapshots[1:] if t is not None and t.timestamp() <= now -
                 p.keep_period]
        if not older:
            continue
        gid = older[-1]
        size = sum(d.size for d in v.diffs if d.e.begin <= gid)
        if best is None or size > best[0]:
            best = (size, v, gid)
    if best is None:
        return None
    size, v, gid = best
    keep = policy.of(v.name).keep_period
    return Task("apply", v.name, ("apply", v.name, str(gid)),
                f"diffs of {v.name} up to gid {gid} are older than the keep period "
                f"({keep} s): {size} bytes into the base image", gid)


def _merge_task(v: ArchiveVolume, m: Merge, why: str) -> Task | None:
    keep = frozenset(g for g in v.replica_gids.values() if g is not None)
    run = merge_range(v.diffs, m.max_size, m.max_diffs, keep)
    if run is None:
        return None
    b, e = run
    return Task("merge", v.name, ("merge", v.name, str(b), "gid", str(e)),
                f"{why}: merge the diffs of {v.name} from gid {b} to {e}", e)


def _merge_many(vols: Sequence[ArchiveVolume], policy: Policy, _now: float) -> Task | None:
    return _first_merge(vols, policy, lambda v, m: len(v.diffs) >= m.threshold,
                        lambda v, m: f"{len(v.diffs)} diffs (threshold {m.threshold})")


def _merge_due(vols: Sequence[ArchiveVolume], policy: Policy, now: float) -> Task | None:
    return _first_merge(vols, policy, lambda v, m: _due(v, "merge", m.interval, now),
                        lambda _v, m: f"not merged for {m.interval} s")


def _first_merge(vols: Sequence[ArchiveVolume], policy: Policy,
                 wanted: Callable[[ArchiveVolume, Merge], bool],
                 why: Callable[[ArchiveVolume, Merge], str]) -> Task | None:
    """The merge of the volume with most diffs among those `wanted`, walb-worker's pick."""
    chosen = [(v, m) for v in vols if (m := policy.of(v.name).merge) is not None
              and wanted(v, m)]
    for v, m in sorted(chosen, key=lambda x: -len(x[0].diffs)):
        task = _merge_task(v, m, why(v, m))
        if task is not None:
            return task
    return None


def _replicate(vols: Sequence[ArchiveVolume], policy: Policy, now: float) -> Task | None:
    behind: list[tuple[float, ArchiveVolume, str]] = []
    for v in vols:
        r = policy.of(v.name).replicate
        if r is None or not v.snapshots:
            continue
        latest = v.snapshots[-1][0]
        for dst in r.to:
            if v.replica_states.get(dst) not in ("Clear", "SyncReady", "Archived"):
                continue  # away, or a replication already runs
            if not _due(v, f"replicate {dst}", r.interval, now):
                continue
            if v.replica_gids.get(dst) == latest:
                continue
            behind.append((v.last_done.get(f"replicate {dst}", 0.0), v, dst))
    if not behind:
        return None
    _, v, dst = min(behind, key=lambda x: x[0])
    r = policy.of(v.name).replicate
    assert r is not None
    have = v.replica_gids.get(dst)
    gid = gid_to_send(v.diffs, r.max_send_size, have) if have is not None else None
    gid = gid if gid is not None else v.snapshots[-1][0]
    kind = "a full copy" if have is None else f"from gid {have}"
    return Task("replicate", v.name, ("replicate", v.name, "gid", str(gid)),
                f"{dst}'s copy of {v.name} is behind: {kind} up to gid {gid}", gid, dst)


def _verify(vols: Sequence[ArchiveVolume], policy: Policy, now: float) -> Task | None:
    for v in vols:
        ver = policy.of(v.name).verify
        if ver is None or not v.snapshots or not _due(v, "verify", ver.interval, now):
            continue
        gid = v.snapshots[-1][0]
        return Task("verify", v.name, ("restore", v.name, str(gid)),
                    f"{v.name} not verified for {ver.interval} s: restore gid {gid}", gid,
                    ver.archive or "")
    return None


def merge_range(diffs: Sequence[Diff], max_size: int, max_nr: int,
                keep: frozenset[int] = frozenset()) -> tuple[int, int] | None:
    """walb-worker's getMergeGidRange: of the runs of at least two diffs where the first is
    not a hash-backup (compared) diff and the others are mergeable and not compared, at
    most `max_nr` diffs and `max_size` bytes, not spanning a gid in `keep` (strictly
    inside), the run with the smallest average diff size; (gid begin, gid end)."""
    best: tuple[float, int, int] | None = None
    i = 0
    while i < len(diffs):
        first = diffs[i]
        if first.compared or first.size > max_size:
            i += 1
            continue
        total, j = first.size, i + 1
        while j < len(diffs) and j - i < max_nr:
            d = diffs[j]
            inside = any(first.b.begin < g < d.e.begin for g in keep)
            if not d.mergeable or d.compared or inside or total + d.size > max_size:
                break
            total += d.size
            j += 1
        if j - i >= 2:
            avg = total / (j - i)
            if best is None or avg < best[0]:
                best = (avg, diffs[i].b.begin, diffs[j - 1].e.begin)
        i = j if j > i + 1 else i + 1
    return None if best is None else (best[1], best[2])


def gid_to_send(diffs: Sequence[Diff], max_send_size: int, have: int) -> int | None:
    """walb-worker's getGidToRepl: the gid a replication should go up to so that it sends
    at most `max_send_size` bytes of diffs past `have` (the replica's latest gid); None to
    send all (no limit, or nothing to limit)."""
    if max_send_size == 0:
        return None
    pending = [d for d in diffs if d.b.begin >= have]
    if len(pending) <= 1:
        return None
    total = 0
    for d in pending:
        total += d.size
        if total > max_send_size:
            return d.e.begin if d is not pending[0] else pending[0].e.begin
    return None


# --- what the worker reads: one process per archive ---------------------------------------
#
# As walbctr.walb.volumes' batch query: a constant sh script, the address and port as
# arguments, one '@@ KEY' section per walbc answer, '@@end' last.

_FACTS = r"""set -f
a=$1 p=$2 mode=$3; shift 3
q() { printf '@@ %s\n' "$1"; shift; walbc -a "$a" -p "$p" -to 10 -retry 0 "$@" 2>&1
      printf '@@rc %s\n' "$?"; }
vols=$(walbc -a "$a" -p "$p" -to 10 -retry 0 get vol 2>&1); rc=$?
printf '@@ vol\n%s\n@@rc %s\n' "$vols" "$rc"
[ $rc = 0 ] || { echo @@end; exit 0; }
[ "$mode" = list ] && { echo @@end; exit 0; }
[ "$mode" = source ] && q all-actions get all-actions
for v in $vols; do
  if [ $# -gt 0 ]; then
    w=; for x in "$@"; do [ "$x" = "$v" ] && w=1; done; [ -n "$w" ] || continue
  fi
  st=$(walbc -a "$a" -p "$p" -to 10 -retry 0 get state "$v" 2>&1); rc=$?
  printf '@@ state %s\n%s\n@@rc %s\n' "$v" "$st" "$rc"
  # Only an Archived volume has a base and diffs to ask for: walb-archive logs every
  # refused question as an ERROR, and its log is the operator's.
  [ "$st" = Archived ] || continue
  if [ "$mode" = source ]; then
    q "base $v" get base "$v"; q "restorable $v" get restorable "$v" all
    q "diff $v" get applicable-diff "$v"
  else
    q "restorable $v" get restorable "$v"
  fi
done
echo @@end
"""


def facts_argv(address: str, port: int, source: bool,
               only: Sequence[str] | None = None) -> list[str]:
    """The argv that reads an archive's volumes for the worker: as the source of tasks
    (states, bases, every snapshot, applicable diffs, running actions), or as a replica
    (states and restorable snapshots); only the volumes in `only` when given (a volume
    name is one argument, never script text)."""
    return ["sh", "-c", _FACTS, "sh", address, str(port), "source" if source else "replica",
            *(only or ())]


def names_argv(address: str, port: int) -> list[str]:
    """The argv that lists an archive's volumes (`get vol`), as a facts section."""
    return ["sh", "-c", _FACTS, "sh", address, str(port), "list"]


def parse_names_answer(text: str) -> list[str]:
    s = split_sections(text)
    if not s["vol"].ok:
        raise ValueError(f"get vol failed: {s['vol'].error}")
    return parse_names(s["vol"].text)


MIN_RECHECK_S = 60  # the policy's intervals are minutes to days: reading more often is waste


def recheck_after(p: VolumePolicy) -> float:
    """How long after reading a volume that got no task it is worth reading again: the
    shortest interval its policy has (a task can come due no sooner), at least a minute
    unless the policy itself is faster."""
    intervals = [p.apply_interval] if p.keep_period is not None else []
    intervals += [x.interval for x in (p.merge, p.replicate, p.verify) if x is not None]
    if not intervals:
        return float("inf")
    shortest = min(intervals)
    return shortest if shortest < MIN_RECHECK_S else max(MIN_RECHECK_S, shortest / 4)


def _ok(sections: Mapping[str, Answer], key: str) -> str | None:
    a = sections.get(key)
    return a.text if a is not None and a.ok else None


def parse_replica(text: str) -> dict[str, tuple[str, int | None]]:
    """A replica's volumes: name -> (state, latest restorable gid or None)."""
    s = split_sections(text)
    if not s["vol"].ok:
        raise ValueError(f"get vol failed: {s['vol'].error}")
    out: dict[str, tuple[str, int | None]] = {}
    for v in parse_names(s["vol"].text):
        st = s.get(f"state {v}")
        r = s.get(f"restorable {v}")
        gids = [x.gid for x in parse_restorable(r.text)] if r is not None and r.ok else []
        out[v] = (parse_state(st.text) if st is not None and st.ok else "unknown",
                  max(gids) if gids else None)
    return out


def parse_source(text: str, replicas: Mapping[str, Mapping[str, tuple[str, int | None]]],
                 last_done: Mapping[str, Mapping[str, float]]) -> list[ArchiveVolume]:
    """The source archive's volumes for next_task, joined with what the replicas hold
    (archive -> volume -> (state, latest gid); a replica that did not answer is absent,
    so its volumes look away) and what the keeper remembers (volume -> task -> time)."""
    s = split_sections(text)
    if not s["vol"].ok:
        raise ValueError(f"get vol failed: {s['vol'].error}")
    acts = s.get("all-actions")
    running = parse_all_actions(acts.text) if acts is not None and acts.ok else {}
    out = []
    for v in parse_names(s["vol"].text):
        state = _ok(s, f"state {v}")
        base = (_ok(s, f"base {v}") or "").strip()
        rest, diff = _ok(s, f"restorable {v}"), _ok(s, f"diff {v}")
        out.append(ArchiveVolume(
            name=v, state=parse_state(state) if state is not None else "unknown",
            applying_to=parse_metastate(base)[1] if base else None,
            snapshots=tuple((x.gid, x.time) for x in parse_restorable(rest or "")),
            diffs=tuple(parse_diffs(diff or "")),
            busy=any(n > 0 for n in running.get(v, {}).values()),
            replica_gids={a: vols[v][1] if v in vols else None for a, vols in replicas.items()},
            replica_states={a: vols[v][0] if v in vols else "Clear"
                            for a, vols in replicas.items()},
            last_done=dict(last_done.get(v, {}))))
    return out
