"""`walbctr up`, `down`, `restart` and friends on the real engine, with the test double.

Every test gets its own group name (so its own compose projects and containers), base
dirs under its tmp dir, and cleanup that runs even when `up` failed half-way.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import answers_walbc, docker_time, first_ready, proxy_state

LABEL = "io.walbctr.group"


def free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET6 if socket.has_ipv6 else socket.AF_INET)
        s.bind(("", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class Group:
    """A throwaway backup group: its layout file, its state dir, its containers."""

    def __init__(self, tmp: Path, engine: Any, image: str, vg: str, mode: str,
                 extra: str = "") -> None:
        self.engine = engine
        self.image = image
        self.name = f"t{secrets.token_hex(4)}"
        self.tmp = tmp
        self.data = tmp / "data"
        self.path = tmp / "layout.yaml"
        tmp.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "WALBCTR_STATE_DIR": str(tmp / "state")}
        ports = free_ports(3)
        self.ports = dict(zip(("a0", "p0", "s0"), ports, strict=True))
        hosts = ""
        if mode == "host":
            hosts = ("hosts:\n  hostA0: {address: 127.0.0.1}\n  hostP0: {address: 127.0.0.1}\n"
                     "  hostS0: {address: 127.0.0.1}\n")
        self.path.write_text(
            f"group: {self.name}\nimage: {image}\nnetwork: {{mode: {mode}}}\n{hosts}"
            f"defaults:\n  base_dir: {self.data}/{{id}}\n  privileged: false\n"
            f"  stop_grace_period: 10\n  nofile: 16384\n{extra}"
            f"archives:\n  - {{id: a0, host: hostA0, vg: {vg}, port: {ports[0]}}}\n"
            f"proxies:\n  - {{id: p0, host: hostP0, port: {ports[1]}}}\n"
            f"storages:\n  - {{id: s0, host: hostS0, port: {ports[2]}}}\n")

    def walbctr(self, *args: str) -> Any:
        import subprocess
        import sys

        return subprocess.run([sys.executable, "-m", "walbctr", *args], capture_output=True,
                              text=True, env=self.env, check=False)

    def up(self, *extra: str) -> Any:
        return self.walbctr("up", str(self.path), "--plain", *extra)

    def containers(self) -> dict[str, Any]:
        found = self.engine.containers.list(all=True, filters={"label": f"{LABEL}={self.name}"})
        return {c.labels["io.walbctr.server"]: c for c in found}

    def wait_healthy(self, server: str, timeout: float = 60) -> Any:
        """Wait until the server runs and answers walbc (Docker's own health check may
        run only one interval after a restart, 30 s, on engines before API 1.44)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            c = self.containers().get(server)
            if c is not None and answers_walbc(c, self.ports[server]):
                return c
            time.sleep(0.5)
        raise AssertionError(f"{server} not answering walbc within {timeout}s")

    def cleanup(self) -> None:
        self.walbctr("down", str(self.path), "--quiet")
        for c in self.containers().values():
            c.remove(force=True)
        for net in self.engine.networks.list(names=[f"walbctr-{self.name}"]):
            net.remove()


@pytest.fixture
def make_group(tmp_path: Path, engine: Any, double_image: str,
               loop_vg: str) -> Iterator[Any]:
    made: list[Group] = []

    def make(mode: str = "bridge", vg: str | None = None, extra: str = "") -> Group:
        g = Group(tmp_path / f"g{len(made)}", engine, double_image, vg or loop_vg, mode, extra)
        made.append(g)
        return g

    yield make
    for g in made:
        g.cleanup()


def _time(text: str) -> float:
    return docker_time(text)


def assert_tier_order(g: Group) -> None:
    c = g.containers()
    a0, p0, s0 = c["a0"], c["p0"], c["s0"]
    assert _time(p0.attrs["State"]["StartedAt"]) >= first_ready(g.engine, a0)
    assert _time(s0.attrs["State"]["StartedAt"]) >= first_ready(g.engine, p0)


@pytest.mark.parametrize("mode", ["bridge", "host"])
def test_minimal_group_comes_up_in_tier_order(make_group: Any, mode: str) -> None:
    g = make_group(mode)
    run = g.up()
    assert run.returncode == 0, run.stderr
    assert "3 servers healthy (3 created)" in run.stdout
    assert_tier_order(g)
    for sid, role in (("a0", "archive"), ("p0", "proxy"), ("s0", "storage")):
        answer = g.walbctr("walbc", str(g.path), sid, "get", "host-type")
        assert answer.returncode == 0, answer.stderr
        assert answer.stdout.strip() == role
    status = g.walbctr("status", str(g.path), "--json")
    assert status.returncode == 0, status.stdout
    rows = json.loads(status.stdout)
    assert [(r["id"], r["state"], r["health"]) for r in rows] == [
        ("a0", "running", "healthy"), ("p0", "running", "healthy"), ("s0", "running", "healthy")]
    image = g.engine.images.get(g.image)
    assert rows[0]["walb_version"] == image.labels["org.opencontainers.image.version"]
    assert rows[0]["walb_version"].startswith("1.0.19")


def test_storage_sees_its_proxy(make_group: Any) -> None:
    g = make_group()
    assert g.up().returncode == 0
    deadline = time.monotonic() + 20
    endpoint = f"p0:{g.ports['p0']}"
    said = None
    while time.monotonic() < deadline:
        status = g.walbctr("walbc", str(g.path), "s0", "status")
        said = proxy_state(status.stdout, endpoint)
        if said == "available":
            break
        time.sleep(0.5)
    assert said == "available", status.stdout
    if not os.environ.get("WALBCTR_TEST_IMAGE"):  # the double's log wording
        logs = g.walbctr("logs", str(g.path), "s0")
        assert f"proxy {endpoint} is available" in logs.stdout


def test_second_up_changes_nothing(make_group: Any) -> None:
    g = make_group()
    assert g.up().returncode == 0
    before = {sid: (c.id, c.attrs["State"]["StartedAt"]) for sid, c in g.containers().items()}
    again = g.up()
    assert again.returncode == 0, again.stderr
    assert "nothing to change" in again.stdout
    after = {sid: (c.id, c.attrs["State"]["StartedAt"]) for sid, c in g.containers().items()}
    assert after == before


def test_changed_server_is_recreated_alone(make_group: Any) -> None:
    g = make_group()
    assert g.up().returncode == 0
    before = {sid: c.id for sid, c in g.containers().items()}
    g.path.write_text(g.path.read_text().replace("host: hostA0, vg:", "host: hostA0, fg: 3, vg:"))
    run = g.up()
    assert run.returncode == 0, run.stderr
    after = {sid: c.id for sid, c in g.containers().items()}
    assert after["a0"] != before["a0"]
    assert after["p0"] == before["p0"]
    # bridge mode: the primary archive's address moved, so the storage restarted
    assert "1 restarted" in run.stdout
    g.wait_healthy("s0")


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("mode", ["bridge", "host"])
def test_tiers_of_several_servers_are_asked_in_one_exec_each_and_come_up(
        make_group: Any, mode: str) -> None:
    g = make_group(mode)
    ports = free_ports(5)
    text = g.path.read_text()
    g.path.write_text(
        text[:text.index("proxies:")]
        + f"proxies:\n  - {{id: p0, host: hostP0, port: {ports[0]}}}\n"
        f"  - {{id: p1, host: hostP0, port: {ports[1]}}}\n"
        f"storages:\n  - {{id: s0, host: hostS0, port: {ports[2]}}}\n"
        f"  - {{id: s1, host: hostS0, port: {ports[3]}}}\n"
        f"  - {{id: s2, host: hostS0, port: {ports[4]}}}\n")
    since = time.time()
    run = g.up()
    assert run.returncode == 0, run.stderr
    assert "6 servers healthy (6 created)" in run.stdout
    c = g.containers()
    for s in ("s0", "s1", "s2"):
        assert _time(c[s].attrs["State"]["StartedAt"]) >= max(
            first_ready(g.engine, c[p]) for p in ("p0", "p1"))
    batches = [p for p in walbctr_probes(g, since) if "sh -c (" in p]
    # Each tier of several servers is polled with one exec that asks them all, at the
    # address they serve on.
    address = {s: "127.0.0.1" if mode == "host" else s for s in ("p0", "p1", "s0", "s1", "s2")}
    assert any(all(f"-a {address[s]} -p {g_port} " in p for s, g_port in
                   (("s0", ports[2]), ("s1", ports[3]), ("s2", ports[4]))) for p in batches)
    assert any(all(f"-a {address[s]} -p {g_port} " in p for s, g_port in
                   (("p0", ports[0]), ("p1", ports[1]))) for p in batches)


def test_down_then_up_keeps_base_dirs(make_group: Any) -> None:
    g = make_group()
    assert g.up().returncode == 0
    for sid in ("a0", "p0", "s0"):
        # Files, not directories: walb reads every directory in a base dir as a volume.
        (g.data / sid / "operator-notes.bin").write_bytes(secrets.token_bytes(4096))
    before = tree_digest(g.data)
    down = g.walbctr("down", str(g.path), "--plain")
    assert down.returncode == 0, down.stderr
    assert g.containers() == {}
    assert tree_digest(g.data) == before
    assert g.up().returncode == 0
    assert tree_digest(g.data) == before


def test_a_group_whose_name_begins_another_groups_gets_its_own_network(
        make_group: Any) -> None:
    g = make_group()
    # The engine's name filter matches by prefix: group t1234 must not take (or remove)
    # the network of a group called t12345.
    longer = g.engine.networks.create(f"walbctr-{g.name}5", driver="bridge")
    try:
        run = g.up()
        assert run.returncode == 0, run.stderr
        networks = g.containers()["s0"].attrs["NetworkSettings"]["Networks"]
        assert set(networks) == {f"walbctr-{g.name}"}
        down = g.walbctr("down", str(g.path), "--quiet")
        assert down.returncode == 0, down.stderr
        longer.reload()
        assert [n.name for n in g.engine.networks.list(names=[f"walbctr-{g.name}"])] == [
            longer.name]
    finally:
        longer.remove()


def test_down_leaves_a_network_someone_else_still_uses_and_says_whose(
        make_group: Any) -> None:
    g = make_group()
    assert g.up().returncode == 0
    name = f"walbctr-{g.name}"
    other = g.engine.containers.run(g.image, ["sleep", "300"], name=f"{g.name}-visitor",
                                    network=name, detach=True, entrypoint=[])
    try:
        down = g.walbctr("down", str(g.path), "--quiet")
        assert down.returncode == 0, down.stderr
        assert g.containers() == {}
        assert f"network {name} stays: {g.name}-visitor still attached" in down.stderr
        assert [n.name for n in g.engine.networks.list(names=[name])] == [name]
    finally:
        other.remove(force=True)
    again = g.walbctr("down", str(g.path), "--quiet")
    assert again.returncode == 0, again.stderr
    assert "stays" not in again.stderr
    assert name not in [n.name for n in g.engine.networks.list(names=[name])]


def test_a_server_taken_out_of_the_layout(make_group: Any) -> None:
    g = make_group()
    assert g.up().returncode == 0
    text = g.path.read_text()
    g.path.write_text(text[:text.index("storages:")])
    again = g.up()
    assert again.returncode == 0, again.stderr
    assert "s0 (walbctr-" in again.stderr and "no longer in" in again.stderr
    rows = {r["id"]: r for r in json.loads(g.walbctr("status", str(g.path), "--json").stdout)}
    assert rows["s0"]["note"].startswith("not in the layout")
    assert rows["s0"]["state"] == "running"
    down = g.walbctr("down", str(g.path), "--quiet")
    assert down.returncode == 0, down.stderr
    assert g.containers() == {}


def test_down_stops_storages_first(make_group: Any) -> None:
    g = make_group()
    assert g.up().returncode == 0
    down = g.walbctr("down", str(g.path), "--plain")
    order = [line.split("] ")[1].split()[0] for line in down.stderr.splitlines()
             if line.endswith(": stopping")]
    assert order == ["s0", "p0", "a0"]


def test_crashed_servers_come_back_healthy_by_themselves(make_group: Any) -> None:
    g = make_group()
    assert g.up().returncode == 0
    for sid in ("a0", "p0", "s0"):
        pid = g.walbctr("walbc", str(g.path), sid, "get", "pid").stdout.strip()
        assert pid.isdigit(), pid
        g.containers()[sid].exec_run(["sh", "-c", f"kill -9 {pid}"])
    for sid in ("a0", "p0", "s0"):
        c = g.wait_healthy(sid, timeout=90)
        assert c.attrs["RestartCount"] >= 1, sid


def test_docker_kill_is_healed(make_group: Any) -> None:
    """`docker kill` of each role's container: back to healthy.

    Docker 20.10 counts `docker kill` as a manual stop, so the restart policy leaves the
    container down; `walbctr up` then starts exactly those containers again. An engine
    that restarts killed containers by itself passes through the same assertions.
    """
    g = make_group()
    assert g.up().returncode == 0
    ids = {sid: c.id for sid, c in g.containers().items()}
    for sid in ("a0", "p0", "s0"):
        g.containers()[sid].kill()
    time.sleep(3)
    healed = g.up()
    assert healed.returncode == 0, healed.stderr
    for sid in ("a0", "p0", "s0"):
        c = g.wait_healthy(sid, timeout=90)
        assert c.id == ids[sid]  # started again, not recreated


def test_missing_vg_fails_at_the_archive_tier(make_group: Any) -> None:
    g = make_group(vg="no_such_vg")
    run = g.up("--timeout", "60")
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    assert "the archive tier failed" in run.stderr
    assert "a0 (archive on hostA0)" in run.stderr
    assert "no_such_vg" in run.stderr  # the archive's own error text, from its log
    assert "walbctr logs" in run.stderr
    # walb-archive exits 1 on a missing VG; the report gives that run's status, not the
    # 0 a restarted container reports, and its lines, not the next run's banner.
    assert "exited with status 1" in run.stderr, run.stderr
    assert set(g.containers()) == {"a0"}


def _busy_cores(seconds: float) -> list[Any]:
    """Both cores busy for a while, as on a loaded CI machine."""
    import subprocess
    import sys

    burn = f"import time\nend = time.time() + {seconds}\nwhile time.time() < end: pass\n"
    return [subprocess.Popen([sys.executable, "-c", burn]) for _ in range(os.cpu_count() or 2)]


def test_a_failed_start_reports_the_failed_run_under_load(make_group: Any) -> None:
    # The archive prints a long start-up banner each run, then fails; by the time walbctr
    # reads the log the restart policy may have started the next run (banner again).
    g = make_group(vg="no_such_vg")
    for attempt in range(3):
        burners = _busy_cores(20) if attempt else []
        try:
            run = g.up("--timeout", "60")
        finally:
            for b in burners:
                b.kill()
        assert run.returncode == 1
        assert "no_such_vg" in run.stderr, run.stderr
        assert "exited with status 1" in run.stderr, run.stderr
        assert "run that failed" in run.stderr
        down = g.walbctr("down", str(g.path), "--plain")
        assert down.returncode == 0, down.stderr


def test_down_always_cleans_up_a_crash_looping_archive(make_group: Any) -> None:
    g = make_group(vg="no_such_vg")
    for attempt in range(20):
        burners = _busy_cores(8) if attempt % 4 == 3 else []
        try:
            g.up("--timeout", "30")
            # Let the restart policy get going: the container is then often 'restarting'.
            time.sleep(attempt % 3 * 0.7)
            down = g.walbctr("down", str(g.path), "--plain")
        finally:
            for b in burners:
                b.kill()
        assert down.returncode == 0, f"round {attempt}: {down.stderr}"
        assert "Traceback" not in down.stderr and "409" not in down.stderr
        assert g.containers() == {}, f"round {attempt}: containers left"


def walbctr_probes(g: Group, since: float) -> list[str]:
    """walbctr's own readiness probes (docker exec of walbc) into the group since `since`.

    Docker's health check also execs walbc, but through its CMD-SHELL (`/bin/sh -c`).
    """
    events = g.engine.api.events(since=since, until=time.time(), decode=True,
                                 filters={"label": f"{LABEL}={g.name}",
                                          "event": "exec_start"})
    actions = [e.get("Action") or e.get("status") or "" for e in events]
    return [a for a in actions if "get host-type" in a and "/bin/sh" not in a]


def test_status_and_unchanged_up_right_after_a_start_trust_the_runs_up_saw_answer(
        make_group: Any) -> None:
    g = make_group()
    assert g.up().returncode == 0
    since = time.time()
    status = g.walbctr("status", str(g.path), "--json")
    again = g.up()
    assert status.returncode == 0, status.stdout
    assert {r["health"] for r in json.loads(status.stdout)} == {"healthy"}
    assert again.returncode == 0, again.stderr
    assert "nothing to change" in again.stdout
    assert walbctr_probes(g, since) == []
    # A run walbctr did not see answer is asked: forget what up recorded.
    (g.tmp / "state" / g.name / "ready.json").unlink()

    def starting() -> int:  # Docker's first check may come at any moment in between
        return sum(c.attrs["State"]["Health"]["Status"] == "starting"
                   for c in g.containers().values())

    since, before = time.time(), starting()
    status = g.walbctr("status", str(g.path), "--json")
    assert {r["health"] for r in json.loads(status.stdout)} == {"healthy"}
    assert starting() <= len(walbctr_probes(g, since)) <= before


def test_up_restores_a_lifted_restart_policy_and_status_shows_it(make_group: Any) -> None:
    g = make_group()
    assert g.up().returncode == 0
    a0 = g.containers()["a0"]
    a0.update(restart_policy={"Name": "no"})  # as an interrupted down or restart leaves it
    rows = {r["id"]: r for r in json.loads(g.walbctr("status", str(g.path), "--json").stdout)}
    assert rows["a0"]["drift"] is True
    assert "restart policy" in rows["a0"]["note"]
    again = g.up()
    assert again.returncode == 0, again.stderr
    assert "restored the restart policy of a0" in again.stderr
    a0.reload()
    assert a0.attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert a0.id == g.containers()["a0"].id  # repaired in place, not recreated
    rows = {r["id"]: r for r in json.loads(g.walbctr("status", str(g.path), "--json").stdout)}
    assert rows["a0"]["drift"] is False


def test_up_after_an_interrupted_down_leaves_every_server_as_the_layout_says(
        make_group: Any) -> None:
    import signal
    import subprocess
    import sys

    g = make_group()
    assert g.up().returncode == 0
    for delay in (0.3, 1.0, 2.5):
        down = subprocess.Popen([sys.executable, "-m", "walbctr", "down", str(g.path),
                                 "--plain"], env=g.env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(delay)
        down.send_signal(signal.SIGKILL)  # the hardest interruption: no clean-up at all
        down.wait()
        healed = g.up()
        assert healed.returncode == 0, healed.stderr
        for sid, c in g.containers().items():
            c.reload()
            assert c.status == "running", sid
            assert c.attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped", sid
        assert g.walbctr("status", str(g.path)).returncode == 0


def test_status_shows_a_crash_loop_with_the_last_exit_and_log_line(make_group: Any) -> None:
    g = make_group(vg="no_such_vg")
    assert g.up("--timeout", "20").returncode == 1
    deadline = time.monotonic() + 30
    row: dict[str, Any] = {}
    while time.monotonic() < deadline:
        rows = json.loads(g.walbctr("status", str(g.path), "--json").stdout)
        row = next(r for r in rows if r["id"] == "a0")
        if row["restarts"] >= 1 and row["last_exit"] is not None:
            break
        time.sleep(1)
    assert row["restarts"] >= 1, row
    assert row["last_exit"] == 1, row
    assert row["last_log"], row
    table = g.walbctr("status", str(g.path))
    assert table.returncode == 1
    assert "RESTARTS" in table.stdout and "LAST EXIT" in table.stdout
    assert "last run exited with status 1" in table.stderr


def test_archive_passes_its_start_up_check_with_a_real_vg(make_group: Any,
                                                         loop_vg: str) -> None:
    g = make_group()
    assert g.up().returncode == 0
    answer = g.walbctr("walbc", str(g.path), "a0", "get", "volume-group")
    assert answer.stdout.strip() == loop_vg


def test_proxy_has_least_privilege_and_nothing_is_published(make_group: Any) -> None:
    g = make_group()
    assert g.up().returncode == 0
    c = g.containers()
    proxy = c["p0"].attrs["HostConfig"]
    assert proxy["Privileged"] is False
    assert proxy["CapDrop"] == ["ALL"]
    assert proxy["ReadonlyRootfs"] is True
    assert not any(m["Destination"] == "/dev" for m in c["p0"].attrs["Mounts"])
    for container in c.values():
        for bindings in (container.attrs["NetworkSettings"]["Ports"] or {}).values():
            assert not bindings  # bridge mode publishes nothing unless asked


def test_busy_port_starts_nothing(make_group: Any) -> None:
    g = make_group("host")
    holder = socket.socket(socket.AF_INET6 if socket.has_ipv6 else socket.AF_INET)
    holder.bind(("", g.ports["p0"]))
    holder.listen()
    try:
        run = g.up()
    finally:
        holder.close()
    assert run.returncode == 1
    assert f"port {g.ports['p0']} of p0 is already in use" in run.stderr
    assert "nothing was started" in run.stderr
    assert g.containers() == {}


def test_missing_image_starts_nothing(make_group: Any) -> None:
    g = make_group()
    g.path.write_text(g.path.read_text().replace("image: walbctr/walb-tools:",
                                                 "image: walbctr/absent:"))
    run = g.up()
    assert run.returncode == 1
    assert "is not on the engine of hostA0, hostP0, hostS0" in run.stderr
    assert "walbctr build" in run.stderr
    assert g.containers() == {}


def test_unreachable_engine_names_the_host(make_group: Any) -> None:
    g = make_group("host")
    g.path.write_text(g.path.read_text().replace(
        "hostP0: {address: 127.0.0.1}",
        "hostP0: {address: localhost.localdomain, engine: 'tcp://127.0.0.1:1', insecure: true}",
    ).replace("hostA0: {address: 127.0.0.1}", "hostA0: {address: localhost.localdomain}")
     .replace("hostS0: {address: 127.0.0.1}", "hostS0: {address: localhost.localdomain}"))
    run = g.up()
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    # The host, what failed (the engine's address refused) and where to fix it.
    assert "host hostP0:" in run.stderr and "tcp://127.0.0.1:1" in run.stderr, run.stderr
    assert "refused" in run.stderr and "hosts.hostP0.engine" in run.stderr, run.stderr
    assert g.containers() == {}


def test_second_up_waits_for_the_first(make_group: Any) -> None:
    g = make_group()
    lock = Path(g.env["WALBCTR_STATE_DIR"]) / f"{g.name}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write("'walbctr up' (pid 1) is running on it")
        f.flush()
        run = g.up()
    assert run.returncode == 1
    assert f"group '{g.name}' is busy" in run.stderr
    assert g.containers() == {}


def test_restart_and_partial_down(make_group: Any) -> None:
    g = make_group()
    assert g.up().returncode == 0
    before = g.containers()["s0"].attrs["State"]["StartedAt"]
    run = g.walbctr("restart", str(g.path), "s0", "--plain")
    assert run.returncode == 0, run.stderr
    assert g.wait_healthy("s0").attrs["State"]["StartedAt"] != before
    down = g.walbctr("down", str(g.path), "s0", "--quiet")
    assert down.returncode == 0, down.stderr
    assert set(g.containers()) == {"a0", "p0"}


def test_check_host(make_group: Any) -> None:
    g = make_group()
    run = g.walbctr("check-host", str(g.path))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "a0: volume group" in run.stdout
    bad = make_group(vg="no_such_vg")
    run = bad.walbctr("check-host", str(bad.path))
    assert run.returncode == 1
    assert "no_such_vg" in run.stdout
    assert bad.containers() == {}


def test_logs_from_a_log_file(make_group: Any) -> None:
    g = make_group()
    g.path.write_text(g.path.read_text().replace(
        "  privileged: false\n", f"  privileged: false\n  log_path: {g.data}/logs/{{id}}.log\n"))
    assert g.up().returncode == 0
    assert (g.data / "logs" / "p0.log").is_file()  # on the host, at the same path
    run = g.walbctr("logs", str(g.path), "p0", "--tail", "50")
    assert run.returncode == 0, run.stderr
    assert "p0" in run.stdout and run.stdout.strip()
    # The file may have grown since (health checks connect); what was shown is in it.
    assert run.stdout.strip() in (g.data / "logs" / "p0.log").read_text()


def test_exec_runs_in_the_servers_container(make_group: Any) -> None:
    g = make_group()
    assert g.up().returncode == 0
    run = g.walbctr("exec", str(g.path), "a0", "--", "sh", "-c", "hostname; exit 3")
    assert run.returncode == 3
    assert run.stdout.strip() == "a0"  # bridge mode: the container's hostname is its id


def test_walbc_passes_exit_status_through(make_group: Any) -> None:
    g = make_group()
    assert g.up().returncode == 0
    run = g.walbctr("walbc", str(g.path), "p0", "get", "nosuch")
    assert run.returncode == 1
    assert "nosuch" in run.stderr


def test_walbctr_helpers_do_not_leave_containers(engine: Any) -> None:
    # Another worker's test may be running a helper right now (CI saw one). A helper is
    # removed once it ends, within its timeout (120 s, throwaway.probe), so one seen now
    # that is still there after that was left behind.
    label = {"label": "io.walbctr.probe"}
    seen = {c.id for c in engine.containers.list(all=True, filters=label)}
    deadline = time.monotonic() + 130
    while seen and time.monotonic() < deadline:
        time.sleep(1)
        seen &= {c.id for c in engine.containers.list(all=True, filters=label)}
    leftovers = [(c.name, c.status, c.labels) for c in engine.containers.list(
        all=True, filters=label) if c.id in seen]
    assert leftovers == []



def test_down_of_another_layout_with_the_same_group_leaves_this_layouts_servers(
        make_group: Any) -> None:
    import subprocess
    import sys

    g = make_group()
    assert g.up().returncode == 0
    own = g.containers()["s0"].labels["io.walbctr.layout"]
    assert own.endswith(f":{g.path.resolve()}")
    # The same group written again elsewhere (another controller: its own state dir),
    # without the storage: to it, s0 looks like a server taken out of the layout.
    text = g.path.read_text()
    other = g.tmp / "elsewhere" / "layout.yaml"
    other.parent.mkdir()
    other.write_text(text[:text.index("storages:")])
    down = subprocess.run([sys.executable, "-m", "walbctr", "down", str(other), "--quiet"],
                          capture_output=True, text=True, check=False,
                          env={**g.env, "WALBCTR_STATE_DIR": str(other.parent / "state")})
    assert down.returncode == 0, down.stderr
    assert f"was started from another layout, {own}, so walbctr leaves it" in down.stderr
    assert list(g.containers()) == ["s0"]  # a0 and p0 are in both layouts; s0 only in g's
    again = g.walbctr("down", str(g.path), "--quiet")
    assert again.returncode == 0, again.stderr
    assert g.containers() == {}
