"""Waiting for servers to answer: a tier on every host at once, or one server.

`up` waits for a tier, `restart` and `upgrade` for one server; both wait here, with the
same verdicts (`Observed.exited_since`, walb's readiness ask) and the same report of what
failed.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, NoReturn

from walbctr.docker.containers import (
    RESTART_POLICY,
    Listed,
    Observed,
    answers,
    answers_many,
    inspect,
    list_group,
)
from walbctr.docker.lifecycle import Board, set_restart_policy
from walbctr.docker.logs import failed_run, log_tail
from walbctr.docker.state import record_ready
from walbctr.errors import WalbctrError, explain
from walbctr.layout.server import Role
from walbctr.walb.readiness import POLL_S

if TYPE_CHECKING:
    from walbctr.docker.fleet import Fleet
    from walbctr.layout.server import Server
    from walbctr.layout.spec import Layout

Failure = tuple["Server", Observed | None, str]  # the server, its container, why


class NotReadyError(WalbctrError):
    """Servers failed to come up; `failures` says which, for callers that report their
    own way (upgrade names its gate)."""

    def __init__(self, message: str, fix: str, failures: Sequence[Failure]) -> None:
        super().__init__(message, fix)
        self.failures = list(failures)


def _restarts_before(before: Mapping[str, Observed], obs: Observed) -> int:
    """The restarts already counted for this container: a new container starts at 0."""
    was = before.get(obs.server)
    return was.restart_count if was is not None and was.container_id == obs.container_id \
        else 0


def wait_tier(layout: Layout, fleet: Fleet, role: Role,
              by_host: Mapping[str, tuple[Server, ...]], before: Mapping[str, Observed],
              board: Board, timeout: float | None) -> dict[str, Observed]:
    """Wait until every server of the tier answers walbc; one that exits or restarts
    (since `before`) fails the tier, and so does one silent past its start_period.

    walbctr asks the servers itself (readiness.py) instead of waiting for Docker's health
    check, whose interval is long: a tier moves on within a poll of being ready.
    """
    pending = {s.id: s for servers in by_host.values() for s in servers}
    limit = {sid: timeout if timeout is not None else s.start_period
             for sid, s in pending.items()}
    started = time.monotonic()
    done: dict[str, Observed] = {}
    engines = {layout.hosts[h].engine_key: h for h in by_host}
    while True:
        listed = _list_everywhere(layout, fleet, engines.values())
        failures = _exited(fleet, pending, listed)
        running = {sid: (server, listed[sid].container_id) for sid, server in pending.items()
                   if sid in listed and listed[sid].status == "running"}
        ready, refused = _settle_answers(fleet, running, ask_ready(fleet, running), before,
                                         board)
        failures += refused
        for sid, obs in ready.items():
            done[sid] = obs
            del pending[sid]
        if failures:
            _fail(layout, fleet, role, board, failures)
        if not pending:
            record_ready(layout.group, {sid: (o.container_id, o.started_at)
                                        for sid, o in done.items()})
            return done
        late = _late(pending, limit, time.monotonic() - started)
        if late:
            _fail(layout, fleet, role, board, late)
        board.tick()
        time.sleep(POLL_S)


def _list_everywhere(layout: Layout, fleet: Fleet, hosts: Iterable[str]
                     ) -> dict[str, Listed]:
    """The group's containers on every engine (one host each), listed at once; an engine
    that cannot be listed fails the wait."""
    listed: dict[str, Listed] = {}
    for found in fleet.each(hosts, lambda h: list_group(fleet.engines[h],
                                                        layout.group)).values():
        if isinstance(found, Exception):
            raise found
        listed.update(found)
    return listed


def _exited(fleet: Fleet, pending: Mapping[str, Server],
            listed: Mapping[str, Listed]) -> list[Failure]:
    """The waited-for servers whose container stopped or is looping through restarts."""
    return [(server, inspect(fleet.engines[server.host], listed[sid].container_id), "exited")
            for sid, server in pending.items()
            if sid in listed and listed[sid].status in ("exited", "dead", "restarting")]


def _settle_answers(fleet: Fleet, asked: Mapping[str, tuple[Server, str]],
                    answered: Mapping[str, bool | Exception], before: Mapping[str, Observed],
                    board: Board) -> tuple[dict[str, Observed], list[Failure]]:
    """Each asked server by its answer: a silent one is still starting; one that answers is
    ready unless its container is gone or its process ended since `before` (a walb that
    answers after a restart still failed its start). A ready server gets back the restart
    policy an interrupted `down` or `restart` left lifted."""
    ready: dict[str, Observed] = {}
    failures: list[Failure] = []
    for sid, ok in answered.items():
        server, container_id = asked[sid]
        if ok is not True:
            board.set(sid, "starting")
            continue
        obs = inspect(fleet.engines[server.host], container_id)
        if obs is None or obs.exited_since(_restarts_before(before, obs)):
            failures.append((server, obs, "exited"))
            continue
        if obs.policy_drift:
            set_restart_policy(fleet.engines[server.host], server, obs.container_id,
                               RESTART_POLICY)
        board.set(sid, "healthy")
        ready[sid] = obs
    return ready, failures


def _late(pending: Mapping[str, Server], limit: Mapping[str, float],
          waited: float) -> list[Failure]:
    """The servers still silent past their limit (the start_period, or --timeout)."""
    return [(s, None, f"did not answer walbc within {limit[sid]:.0f} s (its start_period)")
            for sid, s in pending.items() if waited > limit[sid]]


def _fail(layout: Layout, fleet: Fleet, role: Role, board: Board,
          failures: Sequence[Failure]) -> NoReturn:
    for server, _, _ in failures:
        board.set(server.id, "failed")
    raise tier_failure(layout, fleet, role, failures)


def ask_ready(fleet: Fleet, targets: dict[str, tuple[Server, str]]
              ) -> dict[str, bool | Exception]:
    """Probe every (server, container id) at once: one exec per engine, in one of the
    servers' own containers, asking them all over the network they serve on (the group's
    bridge network by their aliases, or the host's loopback in host mode); a lone server
    is asked from inside its own container."""
    layout = fleet.layout
    per_engine: dict[str, dict[str, tuple[Server, str]]] = {}
    for sid, (server, _) in targets.items():
        per_engine.setdefault(layout.hosts[server.host].engine_key, {})[sid] = (
            server, server.id if layout.network_mode == "bridge" else "127.0.0.1")

    def ask(key: str) -> dict[str, bool]:
        group = per_engine[key]
        if len(group) == 1:
            (sid, (server, _)), = group.items()
            return {sid: answers(fleet.engines[server.host], targets[sid][1], server)}
        first = next(iter(group))
        return answers_many(fleet.engines[targets[first][0].host], targets[first][1], group)

    results: dict[str, bool | Exception] = {}
    for key, outcome in fleet.each(per_engine, ask).items():
        if isinstance(outcome, Exception):
            results.update(dict.fromkeys(per_engine[key], outcome))
        else:
            results.update(outcome)
    return results


def tier_failure(layout: Layout, fleet: Fleet, role: Role,
                 failures: Sequence[Failure]) -> NotReadyError:
    parts = []
    for server, obs, why in failures:
        engine = fleet.engines[server.host]
        head = f"{server.id} ({server.role.value} on {server.host})"
        try:
            if why == "exited" and obs is not None:
                run = failed_run(engine, layout, server, obs)
                text = f"{head} {run.headline()}"
                what = "last log lines of the run that failed" if run.bounded else \
                    "last log lines"
                tail = run.lines
            else:
                text = f"{head} {why}"
                what = "last log lines"
                tail = log_tail(engine, layout, server, 20)
        except Exception as err:  # the report must not hide the failure it reports
            text, what, tail = f"{head} {why}", "log", [f"(could not read it: {explain(err)})"]
        if why.startswith("did not answer") and server.role is Role.ARCHIVE:
            text += ("\n    an archive answers only after scanning its VG and recovering "
                     "every volume: a large one may need a longer start_period")
        text += f"\n    {what}:\n      " + "\n      ".join(tail or ["(empty)"])
        parts.append(text)
    later = " and ".join(r.section for r in role.later) or "nothing else"
    later += " was" if not role.later else " were"
    first = failures[0][0].id
    source = layout.source
    return NotReadyError(
        f"the {role.value} tier failed:\n  " + "\n  ".join(parts)
        + f"\n{later.capitalize()} not started; what did start is left running for "
        "inspection.",
        f"look with 'walbctr logs {source} {first}' and 'walbctr status {source}'; stop "
        f"the group with 'walbctr down {source}'",
        failures,
    )
