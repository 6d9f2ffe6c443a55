"""`walbctr volume` and the Group API on the real engine: upstream's tutorial (add, write,
snapshot, restore, compare bytes, replicate to a second archive, hash backup after an
injected overflow) on a lab group of the test double, whose storage reads a plain file as
its walb device and whose archives keep base images and wdiffs as files.

The double's hooks (`double-overflow`, `double-throttle`, `double-restored-path`) stand in
for what needs a walb device: a lost log, a slow device, and the path of a restored LV.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.test_deploy import free_ports
from walbctr.group import Group, Progress, VolumeStateError
from walbctr.render.compose import LABEL

MIB = 1 << 20


class Lab:
    """A group with two archives, a proxy and a storage on this engine."""

    def __init__(self, tmp: Path, engine: Any, image: str, vg: str, extra: str = "") -> None:
        self.engine = engine
        self.name = f"v{secrets.token_hex(4)}"
        self.data = tmp / "data"
        self.path = tmp / "layout.yaml"
        self.env = {**os.environ, "WALBCTR_STATE_DIR": str(tmp / "state")}
        ports = free_ports(4)
        self.path.write_text(
            f"group: {self.name}\nimage: {image}\nnetwork: {{mode: bridge}}\n"
            f"defaults:\n  base_dir: {self.data}/{{id}}\n  privileged: false\n"
            f"  stop_grace_period: 10\n  nofile: 16384\n"
            f"archives:\n  - {{id: a0, host: lab, vg: {vg}, port: {ports[0]}}}\n"
            f"  - {{id: a1, host: lab, vg: {vg}, port: {ports[1]}}}\n"
            f"proxies:\n  - {{id: p0, host: lab, port: {ports[2]}}}\n"
            f"storages:\n  - {{id: s0, host: lab, port: {ports[3]}}}\n{extra}")

    def walbctr(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "walbctr", *args], capture_output=True,
                              text=True, env=self.env, check=False, timeout=timeout)

    def volume(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.walbctr("volume", "-l", str(self.path), *args)

    def device(self, name: str, size: int) -> Path:
        """The storage's stand-in walb device: a file in its base dir (bound into it)."""
        dev = self.data / "s0" / f"{name}.img"
        dev.parent.mkdir(parents=True, exist_ok=True)
        with dev.open("wb") as f:
            f.write(os.urandom(size))
        return dev

    def container(self, server: str) -> Any:
        return self.engine.containers.get(f"walbctr-{self.name}-{server}")

    def walbc(self, server: str, *args: str) -> str:
        r = self.walbctr("walbc", str(self.path), server, *args)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    def restored_sha(self, archive: str, vol: str, gid: int) -> str:
        path = self.walbc(archive, "double-restored-path", vol, str(gid))
        code, out = self.container(archive).exec_run(["sha256sum", path])
        assert code == 0, out
        return str(out.decode().split()[0])


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def overwrite(dev: Path, offset: int, size: int) -> None:
    with dev.open("r+b") as f:
        f.seek(offset)
        f.write(os.urandom(size))
        f.flush()
        os.fsync(f.fileno())


@pytest.fixture
def lab(tmp_path: Path, engine: Any, double_image: str, loop_vg: str) -> Iterator[Lab]:
    yield from running(Lab(tmp_path, engine, double_image, loop_vg))


def running(g: Lab) -> Iterator[Lab]:
    """The lab up for a test, then down, with whatever containers it left (the keeper's
    too) removed; its data dirs stay in the test's tmp dir."""
    up = g.walbctr("up", str(g.path), "--plain")
    assert up.returncode == 0, up.stdout + up.stderr
    yield g
    g.walbctr("down", str(g.path), "--quiet")
    for label in (LABEL, "io.walbctr.keeper"):
        for c in g.engine.containers.list(all=True, filters={"label": f"{label}={g.name}"}):
            c.remove(force=True)


def test_the_tutorial_through_the_cli_backs_up_restores_and_replicates_the_same_bytes(
        lab: Lab) -> None:
    dev = lab.device("vol0", 4 * MIB)
    add = lab.volume("add", "vol0", "--storage", "s0", "--device", str(dev), "--plain")
    assert add.returncode == 0, add.stderr
    assert "vol0: backed up on a0, restorable gid" in add.stdout
    assert "full backup of vol0 from s0 to a0" in add.stderr

    overwrite(dev, 1 * MIB + 512, 8192)
    snap = lab.volume("snapshot", "vol0", "--plain")
    assert snap.returncode == 0, snap.stderr
    gid = int(snap.stdout.strip())
    restore = lab.volume("restore", "vol0", str(gid), "--plain")
    assert restore.returncode == 0, restore.stderr
    assert restore.stdout.strip().endswith(f"/wr_vol0_{gid}")
    assert lab.restored_sha("a0", "vol0", gid) == sha(dev)

    listed = json.loads(lab.volume("list", "--json").stdout)
    assert [(v["name"], v["states"]["s0"], v["states"]["a0"], v["states"]["p0"])
            for v in listed] == [("vol0", "Target", "Archived", "Started")]
    shown = json.loads(lab.volume("show", "vol0", "--json").stdout)
    a0 = next(s for s in shown["servers"] if s["server"] == "a0")
    assert gid in [x["gid"] for x in a0["restorable"]]
    assert a0["restored"] == [gid]
    assert a0["size_lb"] == 4 * MIB // 512

    rep = lab.volume("replicate", "vol0", "--to", "a1", "--plain")
    assert rep.returncode == 0, rep.stderr
    assert f"replicated to a1 up to gid {gid}" in rep.stdout
    assert lab.volume("restore", "vol0", str(gid), "--archive", "a1").returncode == 0
    assert lab.restored_sha("a1", "vol0", gid) == sha(dev)

    assert lab.volume("del-restored", "vol0", str(gid)).returncode == 0
    assert lab.volume("restored", "vol0").stdout == ""


def test_an_overflowed_volume_is_refused_until_a_hash_backup_brings_it_back(lab: Lab) -> None:
    dev = lab.device("vol1", 2 * MIB)
    assert lab.volume("add", "vol1", "--storage", "s0", "--device", str(dev)).returncode == 0
    lab.walbc("s0", "double-overflow", "vol1", "1")
    overwrite(dev, 0, 4096)

    again = lab.volume("add", "vol1", "--storage", "s0", "--device", str(dev))
    assert again.returncode == 1
    assert "s0's log device for vol1 overflowed" in again.stderr
    assert "--hash" in again.stderr and "Traceback" not in again.stderr

    fixed = lab.volume("add", "vol1", "--storage", "s0", "--device", str(dev), "--hash",
                       "--plain")
    assert fixed.returncode == 0, fixed.stderr
    assert "hash backup of vol1 from s0 to a0" in fixed.stderr
    gid = int(lab.volume("snapshot", "vol1").stdout.strip())
    assert lab.volume("restore", "vol1", str(gid)).returncode == 0
    assert lab.restored_sha("a0", "vol1", gid) == sha(dev)


def test_the_api_does_the_tutorial_with_progress_and_pydantic_records(lab: Lab) -> None:
    group = Group.load(lab.path)
    dev = lab.device("vol2", 8 * MIB)
    group.calls.run("s0", "double-throttle", "4096")  # KiB/s: two seconds of progress
    seen: list[Progress] = []
    gid0 = group.add("vol2", storage="s0", device=str(dev), timeout_s=120,
                     progress=seen.append)
    group.calls.run("s0", "double-throttle", "0")
    transfers = [p for p in seen if p.done_lb and p.total_lb]
    assert transfers, [p.step for p in seen]
    assert all(p.total_lb == 8 * MIB // 512 for p in transfers)
    assert max(p.done_lb or 0 for p in transfers) > 0

    overwrite(dev, 3 * MIB, 65536)
    gid1 = group.snapshot("vol2")
    assert gid1 > gid0
    group.restore("vol2", gid1)
    assert group.restored("vol2") == [gid1]
    assert lab.restored_sha("a0", "vol2", gid1) == sha(dev)
    info = group.show("vol2")
    assert info.on("s0").state == "Target"
    assert info.latest_snapshot is not None and info.latest_snapshot.gid >= gid1
    assert json.loads(info.model_dump_json())["name"] == "vol2"
    assert [v.name for v in group.volumes()] == ["vol2"]


def test_bad_states_are_refused_naming_server_volume_state_and_fix(lab: Lab) -> None:
    unknown = lab.volume("snapshot", "nosuch")
    assert unknown.returncode == 1
    assert "no storage of" in unknown.stderr and "add nosuch --storage ID" in unknown.stderr

    dev = lab.device("vol3", 1 * MIB)
    assert lab.volume("add", "vol3", "--storage", "s0", "--device", str(dev)).returncode == 0
    missing = lab.volume("restore", "vol3", "999999")
    assert missing.returncode == 1
    assert "gid 999999 of vol3 is not restorable on a0" in missing.stderr

    stop = lab.volume("stop", "vol3", "--server", "a0")
    assert stop.returncode == 0 and "Stopped" in stop.stdout
    snap = lab.volume("snapshot", "vol3")
    assert snap.returncode == 1
    assert "a0 has vol3 in state Stopped" in snap.stderr
    assert lab.volume("start", "vol3", "--server", "a0").returncode == 0

    group = Group.load(lab.path)
    group.calls.run("s0", "stop", "vol3")
    with pytest.raises(VolumeStateError, match="a0 already holds a backup of vol3"):
        group.add("vol3", storage="s0", device=str(dev), timeout_s=60)
    assert group.state("vol3", "s0") == "Stopped"  # refused before anything was touched
    bad = lab.volume("add", "../x", "--storage", "s0", "--device", str(dev))
    assert bad.returncode == 1 and "is not a walb volume name" in bad.stderr


def test_an_interrupted_add_continues_where_the_servers_are(lab: Lab) -> None:
    dev = lab.device("vol4", 8 * MIB)
    # 8 MiB at 64 KiB/s: two minutes of FullSync, so that even a loaded machine's slow
    # polls see it and interrupt it (at 512 KiB/s a CI run once saw the backup finish
    # before the interrupt came); the throttle is lifted for the second run.
    lab.walbc("s0", "double-throttle", "64")
    cmd = [sys.executable, "-m", "walbctr", "volume", "-l", str(lab.path), "add", "vol4",
           "--storage", "s0", "--device", str(dev), "--plain"]
    first = subprocess.Popen(cmd, env=lab.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    deadline = time.monotonic() + 60
    while lab.walbc("s0", "get", "state", "vol4") != "FullSync":
        assert time.monotonic() < deadline, "the full backup never started"
        time.sleep(0.2)
    first.send_signal(signal.SIGINT)
    out, err = first.communicate(timeout=30)
    assert first.returncode == 130, out + err
    lab.walbc("s0", "double-throttle", "0")
    again = lab.volume("add", "vol4", "--storage", "s0", "--device", str(dev), "--plain")
    assert again.returncode == 0, again.stderr
    # it went on, it did not start over
    assert "initialize vol4 on s0" not in again.stderr, out + err + again.stderr
    assert lab.walbc("s0", "get", "state", "vol4") == "Target", again.stderr


def test_remove_keeps_the_archive_data_unless_the_archive_is_named(lab: Lab) -> None:
    dev = lab.device("vol5", 1 * MIB)
    assert lab.volume("add", "vol5", "--storage", "s0", "--device", str(dev)).returncode == 0
    removed = lab.volume("remove", "vol5", "--yes")
    assert removed.returncode == 0, removed.stderr
    assert "cleared on s0, p0" in removed.stdout
    assert lab.walbc("s0", "get", "state", "vol5") == "Clear"
    assert lab.walbc("a0", "get", "state", "vol5") != "Clear"
    assert dev.exists()
    asked = lab.volume("remove", "vol5")  # no terminal: it asks, so it refuses
    assert asked.returncode == 1 and "--yes" in asked.stderr
