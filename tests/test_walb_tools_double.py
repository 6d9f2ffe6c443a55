"""Contract tests for the walb-tools TEST DOUBLE in tests/fixtures/walb-tools-double/.

The double stands in for walb-tools in CI image builds, so it must keep the build
contract (``make core`` -> binsrc/*) and the command-line contract of the servers,
walbc and wdevc.  The first tests build it natively and exercise that contract; the
volume-level commands, test hooks and shutdown modes are then tested in containers of the
image built from it (conftest's ``double_image``), as walbctr runs them.
"""

import io
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from walbctr.walb import wire

DOUBLE_SRC = Path(__file__).resolve().parent / "fixtures" / "walb-tools-double"
VERSION = "1.0.19-double"
SERVERS = ("walb-storage", "walb-proxy", "walb-archive")
EXECUTABLES = (*SERVERS, "walbc", "wdevc")


# ----------------------------------------------------------------- helpers


def run(cmd: list[Any], timeout: float = 15, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in cmd],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kwargs,
    )


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def free_port() -> int:
    """A port that is free on both IPv4 and IPv6 (as far as we can tell)."""
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        addr = ("::", 0)
    except OSError:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        addr = ("0.0.0.0", 0)
    with sock:
        sock.bind(addr)
        port: int = sock.getsockname()[1]
        return port


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


def read_text(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def raw_request(port: int, payload: bytes, timeout: float = 3) -> bytes:
    """Send raw bytes, return everything the server sends until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        chunks: list[bytes] = []
        while True:
            data = sock.recv(4096)
            if not data:
                return b"".join(chunks)
            chunks.append(data)


def answers(port: int) -> bool:
    """True once the server completes a request (bypasses walbc)."""
    try:
        reply = raw_request(port, b"WALB-DOUBLE/1 pytest get host-type\n", timeout=1)
        return reply.endswith(b"OK\n")
    except OSError:
        return False


class Server:
    def __init__(self, role: str, proc: subprocess.Popen[bytes], port: int, stderr_path: Path):
        self.role, self.proc, self.port, self.stderr_path = role, proc, port, stderr_path

    def stderr(self) -> str:
        return read_text(self.stderr_path)


# ----------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def binsrc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build a private copy of the double with the image build's command."""
    for tool in ("make", "g++"):
        if shutil.which(tool) is None:
            pytest.skip(f"cannot build the walb-tools double: '{tool}' is not on PATH")
    tree = tmp_path_factory.mktemp("double") / "walb-tools-double"
    shutil.copytree(DOUBLE_SRC, tree, ignore=shutil.ignore_patterns("binsrc", "obj"))
    build = run(["make", "-j2", "core", "DISABLE_COMMIT_ID=1"], timeout=600, cwd=tree)
    assert build.returncode == 0, build.stdout + build.stderr
    assert "warning" not in build.stderr.lower(), build.stderr
    return tree / "binsrc"


WalbcCall = Callable[..., subprocess.CompletedProcess[str]]
StartServer = Callable[..., Server]


@pytest.fixture
def walbc(binsrc: Path) -> WalbcCall:
    def call(
        port: int, *args: str, host: str = "127.0.0.1", to: int = 3, retry: int = 0
    ) -> subprocess.CompletedProcess[str]:
        # As upstream, only `status` and `get` take -retry.
        retries = ["-retry", retry] if args and args[0] in ("status", "get") else []
        cmd = [binsrc / "walbc", "-a", host, "-p", port, "-to", to, *retries, *args]
        return run(cmd, timeout=(to + 1) * (retry + 1) + 10)

    return call


@pytest.fixture
def start_server(binsrc: Path, tmp_path: Path) -> Iterator[StartServer]:
    """Start a double server; it is killed at teardown if still running."""
    started = []

    def start(role: str, *args: Any, port: int | None = None, wrap: Sequence[Any] = ()) -> Server:
        port = port or free_port()
        stderr_path = tmp_path / f"{role}-{port}.stderr"
        with open(stderr_path, "w") as err:
            proc = subprocess.Popen(
                [*map(str, wrap), str(binsrc / f"walb-{role}"), "-p", str(port), *map(str, args)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                cwd=tmp_path,
            )
        server = Server(role, proc, port, stderr_path)
        started.append(server)
        ready = wait_until(lambda: proc.poll() is not None or answers(port), 5)
        assert proc.poll() is None, f"walb-{role} exited {proc.returncode}: {server.stderr()}"
        assert ready, f"walb-{role} does not answer on port {port}: {server.stderr()}"
        return server

    yield start
    for server in started:
        if server.proc.poll() is None:
            server.proc.kill()
        server.proc.wait(timeout=5)


# ----------------------------------------------------------------- tests


def test_build_output_and_command_line_contract(binsrc: Path, tmp_path: Path) -> None:
    for name in EXECUTABLES:
        path = binsrc / name
        assert path.is_file() and os.access(path, os.X_OK), f"{name} was not built"

    usage: dict[str, str] = {}
    for name in (*SERVERS, "walbc"):
        res = run([binsrc / name, "-h"], cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        assert "usage" in res.stdout.lower() and "-p PORT" in res.stdout
        usage[name] = res.stdout
        res = run([binsrc / name, "-no-such-option"], cwd=tmp_path)
        assert res.returncode == 1
        assert "usage" in res.stderr.lower() and "-no-such-option" in res.stderr
    assert re.search(r"^\s+-archive HOST:PORT", usage["walb-storage"], re.M)
    assert re.search(r"^\s+-proxy HOST:PORT", usage["walb-storage"], re.M)
    assert re.search(r"^\s+-stop\b", usage["walb-proxy"], re.M)
    assert re.search(r"^\s+-vg VG", usage["walb-archive"], re.M)
    assert not re.search(r"^\s+-bg\b", usage["walb-archive"], re.M)

    # Usage errors never start a server: each of these must exit 1 at once.
    base = tmp_path / "base"
    base.mkdir()
    port = free_port()
    bad_command_lines: dict[str, list[Any]] = {
        "archive rejects -bg": ["walb-archive", "-p", port, "-b", base, "-bg", "2"],
        "storage needs -archive": ["walb-storage", "-b", base, "-proxy", f"127.0.0.1:{port}"],
        "storage needs -proxy": ["walb-storage", "-b", base, "-archive", f"127.0.0.1:{port}"],
        "missing value": ["walb-proxy", "-b", base, "-p"],
        "non-numeric port": ["walb-proxy", "-b", base, "-p", "abc"],
        "non-numeric option": ["walb-archive", "-p", port, "-b", base, "-maxopen", "many"],
        "bad -discard": ["walb-archive", "-p", port, "-b", base, "-discard", "maybe"],
        "stray argument": ["walb-proxy", "-p", port, "-b", base, "extra"],
    }
    for case, (exe, *args) in bad_command_lines.items():
        res = run([binsrc / exe, *args], timeout=10, cwd=tmp_path)
        assert res.returncode == 1, f"{case}: {res.stderr}"
        assert "usage" in res.stderr.lower() and "error" in res.stderr, f"{case}: {res.stderr}"
    assert "-bg" in run([binsrc / "walb-archive", "-b", base, "-bg", "2"]).stderr
    assert "-archive" in run([binsrc / "walb-storage", "-proxy", "h:1"]).stderr
    assert list(base.iterdir()) == [], "usage errors must not write into the base dir"

    res = run([binsrc / "walbc", "-a", "127.0.0.1"])
    assert res.returncode == 1 and "no command" in res.stderr

    res = run([binsrc / "wdevc", "-h"])
    assert res.returncode == 0 and "usage" in res.stdout.lower()
    res = run([binsrc / "wdevc", "list"])
    assert res.returncode == 1
    if not os.path.exists("/dev/walb/control"):
        assert "driver is not loaded" in res.stderr
    else:
        assert "test double" in res.stderr


def test_proxy_answers_walbc_and_stops_on_sigterm(
    start_server: StartServer, walbc: WalbcCall, tmp_path: Path
) -> None:
    base = tmp_path / "proxy"
    srv = start_server("proxy", "-b", base, "-id", "p0", "-l", "-")
    assert base.is_dir(), "the proxy creates its base dir"

    res = walbc(srv.port, "get", "host-type")
    assert (res.returncode, res.stdout) == (0, "proxy\n"), res.stderr
    if has_ipv6_loopback():
        res = walbc(srv.port, "get", "host-type", host="::1")
        assert (res.returncode, res.stdout) == (0, "proxy\n"), res.stderr
    res = walbc(srv.port, "version")
    assert (res.returncode, res.stdout) == (0, VERSION + "\n")
    res = walbc(srv.port, "get", "pid")
    assert (res.returncode, res.stdout) == (0, f"{srv.proc.pid}\n")
    res = walbc(srv.port, "get", "vol")
    assert (res.returncode, res.stdout) == (0, "")
    res = walbc(srv.port, "get", "state", "vol0")
    assert res.returncode == 0 and res.stdout.strip() == "Clear"  # as upstream answers
    res = walbc(srv.port, "get", "volume-group")
    assert res.returncode == 1 and "walb-archive" in res.stderr
    res = walbc(srv.port, "frobnicate")
    assert res.returncode == 1 and "unknown command" in res.stderr
    res = walbc(srv.port, "status")
    assert res.returncode == 0
    assert "role: proxy" in res.stdout and "id: p0" in res.stdout and VERSION in res.stdout

    assert wait_until(lambda: "listening on" in srv.stderr(), 5), srv.stderr()
    first = srv.stderr().splitlines()[0]
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+\S* INFO p0 ", first), first
    for needle in ("walb-proxy", VERSION, f"port {srv.port}", str(base)):
        assert needle in first, (needle, first)
    assert f"-p {srv.port} -b {base} -id p0 -l -" in srv.stderr(), "argv is logged"

    srv.proc.send_signal(signal.SIGTERM)
    assert srv.proc.wait(timeout=2) == 0
    assert "shutdown" in srv.stderr().splitlines()[-1]


def test_archive_checks_base_dir_and_volume_group(binsrc: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir"
    res = run([binsrc / "walb-archive", "-p", free_port(), "-b", missing], cwd=tmp_path)
    assert res.returncode == 1
    assert "ERROR" in res.stderr and "base directory not found" in res.stderr
    assert str(missing) in res.stderr
    assert not missing.exists(), "the archive must not create its base dir"

    vg = "walbctr-double-no-such-vg"
    if os.path.exists("/sbin/vgs") and run(["/sbin/vgs", vg]).returncode == 0:
        pytest.skip(f"volume group {vg} unexpectedly exists")
    base = tmp_path / "archive"
    base.mkdir()
    cmd = [binsrc / "walb-archive", "-p", free_port(), "-b", base, "-vg", vg]
    res = run(cmd, timeout=60, cwd=tmp_path)
    assert res.returncode == 1
    error = [line for line in res.stderr.splitlines() if " ERROR " in line]
    assert error and "/sbin/vgs" in error[0], res.stderr
    if not os.path.exists("/sbin/vgs"):
        assert "No such file or directory" in error[0]
    assert list(base.iterdir()) == []


FAKE_VGS = """#!/bin/sh
echo "vgs $*" >> "$(dirname "$0")/calls"
[ "$1" = vgtest ] && exit 0
echo "  Volume group \\"$1\\" not found" >&2; exit 5
"""
FAKE_LVS = """#!/bin/sh
echo "lvs $*" >> "$(dirname "$0")/calls"
[ "$1" = vgtest/tptest ] && exit 0
echo "  Failed to find logical volume \\"$1\\"" >&2; exit 5
"""


def test_archive_with_fake_lvm_tools(
    start_server: StartServer, walbc: WalbcCall, binsrc: Path, tmp_path: Path
) -> None:
    """Success path of the archive: /sbin is replaced by fake vgs/lvs in a private
    mount namespace (needs root and unshare; skipped otherwise)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) to put fake vgs/lvs on /sbin")
    if run(["unshare", "-m", "true"]).returncode != 0:
        pytest.skip("cannot create a mount namespace here")
    fake = tmp_path / "fake-sbin"
    fake.mkdir()
    for name, text in (("vgs", FAKE_VGS), ("lvs", FAKE_LVS)):
        (fake / name).write_text(text)
        (fake / name).chmod(0o755)
    mount_fake = 'mount --bind "$0" "$(readlink -f /sbin)" && exec "$@"'
    wrap = ["unshare", "-m", "sh", "-c", mount_fake, fake]
    base = tmp_path / "archive"
    base.mkdir()

    cmd = [*wrap, binsrc / "walb-archive", "-p", free_port(), "-b", base, "-vg", "vgtest"]
    res = run([*cmd, "-tp", "nope"], cwd=tmp_path)
    assert res.returncode == 1
    assert "ERROR" in res.stderr and 'Failed to find logical volume "vgtest/nope"' in res.stderr

    srv = start_server("archive", "-b", base, "-vg", "vgtest", "-tp", "tptest", wrap=wrap)
    assert (fake / "calls").read_text().splitlines()[-2:] == ["vgs vgtest", "lvs vgtest/tptest"]
    for args, expected in (
        (["get", "host-type"], "archive\n"),
        (["get", "volume-group"], "vgtest\n"),
        (["get", "thinpool"], "tptest\n"),
    ):
        res = walbc(srv.port, *args)
        assert (res.returncode, res.stdout) == (0, expected), res.stderr
    res = walbc(srv.port, "status")
    assert "volume group: vgtest" in res.stdout and "thin pool: tptest" in res.stdout
    assert walbc(srv.port, "shutdown").returncode == 0
    assert srv.proc.wait(timeout=2) == 0
    assert list(base.iterdir()) == []


def test_storage_fails_on_unresolvable_peer(binsrc: Path, tmp_path: Path) -> None:
    port = free_port()
    for archive, proxies, bad in (
        ("nonexistent.invalid:1", f"127.0.0.1:{port}", "nonexistent.invalid:1"),
        (f"127.0.0.1:{port}", f"127.0.0.1:{port},nonexistent.invalid:2", "nonexistent.invalid:2"),
    ):
        cmd: list[Any] = [binsrc / "walb-storage", "-p", free_port(), "-b", tmp_path / "storage"]
        cmd += ["-archive", archive, "-proxy", proxies]
        res = run(cmd, timeout=60, cwd=tmp_path)
        assert res.returncode == 1, res.stderr
        error = [line for line in res.stderr.splitlines() if " ERROR " in line]
        assert error and bad in error[0], res.stderr


def test_storage_probes_proxies_and_archive(
    start_server: StartServer, walbc: WalbcCall, tmp_path: Path
) -> None:
    proxy = start_server("proxy", "-b", tmp_path / "proxy")
    dead_proxy_port, archive_port = free_port(), free_port()  # nothing listens there
    log = tmp_path / "storage.log"
    log.write_text("line from an earlier run\n")
    storage = start_server(
        "storage",
        "-b",
        tmp_path / "storage",
        "-id",
        "s0",
        "-l",
        log,
        "-archive",
        f"127.0.0.1:{archive_port}",
        "-proxy",
        f"127.0.0.1:{proxy.port},127.0.0.1:{dead_proxy_port}",
    )
    up = f"proxy 127.0.0.1:{proxy.port} is available"
    down = f"proxy 127.0.0.1:{proxy.port} is unavailable"
    dead = f"proxy 127.0.0.1:{dead_proxy_port} is unavailable"
    archive_down = f"archive 127.0.0.1:{archive_port} is unavailable"
    expected = (up, dead, archive_down)
    assert wait_until(lambda: all(s in read_text(log) for s in expected), 5), read_text(log)
    assert read_text(log).startswith("line from an earlier run\n"), "an absolute -l appends"
    assert storage.stderr() == "", "an absolute -l logs to that file only"

    res = walbc(storage.port, "get", "host-type")
    assert (res.returncode, res.stdout) == (0, "storage\n")
    res = walbc(storage.port, "status")
    assert res.returncode == 0, res.stderr
    assert "role: storage" in res.stdout and "id: s0" in res.stdout and VERSION in res.stdout
    lines = res.stdout.splitlines()
    assert up in lines
    dead_index = next(i for i, line in enumerate(lines) if line.startswith(dead))
    assert lines.index(up) < dead_index, "proxies are listed in priority order"
    assert any(line.startswith(archive_down) for line in lines)

    proxy.proc.kill()
    proxy.proc.wait(timeout=5)
    assert wait_until(lambda: down in read_text(log), 6.5), read_text(log)
    res = walbc(storage.port, "status")
    assert any(line.startswith(down) for line in res.stdout.splitlines()), res.stdout
    time.sleep(0.2)  # let the archive probe of the same round finish
    text = read_text(log)
    assert text.count(up) == 1 and text.count(archive_down) == 1, "states are logged on change only"


def test_shutdown_command_and_unreachable_server(
    start_server: StartServer, walbc: WalbcCall, tmp_path: Path
) -> None:
    srv = start_server("proxy", "-b", tmp_path / "p1")
    res = walbc(srv.port, "shutdown", "sideways")
    assert res.returncode == 1 and srv.proc.poll() is None
    res = walbc(srv.port, "shutdown", "graceful")
    assert res.returncode == 0, res.stderr
    assert srv.proc.wait(timeout=2) == 0
    assert "shutdown" in srv.stderr().splitlines()[-1]

    start = time.monotonic()
    res = walbc(srv.port, "get", "host-type", to=1)
    assert res.returncode == 1 and "cannot connect" in res.stderr
    assert time.monotonic() - start < 3
    start = time.monotonic()
    res = walbc(srv.port, "get", "host-type", to=1, retry=1)
    assert res.returncode == 1 and time.monotonic() - start >= 0.9, "-retry 1 waits 1 s"

    srv = start_server("proxy", "-b", tmp_path / "p2")
    res = walbc(srv.port, "shutdown", "force")
    assert res.returncode == 0, res.stderr
    assert srv.proc.wait(timeout=1) == 0


def test_bad_input_concurrency_and_bind_failure(
    start_server: StartServer, walbc: WalbcCall, binsrc: Path, tmp_path: Path
) -> None:
    srv = start_server("proxy", "-b", tmp_path / "proxy", "-maxconn", "2", "-to", "5")
    assert raw_request(srv.port, b"WALB-DOUBLE/1 raw get host-type\n") == b". proxy\nOK\n"
    assert raw_request(srv.port, b"\x00\xffGARBAGE\r\n").startswith(b"ERR bad request")
    assert raw_request(srv.port, b"\x01" * 10000).startswith(b"ERR bad request")
    assert raw_request(srv.port, b"WALB-DOUBLE/1 raw\n").startswith(b"ERR bad request")

    # Thread per connection: an idle client does not block others; -maxconn is enforced.
    idle = [socket.create_connection(("127.0.0.1", srv.port), timeout=3)]
    try:
        res = walbc(srv.port, "get", "host-type")
        assert (res.returncode, res.stdout) == (0, "proxy\n"), res.stderr
        idle.append(socket.create_connection(("127.0.0.1", srv.port), timeout=3))
        res = walbc(srv.port, "get", "host-type")
        assert res.returncode == 1 and "too many connections" in res.stderr
    finally:
        for sock in idle:
            sock.close()
    assert wait_until(lambda: walbc(srv.port, "version").returncode == 0, 3)
    assert srv.proc.poll() is None

    # A second server on the same port cannot bind: ERROR and exit 1.
    cmd = [binsrc / "walb-proxy", "-p", srv.port, "-b", tmp_path / "proxy2"]
    res = run(cmd, timeout=10, cwd=tmp_path)
    assert res.returncode == 1
    errors = [line for line in res.stderr.splitlines() if " ERROR " in line]
    assert errors and str(srv.port) in errors[0], res.stderr


def walb_exchange(port: int, payload: bytes, half_close: bool = False, timeout: float = 5) -> bytes:
    """Send bytes in walb's protocol, return everything the server sends until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        chunks: list[bytes] = []
        while data := sock.recv(4096):
            chunks.append(data)
        return b"".join(chunks)


def walb_strings(answer: bytes) -> list[str]:
    """The strings of a server's answer in walb's protocol (the last item may be the ack)."""
    stream = io.BytesIO(answer)
    out = []
    while stream.tell() < len(answer):
        out.append(wire.decode_str(stream.read))
    return out


def hello(client_id: str = "pytest", protocol: str = "get", version: int = 1) -> bytes:
    return wire.encode_str(client_id) + wire.encode_str(protocol) + wire.encode_int(version)


def walb_host_type(port: int, client_id: str = "pytest") -> tuple[str, str]:
    """(node id, role) as walbctr.walb.wire's prober gets them."""
    answer = walb_exchange(port, wire.host_type_request(client_id))
    return wire.read_host_type(io.BytesIO(answer).read)


def test_walb_integers_are_written_as_cybozus_serializer_writes_them() -> None:
    # Bytes as saveVariableInt writes an int64 (cybozulib serializer.hpp).
    for value, expected in (
        (0, "00"), (1, "01"), (127, "7f"), (-1, "ff"), (-120, "88"), (-121, "8487"),
        (-128, "8480"), (128, "8080"), (255, "80ff"), (256, "810001"), (-129, "857fff"),
        (65536, "8200000100"), (-32769, "86ff7fffff"), (1 << 32, "830000000001000000"),
        (-(1 << 31) - 1, "83ffffff7fffffffff"),
    ):
        assert wire.encode_int(value).hex() == expected, value
        decoded = wire.decode_int(io.BytesIO(wire.encode_int(value)).read)
        # u64 comes back unsigned: the reader's C++ type decides, a prober reads no such value
        assert decoded == (value % (1 << 64) if value < -(1 << 31) else value), value
    assert wire.encode_str("get").hex() == "03676574"
    assert wire.encode_strs(["host-type"]) == b"\x01\x09host-type"


def test_servers_answer_walbs_own_get_host_type_with_their_id_and_role(
    start_server: StartServer, tmp_path: Path
) -> None:
    proxy = start_server("proxy", "-b", tmp_path / "proxy", "-id", "p-wire", "-debug")
    dead = f"127.0.0.1:{free_port()}"  # the storage's peers need not answer
    storage = start_server(
        "storage", "-b", tmp_path / "storage", "-id", "s-wire", "-archive", dead, "-proxy", dead
    )
    for server, node in ((proxy, "p-wire"), (storage, "s-wire")):
        assert walb_host_type(server.port, "keeper-test") == (node, server.role)
    answer = walb_exchange(proxy.port, wire.host_type_request("keeper-test"))
    # Byte for byte: id, negotiation "ok", get "ok", the role, u32 header and "walb" (the ack).
    assert answer == b"\x06p-wire\x02ok\x02ok\x05proxy\x82walb"
    # One DEBUG request line as for the double's own requests, no warning or error.
    log = proxy.stderr()
    line = r" DEBUG p-wire request from keeper-test \(.*\): get host-type \(walb's protocol\)$"
    assert re.search(line, log, re.M), log
    assert " WARNING " not in log and " ERROR " not in log, log


def test_walbs_protocol_answers_the_keepers_questions_as_walbc_prints_them(
    start_server: StartServer, walbc: WalbcCall, tmp_path: Path
) -> None:
    from walbctr.keeper.ask import ask

    srv = start_server("proxy", "-b", tmp_path / "proxy", "-id", "p-ask")
    for args in (["archive-info", "add", "vol0", "a0", "a0:10000"], ["start", "vol0"],
                 ["double-send-error", "vol0", "a0", "1"]):
        assert walbc(srv.port, *args).returncode == 0, args
    for args in (["get", "host-type"], ["get", "vol"], ["get", "state", "vol0"],
                 ["get", "state", "nosuchvol"], ["get", "is-wdiff-send-error", "vol0", "a0"],
                 ["get", "is-wdiff-send-error", "vol0", "a9"], ["get", "pid"], ["status"],
                 ["version"]):
        status, out, err = ask("127.0.0.1", srv.port, args, 3)
        done = walbc(srv.port, *args)
        assert (status, out, err.splitlines()[:1]) == (
            done.returncode, done.stdout, done.stderr.splitlines()[:1]), args
    assert "bad archive name" in ask("127.0.0.1", srv.port,
                                     ["get", "is-wdiff-send-error", "vol0", "a9"], 3)[2]


def test_walbs_protocol_refuses_other_get_targets_protocols_and_versions_with_a_text(
    start_server: StartServer, tmp_path: Path
) -> None:
    srv = start_server("proxy", "-b", tmp_path / "proxy", "-id", "p-refuse")
    answer = walb_exchange(srv.port, hello() + wire.encode_strs(["no-such"]))
    assert walb_strings(answer) == ["p-refuse", "ok",
                                    "runGetCommandServer:no such target:no-such"]
    with pytest.raises(wire.WireError, match=r"refused the get host-type: .*no such target"):
        wire.read_host_type(io.BytesIO(answer).read)
    for payload, text in (
        (hello() + wire.encode_strs([]), "runGetCommandServer:no target specified"),
        (hello() + wire.encode_strs(["", "x"]), "runGetCommandServer:empty string:0"),
    ):
        assert walb_strings(walb_exchange(srv.port, payload)) == ["p-refuse", "ok", text]
    # The negotiation itself: the id, then the reason instead of "ok".
    for payload, text in (
        (hello(version=2) + wire.encode_strs(["host-type"]),
         "run1stNegotiateAsServer:version differ c/s:2:1"),
        (hello(protocol="no-such"), "findServerHandler:bad protocol:no-such:pytest"),
    ):
        answer = walb_exchange(srv.port, payload)
        assert walb_strings(answer) == ["p-refuse", text]
        with pytest.raises(wire.WireError, match="refused the negotiation"):
            wire.read_host_type(io.BytesIO(answer).read)
    warnings = [line for line in srv.stderr().splitlines() if " WARNING " in line]
    assert len(warnings) == 2 and all("(walb's protocol)" in w for w in warnings), srv.stderr()


def test_truncated_or_garbage_walb_requests_are_closed_and_the_server_answers_the_next(
    start_server: StartServer, walbc: WalbcCall, tmp_path: Path
) -> None:
    srv = start_server("proxy", "-b", tmp_path / "proxy", "-id", "p-trunc", "-to", "2")
    request = wire.host_type_request("pytest")
    negotiation = len(hello())
    started = time.monotonic()
    # Cut in the negotiation or in the parameters, the client then closes its side.
    assert walb_exchange(srv.port, request[:5], half_close=True).startswith(b"ERR bad request")
    answer = walb_exchange(srv.port, request[: negotiation + 3], half_close=True)
    assert walb_strings(answer) == ["p-trunc", "ok"]
    # Silent clients are closed by the socket timeout (-to 2), in either phase.
    assert walb_exchange(srv.port, b"", timeout=6) == b"ERR bad request: timeout\n"
    answer = walb_exchange(srv.port, request[:negotiation], timeout=6)
    assert walb_strings(answer) == ["p-trunc", "ok"]
    assert time.monotonic() - started < 10
    # Values that are not walb's: a negative or huge count, a huge length.
    for params in (b"\xff", b"\x83" + b"\xff" * 8, b"\x01\x82\xff\xff\xff\x7f"):
        answer = walb_exchange(srv.port, hello() + params)
        assert walb_strings(answer) == ["p-trunc", "ok"], params
    res = walbc(srv.port, "get", "host-type")
    assert (res.returncode, res.stdout) == (0, "proxy\n"), res.stderr
    assert walb_host_type(srv.port) == ("p-trunc", "proxy")
    assert srv.proc.poll() is None
    bad = [line for line in srv.stderr().splitlines() if "bad request from" in line]
    assert len(bad) == 3 and all("is not walb's protocol" in line for line in bad), srv.stderr()


def test_the_doubles_own_protocol_still_answers_on_the_same_port(
    start_server: StartServer, walbc: WalbcCall, tmp_path: Path
) -> None:
    srv = start_server("proxy", "-b", tmp_path / "proxy", "-id", "p-both")
    for _ in range(3):  # interleaved, on one port
        assert raw_request(srv.port, b"WALB-DOUBLE/1 raw get host-type\n") == b". proxy\nOK\n"
        assert walb_host_type(srv.port) == ("p-both", "proxy")
        res = walbc(srv.port, "version")
        assert (res.returncode, res.stdout) == (0, VERSION + "\n"), res.stderr
    # Text that is neither protocol is still the double's bad request, answered at once.
    for line in (b"HELLO world\n", b"GET / HTTP/1.0\r\n\r\n", b"WALB-DOUBLE/1 raw\n"):
        assert raw_request(srv.port, line).startswith(b"ERR bad request"), line


def test_relative_log_path_is_under_base_dir(
    start_server: StartServer, walbc: WalbcCall, tmp_path: Path
) -> None:
    base = tmp_path / "deep" / "er" / "proxy"  # created with mkdir -p
    srv = start_server("proxy", "-b", base, "-id", "p7", "-l", "name.log")
    log = base / "name.log"
    assert wait_until(lambda: "listening on" in read_text(log), 5), read_text(log)
    assert " INFO p7 " in read_text(log)
    assert srv.stderr() == ""
    assert not (tmp_path / "name.log").exists()
    res = walbc(srv.port, "shutdown")
    assert res.returncode == 0 and srv.proc.wait(timeout=2) == 0
    assert "shutdown" in read_text(log)
    assert os.listdir(base) == ["name.log"], "nothing but the log is written to the base dir"


# ----------------------------------------------------------------- volumes, in containers
#
# The volume-level commands (issues 9, 10, 15) run in containers of the image built from
# the double, as walbctr runs them. Expected texts are those of real walb-tools v1.0.19
# (/work/shared/walb-samples.md and upstream's sources, see the double's README).

STACK = "<<<STACKTRACE>>>"
# An exec still running when the server, and so its container, ends is SIGKILLed by the
# engine: a `walbc shutdown force` (or a kill) may report 137 although it did its job.
EXEC_KILLED = 137


class Box:
    """One double server in a container of the built image, on a private network."""

    def __init__(self, container: Any) -> None:
        self.container = container
        self.exit_log = ""

    def walbc(self, *args: str) -> tuple[int, str, str]:
        cmd = ["walbc", "-a", "127.0.0.1", "-p", "10000", "-to", "5", *args]
        code, (out, err) = self.container.exec_run(cmd, demux=True)
        return code, (out or b"").decode(), (err or b"").decode()

    def ok(self, *args: str) -> str:
        code, out, err = self.walbc(*args)
        assert code == 0, f"walbc {' '.join(args)}: exit {code}: {err}"
        return out

    def error(self, *args: str) -> str:
        """walbc's error line; asserts exit 1, nothing on stdout, upstream's error form."""
        code, out, err = self.walbc(*args)
        assert (code, out) == (1, ""), (args, code, out, err)
        lines = err.splitlines()
        assert lines[0].startswith("ERROR walbc error: "), err
        assert all(line.startswith(STACK) for line in lines[1:]), err
        return lines[0]

    def logs(self) -> str:
        """The server's log, without what the image's entrypoint adds around it."""
        text: bytes = self.container.logs(stdout=True, stderr=True)
        lines = text.decode().splitlines(keepends=True)
        return "".join(ln for ln in lines if not ln.startswith("walb-entrypoint"))

    def signal(self, name: str) -> None:
        """Send a signal to the server process itself (whatever runs as PID 1)."""
        pid = self.ok("get", "pid").strip()
        code, _ = self.container.exec_run(["sh", "-c", f"kill -{name} {pid}"])
        assert code in (0, EXEC_KILLED), code

    def wait_exit(self, timeout: float = 20) -> int:
        result = self.container.wait(timeout=timeout)
        self.exit_log = self.container.logs().decode()  # for failure messages
        return int(result["StatusCode"])

    def restart(self) -> None:
        self.container.start()
        assert wait_until(lambda: self.walbc("get", "host-type")[0] == 0, 20), self.logs()


class Boxes:
    def __init__(self, engine: Any, image: str, tmp: Path) -> None:
        import secrets

        self.engine, self.image, self.tmp = engine, image, tmp
        self.name = f"walbctr-dbltest-{secrets.token_hex(3)}"
        self.network = engine.networks.create(self.name, labels={"io.walbctr.test": "double"})
        self.made: list[Any] = []

    def start(self, sid: str, command: list[str], wait: bool = True, **kwargs: Any) -> Box:
        base = self.tmp / "base" / sid
        base.mkdir(parents=True, exist_ok=True)
        volumes = {str(self.tmp / "base"): {"bind": "/var/walb", "mode": "rw"},
                   **kwargs.pop("volumes", {})}
        container = self.engine.containers.run(
            self.image, command, detach=True, name=f"{self.name}-{sid}", hostname=sid,
            network=self.name, volumes=volumes, labels={"io.walbctr.test": "double"}, **kwargs)
        self.made.append(container)
        self.network.reload()
        box = Box(container)
        if wait:
            ok = wait_until(lambda: box.walbc("get", "host-type")[0] == 0, 30, 0.2)
            assert ok, f"{sid} does not answer: {box.logs()}"
        return box

    def archive(self, vg: str, sid: str = "a0") -> Box:
        # what `vgs` needs to see a VG on a loop device (as tests/harness/loopvg.py)
        return self.start(sid, ["walb-archive", "-p", "10000", "-b", f"/var/walb/{sid}", "-id", sid,
                                "-vg", vg], cap_add=["SYS_ADMIN"],
                          device_cgroup_rules=["b 7:* rmw", "c 10:237 rmw"],
                          volumes={"/dev": {"bind": "/dev", "mode": "rw"}})

    def proxy(self, *extra: str) -> Box:
        return self.start("p0", ["walb-proxy", "-p", "10000", "-b", "/var/walb/p0", "-id", "p0",
                                 *extra])

    def storage(self) -> Box:
        # No archive runs here: 'a0' resolves to the container itself, where no archive
        # listens on 10009, so the ts-delta `dest` is the -archive host name.
        return self.start("s0", ["walb-storage", "-p", "10000", "-b", "/var/walb/s0", "-id", "s0",
                                 "-archive", "a0:10009", "-proxy", "s0:10000"],
                          extra_hosts={"a0": "127.0.0.1"})

    def close(self) -> None:
        import contextlib

        for container in self.made:
            with contextlib.suppress(Exception):  # already gone
                container.remove(force=True)
        self.network.remove()


@pytest.fixture
def boxes(engine: Any, double_image: str, tmp_path: Path) -> Iterator[Boxes]:
    if os.environ.get("WALBCTR_TEST_IMAGE"):
        pytest.skip("these tests use the double's test hooks, which real walb-tools lacks")
    made = Boxes(engine, double_image, tmp_path)
    try:
        yield made
    finally:
        made.close()


def volume_file(boxes: Boxes, sid: str, vol: str) -> str:
    return read_text(boxes.tmp / "base" / sid / vol / "double-volume")


def test_archive_volumes_answer_as_walb_tools_does(boxes: Boxes, loop_vg: str) -> None:
    a0 = boxes.archive(loop_vg)
    # The samples recorded from real v1.0.19, byte for byte.
    assert a0.ok("get", "vol") == ""
    assert a0.ok("init-vol", "vol0") == ""
    assert a0.ok("get", "vol") == "vol0\n"
    assert a0.ok("get", "state", "vol0") == "SyncReady\n"
    assert a0.ok("get", "state", "nosuchvol") == "Clear\n"
    for empty in (["get", "base-all"], ["get", "restorable", "vol0"], ["get", "ts-delta"]):
        assert a0.ok(*empty) == "", empty
    for zero in ("total-diff-size", "num-diff", "exists-base-image", "progress"):
        assert a0.ok("get", zero, "vol0") == "0\n", zero
    for action in ("Merge", "Apply", "Restore", "ReplSyncAsClient", "Resize"):
        assert a0.ok("get", "num-action", "vol0", action) == "0\n"
    assert a0.error("get", "base", "vol0") == (
        "ERROR walbc error: c2xGetClient:getBase:bad state:vol0:SyncReady")
    assert a0.error("init-vol", "vol0") == (
        "ERROR walbc error: c2xInitVolClient:c2aInitVolServer:StateMachineTransaction:"
        "bad state:SyncReady:Clear:InitVol")
    assert a0.error("get", "num-action", "vol0", "Nap").endswith(
        "c2xGetClient:getNumAction:no such action:Nap")
    assert a0.error("get", "num-action", "nosuchvol", "Merge").endswith(
        "c2xGetClient:getNumAction:bad state:nosuchvol:Merge:Clear")
    status = a0.ok("status").splitlines()
    assert status[status.index("-----Volume-----") + 1:] == [
        "volume vol0 state SyncReady totalNumAction 0 stopState NotStopping lastSyncTime --- "
        "lastWdiffReceivedTime --- numDiff 0 baseLv NOT FOUND"]

    # An archived volume with snapshots (dbg-set-state is upstream's; double-* are hooks).
    a0.ok("dbg-set-state", "vol0", "Archived")
    a0.ok("double-snapshot", "vol0", "5", "1700000600")
    a0.ok("double-snapshot", "vol0", "3", "1700000000")
    assert a0.ok("get", "restorable", "vol0") == (
        "3 2023-11-14T22:13:20 1\n5 2023-11-14T22:23:20 1\n")
    assert a0.ok("get", "base-all") == "name:vol0\tmetastate:<|3|>-20231114221320\n"
    assert a0.ok("get", "base", "vol0") == "<|3|>-20231114221320\n"
    a0.ok("double-ts-delta", "vol0", "90", "a1")
    assert a0.ok("get", "ts-delta") == (
        "name:vol0\tdest:a1\tkind:archive\tdest_kind:archive\tgid:5\tts:2023-11-14T22:23:20\t"
        "dest_gid:4\tdest_ts:2023-11-14T22:21:50\tts_delta:90\n")
    a0.ok("double-ts-delta", "vol0", "-", "a1")
    assert a0.ok("get", "ts-delta").endswith(
        "ts:2023-11-14T22:23:20\tdest_ts:\tdest_gid:\tts_delta:\n")
    a0.ok("init-vol", "vol1")  # SyncReady: not in base-all, restorable empty
    assert a0.ok("get", "vol") == "vol0\nvol1\n"
    assert a0.ok("get", "base-all").count("\n") == 1

    # A simulated running action counts while it runs.
    a0.ok("double-action", "vol0", "Merge", "2")
    assert a0.ok("get", "num-action", "vol0", "Merge") == "1\n"
    assert a0.ok("get", "num-action", "vol0", "Apply") == "0\n"
    assert " totalNumAction 1 " in a0.ok("status")
    assert re.fullmatch(r"vol0 Merge 1 \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d Apply 0 --- Restore 0 --- "
                        r"ReplSyncAsClient 0 --- Resize 0 ---\n", a0.ok("get", "all-actions"))
    assert wait_until(lambda: a0.ok("get", "num-action", "vol0", "Merge") == "0\n", 10)
    assert "action Merge on vol0 finished" in a0.logs()
    for bad in (["double-action", "vol0", "Nap", "3"], ["double-action", "vol9", "Merge", "3"],
                ["double-overflow", "vol0", "1"], ["dbg-set-state", "vol0", "Target"]):
        assert a0.walbc(*bad)[0] == 1, bad

    # Volumes live in BASE_DIR/VOL and survive a restart.
    assert "state Archived" in volume_file(boxes, "a0", "vol0")
    a0.container.restart(timeout=20)
    assert wait_until(lambda: a0.walbc("get", "host-type")[0] == 0, 30, 0.2), a0.logs()
    assert a0.ok("get", "vol") == "vol0\nvol1\n"
    assert a0.ok("get", "state", "vol0") == "Archived\n"
    assert a0.ok("get", "restorable", "vol0").count("\n") == 2
    assert a0.ok("get", "num-action", "vol0", "Merge") == "0\n"


def test_proxy_archive_info_start_send_error_and_kicks(boxes: Boxes) -> None:
    p0 = boxes.proxy()
    assert p0.ok("get", "vol") == ""
    assert p0.ok("archive-info", "add", "vol0", "a0", "a0:10000") == ""
    assert p0.ok("archive-info", "list", "vol0") == "a0\n"
    assert p0.ok("get", "state", "vol0") == "Stopped\n"
    assert p0.error("kick", "vol0", "a0").endswith("c2xKickClient:c2pKickServer:bad state:Stopped")
    assert p0.ok("start", "vol0") == ""
    assert p0.ok("get", "state", "vol0") == "Started\n"
    assert p0.error("start", "vol0").endswith("c2xStartClient:bad state:Started")
    assert p0.ok("get", "is-wdiff-send-error", "vol0", "a0") == "0\n"
    assert p0.error("get", "is-wdiff-send-error", "vol0", "a9") == (
        "ERROR walbc error: c2xGetClient:isWdiffSendError:bad archive name:vol0:a9")
    assert p0.error("get", "is-wdiff-send-error", "vol7", "a0").endswith(
        "isWdiffSendError:bad state:vol7:Clear")
    assert p0.ok("kick") == "" and p0.ok("kick", "vol0", "a0") == ""
    assert "kick requested: all volumes" in p0.logs()
    assert "kick requested: vol0 a0" in p0.logs()
    assert p0.error("kick", "vol0", "a9").endswith("c2pKickServer:archive does not exist:a9")
    status = p0.ok("status").splitlines()
    assert status[status.index("-----Volume-----") + 1:] == [
        "volume vol0 state Started numDiff 0 totalSize 0 timestamp ---",
        "  archive a0 action None numDiff 0 totalSize 0 minGid 0 maxGid 0 ---"]

    # A send error stays until a kick that covers it (as a successful retry would).
    p0.ok("archive-info", "add", "vol1", "a0", "a0:10000")
    p0.ok("archive-info", "add", "vol1", "a1", "a1:10000")
    p0.ok("start", "vol1")
    p0.ok("double-send-error", "vol1", "a0", "1")
    p0.ok("double-send-error", "vol1", "a1", "1")
    assert p0.ok("get", "is-wdiff-send-error", "vol1", "a0") == "1\n"
    p0.ok("kick", "vol1", "a1")
    assert p0.ok("get", "is-wdiff-send-error", "vol1", "a1") == "0\n"
    assert p0.ok("get", "is-wdiff-send-error", "vol1", "a0") == "1\n", "only the kicked archive"
    assert "kick vol1 a1: wdiff-send error cleared" in p0.logs()
    p0.ok("kick")
    assert p0.ok("get", "is-wdiff-send-error", "vol1", "a0") == "0\n"
    p0.ok("double-send-error", "vol1", "a0", "1")

    # A restarted proxy starts every volume it finds (as walb-proxy does), facts kept.
    p0.ok("stop", "vol0")
    assert p0.ok("get", "state", "vol0") == "Stopped\n"
    assert p0.ok("stop", "vol0") == "", "stop is accepted before the state is checked"
    assert "stop vol0 failed: stopProxyVol:bad state:Stopped" in p0.logs()
    p0.container.restart(timeout=20)
    assert wait_until(lambda: p0.walbc("get", "host-type")[0] == 0, 30, 0.2), p0.logs()
    assert p0.ok("get", "vol") == "vol0\nvol1\n"
    assert p0.ok("get", "state", "vol0") == "Started\n"
    assert p0.ok("get", "is-wdiff-send-error", "vol1", "a0") == "1\n"
    assert p0.ok("archive-info", "list", "vol1") == "a0\na1\n"

    # Deleting the last archive info makes the volume Clear again.
    p0.ok("stop", "vol0")
    p0.ok("archive-info", "delete", "vol0", "a0")
    assert p0.ok("get", "state", "vol0") == "Clear\n"
    assert p0.ok("get", "vol") == "vol1\n"
    assert not (boxes.tmp / "base" / "p0" / "vol0").exists()


def test_a_proxy_started_with_stop_leaves_its_volumes_stopped(boxes: Boxes) -> None:
    base = boxes.tmp / "base" / "p0" / "vol0"
    base.mkdir(parents=True)
    (base / "double-volume").write_text("state Started\narchive a0 a0:10000\n")
    p0 = boxes.proxy("-stop")
    assert p0.ok("get", "state", "vol0") == "Stopped\n"
    assert "found volume vol0 (Stopped)" in p0.logs()


def test_storage_overflow_ts_delta_and_kick(boxes: Boxes) -> None:
    s0 = boxes.storage()
    assert s0.ok("get", "vol") == ""
    assert s0.ok("get", "state", "vol0") == "Clear\n"
    assert s0.ok("get", "ts-delta") == ""
    assert s0.ok("kick") == ""
    assert "kick requested: all volumes" in s0.logs()
    assert s0.error("get", "is-overflow", "vol0") == (
        "ERROR walbc error: c2xGetClient:isOverflow:bad state:Clear")
    assert s0.walbc("init-vol", "vol0", "/dev/walb/vol0")[0] == 1, "no walb devices here"

    s0.ok("double-set-state", "vol0", "Target")
    s0.ok("double-set-state", "vol1", "SyncReady")
    assert s0.ok("get", "vol") == "vol0\nvol1\n"
    assert s0.ok("get", "state", "vol0") == "Target\n"
    assert s0.ok("get", "is-overflow", "vol0") == "0\n"
    s0.ok("double-overflow", "vol0", "1")
    assert s0.ok("get", "is-overflow", "vol0") == "1\n"
    s0.ok("double-snapshot", "vol0", "7", "1700000000")
    s0.ok("double-ts-delta", "vol0", "120")
    assert s0.ok("get", "ts-delta") == (  # only Target volumes, dest: the archive
        "name:vol0\tdest:a0\tkind:storage\tdest_kind:archive\tgid:7\tts:2023-11-14T22:13:20\t"
        "dest_gid:6\tdest_ts:2023-11-14T22:11:20\tts_delta:120\n")
    status = s0.ok("status").splitlines()
    assert status[status.index("-----Volume-----") + 1:] == [
        "volume vol0 state Target logUsagePb 0 logCapacityPb 0 oldestGid 0 latestGid 7 "
        "oldestLsid 0 permanentLsid 0",
        "volume vol1 state SyncReady logUsagePb 0 logCapacityPb 0 oldestGid 0 latestGid 0 "
        "oldestLsid 0 permanentLsid 0"]
    assert s0.walbc("double-set-state", "vol0", "Archived")[0] == 1, "not a storage state"
    assert s0.walbc("double-send-error", "vol0", "a0", "1")[0] == 1, "a proxy hook"
    assert "test hook (not upstream): double-overflow vol0 1" in s0.logs()

    s0.container.restart(timeout=20)
    assert wait_until(lambda: s0.walbc("get", "host-type")[0] == 0, 30, 0.2), s0.logs()
    assert s0.ok("get", "is-overflow", "vol0") == "1\n"
    assert "ts_delta:120" in s0.ok("get", "ts-delta")
    s0.ok("double-overflow", "vol0", "0")
    s0.ok("double-set-state", "vol1", "Clear")
    assert s0.ok("get", "vol") == "vol0\n"

    # A new container on the same base dir (as after an image upgrade) finds the volume.
    s0.container.remove(force=True)
    s0 = boxes.storage()
    assert (s0.ok("get", "vol"), s0.ok("get", "state", "vol0")) == ("vol0\n", "Target\n")
    assert "found volume vol0 (Target)" in s0.logs()


def test_graceful_shutdown_waits_for_a_running_action(boxes: Boxes, loop_vg: str) -> None:
    a0 = boxes.archive(loop_vg)
    a0.ok("init-vol", "vol0")
    a0.ok("double-action", "vol0", "Apply", "3")
    start = time.monotonic()
    assert a0.ok("shutdown", "graceful") == ""
    assert a0.wait_exit(30) == 0
    assert time.monotonic() - start >= 2.5, "it waited for the action"
    text = a0.logs()
    lines = text.splitlines()
    assert "graceful shutdown (walbc shutdown graceful): waiting for 1 running action(s)" in text
    assert "action Apply on vol0 finished" in lines[-2]
    assert lines[-1].endswith("shutdown (graceful: walbc shutdown graceful)")
    assert "forced" not in a0.logs()


@pytest.mark.parametrize("sig", ["TERM", "INT", "QUIT", "ABRT"])
def test_a_signal_is_a_forced_shutdown_that_aborts_running_actions(
        boxes: Boxes, loop_vg: str, sig: str) -> None:
    a0 = boxes.archive(loop_vg)
    a0.ok("init-vol", "vol0")
    a0.ok("double-action", "vol0", "Merge", "60")
    a0.signal(sig)
    assert a0.wait_exit(15) == 0, a0.exit_log
    lines = a0.logs().splitlines()
    assert f"forced shutdown (SIG{sig} received): aborting 1 running action(s)" in lines[-3]
    assert "action Merge on vol0 aborted by the forced shutdown" in lines[-2]
    assert lines[-1].endswith(f"shutdown (force: SIG{sig} received)")
    assert "graceful" not in a0.logs()


def test_walbc_shutdown_force_aborts_running_actions(boxes: Boxes, loop_vg: str) -> None:
    a0 = boxes.archive(loop_vg)
    a0.ok("init-vol", "vol0")
    a0.ok("double-action", "vol0", "Restore", "60")
    code, _, err = a0.walbc("shutdown", "force")
    assert code in (0, EXEC_KILLED), err
    assert a0.wait_exit(15) == 0, a0.exit_log
    last = a0.logs().splitlines()[-1]
    assert last.endswith("shutdown (force: walbc shutdown force)")
    a0.restart()
    assert a0.ok("get", "num-action", "vol0", "Restore") == "0\n", "actions do not survive"
    assert a0.ok("get", "state", "vol0") == "SyncReady\n"


def test_archive_prints_a_long_banner_then_fails_on_a_missing_vg(boxes: Boxes) -> None:
    a0 = boxes.start("a0", ["walb-archive", "-p", "10000", "-b", "/var/walb/a0", "-id", "a0",
                            "-vg", "no_such_vg"], wait=False)
    assert a0.wait_exit(60) == 1
    lines = a0.logs().splitlines()
    banner = [x for x in lines if re.fullmatch(r"[a-z-]+=\S* \((set|default)\)", x)]
    assert len(banner) >= 25, lines
    assert "vg=no_such_vg (set)" in banner and "discard=ignore (default)" in banner
    assert " ERROR a0 " in lines[-1] and "no_such_vg" in lines[-1], lines[-1]
    assert lines.index(banner[-1]) < len(lines) - 1, "the error comes after the banner"
    assert not any("starting" in x for x in lines[-20:]), "the banner pushes the start out"


def test_servers_exit_at_start_when_asked_to_fail(boxes: Boxes) -> None:
    p0 = boxes.start("p0", ["walb-proxy", "-p", "10000", "-b", "/var/walb/p0", "-id", "p0"],
                     wait=False, environment={"WALB_DOUBLE_FAIL_AT_START": "archive,proxy"})
    assert p0.wait_exit(30) == 1
    last = p0.logs().splitlines()[-1]
    assert " ERROR p0 " in last and "exits at start on purpose" in last, last
    s0 = boxes.start("s0", ["walb-storage", "-p", "10000", "-b", "/var/walb/s0",
                            "-archive", "s0:10009", "-proxy", "s0:10000"],
                     environment={"WALB_DOUBLE_FAIL_AT_START": "archive,proxy"})
    assert s0.ok("get", "host-type") == "storage\n", "a role not named starts"


def test_a_fail_at_start_file_builds_servers_that_exit_at_start(tmp_path: Path) -> None:
    for tool in ("make", "g++"):
        if shutil.which(tool) is None:
            pytest.skip(f"cannot build the walb-tools double: '{tool}' is not on PATH")
    tree = tmp_path / "walb-tools-double"
    shutil.copytree(DOUBLE_SRC, tree, ignore=shutil.ignore_patterns("binsrc", "obj"))
    (tree / "FAIL_AT_START").write_text("storage\n")
    build = run(["make", "-j2", "core"], timeout=600, cwd=tree)
    assert build.returncode == 0, build.stderr
    base = tmp_path / "s"
    cmd = [tree / "binsrc" / "walb-storage", "-p", free_port(), "-b", base,
           "-archive", "127.0.0.1:1", "-proxy", "127.0.0.1:2"]
    res = run(cmd, timeout=20)
    assert res.returncode == 1
    assert "exits at start on purpose" in res.stderr.splitlines()[-1]
    assert "proxy=127.0.0.1:2 (set)" in res.stderr, "after the banner"
    res = run([tree / "binsrc" / "walb-proxy", "-h"])
    assert res.returncode == 0


def test_walbc_refuses_retry_for_commands_other_than_status_and_get(binsrc: Path) -> None:
    # Upstream's walbc checks this before it connects (binsrc/walbc.cpp, setNrRetry); a
    # keeper or a stop shim that passes -retry to kick or shutdown silently does nothing.
    for command in (["kick"], ["shutdown", "graceful"], ["init-vol", "v"]):
        res = run([binsrc / "walbc", "-a", "127.0.0.1", "-p", "1", "-retry", "0", *command],
                  timeout=10)
        assert res.returncode == 1
        assert ("ERROR walbc error: The command does not support -retry option:"
                f"{command[0]}") in res.stderr


# ----------------------------------------------------------------- walb's data model
#
# The tutorial of upstream (doc/tutorial.md) on a0/p0/s0 containers: bytes written into
# the storage's stand-in device (a file in its bound base dir) come back byte for byte
# from restores on the archives.  The walbc commands are those upstream's walblib
# Controller runs, in its order.

RESTORABLE = re.compile(r"(\d+) \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d ([01])")
DIFF_LINE = re.compile(r"\|(\d+)(?:,(\d+))?\|-->\|(\d+)(?:,(\d+))?\| ([M-])([C-]) "
                       r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d (\d+)")
MIB = 1 << 20


def sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def overwrite(path: Path, offset: int, size: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(os.urandom(size))


class Group:
    """a0 (archive), p0 (proxy) and s0 (storage) as one backup group."""

    def __init__(self, boxes: Boxes, vg: str, storage_args: Sequence[str] = (),
                 proxy_args: Sequence[str] = ()) -> None:
        self.boxes = boxes
        self.a0 = boxes.archive(vg)
        self.p0 = boxes.proxy(*proxy_args)
        self.s0 = boxes.start("s0", ["walb-storage", "-p", "10000", "-b", "/var/walb/s0",
                                     "-id", "s0", "-archive", "a0:10000", "-proxy", "p0:10000",
                                     *storage_args])

    def device(self, vol: str, mib: int = 4) -> Path:
        """The stand-in device: random bytes in a file of the storage's base dir."""
        path = self.boxes.tmp / "base" / "s0" / f"{vol}.dev"
        path.write_bytes(os.urandom(mib * MIB))
        return path

    def host_path(self, box: Box, vol: str, gid: int) -> Path:
        """Where a restored snapshot lies on this host (double-restored-path is a hook)."""
        inside = box.ok("double-restored-path", vol, str(gid)).strip()
        assert inside.startswith("/var/walb/"), inside
        return self.boxes.tmp / "base" / inside[len("/var/walb/"):]

    def init(self, vol: str, mib: int = 4) -> Path:
        """walblib's init_storage, then what its full_backup prepares (_prepare_backup)."""
        dev = self.device(vol, mib)
        self.s0.ok("init-vol", vol, f"/var/walb/s0/{vol}.dev")
        self.s0.ok("start", vol, "standby")
        assert self.s0.ok("get", "state", vol) == "Standby\n"
        self.s0.ok("stop", vol)
        assert until_state(self.s0, vol, "SyncReady")
        self.a0.ok("init-vol", vol)
        self.p0.ok("archive-info", "add", vol, "a0", "a0:10000")
        self.p0.ok("start", vol)
        self.s0.ok("kick")
        return dev

    def full_backup(self, vol: str, *bulk: str) -> int:
        """walblib's full_backup after init: the first restorable gid."""
        self.s0.ok("full-bkp", vol, *bulk)
        assert until_state(self.s0, vol, "Target", 60), self.s0.logs()
        assert self.a0.ok("get", "state", vol).strip() in ("Archived", "WdiffRecv")  # aActive
        self.p0.ok("kick", vol, "a0")
        return wait_restorable(self.a0, vol)

    def snapshot(self, vol: str, *archives: Box) -> int:
        """walblib's snapshot: take one, wait until each archive can restore it."""
        gid = int(self.s0.ok("snapshot", vol))
        for box in archives or (self.a0,):
            assert wait_until(lambda b=box: gid in restorable(b, vol), 30, 0.2), (
                gid, box.ok("get", "restorable", vol, "all"), self.s0.logs()[-3000:])
        return gid

    def restore(self, box: Box, vol: str, gid: int) -> Path:
        """walblib's restore: returns the restored image's path on this host."""
        box.ok("restore", vol, str(gid))
        assert wait_until(lambda: box.ok("get", "num-action", vol, "Restore") == "0\n", 60, 0.2)
        assert str(gid) in box.ok("get", "restored", vol).split(), box.logs()[-2000:]
        return self.host_path(box, vol, gid)


def until_state(box: Box, vol: str, state: str, timeout: float = 20) -> bool:
    return wait_until(lambda: box.ok("get", "state", vol) == state + "\n", timeout, 0.2)


def restorable(box: Box, vol: str, *opt: str) -> list[int]:
    lines = box.ok("get", "restorable", vol, *opt).splitlines()
    assert all(RESTORABLE.fullmatch(line) for line in lines), lines
    return [int(line.split()[0]) for line in lines]


def wait_restorable(box: Box, vol: str, above: int = -1, timeout: float = 30) -> int:
    assert wait_until(lambda: any(g > above for g in restorable(box, vol)), timeout, 0.2), (
        box.ok("get", "diff", vol), box.logs()[-3000:])
    return restorable(box, vol)[-1]


def diffs(box: Box, vol: str) -> list[re.Match[str]]:
    lines = box.ok("get", "diff", vol).splitlines()
    matches = [DIFF_LINE.fullmatch(line) for line in lines]
    assert all(matches), lines
    return [m for m in matches if m]


def test_a_full_backup_restores_the_bytes_written_into_the_storage_device(
        boxes: Boxes, loop_vg: str) -> None:
    g = Group(boxes, loop_vg)
    dev = g.init("vol0")
    assert g.a0.ok("get", "exists-base-image", "vol0") == "0\n"
    # The storage's transfers obey the throttle hook, so the progress can be watched.
    g.s0.ok("double-throttle", "1024")
    g.s0.ok("full-bkp", "vol0")
    assert g.s0.ok("get", "state", "vol0") == "FullSync\n"
    assert wait_until(lambda: int(g.a0.ok("get", "progress", "vol0")) > 0, 10, 0.1)
    progress = int(g.a0.ok("get", "progress", "vol0"))
    assert 0 < progress < 8192 and g.a0.ok("get", "state", "vol0") == "FullSync\n"
    assert g.a0.ok("get", "vol-size", "vol0") == "8192\n", "the device's size in 512-byte blocks"
    assert g.a0.error("get", "base", "vol0").endswith("getBase:bad state:vol0:FullSync")
    assert until_state(g.s0, "vol0", "Target", 30), g.s0.logs()
    g.s0.ok("double-throttle", "0")
    assert g.a0.ok("get", "state", "vol0").strip() in ("Archived", "WdiffRecv")  # aActive
    assert g.a0.ok("get", "progress", "vol0") == "0\n"
    base = g.a0.ok("get", "base", "vol0")
    assert re.fullmatch(r"<\|0,1\|>-\d{14}\n", base), "dirty until |0|-->|1| arrives"
    g.p0.ok("kick", "vol0", "a0")
    assert wait_restorable(g.a0, "vol0") == 1
    assert g.a0.ok("get", "restorable", "vol0").endswith(" 1\n"), "the last snapshot is explicit"
    [first] = diffs(g.a0, "vol0")
    assert first.group(1, 3, 5, 6) == ("0", "1", "-", "-")
    assert g.a0.ok("get", "num-diff", "vol0") == "1\n"
    assert g.a0.ok("get", "total-diff-size", "vol0") == first.group(7) + "\n"
    assert g.a0.ok("get", "exists-base-image", "vol0") == "1\n"
    assert g.a0.ok("get", "uuid", "vol0") == g.s0.ok("get", "uuid", "vol0")
    assert re.fullmatch(r"[0-9a-f]{32}\n", g.a0.ok("get", "archive-uuid", "vol0"))

    image = g.restore(g.a0, "vol0", 1)
    assert image.name == "wr_vol0_1.img"
    assert sha256(image) == sha256(dev)
    assert g.a0.ok("bhash", "vol0", "1") == sha256(dev) + "\n", "the double's bhash is SHA-256"
    assert g.a0.ok("get", "restored", "vol0") == "1\n"
    g.a0.ok("del-restored", "vol0", "1")
    assert g.a0.ok("get", "restored", "vol0") == "" and not image.exists()
    assert "dirty-full-sync succeeded vol0 a0" in g.s0.logs()


def test_a_snapshot_ships_new_writes_through_the_proxy_and_older_gids_still_restore(
        boxes: Boxes, loop_vg: str) -> None:
    g = Group(boxes, loop_vg)
    dev = g.init("vol0")
    first = g.full_backup("vol0")
    before = sha256(dev)
    overwrite(dev, 123_456, 300_000)
    gid = g.snapshot("vol0")
    # walb's gids count up; the write may also have become an implicit snapshot already
    assert gid in (first + 1, first + 2)
    assert sha256(g.restore(g.a0, "vol0", gid)) == sha256(dev)
    assert sha256(g.restore(g.a0, "vol0", first)) == before, "an older gid keeps its bytes"
    assert g.a0.ok("get", "restored", "vol0") == f"{first}\n{gid}\n", (
        sorted(os.listdir(boxes.tmp / "base" / "a0" / "vol0")), g.a0.logs()[-3000:])
    after = diffs(g.a0, "vol0")[1:]
    assert after[0].group(1, 5) == (str(first), "-"), "it follows an explicit snapshot"
    assert after[-1].group(3) == str(gid)
    assert sum(int(m.group(7)) for m in after) > 300_000, "the changed blocks travelled"
    assert g.a0.ok("get", "num-diff", "vol0") == f"{1 + len(after)}\n"
    status = g.s0.ok("status").splitlines()
    assert f"oldestGid {gid} latestGid {gid}" in status[-1], "everything was handed to p0"
    assert "snapshot succeeded vol0" in g.s0.logs()


def test_merge_joins_implicit_snapshots_and_apply_drops_the_older_ones(
        boxes: Boxes, loop_vg: str) -> None:
    g = Group(boxes, loop_vg, storage_args=["-snapintvl", "1"])
    dev = g.init("vol0")
    first = g.full_backup("vol0")
    for i in range(2):  # each write becomes an implicit snapshot within about a second
        count = len(restorable(g.a0, "vol0", "all"))
        overwrite(dev, i * MIB, 10_000)
        assert wait_until(lambda c=count: len(restorable(g.a0, "vol0", "all")) > c, 20, 0.2)
    gid = g.snapshot("vol0")
    lines = g.a0.ok("get", "restorable", "vol0", "all").splitlines()
    implicit = [int(x.split()[0]) for x in lines if x.endswith(" 0")]
    assert len(implicit) == 2 and restorable(g.a0, "vol0") == [first, gid], lines
    marks = [(int(m.group(1)), m.group(5)) for m in diffs(g.a0, "vol0")]
    assert marks == [(0, "-"), (first, "-"), (implicit[0], "M"), (implicit[1], "M")], marks

    g.a0.ok("merge", "vol0", str(first), "gid", str(gid))
    assert wait_until(lambda: g.a0.ok("get", "num-action", "vol0", "Merge") == "0\n", 30, 0.2)
    assert g.a0.ok("get", "num-diff", "vol0") == "2\n", g.a0.ok("get", "diff", "vol0")
    ends = (str(first), str(first), str(gid), str(gid))
    assert g.a0.ok("get", "exists-diff", "vol0", *ends) == "1\n"
    assert restorable(g.a0, "vol0", "all") == [first, gid], "merged snapshots are gone"
    assert sha256(g.restore(g.a0, "vol0", gid)) == sha256(dev)

    g.a0.ok("apply", "vol0", str(gid))
    assert wait_until(lambda: g.a0.ok("get", "num-action", "vol0", "Apply") == "0\n", 30, 0.2)
    assert re.fullmatch(rf"<\|{gid}\|>-\d{{14}}\n", g.a0.ok("get", "base", "vol0"))
    assert restorable(g.a0, "vol0") == [gid] and g.a0.ok("get", "num-diff", "vol0") == "0\n"
    assert g.a0.error("restore", "vol0", str(first)) == (
        f"ERROR walbc error: c2aRestoreClient:verifyRestorable:bad gid to restore:vol0:{first}")
    assert g.a0.error("apply", "vol0", str(first)) == (
        "ERROR walbc error: c2aApplyClient:verifyApplicable:gid not applicable:"
        f"vol0:{first}:<|{gid}|>")
    assert g.a0.ok("bhash", "vol0", str(gid)) == sha256(dev) + "\n"
    assert "action Apply on vol0 finished" in g.a0.logs()


def test_replication_copies_the_volume_to_a_second_archive_full_then_by_diffs(
        boxes: Boxes, loop_vg: str) -> None:
    g = Group(boxes, loop_vg)
    dev = g.init("vol0")
    g.full_backup("vol0")
    overwrite(dev, 2 * MIB, 100_000)
    gid = g.snapshot("vol0")
    a1 = boxes.archive(loop_vg, "a1")
    a1.ok("init-vol", "vol0")  # walblib's replicate_once: _init when Clear, then replicate
    g.a0.ok("replicate", "vol0", "gid", str(gid), "a1:10000", "0", "0")

    def replicated(box: Box, target: int) -> bool:  # walblib's wait_for_replicated
        return (g.a0.ok("get", "num-action", "vol0", "ReplSyncAsClient") == "0\n"
                and box.ok("get", "state", "vol0") == "Archived\n"
                and any(int(m.group(3)) >= target for m in diffs(box, "vol0")))

    assert wait_until(lambda: replicated(a1, gid), 30, 0.2), (g.a0.logs()[-2000:],
                                                              a1.logs()[-2000:])
    assert a1.ok("get", "archive-uuid", "vol0") == g.a0.ok("get", "archive-uuid", "vol0")
    assert a1.ok("get", "base", "vol0") == g.a0.ok("get", "base", "vol0"), "full: the base image"
    assert gid in restorable(a1, "vol0")
    assert sha256(g.restore(a1, "vol0", gid)) == sha256(dev)
    delta = g.a0.ok("get", "ts-delta").strip().split("\t")
    assert delta[:4] == ["name:vol0", "dest:a1", "kind:archive", "dest_kind:archive"], delta
    assert f"gid:{gid}" in delta and f"dest_gid:{gid}" in delta and "ts_delta:0" in delta
    assert "action ReplSyncAsClient on vol0 finished" in g.a0.logs()

    overwrite(dev, 0, 50_000)  # a diff replication now: the same archive uuid, an older gid
    newer = g.snapshot("vol0")
    g.a0.ok("replicate", "vol0", "gid", str(newer), "a1:10000", "0", "0")
    assert wait_until(lambda: replicated(a1, newer), 30, 0.2), a1.logs()[-2000:]
    assert "diff-repl-server done:vol0" in a1.logs() and "full-repl-server" in a1.logs()
    assert sha256(g.restore(a1, "vol0", newer)) == sha256(dev)
    assert f"dest_gid:{newer}" in g.a0.ok("get", "ts-delta")
    assert a1.ok("bhash", "vol0", str(newer)) == g.a0.ok("bhash", "vol0", str(newer))


def test_an_overflow_stops_the_volume_and_a_hash_backup_recovers_it(
        boxes: Boxes, loop_vg: str) -> None:
    g = Group(boxes, loop_vg)
    dev = g.init("vol0")
    g.full_backup("vol0")
    g.s0.ok("double-overflow", "vol0", "1")  # the log device lost its wlogs
    assert until_state(g.s0, "vol0", "Stopped"), "walb-storage stops an overflowed Target volume"
    assert g.s0.ok("get", "is-overflow", "vol0") == "1\n"
    assert g.s0.error("snapshot", "vol0") == (
        "ERROR walbc error: c2sSnapshotClient:not ok:takeSnapshotDetail:wlog overflow:"
        "/var/walb/s0/vol0.dev")
    assert g.s0.error("start", "vol0", "target") == (
        "ERROR walbc error: c2xStartClient:c2sStartServer:overflow:vol0:/var/walb/s0/vol0.dev")
    overwrite(dev, 3 * MIB, 200_000)  # written while the logs were lost
    before = restorable(g.a0, "vol0")

    # walblib's hash_backup: reset the storage volume, resynchronize the proxies, hash-bkp.
    g.s0.ok("reset-vol", "vol0")
    assert g.s0.ok("get", "state", "vol0") == "SyncReady\n"
    assert g.s0.ok("get", "is-overflow", "vol0") == "0\n"
    g.p0.ok("stop", "vol0", "force")
    g.p0.ok("archive-info", "delete", "vol0", "a0")
    g.p0.ok("archive-info", "add", "vol0", "a0", "a0:10000")
    g.p0.ok("start", "vol0")
    g.s0.ok("hash-bkp", "vol0")
    assert until_state(g.s0, "vol0", "Target", 60), g.s0.logs()[-2000:]
    g.p0.ok("kick", "vol0", "a0")
    gid = wait_restorable(g.a0, "vol0", max(before))
    assert restorable(g.a0, "vol0")[:len(before)] == before, "older snapshots stay restorable"
    hashed = [m for m in diffs(g.a0, "vol0") if m.group(4)]
    assert len(hashed) == 1, g.a0.ok("get", "diff", "vol0")
    assert hashed[0].group(1) == str(before[-1]) and hashed[0].group(4) == str(gid)
    assert sha256(g.restore(g.a0, "vol0", gid)) == sha256(dev)
    assert "dirty-hash-sync succeeded vol0 a0" in g.s0.logs()


def test_data_commands_refuse_in_walbs_words_and_exit_1(boxes: Boxes, loop_vg: str) -> None:
    g = Group(boxes, loop_vg)
    g.init("vol0")
    first = g.full_backup("vol0")
    g.restore(g.a0, "vol0", first)
    g.a0.ok("init-vol", "vol1")
    errors = {
        (g.s0, "full-bkp", "vol0"):
            "c2sBackupClient:backupClient:StateMachineTransaction:bad state:Target:SyncReady:"
            "FullSync",
        (g.s0, "reset-vol", "vol0"):  # walb-storage names no function there: '::'
            "c2xResetVolClient::StateMachineTransaction:bad state:Target:Stopped:Reset",
        (g.s0, "clear-vol", "vol0"):
            "c2xClearVolClient:c2sClearVolServer:StateMachineTransaction:bad state:Target:"
            "SyncReady:ClearVol",
        (g.s0, "init-vol", "vol9", "/var/walb/s0/nope.dev"):
            "c2xInitVolClient:c2sInitVolServer:StorageVolInfo:not found:/var/walb/s0/nope.dev",
        (g.s0, "init-vol", "vol9", "/var/walb/s0/vol0.dev"):
            "c2xInitVolClient:c2sInitVolServer:wdevPath is already used:vol9:/var/walb/s0/vol0.dev",
        (g.s0, "snapshot", "vol9"): "c2sSnapshotClient:not ok:c2sSnapshotServer:bad state:Clear",
        (g.a0, "restore", "vol0", "99"):
            "c2aRestoreClient:verifyRestorable:bad gid to restore:vol0:99",
        (g.a0, "restore", "vol0", str(first)):
            f"c2aRestoreClient:c2aRestoreServer:already restored:vol0:{first}",
        (g.a0, "restore", "vol1", "1"): "c2aRestoreClient:c2aRestoreServer:bad state:SyncReady",
        (g.a0, "del-restored", "vol0", "7"):
            "c2aDelRestoredClient:delSnapshot:volume not found:vol0:7:restored",
        (g.a0, "merge", "vol0", "0", "gid", str(first)):
            "c2aMergeClient:verifyMergeable:There is no mergeable diff.",
        (g.a0, "merge", "vol0", "3", "gid", "2"):
            "c2aMergeClient:parseMergeParam:bad gid range:3:2",
        (g.a0, "clear-vol", "vol0"):
            "c2xClearVolClient:c2aClearVolServer:StateMachineTransaction:bad state:Archived:"
            "Archived:ClearVol",
        (g.a0, "get", "vol-size", "vol1"): "c2xGetClient:getVolSize:base image does not exist:vol1",
        (g.a0, "get", "diff", "vol0", "5", "5"):
            "c2xGetClient:MetaDiffManager::getAll:gid0 >= gid1:5:5",
        (g.a0, "get", "uuid", "vol1"): "c2xGetClient:getUuidDetail:bad state:vol1:SyncReady",
        (g.a0, "bhash", "vol1", "1"): "c2aBlockHashClient:c2aBlockHashServer:bad state:SyncReady",
        (g.a0, "replicate", "vol1", "gid", "1", "a0:10000"):
            "c2aReplicateClient:c2aReplicateServer:bad state:SyncReady",
    }
    for (box, *args), message in errors.items():
        assert box.error(*args) == "ERROR walbc error: " + message, args
    # A running restore blocks a second one (walb's aDenyForRestore); the double restores a
    # 4 MiB volume quickly, so a simulated one stands in.
    g.a0.ok("del-restored", "vol0", str(first))
    g.a0.ok("double-action", "vol0", "Restore", "30")
    assert g.a0.error("restore", "vol0", "1") == (
        "ERROR walbc error: c2aRestoreClient:c2aRestoreServer:there are running action:Restore:1")
    assert g.a0.ok("get", "state", "vol0") == "Archived\n" and restorable(g.a0, "vol0") == [first]


def test_a_stopped_archive_makes_the_proxy_retry_then_give_up_until_a_kick(
        boxes: Boxes, loop_vg: str) -> None:
    g = Group(boxes, loop_vg, proxy_args=["-rto", "1"])
    dev = g.init("vol0")
    first = g.full_backup("vol0")
    g.a0.ok("stop", "vol0")
    assert g.a0.ok("get", "state", "vol0") == "Stopped\n"
    overwrite(dev, 0, 8192)
    gid = int(g.s0.ok("snapshot", "vol0"))
    # "stopped" is retried 1 s, 2 s... later; past -rto seconds without new wlogs the proxy
    # gives up and flags the archive, as walb-proxy does.
    def flag() -> str:
        return g.p0.ok("get", "is-wdiff-send-error", "vol0", "a0")

    assert wait_until(lambda: flag() == "1\n", 30, 0.2), g.p0.logs()[-2000:]
    assert "stopped:delay time ms" in g.p0.logs()
    assert "SEND_ERROR_NO_MORE_RETRY:vol0:a0" in g.p0.logs()
    assert restorable(g.a0, "vol0") == [] and g.a0.ok("get", "restored", "vol0") == ""
    g.a0.ok("start", "vol0")
    time.sleep(1.5)
    assert restorable(g.a0, "vol0") == [first], "a flagged transfer waits for a kick"
    g.p0.ok("kick", "vol0", "a0")
    assert flag() == "0\n"
    assert wait_restorable(g.a0, "vol0", first) == gid
    assert sha256(g.restore(g.a0, "vol0", gid)) == sha256(dev)


def test_volumes_and_their_data_survive_restarts_of_every_server(
        boxes: Boxes, loop_vg: str) -> None:
    g = Group(boxes, loop_vg)
    dev = g.init("vol0")
    first = g.full_backup("vol0")
    overwrite(dev, MIB, 40_000)
    gid = g.snapshot("vol0")
    g.restore(g.a0, "vol0", gid)
    queries = (["restorable", "vol0", "all"], ["diff", "vol0"], ["base", "vol0"],
               ["restored", "vol0"], ["archive-uuid", "vol0"])
    facts = [g.a0.ok("get", *q) for q in queries]
    for box in (g.a0, g.p0, g.s0):
        box.signal("TERM")  # a forced shutdown: nothing is written on the way out
        assert box.wait_exit(15) == 0
        box.restart()
    assert [g.a0.ok("get", *q) for q in queries] == facts
    assert g.s0.ok("get", "state", "vol0") == "Target\n"
    assert g.p0.ok("get", "state", "vol0") == "Started\n"
    overwrite(dev, 2 * MIB, 40_000)  # the storage goes on where it stopped
    newer = g.snapshot("vol0")
    assert newer > gid and sha256(g.restore(g.a0, "vol0", newer)) == sha256(dev)
    assert first in restorable(g.a0, "vol0")


def test_graceful_shutdown_waits_for_a_full_backup_and_a_forced_one_rolls_it_back(
        boxes: Boxes, loop_vg: str) -> None:
    g = Group(boxes, loop_vg)
    g.init("vol0", mib=2)
    g.init("vol1", mib=2)
    g.s0.ok("double-throttle", "1024")  # 2 MiB: about 2 s
    g.s0.ok("full-bkp", "vol0")
    assert g.s0.ok("shutdown", "graceful") == ""
    assert g.s0.wait_exit(30) == 0
    lines = g.s0.logs().splitlines()
    assert "waiting for 1 running action(s)" in "\n".join(lines)
    assert "dirty-full-sync succeeded vol0 a0" in lines[-2] and "graceful" in lines[-1]
    assert g.a0.ok("get", "state", "vol0") == "Archived\n"
    g.s0.restart()
    assert g.s0.ok("get", "state", "vol0") == "Target\n"

    g.s0.ok("double-throttle", "512")  # the hook is not persisted
    g.s0.ok("full-bkp", "vol1")
    assert wait_until(lambda: int(g.a0.ok("get", "progress", "vol1")) > 0, 10, 0.1)
    code, _, err = g.s0.walbc("shutdown", "force")
    assert code in (0, EXEC_KILLED), err
    assert g.s0.wait_exit(15) == 0
    assert "action FullSync on vol1 aborted by the forced shutdown" in g.s0.logs()
    assert until_state(g.a0, "vol1", "SyncReady"), "the archive rolls the full sync back"
    assert g.a0.ok("get", "progress", "vol1") == "0\n"
    g.s0.restart()
    assert g.s0.ok("get", "state", "vol1") == "SyncReady\n", "and so does the storage"
    assert g.full_backup("vol1") == 1, "a new full backup works"


def test_a_synchronized_second_archive_gets_new_snapshots_and_a_resync_realigns_it(
        boxes: Boxes, loop_vg: str) -> None:
    g = Group(boxes, loop_vg)
    dev = g.init("vol0")
    first = g.full_backup("vol0")
    a1 = boxes.archive(loop_vg, "a1")
    a1.ok("init-vol", "vol0")

    def replicate(gid: int, *resync: str) -> None:
        g.a0.ok("replicate", "vol0", "gid", str(gid), "a1:10000", *resync)
        assert wait_until(lambda: g.a0.ok("get", "num-action", "vol0", "ReplSyncAsClient") == "0\n",
                          30, 0.2)

    # walblib's synchronize: stop the proxies emptied, add a1, replicate once, restart.
    g.p0.ok("stop", "vol0", "empty")
    assert until_state(g.p0, "vol0", "Stopped")
    g.p0.ok("archive-info", "add", "vol0", "a1", "a1:10000")
    replicate(first, "0", "0")
    g.p0.ok("start", "vol0")
    g.s0.ok("kick")
    overwrite(dev, 0, 70_000)
    gid = g.snapshot("vol0", g.a0, a1)  # the proxy now sends every wdiff to both
    assert sha256(g.restore(a1, "vol0", gid)) == sha256(dev)
    assert g.p0.ok("status").splitlines()[-1].startswith("  archive a1 action None numDiff 0")

    # A new full backup to a0 gives its data a new archive uuid: a1 needs a resync.
    g.p0.ok("stop", "vol0", "force")
    g.p0.ok("archive-info", "delete", "vol0", "a1")
    g.p0.ok("start", "vol0")
    g.s0.ok("stop", "vol0")
    assert until_state(g.s0, "vol0", "Stopped")
    g.s0.ok("reset-vol", "vol0")
    g.a0.ok("stop", "vol0")
    g.a0.ok("reset-vol", "vol0")
    overwrite(dev, MIB, 70_000)
    again = g.full_backup("vol0")
    assert g.a0.ok("get", "archive-uuid", "vol0") != a1.ok("get", "archive-uuid", "vol0")
    replicate(again, "0", "0")
    assert "resync is required but not allowed" in a1.logs()
    replicate(again, "1", "0")
    assert "resync-repl-server done:vol0" in a1.logs()
    assert a1.ok("get", "archive-uuid", "vol0") == g.a0.ok("get", "archive-uuid", "vol0")
    assert restorable(a1, "vol0") == [again]
    assert a1.ok("bhash", "vol0", str(again)) == sha256(dev) + "\n"


def test_clear_vol_forgets_a_volume_and_its_data_but_never_the_device(
        boxes: Boxes, loop_vg: str) -> None:
    g = Group(boxes, loop_vg)
    dev = g.init("vol0")
    g.full_backup("vol0")
    base = boxes.tmp / "base"
    assert (base / "a0" / "vol0").is_dir() and (base / "s0" / "vol0" / "shadow.img").is_file()
    g.s0.ok("stop", "vol0")
    assert until_state(g.s0, "vol0", "Stopped")
    g.s0.ok("reset-vol", "vol0")
    g.s0.ok("clear-vol", "vol0")  # walblib's clear: stop, reset, clear-vol
    g.p0.ok("stop", "vol0", "force")
    assert until_state(g.p0, "vol0", "Stopped")
    g.p0.ok("clear-vol", "vol0")
    g.a0.ok("stop", "vol0", "force")
    assert until_state(g.a0, "vol0", "Stopped")
    g.a0.ok("clear-vol", "vol0")
    for box in (g.s0, g.p0, g.a0):
        assert box.ok("get", "state", "vol0") == "Clear\n" and box.ok("get", "vol") == ""
    assert not (base / "s0" / "vol0").exists() and not (base / "a0" / "vol0").exists()
    assert not (base / "p0" / "vol0").exists()
    assert dev.is_file() and dev.stat().st_size == 4 * MIB, "the device is the user's"
    g.s0.ok("init-vol", "vol0", "/var/walb/s0/vol0.dev")  # and can be used again
    assert g.s0.ok("get", "state", "vol0") == "SyncReady\n"
