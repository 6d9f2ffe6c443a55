"""Contract tests for the walb-tools TEST DOUBLE in tests/fixtures/walb-tools-double/.

The double stands in for walb-tools in CI image builds, so it must keep the build
contract (``make core`` -> binsrc/*) and the command-line contract of the servers,
walbc and wdevc.  These tests build it natively and exercise that contract.
"""

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
        cmd = [binsrc / "walbc", "-a", host, "-p", port, "-to", to, "-retry", retry, *args]
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
