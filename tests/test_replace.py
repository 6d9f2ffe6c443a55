"""`walbctr replace` on the real engine: a lab group of the test double in bridge mode
whose layout has several host names on this engine (hA0, hP0, hS0 and a spare hX), as
doc/replace.md's procedures need a host to move to.

Volumes are backed up for real (Group.add) from the double's stand-in walb devices,
regular files in a storage's base dir, and restored on the archive to compare bytes; the
double's `double-set-state` hooks make the states a test needs refused or preserved.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import proxy_state
from tests.test_deploy import free_ports
from tests.test_volume_ops import MIB, overwrite, sha
from walbctr.render.compose import LABEL


class Lab:
    """A bridge-mode group on this engine whose servers sit on different layout hosts."""

    def __init__(self, tmp: Path, engine: Any, image: str, vg: str,
                 secondary: bool = False) -> None:
        self.engine = engine
        self.name = f"r{secrets.token_hex(4)}"
        self.data = tmp / "data"
        self.path = tmp / "layout.yaml"
        self.env = {**os.environ, "WALBCTR_STATE_DIR": str(tmp / "state")}
        self.ports = dict(zip(("a0", "p0", "s0"), free_ports(3), strict=True))
        self.text = (
            f"# lab {self.name}: one engine, four host names\n"
            f"group: {self.name}\nimage: {image}\nnetwork: {{mode: bridge}}\n"
            "hosts: {hA0: {}, hP0: {}, hS0: {}, hX: {}"
            + (", hA1: {}}\n" if secondary else "}\n") +
            f"defaults:\n  base_dir: {self.data}/{{id}}\n  privileged: false\n"
            "  stop_grace_period: 10\n  nofile: 16384\n"
            f"archives:\n  - {{id: a0, host: hA0, vg: {vg}, port: {self.ports['a0']}}}"
            "   # the primary\n"
            + (f"  - {{id: a1, host: hA1, vg: {vg}, port: {self.ports['a0']}}}\n"
               if secondary else "") +
            f"proxies:\n  - {{id: p0, host: hP0, port: {self.ports['p0']}}}\n"
            f"storages:\n  - {{id: s0, host: hS0, port: {self.ports['s0']}}}\n")
        self.path.write_text(self.text)

    def walbctr(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "walbctr", *args], capture_output=True,
                              text=True, env=self.env, check=False, timeout=timeout)

    def replace(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.walbctr("replace", str(self.path), *args)

    def containers(self) -> dict[str, Any]:
        found = self.engine.containers.list(
            all=True, filters={"label": f"{LABEL}.group={self.name}"})
        return {c.labels["io.walbctr.server"]: c for c in found}

    def walbc(self, server: str, *args: str) -> str:
        r = self.walbctr("walbc", str(self.path), server, *args)
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout.strip()

    def wait(self, server: str, vol: str, state: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.walbc(server, "get", "state", vol) != state:
            assert time.monotonic() < deadline, f"{vol} on {server} never {state}"
            time.sleep(0.3)


@pytest.fixture
def lab(request: pytest.FixtureRequest, tmp_path: Path, engine: Any, double_image: str,
        loop_vg: str) -> Iterator[Lab]:
    g = Lab(tmp_path, engine, double_image, loop_vg,
            secondary=getattr(request, "param", False))
    up = g.walbctr("up", str(g.path), "--plain")
    assert up.returncode == 0, up.stdout + up.stderr
    yield g
    g.walbctr("down", str(g.path), "--quiet")
    for c in g.containers().values():
        c.remove(force=True)
    for net in engine.networks.list(names=[f"walbctr-{g.name}"]):
        net.remove()


def device(lab: Lab, server: str, vol: str, size: int = 4 * MIB) -> Path:
    """The double's stand-in walb device: a regular file in the storage's base dir."""
    dev = lab.data / server / f"{vol}.img"
    dev.parent.mkdir(parents=True, exist_ok=True)
    dev.write_bytes(os.urandom(size))
    return dev


def restored_sha(lab: Lab, archive: str, vol: str, gid: int) -> str:
    path = lab.walbc(archive, "double-restored-path", vol, str(gid))
    code, out = lab.containers()[archive].exec_run(["sha256sum", path])
    assert code == 0, out
    return str(out.decode().split()[0])


def test_a_proxy_is_replaced_on_another_host_while_a_volume_is_backed_up(lab: Lab) -> None:
    from walbctr.group import Group

    dev = device(lab, "s0", "vol0")
    group = Group.load(lab.path)
    group.add("vol0", storage="s0", device=str(dev), timeout_s=120)
    lab.walbc("p0", "double-set-state", "vol1", "Stopped")  # stopped by the operator
    lab.walbc("p0", "archive-info", "add", "vol1", "a0", f"a0:{lab.ports['a0']}")
    # changes the storage has sent on, or is sending, through p0 as the replace begins
    overwrite(dev, MIB, 65536)
    in_flight = int(lab.walbc("s0", "snapshot", "vol0"))
    at_snapshot = sha(dev)

    dry = lab.replace("p0", "--host", "hX", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    for words in ("replace p0 (proxy on hP0) by p1 on hX:", "1. start p1 (proxy) on hX",
                  f"p1: archive-info add vol0 a0 a0:{lab.ports['a0']}", "p0: stop vol0 empty",
                  "p0: archive-info delete vol1 a0", "restart s0 with its new -proxy",
                  "stop p0 on hP0 gracefully", "-  - {id: p0, host: hP0,",
                  "+  - {id: p1, host: hX,", "nothing was changed (--dry-run)"):
        assert words in dry.stdout, (words, dry.stdout)
    assert "p1" not in lab.containers()
    assert lab.path.read_text() == lab.text

    s0_before = lab.containers()["s0"].id
    started = time.monotonic()
    done = lab.replace("p0", "--host", "hX", "--yes", "--write", "--plain")
    took = time.monotonic() - started
    assert done.returncode == 0, done.stdout + done.stderr
    print(f"\nproxy replace: {took:.1f} s")
    assert "replaced p0 (proxy on hP0) by p1 on hX" in done.stdout
    assert "1/8 start p1 (proxy) on hX" in done.stderr
    assert "8/8 stop p0 on hP0 gracefully" in done.stderr

    c = lab.containers()
    assert c["p1"].status == "running" and c["p1"].labels[f"{LABEL}.host"] == "hX"
    assert lab.walbc("p1", "archive-info", "list", "vol0") == "a0"
    assert lab.walbc("p1", "get", "state", "vol0") == "Started"
    assert lab.walbc("p1", "get", "state", "vol1") == "Stopped"  # as the operator left it
    # the old proxy: emptied, cleared, stopped gracefully, its container and base dir kept
    assert c["p0"].status == "exited"
    assert c["p0"].attrs["HostConfig"]["RestartPolicy"]["Name"] == "no"
    log = c["p0"].logs().decode()
    assert "shutdown (graceful" in log
    assert (lab.data / "p0").is_dir()
    # the storage was recreated with the new -proxy and reaches p1
    s0 = c["s0"]
    assert s0.id != s0_before
    args = s0.attrs["Args"]
    assert args[args.index("-proxy") + 1] == f"p1:{lab.ports['p0']}"
    deadline = time.monotonic() + 20
    while proxy_state(lab.walbc("s0", "status"), f"p1:{lab.ports['p0']}") != "available":
        assert time.monotonic() < deadline, lab.walbc("s0", "status")
        time.sleep(0.5)
    assert lab.walbc("s0", "get", "state", "vol0") == "Target"
    # what p0 held reached the archive (stop empty), and new changes go through p1
    moved = Group.load(lab.path)
    assert in_flight in [x.gid for x in moved.restorable("vol0")]
    moved.restore("vol0", in_flight)
    assert restored_sha(lab, "a0", "vol0", in_flight) == at_snapshot
    overwrite(dev, 2 * MIB, 8192)
    later = moved.snapshot("vol0", timeout_s=60)
    assert later > in_flight  # p0 is stopped: p1 carried it
    moved.restore("vol0", later)
    assert restored_sha(lab, "a0", "vol0", later) == sha(dev)
    # the layout: written in place, comments kept, the old one beside it
    new = lab.path.read_text()
    assert new == lab.text.replace("{id: p0, host: hP0,", "{id: p1, host: hX,")
    assert Path(str(lab.path) + ".bak").read_text() == lab.text
    status = lab.walbctr("status", str(lab.path))
    assert status.returncode == 0, status.stderr
    assert "p1" in status.stdout
    assert "not in the layout, exited: 'walbctr down' removes its container" in status.stderr

    again = lab.walbctr("up", str(lab.path), "--plain")
    assert again.returncode == 0, again.stderr
    assert "nothing to change" in again.stdout, again.stdout

    # the same command on the old layout (a replace whose --write was left out) finds the
    # servers replaced and writes the layout only
    lab.path.write_text(lab.text)
    rerun = lab.replace("p0", "--host", "hX", "--yes", "--write")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "p0 is replaced by p1 on hX already; nothing was left to do" in rerun.stdout
    assert lab.path.read_text() == new


def test_bad_arguments_and_busy_volumes_are_refused_before_anything_is_touched(
        lab: Lab) -> None:
    unasked = lab.replace("p0", "--host", "hX")  # no terminal, no --yes
    assert unasked.returncode == 1
    assert "a replace needs a confirmation; nothing was done" in unasked.stderr
    nohost = lab.replace("p0", "--host", "hZ", "--yes")
    assert nohost.returncode == 2
    assert "'hZ' is not a host of" in nohost.stderr and "hA0, hP0, hS0, hX" in nohost.stderr
    same = lab.replace("p0", "--host", "hP0", "--yes")
    assert same.returncode == 2 and "runs on hP0 already" in same.stderr
    taken = lab.replace("p0", "--host", "hX", "--id", "s0", "--yes")
    assert taken.returncode == 2 and "--id s0 is taken" in taken.stderr
    bad = lab.replace("p0", "--host", "hX", "--id", "p 1", "--yes")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr

    # an archive whose volume is Stopped: a replication copies only Archived volumes
    lab.walbc("a0", "double-set-state", "vol2", "Stopped")
    stopped = lab.replace("a0", "--host", "hX", "--yes")
    assert stopped.returncode == 1, stopped.stderr
    assert "walb cannot replace a0 (archive on hA0) now; nothing was done" in stopped.stderr
    assert "a0 has vol2 Stopped" in stopped.stderr
    assert "start vol2 --server a0" in stopped.stderr
    # a storage whose target volume has no walb device on the new host
    lab.walbc("s0", "double-set-state", "vol3", "Target")
    nodev = lab.replace("s0", "--host", "hX", "--yes")
    assert nodev.returncode == 1, nodev.stderr
    assert "the walb device /dev/walb/vol3 of vol3 does not exist there" in nodev.stderr
    assert "--device vol3=PATH" in nodev.stderr
    # a volume walb is still changing on the proxy
    lab.walbc("p0", "double-set-state", "vol4", "Stopped")
    lab.walbc("p0", "archive-info", "add", "vol4", "a0", f"a0:{lab.ports['a0']}")
    lab.walbc("p0", "start", "vol4")
    lab.walbc("p0", "double-send-error", "vol4", "a0", "1")
    sending = lab.replace("p0", "--host", "hX", "--yes")
    assert sending.returncode == 1
    assert "p0 failed to send vol4 to a0 (a wdiff send error)" in sending.stderr

    assert set(lab.containers()) == {"a0", "p0", "s0"}
    assert all(c.status == "running" for c in lab.containers().values())
    assert lab.path.read_text() == lab.text


def test_the_primary_archive_is_replaced_and_restores_the_same_bytes(lab: Lab) -> None:
    from walbctr.group import Group

    dev = device(lab, "s0", "vol0")
    group = Group.load(lab.path)
    group.add("vol0", storage="s0", device=str(dev), timeout_s=120)
    gid = group.snapshot("vol0")
    at_first = sha(dev)

    done = lab.replace("a0", "--host", "hX", "--yes", "--write", "--plain")
    assert done.returncode == 0, done.stdout + done.stderr
    c = lab.containers()
    assert c["a0"].status == "exited" and c["a1"].status == "running"
    args = c["s0"].attrs["Args"]
    assert args[args.index("-archive") + 1] == f"a1:{lab.ports['a0']}"
    assert lab.walbc("p0", "archive-info", "list", "vol0") == "a1"

    moved = Group.load(lab.path)
    assert gid in [x.gid for x in moved.restorable("vol0", "a1")]
    overwrite(dev, MIB, 8192)  # the backup goes on to the new archive
    later = moved.snapshot("vol0", timeout_s=60)
    moved.restore("vol0", later)
    assert restored_sha(lab, "a1", "vol0", later) == sha(dev)
    moved.restore("vol0", gid)
    assert restored_sha(lab, "a1", "vol0", gid) == at_first
    assert (lab.data / "a0").is_dir()  # the old archive's data stays


def test_a_storage_is_replaced_by_one_on_a_replica_of_its_device(lab: Lab) -> None:
    from walbctr.group import Group

    dev = device(lab, "s0", "vol0")
    Group.load(lab.path).add("vol0", storage="s0", device=str(dev), timeout_s=120)
    overwrite(dev, MIB, 4096)
    replica = lab.data / "s1" / "vol0.img"  # doc/replace.md: the volume's replica on s1
    replica.parent.mkdir(parents=True)
    replica.write_bytes(dev.read_bytes())

    done = lab.replace("s0", "--host", "hX", "--device", f"vol0={replica}", "--yes",
                       "--write", "--plain")
    assert done.returncode == 0, done.stdout + done.stderr
    for words in ("make vol0 standby on s0", "initialize vol0 on s1", "hash backup of vol0 "
                  "from s1 to a0", "stop s0 on hS0 gracefully"):
        assert words in done.stderr, (words, done.stderr)
    c = lab.containers()
    assert c["s0"].status == "exited" and c["s1"].status == "running"
    assert lab.walbc("s1", "get", "state", "vol0") == "Target"
    assert (lab.data / "s0" / "vol0").is_dir()  # s0 keeps the volume, standby

    moved = Group.load(lab.path)
    overwrite(replica, 3 * MIB, 8192)
    gid = moved.snapshot("vol0", timeout_s=60)
    moved.restore("vol0", gid)
    assert restored_sha(lab, "a0", "vol0", gid) == sha(replica)


@pytest.mark.parametrize("lab", [True], indirect=True)
def test_a_secondary_archive_is_replaced_and_keeps_synchronizing(lab: Lab) -> None:
    from walbctr.group import Group

    dev = device(lab, "s0", "vol0")
    group = Group.load(lab.path)
    group.add("vol0", storage="s0", device=str(dev), timeout_s=120)
    group.replicate("vol0", "a1", sync=True, timeout_s=120)
    assert lab.walbc("p0", "archive-info", "list", "vol0").split() == ["a0", "a1"]

    done = lab.replace("a1", "--host", "hX", "--yes", "--write", "--plain")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "replicate vol0 from a1 to a2 and keep it synchronized" in done.stderr
    c = lab.containers()
    assert c["a1"].status == "exited" and c["a2"].status == "running"
    assert lab.walbc("p0", "archive-info", "list", "vol0").split() == ["a0", "a2"]
    args = c["s0"].attrs["Args"]  # the storages still send to the primary: not restarted
    assert args[args.index("-archive") + 1] == f"a0:{lab.ports['a0']}"

    moved = Group.load(lab.path)
    overwrite(dev, 2 * MIB, 4096)
    gid = moved.snapshot("vol0", timeout_s=60)
    deadline = time.monotonic() + 60  # the proxy sends the same wdiffs to a2
    while gid not in [x.gid for x in moved.restorable("vol0", "a2")]:
        assert time.monotonic() < deadline, moved.show("vol0").model_dump_json(indent=1)
        time.sleep(0.5)
    moved.restore("vol0", gid, archive="a2")
    assert restored_sha(lab, "a2", "vol0", gid) == sha(dev)
