"""A server's container, one at a time: its restart policy, start, graceful stop, removal.

`up`, `down`, `restart` and `upgrade` all stop and start servers through these, so "stop
gracefully, force only after the grace period" is decided once.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Protocol

from docker.errors import APIError, NotFound

from walbctr.docker.containers import RESTART_POLICY, Observed, exec_in, inspect
from walbctr.errors import WalbctrError, explain
from walbctr.walb.walbc import walbc_argv

if TYPE_CHECKING:
    from walbctr.docker.engine import Engine
    from walbctr.layout.server import Server

# How often a stop is checked on: a graceful walb shutdown takes about 2 s when idle.
STOP_POLL_S = 0.25
POLICY_TRIES = 12


class Board(Protocol):
    """Where stops and waits report progress (display.ServerBoard, or anything alike)."""

    def begin(self, server_id: str) -> None: ...

    def set(self, server_id: str, state: str) -> None: ...

    def tick(self) -> None: ...


def api_error(server: Server, what: str, err: Exception) -> WalbctrError:
    return WalbctrError(
        f"host {server.host}: could not {what} {server.id}: {explain(err)}",
        "run the command again (walbctr picks up where the container is now); if it "
        "persists, look at the engine there ('docker ps -a', its daemon log)")


def set_restart_policy(engine: Engine, server: Server, container_id: str, policy: str) -> None:
    try:
        engine.api.api.update_container(container_id, restart_policy={"Name": policy})
    except NotFound:
        pass
    except APIError as err:
        raise api_error(server, f"set the restart policy ({policy}) of", err) from None


def start_container(engine: Engine, server: Server, container_id: str) -> None:
    try:
        engine.api.api.start(container_id)
    except APIError as err:
        raise api_error(server, "start", err) from None
    set_restart_policy(engine, server, container_id, RESTART_POLICY)


def lift_restart_policy(engine: Engine, server: Server, container_id: str) -> None:
    """Restart policy 'no'. An engine may refuse the update for a moment while the
    container is between two runs of a crash loop (seen: 'unknown'), so try again."""
    for attempt in range(POLICY_TRIES):
        try:
            set_restart_policy(engine, server, container_id, "no")
            return
        except WalbctrError:
            if attempt == POLICY_TRIES - 1:
                raise
            time.sleep(STOP_POLL_S)


def stop_container(engine: Engine, server: Server, obs: Observed, board: Board) -> None:
    """Stop a server's container whatever state it is in, gracefully where it runs.

    The restart policy is lifted first so that a server that exits on request stays
    down; `walbc shutdown graceful` lets running work finish (SIGTERM is walb's forced
    stop); a restarting container is stopped before it can come back. A container that
    vanished meanwhile counts as stopped.
    """
    api = engine.api.api
    cid = obs.container_id
    board.begin(server.id)
    board.set(server.id, "stopping")
    lift_restart_policy(engine, server, cid)
    deadline = time.monotonic() + server.stop_grace_period
    asked = False
    try:
        while True:
            now = inspect(engine, cid)
            if now is None or now.status in ("exited", "dead", "created", "removing"):
                break
            if now.status == "paused":
                api.unpause(cid)
            elif now.status == "restarting":
                api.stop(cid, timeout=10)  # nothing runs: this only cancels the restart
            elif not asked:
                asked = True
                # A failure means it is stopping already, or not listening: the stop
                # below does it.
                exec_in(engine, cid, walbc_argv(server.port, ["shutdown", "graceful"]))
            elif time.monotonic() > deadline:
                # The grace period is over: walb's forced stop. The image's entrypoint
                # takes a first stop signal as a graceful request (one is under way) and a
                # second as `shutdown force`: two different signals, as a repeated one may
                # merge with the first in flight. Images without it force on either.
                with contextlib.suppress(APIError):  # it may have exited meanwhile
                    api.kill(cid, "SIGINT")
                api.stop(cid, timeout=10)
            time.sleep(STOP_POLL_S)
    except NotFound:
        pass
    except APIError as err:
        raise api_error(server, "stop", err) from None
    board.set(server.id, "stopped")


def remove_container(engine: Engine, server: Server, container_id: str) -> None:
    """Remove a stopped server's container; its data (base dir, logs, LVs) stays."""
    api = engine.api.api
    for _ in range(40):
        try:
            api.remove_container(container_id)
            return
        except NotFound:
            return
        except APIError as err:
            text = explain(err)
            if "already in progress" in text or "is restarting" in text or \
                    "is running" in text or "Stop the container" in text:
                # Another removal is under way, or the engine still finishes the stop.
                time.sleep(STOP_POLL_S)
                with contextlib.suppress(NotFound, APIError):
                    api.stop(container_id, timeout=10)
                continue
            raise api_error(server, "remove the container of", err) from None
    raise WalbctrError(f"host {server.host}: the container of {server.id} could not be "
                       "removed in 10 s", "run 'walbctr down' again")
