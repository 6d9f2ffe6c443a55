"""`walbctr replace`: one server moved to another host of the layout, as upstream's
doc/replace.md does it by hand (walbctr.walb.replace_steps has the procedure per role).

In order: the new layout is computed (the server's `host` and `id` changed in the file's
own text, walbctr.layout.edit) and validated; the group is read (every server running,
each volume's state on the servers the procedure touches) and planned; the new server's
host is checked (check-host's checks of it, an empty base dir, a storage's walb devices);
only then does anything change, one action at a time: the new server is started alone
(deploy.start_servers), the volumes are moved with the Group API, the storages whose
command lines name the old server are recreated one by one with the rolling restart's
gates (upgrade.Runner), and the old server is stopped gracefully, its container and data
kept. The layout file is written last (--write), through a temporary file renamed over
it, the old one kept as LAYOUT.bak.

Interrupted, the same command continues: every action is decided again from the
servers' states, and the layout is unchanged until the end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from walbctr.commands import keeper_container as keeper_service
from walbctr.commands.deploy import preflight, start_servers
from walbctr.commands.replace_host import new_server_problems
from walbctr.commands.upgrade import Options, Runner
from walbctr.commands.upgrade import Result as RunResult
from walbctr.commands.upgrade import Step as RunStep
from walbctr.display import ServerBoard, StepLines
from walbctr.docker.compose_files import write_compose_files
from walbctr.docker.containers import Observed
from walbctr.docker.fleet import Fleet
from walbctr.docker.lifecycle import stop_container
from walbctr.docker.state import GroupLock, refuse_maintained
from walbctr.errors import EXIT_BAD_INPUT, LayoutError, WalbctrError, explain
from walbctr.group import Group, Progress
from walbctr.layout.edit import ServerEdit, default_new_id, move_server, moved_data
from walbctr.layout.loader import load_layout
from walbctr.layout.server import START_ORDER, Role, Server
from walbctr.layout.values import server_id as id_finding
from walbctr.render.compose import desired_hashes
from walbctr.render.keeper_service import monitor_of
from walbctr.walb import replace_steps, steps
from walbctr.walb.replace_steps import Action, ReplacePlan, ReplaceSeen, VolumeSeen
from walbctr.walb.volumes import VolumeRecord

if TYPE_CHECKING:
    from walbctr.display import ProgressMode
    from walbctr.layout.spec import Layout


class BadRequestError(WalbctrError):
    """The command's arguments cannot be carried out; nothing was done."""

    exit_code = EXIT_BAD_INPUT


@dataclass(frozen=True)
class Request:
    server: str
    host: str
    new_id: str | None = None
    devices: Mapping[str, str] = field(default_factory=dict)  # storage: volume -> device
    write: bool = False
    dry_run: bool = False
    timeout_s: float = 86400.0


@dataclass(frozen=True)
class Move:
    """The layouts of one replace: before, after, and both servers at once (the Group API
    works on that one while the old and the new server run side by side)."""

    old_layout: Layout
    new_layout: Layout
    both: Layout
    old: Server
    new: Server
    edit: ServerEdit


@dataclass
class Outcome:
    move: Move
    plan: ReplacePlan
    done: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    written: Path | None = None
    seconds: float = 0.0


# --- the new layout (no Docker) -----------------------------------------------------------


def plan_move(layout: Layout, text: str, request: Request) -> Move:
    """The new layout, validated; every bad argument refused in one paragraph."""
    try:
        old = layout.server(request.server)
    except WalbctrError as err:
        raise BadRequestError(f"{err.message}; nothing was done", err.fix) from None
    if request.host not in layout.hosts:
        raise BadRequestError(
            f"{request.host!r} is not a host of {layout.source}, so {old.id} cannot move "
            f"there; nothing was done",
            f"the hosts are: {', '.join(layout.hosts)}; add the new host under 'hosts:' "
            "(address and engine) first, then run the replace again")
    if request.host == old.host:
        raise BadRequestError(
            f"{old.id} runs on {old.host} already; a replace moves a server to another host "
            "(both run side by side while the volumes move); nothing was done",
            f"name another host with --host (the hosts are: {', '.join(layout.hosts)})")
    new_id = request.new_id or default_new_id(layout, old.id)
    bad = id_finding(new_id)
    if bad is not None:
        raise BadRequestError(f"--id {new_id!r} is not {bad[0]}; nothing was done", bad[1])
    if new_id.lower() in {s.id.lower() for s in layout.servers}:
        raise BadRequestError(f"--id {new_id} is taken in {layout.source} (ids are compared "
                              "case-insensitively); nothing was done",
                              f"leave --id out for the next free one "
                              f"({default_new_id(layout, old.id)}), or name another")
    edit = move_server(text, layout.source, layout, old.id, request.host, new_id)
    if request.write and edit.new_text is None:
        raise BadRequestError(
            f"{layout.source} gives {old.id} its id or host through an alias or merge key, "
            "so walbctr cannot edit it in place with --write; nothing was done",
            "make these changes yourself after the replace (run it without --write):\n  "
            + "\n  ".join(edit.changes))
    new_layout = _load_new(layout, edit, old, request.host, new_id)
    new = new_layout.server(new_id)
    servers = sorted((*layout.servers, new), key=lambda s: START_ORDER.index(s.role))
    both = dataclasses.replace(layout, servers=tuple(servers),
                               hosts={**layout.hosts, **new_layout.hosts})
    return Move(layout, new_layout, both, old, new, edit)


def _load_new(layout: Layout, edit: ServerEdit, old: Server, host: str,
              new_id: str) -> Layout:
    text = edit.new_text
    if text is None:  # checked on the data alone: the lines are not the file's
        text = yaml.safe_dump(moved_data(edit.old_text, old.role.section, old.index, host,
                                         new_id, old.id), sort_keys=False)
    try:
        return load_layout(text, layout.source)
    except LayoutError as err:
        raise BadRequestError(
            f"with {old.id} moved to {host} as {new_id}, the layout would not be valid; "
            f"nothing was done:\n{err.message}",
            "fix the layout (the edit changes no line number) and run the replace again") \
            from None


# --- what the servers say -------------------------------------------------------------------


@dataclass
class Seen:
    observed: dict[str, Observed]
    records: dict[str, dict[str, VolumeRecord]]  # server -> volume -> record
    new_running: bool
    finished: bool  # the old server is stopped and the new runs: only the layout is left


def observe(move: Move, group: Group) -> Seen:
    """Every server's container and the volumes of the servers the procedure reads."""
    fleet = Fleet(move.both)
    observed = fleet.observe()
    new_running = _new_running(move, fleet, observed.get(move.new.id))
    old = observed.get(move.old.id)
    finished = new_running and (old is None or old.status != "running")
    down = [f"{s.id} ({observed[s.id].status if s.id in observed else 'no container'})"
            for s in move.old_layout.servers if s.id != move.old.id or not finished
            if s.id not in observed or observed[s.id].status != "running"]
    if down:
        raise WalbctrError(
            f"group {move.old_layout.group} is not all running (not running: "
            f"{', '.join(down)}); walb's replace procedure asks the servers to move the "
            "volumes, so nothing was done",
            f"bring the group up with 'walbctr up {move.old_layout.source}' first")
    ids = [] if finished else [s.id for s in move.both.servers
                               if s.id != move.new.id or new_running]
    read = fleet.each(ids, group.calls.batch)  # one exec per server
    records = {}
    for sid, got in read.items():
        if isinstance(got, Exception):
            raise got
        records[sid] = {r.name: r for r in got}
    return Seen(observed, records, new_running, finished)


def _new_running(move: Move, fleet: Fleet, obs: Observed | None) -> bool:
    """Whether the new server runs already as the new layout wants it (a replace run
    again); any other container by its name is refused."""
    if obs is None:
        return False
    host = move.new.host
    wanted = desired_hashes(move.new_layout, [host], fleet.old_engines([host]))[move.new.id]
    if obs.status == "running" and obs.config_hash == wanted and fleet.owns(obs):
        return True
    raise WalbctrError(
        f"a container {obs.name} is there already ({obs.status}), and it is not {move.new.id} "
        f"as the edited layout runs it; nothing was done",
        f"remove it ('docker rm {obs.name}' on {host}; its data stays) or give another --id")


def _seen_for_plan(move: Move, seen: Seen, group: Group, request: Request) -> ReplaceSeen:
    """The facts plan_replace decides from."""
    lay = move.new_layout
    role = move.old.role
    stale = []
    if role is Role.PROXY or (role is Role.ARCHIVE and move.old.index == 0):
        hosts = list(dict.fromkeys(s.host for s in lay.of_role(Role.STORAGE)))
        wanted = desired_hashes(lay, hosts, Fleet(lay).old_engines(hosts)) if hosts else {}
        stale = [s.id for s in lay.of_role(Role.STORAGE)
                 if seen.observed[s.id].config_hash != wanted[s.id]]
    overflowed = [f"{s} {v}" for s in stale for v, r in seen.records.get(s, {}).items()
                  if r.overflow]
    volumes = _volumes(move, seen, group, request)
    return ReplaceSeen(
        role=role.value, old=move.old.id, new=move.new.id, old_host=move.old.host,
        new_host=move.new.host, volumes=tuple(volumes),
        primary_archive=move.old_layout.primary_archive.id,
        proxies=tuple(p.id for p in lay.proxies_by_priority), storages=tuple(stale),
        endpoints={s.id: s.endpoint for s in move.both.servers},
        new_running=seen.new_running, overflowed=tuple(overflowed), command=group.command)


def _volumes(move: Move, seen: Seen, group: Group, request: Request) -> list[VolumeSeen]:
    old, new = seen.records.get(move.old.id, {}), seen.records.get(move.new.id, {})
    names = sorted(set(old) | set(new))
    if move.old.role is Role.PROXY:
        return [_proxy_volume(v, old.get(v), new.get(v)) for v in names]
    if move.old.role is Role.ARCHIVE:
        return [_archive_volume(move, seen, v, old.get(v), new.get(v)) for v in names]
    return [_storage_volume(move, seen, group, request, v, old.get(v), new.get(v))
            for v in names]


def _state(r: VolumeRecord | None) -> str:
    return (r.state or "unknown") if r is not None else steps.S_CLEAR


def _proxy_volume(name: str, old: VolumeRecord | None, new: VolumeRecord | None) -> VolumeSeen:
    return VolumeSeen(name, _state(old), _state(new),
                      archives=old.archives if old else (),
                      new_archives=new.archives if new else (),
                      send_errors=tuple(a for a, bad in (old.send_error if old else {}).items()
                                        if bad))


def _sends(move: Move, seen: Seen, vol: str, archive: str) -> list[bool]:
    """Whether each proxy of the group sends the volume to the archive."""
    return [archive in seen.records.get(p.id, {}).get(vol, VolumeRecord(vol, "proxy")).archives
            for p in move.old_layout.proxies_by_priority]


def _archive_volume(move: Move, seen: Seen, name: str, old: VolumeRecord | None,
                    new: VolumeRecord | None) -> VolumeSeen:
    sends = _sends(move, seen, name, move.old.id)
    sync: bool | None = all(sends) if all(sends) or not any(sends) else None
    return VolumeSeen(name, _state(old), _state(new), synchronizing=sync,
                      restorable=bool(old and old.restorable),
                      actions=tuple(old.running_actions) if old else ())


def _storage_volume(move: Move, seen: Seen, group: Group, request: Request, name: str,
                    old: VolumeRecord | None, new: VolumeRecord | None) -> VolumeSeen:
    others = {s.id: _state(seen.records.get(s.id, {}).get(name))
              for s in move.old_layout.of_role(Role.STORAGE) if s.id != move.old.id}
    primary = move.old_layout.primary_archive.id
    secondaries = tuple(a.id for a in move.old_layout.of_role(Role.ARCHIVE)
                        if a.id != primary and any(_sends(move, seen, name, a.id)))
    states = [_state(old), _state(new), *others.values()]
    archived = _state(seen.records.get(primary, {}).get(name)) in steps.ARCHIVE_ACTIVE
    device = request.devices.get(name) or _device_of(group, move.old, name)
    return VolumeSeen(name, _state(old), _state(new), others=others, secondaries=secondaries,
                      device=device,
                      was_target=archived and steps.S_TARGET not in states)


def _device_of(group: Group, storage: Server, vol: str) -> str:
    """The device the old storage uses for the volume, as walb-storage records it
    (BASE_DIR/VOL/path, src/storage_vol_info.hpp), else walb's usual /dev/walb/VOL."""
    text = group.calls.read_text(storage.id, f"{storage.base_dir}/{vol}/path")
    path = (text or "").strip()
    return path if path.startswith("/") else f"/dev/walb/{vol}"


# --- the command ----------------------------------------------------------------------------


Confirm = Callable[[list[str]], bool]


def replace(layout: Layout, text: str, request: Request, *, mode: ProgressMode,
            echo: Callable[[str], None], confirm: Confirm) -> Outcome:
    """Plan, check, and (unless dry_run) carry out the replace."""
    started = time.monotonic()
    move = plan_move(layout, text, request)
    group = Group(move.both)
    with GroupLock(layout.group, "replace") if not request.dry_run else \
            contextlib.nullcontext():
        if not request.dry_run:
            refuse_maintained(layout.group, [s.id for s in move.both.servers], "replace",
                              layout.source)
        seen = observe(move, group)
        plan = ReplacePlan(()) if seen.finished else \
            replace_steps.plan_replace(_seen_for_plan(move, seen, group, request))
        outcome = Outcome(move, plan, notes=list(plan.notes))
        if plan.refusals:
            raise _refused(move, plan)
        if not seen.finished:
            _check_new_host(move, plan, seen, outcome)
        lines = describe(move, plan)
        if request.dry_run:
            for line in lines:
                echo(line)
            return outcome
        if plan.actions and not confirm(lines):
            raise WalbctrError("nothing was done", "run it again and answer yes, or add --yes")
        _with_policy_paused(move, outcome, lambda: _carry_out(move, plan, group, seen,
                                                              request, mode, outcome))
        if request.write:
            outcome.written = write_layout(Path(layout.source), move.edit)
        if plan.actions:
            _refresh_keeper(move, outcome)
    outcome.seconds = time.monotonic() - started
    return outcome


def _with_policy_paused(move: Move, outcome: Outcome, work: Callable[[], None]) -> None:
    """The keeper's policy tasks (merge, apply, replicate) wait while the volumes move, as
    during an upgrade: a replication of its own would overlap the replace's."""
    lay = move.old_layout
    if monitor_of(lay) is None or lay.spec.policy is None:
        work()
        return
    fleet = Fleet(lay)
    problem = keeper_service.pause_policy(lay, fleet, "replace")
    if problem is not None:
        outcome.notes.append(f"policy tasks were not paused: {problem}")
    try:
        work()
    finally:
        problem = keeper_service.pause_policy(lay, fleet, None)
        if problem is not None:
            outcome.notes.append(f"policy tasks were not resumed: {problem}")


def _refused(move: Move, plan: ReplacePlan) -> WalbctrError:
    head = (f"walb cannot replace {move.old.id} ({move.old.role.value} on {move.old.host}) "
            "now; nothing was done:")
    body = "\n".join(f"  {r.message}\n    fix: {r.fix}" for r in plan.refusals)
    return WalbctrError(f"{head}\n{body}", "then run the replace again")


def _check_new_host(move: Move, plan: ReplacePlan, seen: Seen, outcome: Outcome) -> None:
    devices = {a.volume: a.device for a in plan.actions if a.op == "init-storage"}
    fleet = Fleet(move.new_layout, move.new.host)
    if not seen.new_running:
        preflight(move.new_layout, fleet, seen.observed)
    failures, warnings = new_server_problems(move.new_layout, move.new, devices,
                                             fresh=not seen.new_running)
    outcome.notes += warnings
    if failures:
        raise WalbctrError(f"{move.new.id} cannot run on {move.new.host}; nothing was done:"
                           "\n  " + "\n  ".join(failures),
                           "fix that on the host, then run the replace again")


def describe(move: Move, plan: ReplacePlan) -> list[str]:
    """The plan and the layout edit, as --dry-run prints them (and the question asks)."""
    o, n = move.old, move.new
    lines = [f"replace {o.id} ({o.role.value} on {o.host}) by {n.id} on {n.host}:"]
    lines += replace_steps.describe(plan) or ["  nothing left to do on the servers"]
    lines += [f"note: {x}" for x in plan.notes]
    if move.edit.new_text is not None:
        lines += [f"the layout edit ({move.old_layout.source}):",
                  move.edit.diff.rstrip("\n")]
    else:
        lines += [f"the layout edit ({move.old_layout.source}, by hand):",
                  *(f"  {c}" for c in move.edit.changes)]
    return lines


# --- carrying it out ------------------------------------------------------------------------


def _carry_out(move: Move, plan: ReplacePlan, group: Group, seen: Seen, request: Request,
               mode: ProgressMode, outcome: Outcome) -> None:
    lines = StepLines(mode)
    last = [""]

    def progress(p: Progress) -> None:
        text = p.step + (f" ({p.done_lb * 100 // p.total_lb}%)"
                         if p.done_lb and p.total_lb else "")
        if text != last[0]:
            last[0] = text
            lines.line(f"  {text}")

    actions = list(plan.actions)
    total = len(actions)
    n = 0
    while n < len(actions):
        a = actions[n]
        if a.op == "recreate":
            batch = [x for x in actions[n:] if x.op == "recreate"]
            for i, x in enumerate(batch):
                lines.line(f"{n + i + 1}/{total} {x.what}")
            _recreate(move, group, [x.server for x in batch], request, mode)
            outcome.done += [x.what for x in batch]
            n += len(batch)
            continue
        lines.line(f"{n + 1}/{total} {a.what}")
        _do(a, move, group, seen, request, mode, progress, outcome)
        outcome.done.append(a.what)
        n += 1


def _do(a: Action, move: Move, group: Group, seen: Seen, request: Request,
        mode: ProgressMode, progress: Callable[[Progress], None], outcome: Outcome) -> None:
    t = request.timeout_s
    if a.op == "deploy":
        start_servers(move.new_layout, Fleet(move.new_layout, move.new.host), [move.new.id],
                      timeout=None, mode=mode)
        group.calls.forget(move.new.id)
    elif a.op == "stop-server":
        _stop_old(move, seen, mode)
    elif a.op == "hash-backup":
        gid, stopped = group.hash_backup(a.volume, a.server, a.device, timeout_s=t,
                                         progress=progress)
        progress(Progress(step=f"{a.volume}: restorable on "
                               f"{move.old_layout.primary_archive.id} at gid {gid}"))
        if stopped:  # the plan's notes say what to run about it
            progress(Progress(step=f"{', '.join(stopped)} no longer synchronizes {a.volume}"))
    else:
        _volume_op(a, group, t, progress)


def _volume_op(a: Action, group: Group, t: float, progress: Callable[[Progress], None]) -> None:
    """The Group API call of one volume action."""
    calls: dict[str, Callable[[], object]] = {
        "copy-archive-info": lambda: group.copy_archive_info(a.volume, a.source, a.server),
        "stop-empty": lambda: group.stop(a.volume, a.server, "empty", timeout_s=t),
        "wait-stopped": lambda: group.wait_stopped(a.volume, a.server, timeout_s=t),
        "clear": lambda: group.clear(a.volume, a.server),
        "replicate": lambda: group.replicate(a.volume, a.server, source=a.source,
                                             sync=a.sync, timeout_s=t, progress=progress),
        "stop-synchronizing": lambda: group.stop_synchronizing(a.volume, a.server),
        "go-standby": lambda: group.go_standby(a.volume, a.server),
        "init-storage": lambda: group.init_storage(a.volume, a.server, a.device),
    }
    calls[a.op]()


def _recreate(move: Move, group: Group, ids: list[str], request: Request,
              mode: ProgressMode) -> None:
    """The storages recreated one at a time with their new command line, through the
    rolling restart's gates (no overflow before, the same volume states after)."""
    lay = move.new_layout
    fleet = Fleet(lay)
    observed = fleet.observe()
    todo = [RunStep(sid, Role.STORAGE.value, lay.server(sid).host, observed[sid].image,
                    observed[sid].image_id, lay.image) for sid in ids]
    again = (f"run the same 'walbctr replace {lay.source} {move.old.id} --host "
             f"{move.new.host} --id {move.new.id}' again: it goes on from where the servers "
             "are")
    runner = Runner(lay, fleet, "recreate", Options(), mode, lambda: None, again=again)
    runner.run(todo, RunResult("recreate"))
    for sid in ids:
        group.calls.forget(sid)


def _stop_old(move: Move, seen: Seen, mode: ProgressMode) -> None:
    """walb's graceful shutdown (stop_container lifts the restart policy first, so it
    stays down); the container is kept, stopped, and so is everything on the host."""
    old = move.old
    obs = Fleet(move.old_layout).observe().get(old.id) or seen.observed[old.id]
    engine = Fleet(move.old_layout, old.host).engines[old.host]
    with ServerBoard([(old.id, old.role.value, old.host)], mode) as board:
        stop_container(engine, old, obs, board)


def _refresh_keeper(move: Move, outcome: Outcome) -> None:
    """The keeper watches the servers the layout names: it moves on to the new one."""
    lay = move.new_layout
    if monitor_of(lay) is None:
        return
    try:
        fleet = Fleet(lay)
        if not keeper_service.current(lay, fleet):
            done = keeper_service.start(lay, fleet, write_compose_files(
                lay, fleet.hosts, fleet.old_engines()))
            if done:
                outcome.notes.append(f"{done}: it watches {move.new.id} now")
    except Exception as err:  # a follow-up: the replace itself is done by now
        outcome.notes.append(f"the keeper was left as it was: {explain(err)}; 'walbctr up' "
                             "brings it up to date")


# --- the layout file ------------------------------------------------------------------------


def write_layout(path: Path, edit: ServerEdit) -> Path:
    """The edited layout in place of the old one, which is kept as PATH.bak; each file is
    written whole to a temporary file in the same directory and renamed, so a reader (or a
    crash) sees the old file or the new one, never half of one."""
    assert edit.new_text is not None  # plan_move refuses --write otherwise
    try:
        now = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode & 0o7777
    except OSError as err:
        raise _not_written(path, edit, f"cannot read it again: {err}") from None
    if now != edit.old_text:
        raise _not_written(path, edit, "it changed while the replace ran")
    backup = path.with_name(path.name + ".bak")
    try:
        _atomic_write(backup, edit.old_text, mode)
        _atomic_write(path, edit.new_text, mode)
    except OSError as err:
        raise _not_written(path, edit, str(err)) from None
    return backup


def _atomic_write(path: Path, text: str, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dirfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


def _not_written(path: Path, edit: ServerEdit, why: str) -> WalbctrError:
    return WalbctrError(
        f"the servers are replaced, but {path} was not written ({why})",
        "apply this edit yourself before the next 'walbctr up':\n" + edit.diff)


def summary(outcome: Outcome, write: bool) -> list[str]:
    """What the operator reads at the end (stdout)."""
    move = outcome.move
    o, n = move.old, move.new
    lay = move.old_layout
    if outcome.done:
        lines = [f"group {lay.group}: replaced {o.id} ({o.role.value} on {o.host}) by {n.id} "
                 f"on {n.host} in {outcome.seconds:.1f} s ({len(outcome.done)} steps); "
                 f"{o.id}'s container is stopped, its base dir {o.base_dir} on {o.host} kept"]
    else:
        lines = [f"group {lay.group}: {o.id} is replaced by {n.id} on {n.host} already; "
                 "nothing was left to do on the servers"]
    if outcome.written is not None:
        lines.append(f"{lay.source} now runs {n.id} on {n.host}; the old layout is "
                     f"{outcome.written}")
    elif not write:
        lines.append(
            f"{lay.source} still names {o.id} on {o.host}: apply this edit before the next "
            f"'walbctr up' (which would start {o.id} again and point the group back at it), "
            "or run the same command again with --write:")
        lines.append(move.edit.diff.rstrip("\n") if move.edit.new_text is not None else
                     "\n".join(f"  {c}" for c in move.edit.changes))
    return lines
