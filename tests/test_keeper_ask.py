"""How the keeper asks (walbctr/keeper/ask.py): on walb's wire protocol, and through walbc
for a server that answers in another protocol or when the layout says `ask: walbc`."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator, Mapping

import pytest

from walbctr.keeper.ask import Asker, ask
from walbctr.keeper.duties import Config, Keeper, ServerRef, parse_config


@pytest.fixture
def not_walb() -> Iterator[int]:
    """A port whose server answers every connection in HTTP, as a wrong port would."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    listener.close()


class Recorder:
    """The keeper's process runner, recording instead of running."""

    def __init__(self) -> None:
        self.argvs: list[list[str]] = []

    def __call__(self, argvs: Mapping[str, list[str]],
                 _timeout: float) -> dict[str, tuple[int, str, str]]:
        self.argvs += argvs.values()
        return {k: (0, "proxy\n", "") for k in argvs}


def test_a_server_that_answers_in_another_protocol_is_asked_through_walbc_for_a_while(
        not_walb: int) -> None:
    run, said = Recorder(), []
    asker = Asker(run, said.append)
    assert asker.one("p0", "127.0.0.1", not_walb, ["get", "host-type"], 2) == (0, "proxy\n", "")
    assert run.argvs == [["walbc", "-a", "127.0.0.1", "-p", str(not_walb), "-to", "2",
                          "-retry", "0", "get", "host-type"]]
    assert len(said) == 1 and "asking it through walbc, and on the wire again in" in said[0]
    asker.one("p0", "127.0.0.1", not_walb, ["get", "vol"], 2)
    assert len(run.argvs) == 2 and len(said) == 1  # no second try on the wire, no second line
    asker._fell_back["p0"] = 0  # later, the wire is tried again (and refused again, and said)
    asker.one("p0", "127.0.0.1", not_walb, ["get", "vol"], 2)
    assert len(run.argvs) == 3 and len(said) == 2 and not asker.speaks_wire("p0")


def test_a_server_that_does_not_answer_is_down_not_a_reason_to_change_protocol() -> None:
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    run, said = Recorder(), []
    asker = Asker(run, said.append)
    status, out, err = asker.one("a0", "127.0.0.1", port, ["get", "host-type"], 1)
    assert (status, out) == (1, "") and f"127.0.0.1:{port}" in err
    assert run.argvs == [] and said == [] and asker.speaks_wire("a0")


def test_a_silent_server_times_out_within_the_probe_timeout() -> None:
    import time

    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts (backlog), never answers
        started = time.monotonic()
        status, _out, err = Asker(Recorder(), print).one(
            "a0", "127.0.0.1", silent.getsockname()[1], ["get", "host-type"], 0.5)
        assert time.monotonic() - started < 2
    assert status == 124 and "within 0.5 s" in err


def test_ask_walbc_in_the_keepers_configuration_runs_walbc_for_every_server() -> None:
    text = ('{"group": "g", "ask": "walbc", "servers": [{"id": "p0", "role": "proxy", '
            '"address": "127.0.0.1", "port": 1}]}')
    config = parse_config(text)
    run = Recorder()
    keeper = Keeper(config, None, run, ask=ask)
    assert keeper.probe_once() == {"p0": True}
    assert run.argvs and run.argvs[0][0] == "walbc"
    with pytest.raises(ValueError, match="ask is 'ssh', not wire or walbc"):
        parse_config(text.replace('"walbc"', '"ssh"'))


def test_the_default_configuration_asks_on_the_wire() -> None:
    config = Config("g", (ServerRef("p0", "proxy", "127.0.0.1", 1),))
    keeper = Keeper(config, None, Recorder())
    assert keeper.asker.speaks_wire("p0")


def test_a_server_that_resets_the_connection_it_accepted_is_asked_through_walbc() -> None:
    """As real walb does with a negotiation it cannot take (another packet version): it
    closes with the request unread, and the kernel resets the connection."""
    import struct

    listener = socket.create_server(("127.0.0.1", 0))

    def reset_one() -> None:
        conn, _ = listener.accept()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
    thread = threading.Thread(target=reset_one, daemon=True)
    thread.start()
    run, said = Recorder(), []
    asker = Asker(run, said.append)
    with listener:
        assert asker.one("a0", "127.0.0.1", listener.getsockname()[1], ["get", "host-type"],
                         2)[0] == 0
    thread.join()
    assert len(run.argvs) == 1 and len(said) == 1 and not asker.speaks_wire("a0"), said
