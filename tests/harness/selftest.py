"""Self-test of the host harness: python3 tests/harness/selftest.py

Starts hostA0, hostP0 and hostS0, loads the test image into each, and checks
reachability by name across hosts, cut/restore, engine stop/start (graceful and
killed), container features on an inner engine, and complete clean-up. Prints timings;
exits 0 on success, 1 on a failure, 77 when the harness cannot run here.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import docker

from harness import hosts as hh

IMAGE = os.environ.get("WALBCTR_HARNESS_IMAGE", hh.DEFAULT_BASE_IMAGE)
NAMES = ["hostA0", "hostP0", "hostS0"]
PORT = 10000
# A one-line TCP server from perl-base (in every Debian image): greets with its hostname.
SERVER = ("use IO::Socket::INET; $s = IO::Socket::INET->new(LocalPort => $ARGV[0], "
          "Listen => 5, ReuseAddr => 1) or die $!; "
          "while ($c = $s->accept) { print $c 'hello from ' . `hostname`; close $c }")
CLIENT = 'timeout "$2" bash -c "exec 3<>/dev/tcp/$0/$1 && cat <&3"'

timings: list[tuple[str, float]] = []


@contextmanager
def timed(what: str) -> Iterator[None]:
    start = time.monotonic()
    yield
    took = time.monotonic() - start
    timings.append((what, took))
    print(f"  {what}: {took:.2f}s", flush=True)


def check(cond: bool, what: str) -> None:
    print(f"  {'ok  ' if cond else 'FAIL'} {what}", flush=True)
    if not cond:
        raise AssertionError(what)


def run(host: hh.HostEngine, cmd: list[str], network: str = "host") -> tuple[int, str]:
    """Run a throw-away container on `host`; return (exit status, output)."""
    client = host.client()
    try:
        c = client.containers.create(IMAGE, cmd, network_mode=network)
        try:
            c.start()
            status = c.wait(timeout=60)["StatusCode"]
            return int(status), c.logs().decode(errors="replace").strip()
        finally:
            c.remove(force=True)
    finally:
        client.close()


def probe(host: hh.HostEngine, target: str, wait: int = 3, network: str = "host") -> str | None:
    """What the server at target:PORT says to a container on `host`, or None."""
    rc, out = run(host, ["bash", "-c", CLIENT, target, str(PORT), str(wait)], network)
    return out if rc == 0 else None


def probe_here(address: str, wait: float = 3) -> str | None:
    """The same from the test process itself."""
    try:
        with socket.create_connection((address, PORT), timeout=wait) as s:
            return s.recv(100).decode().strip()
    except OSError:
        return None


def engine_up(host: hh.HostEngine) -> bool:
    try:
        api = docker.APIClient(base_url=host.url, timeout=3)
        try:
            return bool(api.ping())
        finally:
            api.close()
    except docker.errors.DockerException:
        return False


def wait_for(what: str, cond: object, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def status(host: hh.HostEngine, name: str) -> str:
    client = host.client()
    try:
        c = client.containers.get(name)
        health = c.attrs["State"].get("Health", {}).get("Status", "-")
        return f"{c.status}/{health}"
    finally:
        client.close()


def main() -> int:
    engine = hh.main_engine()
    why = hh.harness_problem(engine)
    if why:
        print(f"SKIP: {why}")
        return 77
    workdir = Path(tempfile.mkdtemp(prefix="walbctrh-selftest-", dir="/var/tmp"))
    hosts: dict[str, hh.HostEngine] = {}
    try:
        print("set-up")
        with timed("hosts' image (build when missing)"):
            hh.host_image(engine)
        with timed("start 3 engines"):
            hosts = hh.start_hosts(NAMES, workdir, main=engine)
        a, p, s = (hosts[n] for n in NAMES)
        for h in hosts.values():
            print(f"  {h.name}: address {h.address}, DOCKER_HOST={h.url}")
        for h in hosts.values():
            with timed(f"load {IMAGE} into {h.name}"):
                hh.load_image(h, IMAGE, engine)

        print("names and reachability")
        for h in hosts.values():
            rc, out = run(h, ["getent", "hosts", *NAMES])
            got = {line.split()[1].lower(): line.split()[0] for line in out.splitlines()}
            check(rc == 0 and got == {x.name.lower(): x.address for x in hosts.values()},
                  f"{h.name}: every host name resolves to its address ({got})")
        client = p.client()
        client.containers.run(IMAGE, ["perl", "-e", SERVER, str(PORT)], name="srv",
                              network_mode="host", detach=True,
                              restart_policy={"Name": "unless-stopped"})
        client.close()
        wait_for("server on hostP0", lambda: probe_here(p.address, 1) is not None, 20)
        check(probe(s, "hostP0") == "hello from hostP0",
              "hostS0 (host networking) reaches hostP0:10000 by name")
        check(probe(a, p.address, network="bridge") == "hello from hostP0",
              "hostA0 (bridge network) reaches hostP0's address")
        check(probe_here(p.address) == "hello from hostP0",
              f"the test process reaches {p.address}:{PORT}")
        check(probe(s, "hostA0", 1) is None, "nothing listens on hostA0:10000 (own netns)")

        print("cut / restore")
        with timed("cut hostP0"):
            hh.cut(p, engine)
        with timed("probe from hostS0 while cut (3s timeout)"):
            check(probe(s, "hostP0") is None, "hostS0 cannot reach hostP0 while cut")
        check(probe_here(p.address, 2) is None, "the test process cannot reach it either")
        check(engine_up(p), "hostP0's engine still answers on its socket")
        with timed("restore hostP0"):
            hh.restore(p, engine)
        with timed("first probe after restore"):
            check(probe(s, "hostP0") == "hello from hostP0", "reachable again after restore")

        print("container features on an inner engine")
        client = a.client()
        client.containers.run(
            IMAGE, ["sleep", "infinity"], name="feat", detach=True, init=True,
            healthcheck={"test": ["CMD", "true"], "interval": 1_000_000_000},
            cap_add=["SYS_ADMIN"], device_cgroup_rules=["b 7:* rwm", "c 10:237 rwm"],
            restart_policy={"Name": "unless-stopped"}, network_mode="host", ipc_mode="host",
            read_only=True, tmpfs={"/tmp": ""}, volumes=["/dev:/dev"])
        client.close()
        wait_for("feat healthy", lambda: status(a, "feat") == "running/healthy", 30)
        check(True, "--init --health-cmd --cap-add SYS_ADMIN --device-cgroup-rule "
                    "--restart --ipc host --read-only -v /dev:/dev: healthy")
        rc, out = run(a, ["true"], network="none")
        check(rc == 0, "plain container runs")

        print("engine stop / start")
        with timed("stop_engine(hostA0) (graceful)"):
            hh.stop_engine(a, main=engine)
        check(not engine_up(a), "hostA0's engine is down")
        with timed("start_engine(hostA0)"):
            hh.start_engine(a, main=engine)
        with timed("restart-policy container healthy again"):
            wait_for("feat healthy", lambda: status(a, "feat") == "running/healthy", 60)
        with timed("stop_engine(hostP0, kill=True) (power cut)"):
            hh.stop_engine(p, kill=True, main=engine)
        check(probe(s, "hostP0", 2) is None, "hostP0:10000 gone with its engine")
        with timed("start_engine(hostP0)"):
            hh.start_engine(p, main=engine)
        with timed("server back on hostP0 (restart policy)"):
            wait_for("server back", lambda: probe_here(p.address, 1) is not None, 60)
        check(probe(s, "hostP0") == "hello from hostP0", "hostS0 reaches hostP0 again")

        print("a cut survives a reboot")
        hh.cut(p, engine)
        hh.stop_engine(p, main=engine)
        hh.start_engine(p, main=engine)
        time.sleep(2)  # the server is back up behind the cut by now
        check(probe(s, "hostP0", 2) is None, "hostP0 still cut after stop/start")
        hh.restore(p, engine)
        wait_for("reachable", lambda: probe_here(p.address, 1) is not None, 30)
        check(True, "reachable after restore")
    finally:
        print("clean-up")
        with timed("stop_hosts"):
            hh.stop_hosts(hosts, engine)
        left = [c.name for c in engine.containers.list(all=True,
                                                       filters={"label": hh.LABEL_RUN})]
        left += [n.name for n in engine.networks.list(filters={"label": hh.LABEL_RUN})]
        left += [str(x) for x in workdir.iterdir()]
        left += [str(x) for x in Path("/sys/fs/cgroup").glob(f"*/{hh.PREFIX}-*")]
        left += [str(x) for x in hh.SOCK_ROOT.glob("*")] if hh.SOCK_ROOT.exists() else []
        left += [str(x) for x in Path("/sys/class/net").glob(f"{hh.PREFIX}*")]  # bridges
        if not any(workdir.iterdir()):
            workdir.rmdir()
        check(not left, f"nothing left behind {left}")
    print("timings")
    for what, took in timings:
        print(f"  {took:6.2f}s  {what}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except hh.HarnessUnavailableError as err:
        print(f"SKIP: {err}")
        sys.exit(77)
    except AssertionError as err:
        print(f"FAILED: {err}")
        sys.exit(1)
