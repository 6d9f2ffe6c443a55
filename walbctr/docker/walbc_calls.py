"""walbc calls on a group's servers, each from inside the server's own container.

A volume procedure talks to several servers; each call runs walbc in the container of the
server it asks, against 127.0.0.1 (as `walbctr walbc` does), so walbctr needs no route to
the servers' ports and the address the servers use for each other never matters here.
Containers are looked up once per server. Every call is timed into `trace`, so a caller
(and bench/volume_ops.py) can tell walbc's time from walbctr's own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from walbctr.docker.containers import exec_in, require_running, server_container
from walbctr.errors import WalbctrError
from walbctr.walb.volumes import (
    VolumeRecord,
    batch_argv,
    parse_batch,
    split_sections,
    walbc_error,
)
from walbctr.walb.walbc import walbc_argv

if TYPE_CHECKING:
    from walbctr.docker.engine import Engine
    from walbctr.layout.spec import Layout
    from walbctr.walb.volumes import Answer

# A value walbctr passes to walbc: a word walb takes (volume names, gids, HOST:PORT, ...).
_WORD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                        "_.:,/@+=-")

# Several read-only queries in one exec: each argument is 'KEY|WORDS', WORDS split on
# spaces (every word is checked against _WORD_CHARS first, and globbing is off), answered
# as the sections walbctr.walb.volumes.split_sections reads.
_QUERY_SCRIPT = r"""set -f
a=$1 p=$2; shift 2
for x in "$@"; do k=${x%%|*}; c=${x#*|}
  printf '@@ %s\n' "$k"
  case $c in get\ *|status*) r="-retry 0";; *) r=;; esac
  walbc -a "$a" -p "$p" -to 10 $r $c 2>&1; printf '@@rc %s\n' "$?"
done
echo @@end
"""


class WalbcRefusedError(WalbctrError):
    """walbc answered with an error: the server refused the command."""

    def __init__(self, server: str, args: Sequence[str], message: str) -> None:
        super().__init__(f"{server} refused 'walbc {' '.join(args)}': {message}")
        self.server = server
        self.walb_message = message


@dataclass(frozen=True)
class Call:
    server: str
    args: tuple[str, ...]
    seconds: float
    status: int
    started: float = 0.0  # time.monotonic() when it began


class WalbcCalls:
    """walbc on the layout's servers by id."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.trace: list[Call] = []
        self._found: dict[str, tuple[Engine, Any]] = {}
        self._lock = threading.Lock()

    def _container(self, server_id: str) -> tuple[Engine, Any]:
        with self._lock:
            if server_id not in self._found:
                server, engine, container = server_container(self.layout, server_id)
                require_running(self.layout, server, container)
                self._found[server_id] = (engine, container)
            return self._found[server_id]

    def forget(self, server_id: str) -> None:
        """Look the server's container up again at the next call (it was recreated)."""
        with self._lock:
            self._found.pop(server_id, None)

    def _exec(self, server_id: str, argv: list[str], label: tuple[str, ...]) -> tuple[int, str]:
        engine, container = self._container(server_id)
        started = time.monotonic()
        code, out = exec_in(engine, container.id, argv)
        with self._lock:
            self.trace.append(Call(server_id, label, time.monotonic() - started, code,
                                   started))
        if code == -1:
            raise WalbctrError(f"cannot run walbc in {server_id}'s container: {out.strip()}",
                               f"see 'walbctr status {self.layout.source}'")
        return code, out

    def run(self, server_id: str, *args: str, timeout_s: int = 60) -> str:
        """walbc ARGS on the server; its output, or WalbcRefusedError with walb's message."""
        _check_words(args)
        port = self.layout.server(server_id).port
        code, out = self._exec(server_id, walbc_argv(port, args, timeout_s=timeout_s), args)
        if code != 0:
            raise WalbcRefusedError(server_id, args, walbc_error(out))
        return out

    def exists(self, server_id: str, path: str) -> bool:
        """Whether `path` exists in the server's container (a walb device, say)."""
        _check_words([path])
        code, _out = self._exec(server_id, ["test", "-e", path], ("test", "-e", path))
        return code == 0

    def read_text(self, server_id: str, path: str) -> str | None:
        """A small file as the server's container sees it (a walb volume's metadata), or
        None when it cannot be read."""
        _check_words([path])
        code, out = self._exec(server_id, ["cat", "--", path], ("cat", path))
        return out if code == 0 else None

    def ask(self, server_id: str, *args: str) -> str:
        """A read-only query that always prints something (a state, a number). An empty
        answer with status 0 is the engine losing exec output under load (docker-py#2042):
        asked once more."""
        out = self.run(server_id, *args, timeout_s=10)
        if not out.strip():
            out = self.run(server_id, *args, timeout_s=10)
        return out

    def batch(self, server_id: str) -> list[VolumeRecord]:
        """Every volume of the server, from the one-exec batch query `status --volumes`
        uses (walbctr.walb.volumes.batch_argv)."""
        server = self.layout.server(server_id)
        argv = batch_argv(server.role.value, "127.0.0.1", server.port)
        for attempt in (1, 2):
            _code, out = self._exec(server_id, argv, ("batch",))
            try:
                return parse_batch(server.role.value, out)
            except ValueError as err:
                if attempt == 2:
                    raise WalbctrError(f"cannot read {server_id}'s volumes: {err}",
                                       f"see 'walbctr logs {self.layout.source} "
                                       f"{server_id}'") from None
        raise AssertionError("unreachable")

    def query(self, server_id: str, queries: Sequence[tuple[str, Sequence[str]]]
              ) -> dict[str, Answer]:
        """Several read-only queries in one exec: key -> walbc's status and output."""
        for _key, args in queries:
            _check_words(args)
        port = self.layout.server(server_id).port
        argv = ["sh", "-c", _QUERY_SCRIPT, "sh", "127.0.0.1", str(port),
                *(f"{key}|{' '.join(args)}" for key, args in queries)]
        for attempt in (1, 2):
            _code, out = self._exec(server_id, argv, ("query", *(k for k, _ in queries)))
            try:
                return split_sections(out)
            except ValueError:
                if attempt == 2:
                    raise WalbctrError(f"{server_id} gave a cut-off answer to walbctr's "
                                       "queries twice", "try again; if it persists, see "
                                       f"'walbctr logs {self.layout.source} {server_id}'") from None
        raise AssertionError("unreachable")


def _check_words(args: Sequence[str]) -> None:
    for arg in args:
        if not arg or not set(arg) <= _WORD_CHARS or "|" in arg:
            raise WalbctrError(f"{arg!r} cannot be passed to walbc",
                               "volume names, gids and paths take letters, digits and "
                               "_ . : , / @ + = -")
