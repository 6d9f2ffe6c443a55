"""The keeper's questions to walb servers, asked over walb's wire protocol from inside it.

A walbc process per question costs a few milliseconds of CPU (fork, exec, dynamic loading):
the keeper probes every server four times a second and its scans ask a few questions per
volume, so with 600 volume rows the processes alone took most of a tenth of a core. The same
questions on a socket cost a small fraction of that and look the same to the server. A
server that answers in a protocol the keeper does not understand (a future walb-tools, say)
is asked through walbc for a while: the keeper never calls a server down, nor loses its
scan, because of its own limits.
"""

from __future__ import annotations

import functools
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from walbctr.walb import volumes, wire
from walbctr.walb.walbc import walbc_argv

Result = tuple[int, str, str]  # as the keeper's run_all: exit status, stdout, stderr
Run = Callable[[Mapping[str, list[str]], float], dict[str, Result]]
Ask = Callable[[str, int, Sequence[str], float], Result]
CLIENT_ID = "walb-keeper"


class UnreachableError(OSError):
    """The server did not answer at all (refused, reset, timed out): the question says
    nothing about its volumes."""


# (address, port) -> where it resolved: a name is looked up again only after a failure to
# connect (a recreated container may have another address), not for every question.
_resolved: dict[tuple[str, int], tuple[int, tuple[Any, ...]]] = {}
_resolved_lock = threading.Lock()


def _connect(address: str, port: int, timeout: float) -> socket.socket:
    with _resolved_lock:
        known = _resolved.get((address, port))
    if known is None:
        family, _type, _proto, _name, sockaddr = socket.getaddrinfo(
            address, port, type=socket.SOCK_STREAM)[0]
        known = (family, sockaddr)
    sock = socket.socket(known[0], socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(known[1])
    except BaseException:
        sock.close()
        with _resolved_lock:
            _resolved.pop((address, port), None)
        raise
    with _resolved_lock:
        _resolved[(address, port)] = known
    return sock


class _Received:
    """What the server sent, read as wire's `Read` wants it: exactly n bytes, or fewer at
    the end of the stream, with as few receive calls as the answer allows."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.at = 0

    def __call__(self, n: int) -> bytes:
        while len(self.buf) - self.at < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            del self.buf[:self.at]
            self.at = 0
            self.buf += chunk
        out = bytes(self.buf[self.at:self.at + n])
        self.at += len(out)
        return out


def ask(address: str, port: int, args: Sequence[str], timeout: float) -> Result:
    """walbc's answer to ARGS, without walbc: (0, what walbc prints, '') or, for walb's
    refusal, (1, '', walbc's ERROR line). Raises UnreachableError when the server did not
    answer and wire.WireError when it answered in another protocol."""
    argv = list(args)
    try:
        with _connect(address, port, timeout) as sock:
            sock.sendall(wire.request(CLIENT_ID, argv))
            return 0, wire.read_answer(_Received(sock), argv), ""
    except wire.RefusedError as err:
        return 1, "", wire.walbc_error(argv, err)
    except TimeoutError:
        raise UnreachableError(f"no answer from {address}:{port} within {timeout:g} s") from None
    except (ConnectionResetError, BrokenPipeError) as err:
        # Real walb refuses a negotiation it cannot take (another packet version) by closing
        # with the request unread, which resets the connection: the text is lost, and only
        # walbc can tell. Under load the reset can come while connecting (accepted, then
        # reset at once). A server that crashed mid-answer looks the same; walbc then finds
        # it down, and the wire is tried again later (Asker.RETRY_WIRE_S).
        raise wire.WireError(f"{address}:{port} reset the connection accepted ({err})") from None
    except OSError as err:
        raise UnreachableError(f"{address}:{port}: {err}") from None


class Asker:
    """Each server asked on the wire unless it proved not to speak it; then through walbc
    (`run`, the keeper's process runner), as before."""

    RETRY_WIRE_S = 600.0  # a server that fell back is tried on the wire again after this

    def __init__(self, run: Run, log: Callable[[str], None], ask: Ask = ask) -> None:
        self.run = run
        self.log = log
        self.ask = ask
        self._lock = threading.Lock()
        self.always_walbc: set[str] = set()  # monitor.ask: walbc
        self._fell_back: dict[str, float] = {}  # server id -> when to try the wire again

    def speaks_wire(self, sid: str) -> bool:
        with self._lock:
            if sid in self.always_walbc:
                return False
            until = self._fell_back.get(sid)
            if until is not None and time.monotonic() >= until:
                del self._fell_back[sid]  # tried again: a new refusal logs again
                return True
            return until is None

    def fell_back(self, sid: str, where: str, err: Exception) -> None:
        with self._lock:
            if sid in self._fell_back:
                return
            self._fell_back[sid] = time.monotonic() + self.RETRY_WIRE_S
        self.log(f"{sid} at {where} does not answer in the walb protocol the keeper speaks "
                 f"({err}); asking it through walbc, and on the wire again in "
                 f"{self.RETRY_WIRE_S:g} s")

    def one(self, sid: str, address: str, port: int, args: Sequence[str],
            timeout: float) -> Result:
        """One question, as walbc would answer it (124 for a timeout, 1 for no answer)."""
        if self.speaks_wire(sid):
            try:
                return self.ask(address, port, args, timeout)
            except UnreachableError as err:
                return (124 if "within" in str(err) else 1), "", str(err)
            except wire.WireError as err:
                self.fell_back(sid, f"{address}:{port}", err)
        argv = walbc_argv(port, list(args), address=address, timeout_s=max(1, round(timeout)))
        return self.run({sid: argv}, timeout + 2)[sid]

    def each(self, questions: Mapping[str, tuple[str, str, int, Sequence[str]]],
             timeout: float) -> dict[str, Result]:
        """key -> result for key -> (server id, address, port, args), all at once."""
        return parallel({k: functools.partial(self.one, *q, timeout)
                         for k, q in questions.items()}, timeout + 5)

    def scan(self, sid: str, role: str, address: str, port: int, timeout: float) -> Result:
        """A server's volume scan as the batch prints it (volumes.batch_text): on the wire,
        or through the batch script when the server does not speak it."""
        if self.speaks_wire(sid):
            def question(args: Sequence[str]) -> tuple[int, str]:
                status, out, err = self.ask(address, port, args, timeout)
                return status, out + err
            try:
                return 0, volumes.batch_text(role, question), ""
            except UnreachableError as err:
                return 1, "", str(err)
            except wire.WireError as err:
                self.fell_back(sid, f"{address}:{port}", err)
        return self.run({sid: volumes.batch_argv(role, address, port)}, max(30.0, timeout))[sid]


def parallel(calls: Mapping[str, Callable[[], Result]], timeout: float) -> dict[str, Result]:
    """key -> result of each call, run at once (one on its own needs no thread); a call that
    has not returned within `timeout` counts as timed out."""
    if len(calls) == 1:
        key, call = next(iter(calls.items()))
        return {key: call()}
    out: dict[str, Result] = {}
    threads = [threading.Thread(target=lambda k=k, c=c: out.__setitem__(k, c()), daemon=True)
               for k, c in calls.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    return {k: out.get(k, (124, "", "no answer in time")) for k in calls}


def ask_through(run: Run) -> Ask:
    """An `ask` that runs walbc through `run` (for a keeper whose servers it reaches only by
    a command, as tests that exec walbc in a container do); `run` is given one argv at a
    time, keyed by the server's address."""
    def through(address: str, port: int, args: Sequence[str], timeout: float) -> Result:
        argv = walbc_argv(port, list(args), address=address, timeout_s=max(1, round(timeout)))
        return run({address: argv}, timeout + 2)[address]
    return through
