"""`walbctr upgrade` (with --resume and --rollback) and the rolling `walbctr restart`.

One server at a time (or N per tier), archives, then proxies, then storages: the order in
which walb's receivers are always at least as new as their senders (storages send to
proxies, proxies to archives). Around each server, walb's own gates, read through walbc
in one exec per server (volumes.batch_argv):

- before stopping: an archive runs no Merge/Apply/Restore/ReplSyncAsClient/Resize (the
  upgrade waits up to --gate-timeout; a graceful shutdown would wait for it anyway, a
  forced one would abort it); no storage volume overflowed and no proxy has a wdiff send
  error (a restart would hide them from whoever looks next);
- after starting: the server answers `get host-type`, and every volume is in the state
  it was in before. walb-proxy starts every volume it finds at start (unless run with
  -stop), so a proxy volume that was Stopped comes back Started: walbctr stops it again
  (`walbc stop VOL`) and says so;
- then walb's follow-ups (doc/recover.md): a restarted archive means kicking the proxies,
  a restarted proxy means kicking the storages.

The plan and each step's progress are written to the group's state dir (atomically)
before every step, so an interrupted upgrade can be finished (--resume) or undone
(--rollback). A rollback runs the upgraded servers back in reverse order (storages
first): every state it passes through is one the upgrade itself passed through, so a
newer sender never talks to an older receiver.

A run may do only part of the plan (a canary: --hosts, --limit, in the same order, never a
sender before its receivers) or be asked to stop between two servers (--pause, a file in
the state dir, since the running upgrade holds the group lock); either way the plan is
recorded paused and --resume goes on from it.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from walbctr.commands import keeper_container as keeper_service
from walbctr.commands.waiting import Failure, NotReadyError, wait_tier
from walbctr.display import ServerBoard
from walbctr.docker.compose_files import write_compose_files
from walbctr.docker.containers import Observed, answers, exec_in, inspect
from walbctr.docker.engine import require_compose
from walbctr.docker.fleet import Fleet
from walbctr.docker.lifecycle import (
    remove_container,
    start_container,
    stop_container,
)
from walbctr.docker.logs import failed_run, log_tail
from walbctr.docker.state import (
    GroupLock,
    group_dir,
    lock_holder,
    read_private,
    refuse_maintained,
    remove_private,
    write_private,
)
from walbctr.errors import EXIT_BAD_INPUT, WalbctrError, explain, last_line
from walbctr.layout.server import START_ORDER, Role, Server
from walbctr.layout.tiers import stale_storages
from walbctr.render.compose import container_name, project_name
from walbctr.render.keeper_service import monitor_of
from walbctr.walb import volumes
from walbctr.walb.walbc import walbc_argv

if TYPE_CHECKING:
    from walbctr.display import ProgressMode
    from walbctr.docker.engine import Engine
    from walbctr.layout.spec import Layout

PLAN_FILE = "upgrade.json"
PAUSE_FILE = "upgrade.pause"  # a request to stop after the current server: see request_pause
# A merge or apply of a large volume takes minutes; longer than this is worth a decision.
DEFAULT_GATE_TIMEOUT_S = 600
ACTION_POLL_S = 2.0
GRACE_NOTE = "a graceful shutdown waits for it until the stop_grace_period, then walb aborts it"


# --- the plan, as stored ------------------------------------------------------------------


@dataclass
class Step:
    server: str
    role: str
    host: str
    from_image: str
    from_image_id: str
    to_image: str
    # pending -> stopping (gates passed, volumes recorded) -> starting -> done | failed
    status: str = "pending"
    touched: bool = False  # its stop began: from here on, a rollback includes it
    volumes: dict[str, str] = field(default_factory=dict)  # volume -> state before
    kicked: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Plan:
    group: str
    layout: str
    image: str  # the upgrade's target
    created: str
    steps: list[Step]
    rollback: list[Step] = field(default_factory=list)  # filled by --rollback
    updated: str = ""
    # Why the last run stopped before the end on purpose ('--pause', '--limit 1',
    # '--hosts hostA0'); empty while it runs, once it ran to the end, or after a failure.
    paused: str = ""

    @property
    def finished(self) -> bool:
        return all(s.status == "done" for s in self.steps)

    @property
    def rolled_back(self) -> bool:
        return bool(self.rollback) and all(s.status == "done" for s in self.rollback)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1) + "\n"

    @staticmethod
    def from_json(text: str) -> Plan:
        data = json.loads(text)
        return Plan(group=data["group"], layout=data["layout"], image=data["image"],
                    created=data["created"], updated=data.get("updated", ""),
                    paused=data.get("paused", ""),
                    steps=[Step(**s) for s in data["steps"]],
                    rollback=[Step(**s) for s in data.get("rollback", [])])


def plan_path(group: str) -> Path:
    return group_dir(group) / PLAN_FILE


def save_plan(plan: Plan) -> None:
    """Write tmp + fsync + rename: a controller killed at any moment leaves a whole plan."""
    plan.updated = _now()
    path = plan_path(plan.group)
    try:
        write_private(path, plan.to_json())
    except OSError as err:
        raise WalbctrError(f"cannot write the upgrade plan {path}: {err}",
                           "set WALBCTR_STATE_DIR to a writable directory") from None


def load_plan(group: str) -> Plan | None:
    """The group's last plan; --rollback trusts its images, so only a file walbctr wrote
    for this group (read_private refuses a symlink or another uid's file)."""
    path = plan_path(group)
    try:
        text = read_private(path)
        plan = None if text is None else Plan.from_json(text)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise WalbctrError(f"the upgrade plan {path} cannot be read: {err}",
                           "look at it; move it away to start a new upgrade") from None
    if plan is not None and plan.group != group:
        raise WalbctrError(
            f"the upgrade plan {path} is for group {plan.group!r}, not {group!r}, so walbctr "
            "will neither resume nor roll it back",
            "look at it; move it away to start a new upgrade of this group")
    return plan


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- what the operator asked ----------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    parallel: int = 1
    gate_timeout: float = DEFAULT_GATE_TIMEOUT_S
    force: bool = False
    timeout: float | None = None  # readiness; default each server's start_period


@dataclass(frozen=True)
class Selection:
    """The part of the plan one run does (a canary): the servers on `hosts` (all when
    empty), at most `limit` of them, in the plan's order."""

    hosts: tuple[str, ...] = ()
    limit: int | None = None

    def describe(self) -> str:
        """As the operator typed it: '--hosts hostA0,hostP0 --limit 1'."""
        return " ".join(([f"--hosts {','.join(self.hosts)}"] if self.hosts else [])
                        + ([f"--limit {self.limit}"] if self.limit is not None else []))


@dataclass
class Result:
    kind: str  # upgrade, rollback, restart
    done: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    plan: Plan | None = None
    left: list[Step] = field(default_factory=list)  # the plan's steps a pause or limit left


class GateError(WalbctrError):
    """A server failed a gate; the run stops there."""


class SelectionError(WalbctrError):
    """--hosts or --limit asked for what the plan cannot do; nothing was changed."""

    exit_code = EXIT_BAD_INPUT


def _verb(kind: str) -> str:
    return {"upgrade": "upgraded", "rollback": "rolled back", "restart": "restarted",
            "recreate": "recreated"}[kind]


# --- entry points ---------------------------------------------------------------------------


def _policy_note(result: Result, problem: str | None) -> None:
    """The keeper's policy tasks pause while servers are replaced under them."""
    if problem is not None:
        result.notes.append(f"warning: policy tasks: {problem}")


def upgrade(layout: Layout, image: str | None, *, resume: bool, rollback: bool,
            dry_run: bool, options: Options, mode: ProgressMode,
            echo: Callable[[str], None], select: Selection | None = None) -> Result:
    """Upgrade the group to the layout's image (or resume, or roll back, the last upgrade);
    `select` does only a part of it (a canary), leaving the plan paused for --resume."""
    select = select or Selection()
    if image is not None and image != layout.image:
        raise WalbctrError(
            f"--image {image} is not the image {layout.source} names ({layout.image}); "
            "nothing was changed",
            f"set 'image: {image}' in {layout.source} first, so that the layout says what "
            f"the servers run (a later 'walbctr up' applies it), then run 'walbctr upgrade "
            f"{layout.source}'")
    check_hosts(layout, select.hosts)
    if rollback and (select.hosts or select.limit is not None):
        raise SelectionError("--rollback returns every server the upgrade touched, in "
                             "reverse order: it takes no --hosts or --limit; nothing was "
                             "changed", "run it without them ('--pause' from another "
                             "terminal stops it after the server it is on)")
    started = time.monotonic()
    fleet = Fleet(layout)
    with GroupLock(layout.group, "upgrade"):
        if not dry_run:
            refuse_maintained(layout.group, [s.id for s in layout.servers], "upgrade",
                              layout.source)
        kind, plan, steps = _planned(layout, fleet, resume=resume, rollback=rollback)
        todo = select_steps(layout, steps, select)
        result = Result(kind, plan=plan)
        if dry_run:
            for line in describe(layout, kind, plan, steps, options, todo, select):
                echo(line)
            return result
        if (resume or rollback) and withdraw_pause(layout.group):
            command = "--rollback" if rollback else "--resume"
            result.notes.append(f"withdrew the pending pause request: {command} goes on")
        if todo:
            _execute(layout, fleet, result, steps, todo, select, options, mode)
        result.seconds = time.monotonic() - started
        return result


def _planned(layout: Layout, fleet: Fleet, *, resume: bool,
             rollback: bool) -> tuple[str, Plan, list[Step]]:
    plan = load_plan(layout.group)
    if rollback:
        plan, steps = _rollback_steps(layout, plan)
        return "rollback", plan, steps
    if resume:
        plan, steps = _resume_steps(layout, plan)
        return "upgrade", plan, steps
    plan = _new_plan(layout, fleet, plan)
    return "upgrade", plan, plan.steps


def _execute(layout: Layout, fleet: Fleet, result: Result, steps: list[Step],
             todo: list[Step], select: Selection, options: Options,
             mode: ProgressMode) -> None:
    """Run `todo` (all or part of the plan's `steps`); record the plan paused when a pause
    request or the selection leaves steps undone."""
    plan = result.plan
    assert plan is not None
    require_compose()
    _check_images(layout, fleet, todo)
    if result.kind == "rollback" and not options.force:
        _check_old_ids(layout, fleet, plan)
    plan.paused = ""
    save_plan(plan)
    runner = Runner(layout, fleet, result.kind, options, mode, lambda: save_plan(plan))
    _policy_note(result, keeper_service.pause_policy(layout, fleet, result.kind))
    try:
        requested = runner.run(todo, result, pause=lambda: pause_requested(plan.group))
    finally:
        # Honoured now, or too late to matter (the run ended or failed): a request left
        # behind would stop the next upgrade at its start.
        withdraw_pause(plan.group)
        _policy_note(result, keeper_service.pause_policy(layout, fleet, None))
    result.left = [s for s in steps if s.status != "done"]
    if result.left:
        plan.paused = "--pause" if requested else select.describe()
        save_plan(plan)
        return
    images = {s.to_image for s in steps}
    if len(images) == 1:
        _refresh_keeper(_with_image(layout, images.pop()), fleet, result)


# --- canaries and pauses ----------------------------------------------------------------------


def check_hosts(layout: Layout, hosts: tuple[str, ...]) -> None:
    """Every --hosts name must run servers of the layout (checked before anything runs)."""
    unknown = [h for h in hosts if h not in layout.used_hosts]
    if unknown:
        which = ", ".join(repr(h) for h in unknown)
        raise SelectionError(
            f"--hosts {','.join(hosts)}: no server of group {layout.group} runs on {which} "
            f"in {layout.source} (its hosts with servers: {', '.join(layout.used_hosts)}); "
            "nothing was changed",
            "name hosts from that list, separated by commas")


def select_steps(layout: Layout, steps: list[Step], select: Selection) -> list[Step]:
    """The steps this run does: those not done, on the selected hosts, at most `limit`,
    in the plan's order. A selection that would upgrade a server before a server of an
    earlier tier (a storage before its proxies) is refused: receivers first."""
    todo = [s for s in steps if s.status != "done"]
    if select.hosts:
        chosen = [s for s in todo if s.host in select.hosts]
        if not chosen:
            raise SelectionError(
                f"--hosts {','.join(select.hosts)}: no server there is left to upgrade "
                f"(left: {', '.join(f'{s.server} on {s.host}' for s in todo) or 'none'}); "
                "nothing was changed", "name the hosts of servers that are left")
        _check_order(layout, todo, chosen, select)
        todo = chosen
    return todo if select.limit is None else todo[:select.limit]


def _check_order(layout: Layout, todo: list[Step], chosen: list[Step],
                 select: Selection) -> None:
    rank = {role.value: n for n, role in enumerate(START_ORDER)}
    latest = max(rank[s.role] for s in chosen)
    before = [s for s in todo if s not in chosen and rank[s.role] < latest]
    if not before:
        return
    first = next(s for s in chosen if rank[s.role] > rank[before[0].role])
    hosts = list(dict.fromkeys(s.host for s in before))
    raise SelectionError(
        f"--hosts {','.join(select.hosts)} would upgrade {first.role} {first.server} while "
        + ", ".join(f"{s.role} {s.server} (on {s.host})" for s in before)
        + f" still run{'s' if len(before) == 1 else ''} the old image: walb's receivers must "
        "be at least as new as their senders (storages send to proxies, proxies to "
        "archives), so archives go first, then proxies, then storages; nothing was changed",
        f"add their hosts (--hosts {','.join([*select.hosts, *hosts])}), or upgrade them "
        f"first (--hosts {','.join(hosts)})")


def pause_path(group: str) -> Path:
    return group_dir(group) / PAUSE_FILE


def pause_requested(group: str) -> bool:
    """Whether a pause is requested. Anything at the name counts: stopping between two
    servers is always safe, so a file walbctr cannot read still stops the run."""
    return os.path.lexists(pause_path(group))


def withdraw_pause(group: str) -> bool:
    return remove_private(pause_path(group))


def request_pause(layout: Layout) -> str:
    """Ask the group's running upgrade (or the next one) to stop after the server it is on.

    A file in the state dir, not the group lock: the running upgrade holds that lock for
    its whole run, and looks for the file before each server (or batch of servers).
    """
    path = pause_path(layout.group)
    try:
        write_private(path, json.dumps({"requested": _now(), "pid": os.getpid()}) + "\n")
    except OSError as err:
        raise WalbctrError(f"cannot write the pause request {path}: {err}",
                           "set WALBCTR_STATE_DIR to a writable directory") from None
    src, group = layout.source, layout.group
    holder = lock_holder(group)
    if holder is not None and holder[0] == "upgrade":
        return (f"pause requested: the upgrade of group {group} running now (pid "
                f"{holder[1]}) stops after the server it is on, records itself paused in "
                f"{plan_path(group)} and exits; 'walbctr upgrade {src} --resume' continues "
                "it")
    what = "no upgrade runs on it now" if holder is None else \
        f"'walbctr {holder[0]}' (pid {holder[1]}) runs on it, not an upgrade"
    return (f"pause requested for group {group}: {what}, so the next 'walbctr upgrade "
            f"{src}' stops before its first server and records itself paused; '--resume' "
            f"and '--rollback' withdraw the request (or remove {path})")


def rolling_restart(layout: Layout, ids: list[str] | None, *, only_host: str | None,
                    options: Options, mode: ProgressMode) -> Result:
    """Restart servers one at a time (N per tier), with the upgrade's gates and kicks."""
    started = time.monotonic()
    fleet = Fleet(layout, only_host)
    for sid in ids or []:
        layout.server(sid)
    with GroupLock(layout.group, "restart"):
        chosen = [s for s in layout.servers if s.host in fleet.hosts
                  and (ids is None or s.id in ids)]
        refuse_maintained(layout.group, [s.id for s in chosen], "restart", layout.source)
        observed = fleet.observe()
        missing = [s.id for s in chosen if s.id not in observed]
        if missing:
            raise WalbctrError(f"no container for {', '.join(missing)}",
                               "start them with 'walbctr up'")
        steps = [Step(s.id, s.role.value, s.host, observed[s.id].image,
                      observed[s.id].image_id, observed[s.id].image) for s in chosen]
        result = Result("restart")
        Runner(layout, fleet, "restart", options, mode, lambda: None).run(steps, result)
        result.seconds = time.monotonic() - started
        return result


# --- planning -------------------------------------------------------------------------------


def _unfinished(layout: Layout, plan: Plan) -> WalbctrError:
    src = layout.source
    if plan.rollback and not plan.rolled_back:
        return WalbctrError(
            f"a rollback of group {plan.group} (from {plan.image}) is unfinished",
            f"finish it with 'walbctr upgrade {src} --rollback'")
    done = [s.server for s in plan.steps if s.status == "done"]
    left = [s.server for s in plan.steps if s.status != "done"]
    how = f"paused ({plan.paused})" if plan.paused else "unfinished"
    return WalbctrError(
        f"an upgrade of group {plan.group} to {plan.image} is {how} (done: "
        f"{', '.join(done) or 'none'}; left: {', '.join(left)})",
        f"finish it with 'walbctr upgrade {src} --resume' (--hosts or --limit for another "
        f"part of it), or return the upgraded servers to their old image with 'walbctr "
        f"upgrade {src} --rollback'")


def _new_plan(layout: Layout, fleet: Fleet, previous: Plan | None) -> Plan:
    if previous is not None and (not previous.rolled_back if previous.rollback else
                                 not previous.finished and any(s.touched
                                                               for s in previous.steps)):
        raise _unfinished(layout, previous)
    observed = fleet.observe()
    missing = [s.id for s in layout.servers if s.id not in observed]
    down = [f"{s.id} ({observed[s.id].status})" for s in layout.servers
            if s.id in observed and observed[s.id].status != "running"]
    if missing or down:
        what = "; ".join(p for p in (
            f"no container for {', '.join(missing)}" if missing else "",
            f"not running: {', '.join(down)}" if down else "") if p)
        raise WalbctrError(
            f"group {layout.group} is not all running ({what}); an upgrade replaces "
            "running servers one at a time, nothing was changed",
            f"bring the group up with 'walbctr up {layout.source}' first (see 'walbctr "
            f"status {layout.source}')")
    targets = _image_ids(layout, fleet, layout.image)
    steps = []
    for role in START_ORDER:
        for s in layout.of_role(role):
            obs = observed[s.id]
            if obs.image_id != targets[s.host]:
                steps.append(Step(s.id, role.value, s.host, obs.image, obs.image_id,
                                  layout.image))
    if not steps:
        raise WalbctrError(f"every server of group {layout.group} already runs "
                           f"{layout.image}: nothing to upgrade")
    return Plan(layout.group, layout.source, layout.image, _now(), steps)


def _resume_steps(layout: Layout, plan: Plan | None) -> tuple[Plan, list[Step]]:
    src = layout.source
    if plan is None:
        raise WalbctrError(f"no upgrade of group {layout.group} to resume",
                           f"start one with 'walbctr upgrade {src}'")
    if plan.rollback:
        raise WalbctrError(
            f"the upgrade of group {plan.group} to {plan.image} was rolled back"
            + ("" if plan.rolled_back else " (the rollback is unfinished)"),
            f"start a new upgrade with 'walbctr upgrade {src}'" if plan.rolled_back else
            f"finish the rollback with 'walbctr upgrade {src} --rollback'")
    if plan.finished:
        raise WalbctrError(f"the upgrade of group {plan.group} to {plan.image} is finished: "
                           "nothing to resume")
    if plan.image != layout.image:
        raise WalbctrError(
            f"the unfinished upgrade goes to {plan.image} but {src} now names "
            f"{layout.image}; nothing was changed",
            f"put 'image: {plan.image}' back in {src} and resume, or return to the old image "
            f"with 'walbctr upgrade {src} --rollback'")
    return plan, plan.steps


def _with_image(layout: Layout, image: str) -> Layout:
    return replace(layout, spec=layout.spec.model_copy(update={"image": image}))


def _refresh_keeper(layout: Layout, fleet: Fleet, result: Result) -> None:
    """The keeper's image goes with the servers' (keeper_service.image_of): move it too, last."""
    if monitor_of(layout) is None or keeper_service.current(layout, fleet):
        return
    missing = keeper_service.missing_image(layout, fleet)
    if missing:
        result.notes.append(f"the keeper was left as it was: {missing}")
        return
    done = keeper_service.start(layout, fleet, write_compose_files(
        layout, fleet.hosts, fleet.old_engines()))
    if done:
        result.notes.append(f"{done} (its image goes with the servers')")


def _rollback_steps(layout: Layout, plan: Plan | None) -> tuple[Plan, list[Step]]:
    if plan is None:
        raise WalbctrError(f"no upgrade of group {layout.group} to roll back",
                           "walbctr records an upgrade's plan when it starts one")
    if not any(s.touched for s in plan.steps):
        raise WalbctrError(f"the upgrade of group {plan.group} to {plan.image} changed no "
                           "server: nothing to roll back")
    if plan.rolled_back:
        raise WalbctrError(f"the upgrade of group {plan.group} to {plan.image} is already "
                           "rolled back")
    if not plan.rollback:
        touched = [s for s in plan.steps if s.touched]
        # Reverse order: storages first, so a newer sender never meets an older receiver.
        # Baseline: the states before the upgrade, unless the server answers before its stop.
        plan.rollback = [Step(s.server, s.role, s.host, s.to_image, "", s.from_image,
                              volumes=dict(s.volumes)) for s in reversed(touched)]
    return plan, plan.rollback


def _image_ids(layout: Layout, fleet: Fleet, image: str,
               hosts: list[str] | None = None) -> dict[str, str]:
    """host -> the id of `image` on its engine; a host that lacks it is an error."""
    ids: dict[str, str] = {}
    missing = []
    for host in fleet.hosts if hosts is None else hosts:
        found = fleet.engines[host].image_or_none(image)
        if found is None:
            missing.append(host)
        else:
            ids[host] = found.id
    if missing:
        raise WalbctrError(
            f"image {image} is not on the engine of {', '.join(missing)}; nothing was changed",
            "build it with 'walbctr build' (or 'walbctr build --source DIR'), and copy it to "
            f"other hosts with 'walbctr push {layout.source}'")
    return ids


def _check_images(layout: Layout, fleet: Fleet, steps: list[Step]) -> None:
    for image in dict.fromkeys(s.to_image for s in steps):
        hosts = {s.host for s in steps if s.to_image == image}
        _image_ids(layout, fleet, image, [h for h in fleet.hosts if h in hosts])


def _check_old_ids(layout: Layout, fleet: Fleet, plan: Plan) -> None:
    """A rollback goes back to the image each server ran, not to whatever its tag names
    now (a rebuilt tag is another image)."""
    moved = []
    for s in plan.steps:
        if s.touched and s.from_image_id and s.host in fleet.engines:
            now = _image_id(fleet.engines[s.host], s.from_image)
            if now is not None and now != s.from_image_id:
                moved.append(f"{s.server}: {s.from_image} was {s.from_image_id[:19]}, now "
                             f"{now[:19]}")
    if moved:
        raise WalbctrError(
            "the old image's tag names another image now; nothing was changed:\n  "
            + "\n  ".join(moved),
            "tag the old image id again ('docker tag ID TAG') and run the rollback again, or "
            "add --force to roll back to what the tag names now")


def describe(layout: Layout, kind: str, plan: Plan, steps: list[Step],
             options: Options, todo: list[Step] | None = None,
             select: Selection | None = None) -> list[str]:
    """The plan in words (--dry-run); `todo`: the steps this run would do."""
    what = {"upgrade": f"upgrade of group {plan.group} to {plan.image}",
            "rollback": f"rollback of group {plan.group} (undoing the upgrade to {plan.image})"}
    per = "one server at a time" if options.parallel == 1 else \
        f"up to {options.parallel} servers of a tier at a time"
    part = select.describe() if select is not None else ""
    lines = [f"{what[kind]}, {per}" + (f", this run only {part}" if part else "") + ":"]
    kicks = {Role.ARCHIVE.value: ("proxies", Role.PROXY),
             Role.PROXY.value: ("storages", Role.STORAGE)}
    for n, s in enumerate(steps, 1):
        skip = "done" if s.status == "done" else \
            f"not in this run ({part}): left for a later --resume" \
            if todo is not None and s not in todo else ""
        if skip:
            lines.append(f"  {n}. {s.server} ({s.role} on {s.host}): {skip}")
            continue
        before = {"archive": "no running " + "/".join(volumes.ARCHIVE_ACTIONS) + " (waits up "
                  f"to {options.gate_timeout:g} s)",
                  "proxy": "no wdiff send error", "storage": "no overflowed volume"}[s.role]
        if options.force:
            before += " (--force: not enforced)"
        then = ""
        if s.role in kicks:
            label, role = kicks[s.role]
            ids = ", ".join(x.id for x in layout.of_role(role)) or "none"
            then = f"; then kick the {label} ({ids})"
        lines.append(f"  {n}. {s.server} ({s.role} on {s.host}): {s.from_image} -> "
                     f"{s.to_image}" + (f" [{s.status}]" if s.status != "pending" else ""))
        lines.append(f"     before: {before}; after: get host-type, every volume in its "
                     f"state{then}")
    if pause_requested(plan.group):
        lines.append(f"a pause is requested ({pause_path(plan.group)}): a new upgrade would "
                     "stop before its first server; --resume and --rollback withdraw it")
    lines.append("nothing was changed (--dry-run)")
    return lines


# --- running the steps ----------------------------------------------------------------------


class Runner:
    def __init__(self, layout: Layout, fleet: Fleet, kind: str, options: Options,
                 mode: ProgressMode, save: Callable[[], None], again: str = "") -> None:
        """kind: upgrade, rollback, restart (the same containers started again), or
        recreate (each recreated on its image from the layout's compose file: a new command
        line); `again`: what to run to go on after a failed gate, for kinds of other
        commands."""
        self.layout = layout
        self.again = again
        self.fleet = fleet
        self.kind = kind
        self.options = options
        self.mode = mode
        self._save = save
        self._saving = threading.Lock()  # steps of one batch finish in parallel threads
        self.board: ServerBoard | None = None
        self.recreated: list[str] = []

    def save(self) -> None:
        with self._saving:
            self._save()

    def note(self, text: str) -> None:
        if self.board is not None and self.mode != "quiet":
            self.board.console.print(text, highlight=False, markup=False)

    def run(self, steps: list[Step], result: Result,
            pause: Callable[[], bool] | None = None) -> bool:
        """Every step, a batch at a time; True when `pause` said to stop, which it is asked
        before each batch: a server is never left half-way."""
        rows = [(s.server, s.role, s.host) for s in steps]
        paused = False
        with ServerBoard(rows, self.mode) as board:
            self.board = board
            batches = _batches(steps, self.options.parallel)
            for n, batch in enumerate(batches):
                if pause is not None and pause():
                    self.pause_before([s for b in batches[n:] for s in b], board)
                    paused = True
                    break
                self.run_batch(batch, steps, result)
            self.board = None
        self.restart_stale_storages(steps, result)
        return paused

    def run_batch(self, batch: list[Step], steps: list[Step], result: Result) -> None:
        by_id = {s.server: s for s in batch}
        outcome = self.fleet.each(by_id, partial(_step_of, self, by_id))
        failures = [r for r in outcome.values() if isinstance(r, Exception)]
        for s in batch:
            if not isinstance(outcome[s.server], Exception):
                result.done.append(s.server)
                result.notes += s.notes
        if failures:
            err = failures[0]
            if isinstance(err, WalbctrError):
                raise self.stopped(steps, err)
            raise err

    def pause_before(self, left: list[Step], board: ServerBoard) -> None:
        self.note(f"pause requested ('walbctr upgrade --pause'): stopping before "
                  f"{', '.join(s.server for s in left)}")
        for s in left:
            board.set(s.server, "paused")

    def restart_stale_storages(self, steps: list[Step], result: Result) -> None:
        """On a bridge network a recreated archive or proxy has a new address, and a storage
        resolves its peers once at start: one not recreated after them restarts (gated)."""
        stale = [s for s in stale_storages(self.layout, self.recreated)
                 if s.host in self.fleet.hosts]
        if not stale:
            return
        observed = self.fleet.observe()
        again = [Step(s.id, s.role.value, s.host, observed[s.id].image,
                      observed[s.id].image_id, observed[s.id].image)
                 for s in stale if s.id in observed]
        self.note(f"restarting {', '.join(s.server for s in again)}: a peer it resolved at "
                  "start has a new address on the bridge network")
        sub = Runner(self.layout, self.fleet, "restart", self.options, self.mode,
                     lambda: None)
        extra = Result("restart")
        sub.run(again, extra)
        result.notes += [f"{sid}: restarted (a peer moved on the bridge network)"
                         for sid in extra.done]

    def stopped(self, steps: list[Step], err: WalbctrError) -> WalbctrError:
        """The gate's message, what is left as it was, and the next command."""
        src = self.layout.source
        left = [s for s in steps if not s.touched]
        touched = any(s.touched for s in steps)
        head = err.message
        if left:
            images = ", ".join(dict.fromkeys(s.from_image for s in left))
            same = self.kind in ("restart", "recreate")
            head += (f"\nnot {_verb(self.kind)}: {', '.join(s.server for s in left)} "
                     f"({'untouched' if same else 'still on ' + images})")
        first = f"{err.fix}; then " if err.fix else "fix it, then "
        if self.again:
            fix = f"{first}{self.again}"
        elif self.kind == "upgrade" and touched:
            fix = (f"{first}finish with 'walbctr upgrade {src} --resume', or return the "
                   f"servers it touched to the image they ran before with 'walbctr upgrade "
                   f"{src} --rollback'")
        elif self.kind == "upgrade":
            fix = f"{first}run 'walbctr upgrade {src} --resume' (no server was changed)"
        elif self.kind == "rollback":
            fix = f"{first}run 'walbctr upgrade {src} --rollback' again to finish the rollback"
        else:
            fix = f"{first}run 'walbctr restart {src}' again"
        return GateError(head, fix)

    # -- one server --

    def step(self, step: Step) -> None:
        assert self.board is not None
        board = self.board
        server = self.layout.server(step.server)
        engine = self.fleet.engines[server.host]
        board.begin(server.id)
        try:
            self._step(step, server, engine, board)
        except Exception:
            step.status = "failed"
            board.set(server.id, "failed")
            self.save()
            raise

    def _step(self, step: Step, server: Server, engine: Engine, board: ServerBoard) -> None:
        obs = inspect(engine, container_name(self.layout, server))
        replace_image = self.kind != "restart"
        resumed = replace_image and step.touched  # interrupted, or failed its start
        on_target = obs is not None and replace_image and \
            obs.image_id == _image_id(engine, step.to_image)
        if resumed and on_target and obs is not None and obs.status == "running":
            self.note(f"{server.id}: already recreated on {step.to_image} before the "
                      "interruption; checking it")
            obs = self.wait_ready(server, engine, obs)
        else:
            if not step.touched:
                seen = self.gate_before(step, server, engine, obs, board)
                if seen is not None:
                    step.volumes = seen
            step.status = "stopping"
            step.touched = True
            self.save()
            after: Observed | None = None
            if obs is not None:
                stop_container(engine, server, obs, board)
            if replace_image:
                if obs is not None:
                    remove_container(engine, server, obs.container_id)
                step.status = "starting"
                self.save()
                board.set(server.id, "created")
                self._recreate(server, step.to_image)
                self.recreated.append(server.id)
            else:
                if obs is None:
                    raise GateError(f"{server.id}: its container vanished during the restart",
                                    f"start it with 'walbctr up {self.layout.source}'")
                after = inspect(engine, obs.container_id)
                step.status = "starting"
                start_container(engine, server, obs.container_id)
            board.set(server.id, "starting")
            obs = self.wait_ready(server, engine, after)
        board.set(server.id, "healthy")
        self.gate_after(step, server, engine, obs, board)
        self.kick_after(step, server)
        step.status = "done"
        self.save()
        board.set(server.id, _verb(self.kind))

    def _recreate(self, server: Server, image: str) -> None:
        layout = _with_image(self.layout, image)
        host = server.host
        paths = write_compose_files(layout, [host], self.fleet.old_engines([host]))
        self.fleet.engines[host].compose_up(paths[host], project_name(layout, host),
                                            [server.id])

    # -- gates --

    def _batch(self, server: Server, engine: Engine,
               container_id: str) -> list[volumes.VolumeRecord]:
        _code, text = exec_in(engine, container_id,
                           volumes.batch_argv(server.role.value, "127.0.0.1", server.port))
        try:
            return volumes.parse_batch(server.role.value, text)
        except ValueError as err:
            raise GateError(f"{self._at(server)}, gate 'volumes readable': walbc could not "
                            f"list its volumes: {err}",
                            f"look with 'walbctr walbc {self.layout.source} {server.id} "
                            "status'") from None

    def _at(self, server: Server) -> str:
        return f"{self.kind} stopped at {server.id} ({server.role.value} on {server.host})"

    def gate_before(self, step: Step, server: Server, engine: Engine, obs: Observed | None,
                    board: ServerBoard) -> dict[str, str] | None:
        """Check walb's preconditions; return every volume's state (None: not asked)."""
        board.set(server.id, "checking")
        force = self.options.force
        if obs is None or obs.status != "running" or not answers(engine, obs.container_id,
                                                                  server):
            state = "no container" if obs is None else obs.status
            if self.kind != "upgrade" or force:
                self.note(f"{server.id}: not answering walbc ({state}): no gate to check")
                return None
            raise GateError(f"{self._at(server)}, gate 'answers walbc': the server does not "
                            f"answer 'walbc get host-type' (container {state})",
                            f"look with 'walbctr logs {self.layout.source} {server.id}'")
        records = self._batch(server, engine, obs.container_id)
        if server.role is Role.ARCHIVE:
            records = self._wait_actions(step, server, engine, obs, records, board)
        else:
            found = [p.text for r in records for p in volumes.problems(r, float("inf"))
                     if p.kind in ("overflow", "send_error")] + _unread(server.role, records)
            if found and not force:
                gate = "no overflow" if server.role is Role.STORAGE else "no wdiff send error"
                raise GateError(
                    f"{self._at(server)}, gate '{gate}': restarting it now would hide "
                    "this:\n  " + "\n  ".join(found),
                    "do what walb says above (or run with --force to go on regardless)")
            for text in found:
                step.notes.append(f"{server.id}: --force: going on despite: {text}")
                self.note(step.notes[-1])
        return {r.name: r.state or "?" for r in records}

    def _wait_actions(self, step: Step, server: Server, engine: Engine, obs: Observed,
                      records: list[volumes.VolumeRecord],
                      board: ServerBoard) -> list[volumes.VolumeRecord]:
        started = time.monotonic()
        while True:
            unread = _unread(server.role, records)
            if unread and not self.options.force:
                raise GateError(
                    f"{self._at(server)}, gate 'no running archive action': could not tell:"
                    "\n  " + "\n  ".join(unread),
                    f"look with 'walbctr walbc {self.layout.source} {server.id} get "
                    "all-actions' (or run with --force to go on regardless)")
            running = {r.name: {a: n for a, n in r.running_actions.items()
                                if a in volumes.ARCHIVE_ACTIONS} for r in records}
            running = {v: a for v, a in running.items() if a}
            if not running:
                return records
            what = ", ".join(f"{v} runs {' '.join(f'{a} {n}' for a, n in acts.items())}"
                             for v, acts in sorted(running.items()))
            if self.options.force:
                step.notes.append(f"{server.id}: --force: stopping while {what} ({GRACE_NOTE})")
                self.note(step.notes[-1])
                return records
            waited = time.monotonic() - started
            if waited >= self.options.gate_timeout:
                raise GateError(
                    f"{self._at(server)}, gate 'no running archive action': {what} (still "
                    f"after waiting {waited:.0f} s, --gate-timeout "
                    f"{self.options.gate_timeout:g})",
                    "wait for the action to finish (walbctr walbc "
                    f"{self.layout.source} {server.id} get all-actions), or give a longer "
                    f"--gate-timeout, or add --force to stop it anyway ({GRACE_NOTE})")
            board.set(server.id, f"waiting: {what}")
            time.sleep(min(ACTION_POLL_S, max(0.1, self.options.gate_timeout - waited)))
            records = self._batch(server, engine, obs.container_id)

    def wait_ready(self, server: Server, engine: Engine, before: Observed | None) -> Observed:
        """Until the server answers walbc (waiting.wait_tier, as `up` waits); it failing
        at start stops the run, named as the gate it failed."""
        assert self.board is not None  # steps run inside run()'s board
        try:
            done = wait_tier(self.layout, self.fleet, server.role, {server.host: (server,)},
                             {server.id: before} if before is not None else {},
                             self.board, self.options.timeout)
        except NotReadyError as err:
            raise self.not_ready(server, engine, err.failures[0]) from None
        return done[server.id]

    def not_ready(self, server: Server, engine: Engine, failure: Failure) -> GateError:
        _, obs, why = failure
        if obs is not None and why == "exited":
            try:
                run = failed_run(engine, self.layout, server, obs, lines=10)
                seen, tail = run.headline(), run.lines
            except Exception as err:  # the report must not hide the failure it reports
                seen, tail = "exited", [f"(could not read its log: {explain(err)})"]
            return GateError(
                f"{self._at(server)}, gate 'get host-type': on {obs.image} it {seen} "
                "instead of answering\n    last log lines:\n      "
                + "\n      ".join(tail or ["(empty)"]),
                f"look with 'walbctr logs {self.layout.source} {server.id}'")
        tail = log_tail(engine, self.layout, server, 20)
        return GateError(
            f"{self._at(server)}, gate 'get host-type': {why}\n    last log lines:\n      "
            + "\n      ".join(tail or ["(empty)"]),
            f"look with 'walbctr logs {self.layout.source} {server.id}'")

    def gate_after(self, step: Step, server: Server, engine: Engine, obs: Observed,
                   board: ServerBoard) -> None:
        if not step.volumes:
            return  # never read (a server that did not answer before): nothing to compare
        board.set(server.id, "checking")
        now = {r.name: r.state or "?" for r in self._batch(server, engine, obs.container_id)}
        if server.role is Role.PROXY:
            restarted = [v for v, st in step.volumes.items()
                         if st == "Stopped" and now.get(v) == "Started"]
            for vol in restarted:
                code, out = exec_in(engine, obs.container_id,
                                    walbc_argv(server.port, ["stop", vol]))
                text = (f"{server.id}: {vol} was Stopped before; walb-proxy starts every "
                        "volume at start, so walbctr stopped it again")
                if code != 0:
                    text += f" - which failed: {last_line(out)}"
                step.notes.append(text)
                self.note(text)
            if restarted:
                now = {r.name: r.state or "?"
                       for r in self._batch(server, engine, obs.container_id)}
        changed = [f"{v}: {st} before, {now.get(v, 'gone')} now"
                   for v, st in sorted(step.volumes.items()) if now.get(v) != st]
        changed += [f"{v}: not there before, {st} now" for v, st in sorted(now.items())
                    if v not in step.volumes and st != "Clear"]
        if changed and not self.options.force:
            raise GateError(
                f"{self._at(server)}, gate 'volume states unchanged': it runs "
                f"{step.to_image} and answers, but:\n  " + "\n  ".join(changed),
                f"look with 'walbctr status {self.layout.source} --volumes' and its log "
                f"('walbctr logs {self.layout.source} {server.id}'); --force accepts it")
        for text in changed:
            step.notes.append(f"{server.id}: --force: accepted {text}")
            self.note(step.notes[-1])

    def kick_after(self, step: Step, server: Server) -> None:
        """walb's follow-up (doc/recover.md): the senders retry at once, not at their
        next timer."""
        whom = {Role.ARCHIVE: Role.PROXY, Role.PROXY: Role.STORAGE}.get(server.role)
        if whom is None:
            return
        for peer in self.layout.of_role(whom):
            engine = _engine_for(self.fleet, self.layout, peer)
            obs = inspect(engine, container_name(self.layout, peer))
            if obs is None or obs.status != "running":
                continue
            code, out = exec_in(engine, obs.container_id, walbc_argv(peer.port, ["kick"]))
            if code == 0:
                step.kicked.append(peer.id)
                self.note(f"{server.id}: kicked {peer.id} (walb's follow-up when "
                          f"{server.id} restarted)")
            else:
                text = f"{server.id}: could not kick {peer.id}: {last_line(out)}"
                step.notes.append(text)
                self.note(text)


def _unread(role: Role, records: list[volumes.VolumeRecord]) -> list[str]:
    """A gate's facts that walbc could not read: unknown is not 'all clear'."""
    wanted = {Role.STORAGE: ("get is-overflow",), Role.PROXY: ("get is-wdiff-send-error",
                                                               "status"),
              Role.ARCHIVE: ("all-actions",)}[role]
    out = []
    for r in records:
        if r.state == "Clear":
            continue  # gone between two queries: nothing to protect
        for query, message in r.errors:
            if query.startswith(wanted):
                out.append(f"{r.name}: '{query}' failed: {message}")
        if role is Role.STORAGE and r.overflow is None and not r.errors:
            out.append(f"{r.name}: its overflow flag was not in walbc's answer")
        if role is Role.PROXY:
            out += [f"{r.name}: its send-error flag for {a} was not in walbc's answer"
                    for a in r.archives if a not in r.send_error and not r.errors]
    return list(dict.fromkeys(out))


def _step_of(runner: Runner, steps: dict[str, Step], sid: str) -> None:
    runner.step(steps[sid])


def _batches(steps: list[Step], size: int) -> list[list[Step]]:
    """Consecutive steps of one role, at most `size` at a time: tiers never overlap."""
    out: list[list[Step]] = []
    for s in steps:
        if out and out[-1][0].role == s.role and len(out[-1]) < size:
            out[-1].append(s)
        else:
            out.append([s])
    return out


def _image_id(engine: Engine, ref: str) -> str | None:
    found = engine.image_or_none(ref)
    return str(found.id) if found is not None else None


def _engine_for(fleet: Fleet, layout: Layout, server: Server) -> Engine:
    if server.host in fleet.engines:
        return fleet.engines[server.host]
    return Fleet(layout, server.host).engines[server.host]


def paused_lines(result: Result, layout: Layout) -> list[str]:
    """What a pause or a partial run (--hosts, --limit) left, and the commands to go on."""
    plan = result.plan
    assert plan is not None
    src = layout.source
    left = result.left
    why = {"--pause": "a pause was requested"}.get(plan.paused, plan.paused)
    old = ", ".join(dict.fromkeys(s.from_image for s in left))
    lines = [f"{result.kind} paused ({why}); recorded in {plan_path(plan.group)}"]
    if result.kind == "rollback":
        lines.append(f"not rolled back yet: {', '.join(s.server for s in left)} (still on "
                     f"{old}); continue with 'walbctr upgrade {src} --rollback'")
        return lines
    total = len(layout.servers)
    lines.append(f"{total - len(left)} of {total} servers on {plan.image}; not upgraded yet: "
                 f"{', '.join(s.server for s in left)} (still on {old})")
    upgraded = [s.server for s in plan.steps if s.touched]
    they = "it" if len(upgraded) == 1 else "they"
    back = f", or return {', '.join(upgraded)} to the image {they} ran before with 'walbctr " \
        f"upgrade {src} --rollback'" if upgraded else ""
    lines.append(f"continue with 'walbctr upgrade {src} --resume' (--limit N or --hosts H for "
                 f"another part){back}")
    return lines


def summary(result: Result, layout: Layout) -> list[str]:
    """What the operator reads at the end."""
    lines = []
    verb = _verb(result.kind)
    if result.kind == "restart":
        lines.append(f"group {layout.group}: restarted {', '.join(result.done) or 'nothing'}"
                     f" ({result.seconds:.1f} s)")
        return lines
    plan = result.plan
    assert plan is not None
    lines.append(f"group {layout.group}: {verb} {', '.join(result.done) or 'nothing'} "
                 f"({result.seconds:.1f} s)")
    if result.left:
        return lines + paused_lines(result, layout)
    if result.kind == "upgrade":
        lines.append(f"every server runs {plan.image}; the plan is kept in "
                     f"{plan_path(plan.group)} ('walbctr upgrade {layout.source} --rollback' "
                     "returns them to the image they ran before)")
    else:
        old = ", ".join(dict.fromkeys(s.to_image for s in plan.rollback))
        if old != layout.image:
            lines.append(f"the servers run {old} again; put 'image: {old}' back in "
                         f"{layout.source} (it names {layout.image}: a 'walbctr up' would "
                         "recreate them on it)")
    return lines

