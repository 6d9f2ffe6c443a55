"""One backup group across separate Docker engines (issue: many hosts).

tests/harness starts real, independent engines on this machine, one per host, each with
its own address on a private network where the hosts reach each other by name. Then the
test-double image is pushed to them with `walbctr push` and the seed's layouts deployed
with `walbctr up`, and hosts are cut off and shut down under the running group.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.conftest import docker_time, first_ready, proxy_state
from tests.harness import hosts as harness

NAMES = ["hostA0", "hostA1", "hostP0", "hostP1", "hostS0", "hostS1"]
PORT = 10000


@pytest.fixture(scope="module")
def fleet(engine: Any, double_image: str) -> Iterator[dict[str, harness.HostEngine]]:
    why = harness.harness_problem()
    if why:
        pytest.skip(f"no multi-engine harness here: {why}")
    workdir = Path(os.environ.get("WALBCTR_HARNESS_DIR", "/var/tmp/walbctr-harness"))
    started = time.monotonic()
    try:
        hosts = harness.start_hosts(NAMES, workdir / secrets.token_hex(3))
    except harness.HarnessUnavailableError as err:
        pytest.skip(f"no multi-engine harness here: {err}")
    print(f"\nharness: {len(hosts)} engines up in {time.monotonic() - started:.1f} s")
    try:
        yield hosts
    finally:
        harness.stop_hosts(hosts)


def layout_text(name: str, image: str, vg: str, hosts: dict[str, harness.HostEngine],
                large: bool) -> str:
    used = NAMES if large else ["hostA0", "hostP0", "hostS0"]
    lines = [f"group: {name}", f"image: {image}", "hosts:"]
    lines += [f"  {h}: {{address: {h}, engine: '{hosts[h].url}'}}" for h in used]
    lines += ["defaults:", f"  base_dir: /var/walb-{name}/{{id}}", f"  port: {PORT}",
              "  privileged: false", "  nofile: 16384", "  stop_grace_period: 10"]
    archives = ["a0", "a1"] if large else ["a0"]
    proxies = ["p0", "p1"] if large else ["p0"]
    storages = ["s0", "s1"] if large else ["s0"]
    lines.append("archives:")
    lines += [f"  - {{id: {a}, host: host{a.upper()}, vg: {vg}}}" for a in archives]
    lines.append("proxies:")
    lines += [f"  - {{id: {p}, host: host{p.upper()}}}" for p in proxies]
    lines.append("storages:")
    lines += [f"  - {{id: {s}, host: host{s.upper()}}}" for s in storages]
    return "\n".join(lines) + "\n"


class Deployment:
    def __init__(self, tmp: Path, image: str, vg: str, hosts: dict[str, harness.HostEngine],
                 large: bool = False) -> None:
        self.name = f"m{secrets.token_hex(3)}"
        self.hosts = hosts
        tmp.mkdir(parents=True, exist_ok=True)
        self.path = tmp / "layout.yaml"
        self.path.write_text(layout_text(self.name, image, vg, hosts, large))
        self.env = {**os.environ, "WALBCTR_STATE_DIR": str(tmp / "state")}
        self.servers = {s: f"host{s.upper()}" for s in
                        (["a0", "a1", "p0", "p1", "s0", "s1"] if large else ["a0", "p0", "s0"])}

    def walbctr(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "walbctr", *args, ], capture_output=True,
                              text=True, env=self.env, check=False)

    def container(self, sid: str) -> Any:
        client = self.hosts[self.servers[sid]].client()
        return client.containers.get(f"walbctr-{self.name}-{sid}")

    def status(self) -> dict[str, dict[str, Any]]:
        run = self.walbctr("status", str(self.path), "--json")
        return {row["id"]: row for row in json.loads(run.stdout)}

    def storage_says(self, sid: str, proxy: str) -> str:
        out = self.walbctr("walbc", str(self.path), sid, "status").stdout
        return proxy_state(out, f"{proxy}:{PORT}") or f"? {out!r}"

    def wait_storage_says(self, sid: str, proxy: str, want: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        said = ""
        while time.monotonic() < deadline:
            said = self.storage_says(sid, proxy)
            if said == want:
                return
            time.sleep(1)
        raise AssertionError(f"{sid} says {proxy} is {said}, not {want}")

    def cleanup(self) -> None:
        self.walbctr("down", str(self.path), "--quiet")


@pytest.fixture
def deploy(tmp_path: Path, fleet: dict[str, harness.HostEngine], double_image: str,
           loop_vg: str) -> Iterator[Any]:
    made: list[Deployment] = []

    def make(large: bool = False) -> Deployment:
        d = Deployment(tmp_path / f"d{len(made)}", double_image, loop_vg, fleet, large)
        made.append(d)
        return d

    yield make
    for d in made:
        d.cleanup()


def _time(text: str) -> float:
    return docker_time(text)


def first_healthy(d: Any, sid: str) -> float:
    return first_ready(d.hosts[d.servers[sid]].client(), d.container(sid))


def test_push_then_up_minimal_group_across_engines(deploy: Any) -> None:
    d = deploy()
    push = d.walbctr("push", str(d.path))
    assert push.returncode == 0, push.stderr
    again = d.walbctr("push", str(d.path))
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("already has") == 3, again.stdout
    up = d.walbctr("up", str(d.path), "--plain")
    assert up.returncode == 0, up.stderr
    p0, s0 = d.container("p0"), d.container("s0")
    assert _time(p0.attrs["State"]["StartedAt"]) >= first_healthy(d, "a0")
    assert _time(s0.attrs["State"]["StartedAt"]) >= first_healthy(d, "p0")
    assert s0.attrs["Config"]["Cmd"][-4:] == ["-archive", f"hostA0:{PORT}", "-proxy",
                                             f"hostP0:{PORT}"]
    d.wait_storage_says("s0", "hostP0", "available")
    logs = d.walbctr("logs", str(d.path), "s0")
    assert logs.returncode == 0 and logs.stdout.strip()
    check = d.walbctr("check-host", str(d.path))
    assert check.returncode == 0, check.stdout + check.stderr
    for host in ("hostA0", "hostP0", "hostS0"):
        assert f"{host}  " in check.stdout
    assert "a0: volume group" in check.stdout


def test_seed_large_layout_across_six_engines(deploy: Any) -> None:
    d = deploy(large=True)
    assert d.walbctr("push", str(d.path)).returncode == 0
    up = d.walbctr("up", str(d.path), "--plain")
    assert up.returncode == 0, up.stderr
    rows = d.status()
    assert {r["state"] for r in rows.values()} == {"running"}
    assert {r["health"] for r in rows.values()} == {"healthy"}
    assert {r["host"] for r in rows.values()} == set(NAMES)
    for sid in ("s0", "s1"):
        cmd = d.container(sid).attrs["Config"]["Cmd"]
        assert cmd[cmd.index("-proxy") + 1] == f"hostP0:{PORT},hostP1:{PORT}"
        d.wait_storage_says(sid, "hostP1", "available")
    order = [line.split("] ")[1].split()[0] for line in up.stderr.splitlines()
             if line.endswith("healthy") or ": healthy after" in line]
    assert set(order[:2]) == {"a0", "a1"} and set(order[2:4]) == {"p0", "p1"}


def base_dir_digests(d: Deployment) -> dict[str, str]:
    out = {}
    for sid, host in d.servers.items():
        rc, text = harness.host_exec(d.hosts[host], [
            "sh", "-c", f"cd /var/walb-{d.name}/{sid} && find . -type f | sort | xargs sha256sum"])
        assert rc == 0, text
        out[sid] = text
    return out


def test_lost_host_and_its_return(deploy: Any) -> None:
    d = deploy()
    assert d.walbctr("push", str(d.path)).returncode == 0
    assert d.walbctr("up", str(d.path), "--quiet").returncode == 0
    for sid, host in d.servers.items():
        rc, _ = harness.host_exec(d.hosts[host], ["sh", "-c",
            f"head -c 65536 /dev/urandom > /var/walb-{d.name}/{sid}/operator-notes.bin"])
        assert rc == 0
    data = base_dir_digests(d)
    kept = {sid: d.container(sid).id for sid in ("a0", "s0")}
    proxy_host = d.hosts["hostP0"]

    # Cut off: the storage loses its proxy, and finds it again when the cable is back.
    harness.cut(proxy_host)
    try:
        d.wait_storage_says("s0", "hostP0", "unavailable")
    finally:
        harness.restore(proxy_host)
    d.wait_storage_says("s0", "hostP0", "available")

    # Engine down: status answers for the others and marks the host unreachable.
    harness.stop_engine(proxy_host)
    try:
        started = time.monotonic()
        rows = d.status()
        assert time.monotonic() - started < 30
        assert rows["p0"]["state"] == "unknown" and "unreachable" in rows["p0"]["note"]
        assert rows["a0"]["health"] == "healthy" and rows["s0"]["health"] == "healthy"
        d.wait_storage_says("s0", "hostP0", "unavailable")
    finally:
        harness.start_engine(proxy_host)
    heal = d.walbctr("up", str(d.path), "--plain")
    assert heal.returncode == 0, heal.stderr
    assert {sid: d.container(sid).id for sid in ("a0", "s0")} == kept
    d.wait_storage_says("s0", "hostP0", "available")
    assert base_dir_digests(d) == data

    # down and up again: every file in every base dir, byte for byte.
    assert d.walbctr("down", str(d.path), "--quiet").returncode == 0
    assert base_dir_digests(d) == data
    assert d.walbctr("up", str(d.path), "--quiet").returncode == 0
    assert base_dir_digests(d) == data


def test_host_option_limits_to_one_engine(deploy: Any) -> None:
    d = deploy()
    assert d.walbctr("push", str(d.path), "--host", "hostA0").returncode == 0
    up = d.walbctr("up", str(d.path), "--host", "hostA0", "--quiet")
    assert up.returncode == 0, up.stderr
    rows = d.status()
    assert rows["a0"]["health"] == "healthy"
    assert rows["p0"]["state"] == "absent" and rows["s0"]["state"] == "absent"


def test_one_host_in_maintenance_while_the_others_run_on_their_own_engines(
        deploy: Any) -> None:
    d = deploy()
    assert d.walbctr("push", str(d.path)).returncode == 0
    assert d.walbctr("up", str(d.path), "--quiet").returncode == 0
    d.wait_storage_says("s0", "hostP0", "available")
    enter = d.walbctr("maintenance", "enter", str(d.path), "hostP0")
    assert enter.returncode == 0, enter.stdout + enter.stderr
    p0 = d.container("p0")
    assert p0.status == "exited"
    assert p0.attrs["HostConfig"]["RestartPolicy"]["Name"] == "no"
    assert "shutdown (graceful: walbc shutdown graceful)" in p0.logs().decode()
    rows = d.status()
    assert [rows[s]["state"] for s in ("a0", "p0", "s0")] == ["running", "maintenance",
                                                              "running"]
    d.wait_storage_says("s0", "hostP0", "unavailable")
    # The other hosts stay workable; the one in maintenance is refused, by name.
    assert d.walbctr("up", str(d.path), "--host", "hostS0", "--quiet").returncode == 0
    refused = d.walbctr("up", str(d.path), "--quiet")
    assert refused.returncode == 1 and "host hostP0" in refused.stderr
    kicks = d.container("s0").logs().decode().count("kick requested")
    exit_ = d.walbctr("maintenance", "exit", str(d.path), "hostP0")
    assert exit_.returncode == 0, exit_.stdout + exit_.stderr
    assert "p0: kicked s0" in exit_.stdout + exit_.stderr
    assert d.container("p0").attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert d.container("s0").logs().decode().count("kick requested") > kicks
    d.wait_storage_says("s0", "hostP0", "available")
    assert {r["state"] for r in d.status().values()} == {"running"}


def test_a_proxy_is_replaced_onto_another_engine_while_a_volume_is_backed_up(
        deploy: Any, double_image: str) -> None:
    from walbctr.group import Group

    d = deploy()
    text = d.path.read_text().replace(
        "hosts:\n", f"hosts:\n  hostP1: {{address: hostP1, engine: '{d.hosts['hostP1'].url}'}}\n")
    d.path.write_text(text)
    assert d.walbctr("push", str(d.path)).returncode == 0
    # hostP1 runs no server yet: its engine gets the image as push would give it, streamed
    # (held whole, the image would stay in this worker's peak memory, which other tests
    # measure)
    here = docker.from_env()
    d.hosts["hostP1"].client().images.load(here.images.get(double_image).save(named=True))
    assert d.walbctr("up", str(d.path), "--quiet").returncode == 0
    d.wait_storage_says("s0", "hostP0", "available")
    dev = f"/var/walb-{d.name}/s0/vol0.img"
    made = d.container("s0").exec_run(["dd", "if=/dev/urandom", f"of={dev}", "bs=1M",
                                       "count=1"])
    assert made.exit_code == 0, made.output
    group = Group.load(d.path)
    group.add("vol0", storage="s0", device=dev, timeout_s=120)

    run = d.walbctr("replace", str(d.path), "p0", "--host", "hostP1", "--write", "--yes",
                    "--plain")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "replaced p0 (proxy on hostP0) by p1 on hostP1" in run.stdout + run.stderr
    assert "{id: p1, host: hostP1}" in d.path.read_text()
    old = d.container("p0")
    assert old.status == "exited" and "shutdown (graceful" in old.logs().decode()
    d.servers["p1"] = "hostP1"
    assert d.container("p1").status == "running"
    d.wait_storage_says("s0", "hostP1", "available")
    # the backup goes on through the new proxy, on its own engine
    after = Group.load(d.path)
    gid = after.snapshot("vol0", timeout_s=60)
    assert gid in [x.gid for x in after.restorable("vol0")]
    assert after.state("vol0", "p1") in ("Started", "WlogRecv")
