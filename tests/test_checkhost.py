"""`walbctr check-host`: what it reports, and that it leaves every host as it found it.

The core (kernel range, walb's volume files, what stops a storage at start) needs no
engine; the rest runs check-host against the real engine with the test double's image,
a VG on a loop device, and base dirs under the test's tmp dir.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.test_deploy import free_ports
from walbctr.docker.throwaway import MissingHostPathError, probe, sh
from walbctr.layout.loader import load_layout
from walbctr.layout.spec import Layout
from walbctr.walb.driver import (
    StorageHostView,
    StorageVolume,
    decode_saved_string,
    kernel_support,
)

PROBE_GROUP = "io.walbctr.probe-group"


# --- the core ------------------------------------------------------------------------------


@pytest.mark.parametrize(("release", "supported", "words"), [
    ("4.14.0", True, "master (v1.5.x)"),
    ("4.19.0-27-amd64", True, "master (v1.5.x)"),
    ("4.9.0-13-amd64", True, "for-4.8 (v1.4.x)"),
    ("3.16.0-6-amd64", True, "for-3.14 (EOL)"),
    ("4.13.0", False, "has no release for it"),
    ("5.10.0-30-amd64", False, "none for 5.x or 6.x"),
    ("6.1.0-18-amd64", False, "none for 5.x or 6.x"),
    ("6.18.44-fc-v669", False, "Linux 6.18.44-fc-v669"),
    ("weird", False, "cannot be read"),
])
def test_kernel_support_follows_walb_drivers_readme(release: str, supported: bool,
                                                    words: str) -> None:
    ok, detail = kernel_support(release)
    assert ok is supported
    assert words in detail


def saved(text: str) -> bytes:
    """A string as cybozu's serializer writes it (size < 128: one byte, then the bytes)."""
    data = text.encode()
    assert len(data) < 128
    return bytes([len(data)]) + data


def test_walbs_saved_strings_are_decoded_with_their_size_prefix() -> None:
    assert decode_saved_string(saved("/dev/walb/v0")) == "/dev/walb/v0"
    long = "/dev/walb/" + "v" * 190
    assert decode_saved_string(b"\x80" + bytes([len(long)]) + long.encode()) == long
    longer = "x" * 300
    assert decode_saved_string(b"\x81" + (300).to_bytes(2, "little") + longer.encode()) == longer
    assert decode_saved_string(b"\x05Target") is None  # size and bytes disagree
    assert decode_saved_string(b"") is None


def view(volumes: list[StorageVolume], devices: Collection[str] = (),
         lsids: Collection[str] = ()) -> StorageHostView:
    return StorageHostView(bool(devices), frozenset(devices), frozenset(lsids), tuple(volumes))


def test_a_storage_without_volumes_needs_no_walb_device() -> None:
    assert view([]).start_problems() == []


def test_every_volume_needs_its_walb_device_whatever_its_state() -> None:
    vols = [StorageVolume("v0", "/dev/walb/v0", "SyncReady"),
            StorageVolume("v1", "/dev/walb/v1", "Target")]
    problems = view(vols).start_problems()
    assert problems == ["volume v0 (SyncReady) needs /dev/walb/v0, which is missing",
                        "volume v1 (Target) needs /dev/walb/v1, which is missing"]
    assert view(vols, {"v0", "v1"}, {"v1"}).start_problems() == []


def test_target_and_standby_volumes_also_need_their_log_monitor_in_sysfs() -> None:
    vols = [StorageVolume("v0", "/dev/walb/w0", "Standby"),
            StorageVolume("v1", "/dev/walb/w1", "Stopped")]
    assert view(vols, {"w0", "w1"}).start_problems() == [
        "volume v0 (Standby) needs /sys/block/walb!w0/walb/lsids, which is missing"]


def test_a_directory_that_is_no_volume_stops_the_storage_too() -> None:
    problems = view([StorageVolume("logs", None, None)]).start_problems()
    assert problems == ["logs is not a walb volume (no readable 'path' file); move it out of "
                        "the base dir"]


def test_the_storage_probes_lines_are_read_back_byte_for_byte() -> None:
    import base64

    def b(raw: bytes) -> str:
        return ":" + base64.b64encode(raw).decode()

    text = "\n".join([
        "control",
        f"dev {b(b'v 0')}",
        f"lsids {b(b'v 0')}",
        f"vol {b(b'a b$(x)')} {b(saved('/dev/walb/v 0'))} {b(saved('Target'))}",
        f"vol {b(b'junk')} - -",
        "",
    ])
    seen = StorageHostView.parse(text)
    assert seen.control
    assert seen.devices == {"v 0"} and seen.lsids == {"v 0"}
    assert seen.volumes == (StorageVolume("a b$(x)", "/dev/walb/v 0", "Target"),
                            StorageVolume("junk", None, None))


# --- on the engine -------------------------------------------------------------------------


class Site:
    """A throwaway group on this machine: layout, state dir, base dirs under tmp."""

    def __init__(self, tmp: Path, engine: Any, image: str, vg: str, base: str,
                 mode: str = "bridge", extra: str = "", privileged: bool = False) -> None:
        self.engine = engine
        self.tmp = tmp
        self.name = f"c{secrets.token_hex(4)}"
        self.path = tmp / "layout.yaml"
        self.state = tmp / "state"
        tmp.mkdir(parents=True, exist_ok=True)
        hosts = ""
        if mode == "host":
            hosts = ("hosts:\n  hostA0: {address: 127.0.0.1}\n  hostP0: {address: 127.0.0.1}\n"
                     "  hostS0: {address: 127.0.0.1}\n")
        ports = free_ports(3)
        self.path.write_text(
            f"group: {self.name}\nimage: {image}\nnetwork: {{mode: {mode}}}\n{hosts}"
            f"defaults:\n  base_dir: {base}/{{id}}\n  privileged: {str(privileged).lower()}\n"
            f"  stop_grace_period: 10\n  nofile: 16384\n{extra}"
            f"archives:\n  - {{id: a0, host: hostA0, vg: {vg}, port: {ports[0]}}}\n"
            f"proxies:\n  - {{id: p0, host: hostP0, port: {ports[1]}}}\n"
            f"storages:\n  - {{id: s0, host: hostS0, port: {ports[2]}}}\n")

    def walbctr(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "WALBCTR_STATE_DIR": str(self.state)}
        return subprocess.run([sys.executable, "-m", "walbctr", *args], capture_output=True,
                              text=True, env=env, check=False)

    def check(self) -> subprocess.CompletedProcess[str]:
        return self.walbctr("check-host", str(self.path), "--json")

    def layout(self) -> Layout:
        return load_layout(self.path.read_text(), str(self.path))

    def cleanup(self) -> None:
        self.walbctr("down", str(self.path), "--quiet")
        for c in self.engine.containers.list(
                all=True, filters={"label": f"io.walbctr.group={self.name}"}):
            c.remove(force=True)
        for net in self.engine.networks.list(names=[f"walbctr-{self.name}"]):
            net.remove()


@pytest.fixture
def make_site(tmp_path: Path, engine: Any, double_image: str,
              loop_vg: str) -> Iterator[Any]:
    made: list[Site] = []

    def make(base: str | None = None, vg: str | None = None, **kw: Any) -> Site:
        tmp = tmp_path / f"s{len(made)}"
        site = Site(tmp, engine, double_image, vg or loop_vg,
                    base if base is not None else str(tmp / "data" / "walb"), **kw)
        made.append(site)
        return site

    yield make
    for s in made:
        s.cleanup()


def rows(out: str) -> dict[tuple[str, str], tuple[str, str]]:
    """(host, check) -> (result, detail) from `check-host --json`."""
    return {(r["host"], r["check"]): (r["result"], r["detail"]) for r in json.loads(out)}


def tree(root: Path) -> dict[str, str]:
    """Every path under root with its kind and content digest: what a check may not change."""
    out: dict[str, str] = {}
    if not root.exists():
        return out
    for dirpath, dirs, files in os.walk(root):
        for d in dirs:
            out[os.path.join(dirpath, d)] = "dir"
        for f in files:
            p = Path(dirpath, f)
            out[str(p)] = "link" if p.is_symlink() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def group_containers(engine: Any, group: str) -> dict[str, tuple[str, str, int]]:
    found = engine.containers.list(all=True, filters={"label": f"io.walbctr.group={group}"})
    return {c.id: (c.status, c.attrs["State"]["StartedAt"], c.attrs["RestartCount"])
            for c in found}


def host_snapshot(engine: Any, site: Site) -> dict[str, Any]:
    return {
        "containers": group_containers(engine, site.name),
        "probes": sorted(c.id for c in engine.containers.list(
            all=True, filters={"label": f"{PROBE_GROUP}={site.name}"})),
        "networks": sorted(n.name for n in engine.networks.list() if site.name in n.name),
        "files": tree(site.tmp),
    }


def probes_during(engine: Any, group: str, since: float, until: float) -> dict[str, set[str]]:
    """container id -> the events of check-host's probes for `group` in that time."""
    seen: dict[str, set[str]] = {}
    for ev in engine.events(since=int(since), until=int(until) + 1, decode=True,
                            filters={"type": "container", "label": f"{PROBE_GROUP}={group}"}):
        seen.setdefault(ev["id"], set()).add(ev.get("Action") or ev.get("status"))
    return seen


def network_creations(engine: Any, group: str, since: float, until: float) -> list[str]:
    return [ev["Actor"]["Attributes"].get("name", "")
            for ev in engine.events(since=int(since), until=int(until) + 1, decode=True,
                                    filters={"type": "network", "event": "create"})
            if group in ev["Actor"]["Attributes"].get("name", "")]


def checked_without_a_trace(engine: Any, site: Site) -> subprocess.CompletedProcess[str]:
    """Run check-host and assert that the host is as it was; its result."""
    before = host_snapshot(engine, site)
    started = time.time()
    run = site.check()
    ended = time.time()
    assert "Traceback" not in run.stderr, run.stderr
    after = host_snapshot(engine, site)
    assert after == before
    probes = probes_during(engine, site.name, started, ended)
    assert len(probes) >= 3, (probes, run.stdout, run.stderr)  # it looked: VG, storage, dirs
    for cid, actions in probes.items():
        assert "destroy" in actions, (cid, actions)  # every probe removed, none left
    assert network_creations(engine, site.name, started, ended) == []
    return run


def test_check_host_leaves_a_host_without_the_group_as_it_found_it(
        make_site: Any, engine: Any) -> None:
    site = make_site()
    run = checked_without_a_trace(engine, site)
    assert run.returncode == 0, run.stdout + run.stderr
    found = rows(run.stdout)
    assert found[("hostA0", "a0: volume group")][0] == "ok"
    base = site.tmp / "data" / "walb"
    assert found[("hostS0", f"base dir {base}/s0")] == (
        "ok", f"writable: 'walbctr up' creates it under {site.tmp}")
    assert not (site.tmp / "data").exists()
    assert not site.state.exists()  # no compose file written for the check


def test_check_host_leaves_a_running_group_as_it_found_it(make_site: Any, engine: Any) -> None:
    site = make_site()
    up = site.walbctr("up", str(site.path), "--plain")
    assert up.returncode == 0, up.stderr
    run = checked_without_a_trace(engine, site)
    assert run.returncode == 0, run.stdout + run.stderr
    found = rows(run.stdout)
    base = site.tmp / "data" / "walb"
    assert found[("hostA0", f"base dir {base}/a0")] == ("ok", "exists, writable")
    assert found[("hostS0", "s0: volumes")][0] == "ok"


def test_check_host_in_host_networking_checks_ports_and_leaves_them_free(
        make_site: Any, engine: Any) -> None:
    site = make_site(mode="host")
    run = checked_without_a_trace(engine, site)
    assert run.returncode == 0, run.stdout + run.stderr
    assert {k[1].split(" port ")[0] for k, v in rows(run.stdout).items()
            if " port " in k[1] and v[0] == "ok"} == {"a0:", "p0:", "s0:"}


def test_check_host_leaves_no_container_behind_where_privileged_ones_are_refused(
        make_site: Any, engine: Any) -> None:
    site = make_site(privileged=True)
    run = checked_without_a_trace(engine, site)  # a container that could not start, too
    result, detail = rows(run.stdout)[("hostA0", "privileged")]
    if result == "FAIL":  # this machine's engine refuses them (so do many CI runners)
        assert run.returncode == 1
        assert "privileged containers are refused" in detail
        assert "set 'privileged: false' under defaults" in detail
    else:
        assert result == "ok", detail


def walb_volume(base: Path, name: str, device: str, state: str) -> None:
    """A volume directory as walb-storage v1.0.19 leaves it (path and state files)."""
    vol = base / name
    vol.mkdir(parents=True)
    (vol / "path").write_bytes(saved(device))
    (vol / "state").write_bytes(saved(state))


def test_a_storage_with_volumes_but_no_walb_devices_fails_the_check(
        make_site: Any, engine: Any) -> None:
    site = make_site()
    storage_base = site.tmp / "data" / "walb" / "s0"
    walb_volume(storage_base, "vol0", "/dev/walb/vol0", "Target")
    walb_volume(storage_base, "vol1", "/dev/walb/vol1", "SyncReady")
    run = checked_without_a_trace(engine, site)
    assert run.returncode == 1, run.stdout + run.stderr
    result, detail = rows(run.stdout)[("hostS0", "s0: volumes")]
    assert result == "FAIL"
    assert "s0 would exit 1 at start and restart forever" in detail
    assert "volume vol0 (Target) needs /dev/walb/vol0, which is missing" in detail
    assert "volume vol1 (SyncReady) needs /dev/walb/vol1, which is missing" in detail
    assert "wdevc create-wdev" in detail
    assert rows(run.stdout)[("hostS0", "s0: walb driver")][0] == "warn"
    kernel = rows(run.stdout)[("hostS0", "kernel")]
    ok, _ = kernel_support(engine.info()["KernelVersion"])
    assert kernel[0] == ("ok" if ok else "warn")
    assert engine.info()["KernelVersion"] in kernel[1]


def test_a_base_dir_under_a_file_fails_the_check(make_site: Any, engine: Any,
                                                 tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    site = make_site(base=str(blocker / "walb"))
    run = checked_without_a_trace(engine, site)
    assert run.returncode == 1
    assert rows(run.stdout)[("hostP0", f"base dir {blocker}/walb/p0")] == (
        "FAIL", f"{blocker} exists and is not a directory")
    assert blocker.read_text() == "not a directory\n"


def test_a_missing_volume_group_fails_the_check_and_names_it(make_site: Any,
                                                             engine: Any) -> None:
    site = make_site(vg="no_such_vg")
    run = checked_without_a_trace(engine, site)
    assert run.returncode == 1
    result, detail = rows(run.stdout)[("hostA0", "a0: volume group")]
    assert result == "FAIL"
    assert "VG no_such_vg not found as a0 would see it" in detail
    assert "vgcreate no_such_vg DEVICE" in detail


# --- hostile values ------------------------------------------------------------------------

# Each would create /probe/pwnedN if a shell ever read it as code (pasted between double
# quotes or bare); /probe is where check-host's write test mounts the nearest existing
# directory of a base dir or log dir, so the marker would land in the test's tmp dir.
HOSTILE = ["$(touch /probe/pwned1)", "`touch /probe/pwned2`", "x;touch /probe/pwned3;",
           'x"$(touch /probe/pwned4)"', "x'$(touch /probe/pwned5)'", "a|touch /probe/pwned6",
           "a&&touch /probe/pwned7", "${HOME}$HOME sp ace\ttab"]
MARKERS = [f"pwned{i}" for i in range(1, 8)]


def hostile(layout: Layout, base_dirs: dict[str, str], log_paths: dict[str, str], vg: str,
            thinpool: str) -> Layout:
    """The layout with values validation may refuse, put in past it: what check-host does
    with them must not depend on validation."""
    servers = []
    for s in layout.servers:
        options = dict(s.options)
        if "vg" in options:
            options.update(vg=vg, thinpool=thinpool)
        servers.append(dataclasses.replace(s, base_dir=base_dirs[s.id], options=options,
                                           log_path=log_paths.get(s.id, s.log_path)))
    return dataclasses.replace(layout, servers=tuple(servers))


def marks(root: Path) -> list[str]:
    return sorted(p for p in tree(root) if Path(p).name in MARKERS)


def test_the_markers_are_made_by_a_script_that_pastes_the_values(
        engine: Any, double_image: str, tmp_path: Path) -> None:
    """The control for the test below: pasted into `sh -c`, these values do run."""
    from walbctr.docker.engine import Engine

    (tmp_path / "dir").mkdir()
    for value in HOSTILE:
        for script in (f'd="{value}"; true', f"echo {value} >/dev/null; true"):
            probe(Engine(), double_image, ["sh", "-c", script], purpose="test",
                  volumes={str(tmp_path / "dir"): {"bind": "/probe", "mode": "rw"}})
    assert [Path(p).name for p in marks(tmp_path)] == MARKERS


def test_check_host_runs_nothing_from_hostile_values(make_site: Any, engine: Any) -> None:
    from walbctr.commands.checkhost import check_hosts

    site = make_site()
    root = site.tmp / "data"
    # A storage base dir that exists, with a hostile name, holding a walb volume: the
    # probe must find the volume there, so the value reached the engine byte for byte.
    weird = root / "".join(HOSTILE).replace("/", "_")
    walb_volume(weird, "vol0", "/dev/walb/vol0", "Stopped")
    base_dirs = {"a0": str(root / HOSTILE[0] / "a0"),
                 "p0": str(root / "p" / "".join(HOSTILE[1:]).replace("/", "_")),
                 "s0": str(weird)}
    log_paths = {"p0": str(root / "logs" / HOSTILE[5] / "p0.log")}
    vg = "vg$(echo INJECTED)" + HOSTILE[2]
    lay = hostile(site.layout(), base_dirs, log_paths, vg=vg, thinpool="tp" + HOSTILE[1])
    before = tree(site.tmp)
    checks = {(c.host, c.name): c for c in check_hosts(lay)}
    assert marks(site.tmp) == []
    assert tree(site.tmp) == before
    found = checks[("hostA0", "a0: volume group")]
    assert found.result == "FAIL"
    # LVM's own words repeat the name it was given: literally, not the substitution.
    assert f"(Invalid volume group name {vg}.)" in found.detail
    assert "vgINJECTED" not in found.detail
    s0 = checks[("hostS0", "s0: volumes")]
    assert s0.result == "FAIL"
    assert "volume vol0 (Stopped) needs /dev/walb/vol0" in s0.detail
    hosts = {"a0": "hostA0", "p0": "hostP0", "s0": "hostS0"}
    for sid, path in base_dirs.items():
        assert checks[(hosts[sid], f"base dir {path}")].result == "ok", checks
    assert checks[("hostP0", f"log dir {root}/logs/{HOSTILE[5]}")].result == "ok"
    assert not engine.containers.list(all=True, filters={"label": f"{PROBE_GROUP}={site.name}"})


def test_a_probe_never_creates_a_missing_host_path(engine: Any, double_image: str,
                                                  tmp_path: Path) -> None:
    from walbctr.docker.engine import Engine

    missing = tmp_path / "not" / "there"
    with pytest.raises(MissingHostPathError) as err:
        probe(Engine(), double_image, sh('ls "$1"', "/p"), purpose="test",
              volumes={str(missing): {"bind": "/p", "mode": "ro"}})
    assert err.value.path == str(missing)
    assert not (tmp_path / "not").exists()


def test_the_log_of_a_server_whose_log_dir_is_missing_is_empty_and_nothing_is_created(
        engine: Any, double_image: str, tmp_path: Path) -> None:
    from walbctr.docker.engine import Engine
    from walbctr.docker.logs import log_tail

    text = (f"group: g\nimage: {double_image}\nnetwork: {{mode: bridge}}\n"
            f"defaults:\n  base_dir: {tmp_path}/b/{{id}}\n  log_path: {tmp_path}/logs/{{id}}.log\n"
            "archives:\n  - {id: a0, host: h, vg: vg0}\n")
    lay = load_layout(text, "t.yaml")
    assert log_tail(Engine(), lay, lay.server("a0"), 5) == []
    assert not (tmp_path / "logs").exists()
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "a0.log").write_text("one\ntwo\nthree\n")
    assert log_tail(Engine(), lay, lay.server("a0"), 2) == ["two", "three"]


@pytest.mark.parametrize("state", ["SyncReady", "Target"])
def test_real_walb_storage_exits_at_start_when_a_volumes_walb_device_is_missing(
        engine: Any, double_image: str, tmp_path: Path, state: str) -> None:
    """What check-host's volume check stands for, seen on walb-tools itself."""
    if engine.images.get(double_image).labels.get("io.walbctr.test-double") == "true":
        pytest.skip("the test double does not open volumes' WalB devices at start; run with "
                    "WALBCTR_TEST_IMAGE set to an image of real walb-tools")
    from walbctr.docker.engine import Engine

    base = tmp_path / "s0"
    walb_volume(base, "vol0", "/dev/walb/vol0", state)
    argv = ["timeout", "10", "walb-storage", "-p", "5000", "-b", "/b/", "-id", "s0",
            "-archive", "127.0.0.1:10001", "-proxy", "127.0.0.1:10002"]
    started = time.monotonic()
    result = probe(Engine(), double_image, argv, purpose="test",
                   volumes={str(base): {"bind": "/b", "mode": "rw"}})
    assert result.status == 1, result
    assert time.monotonic() - started < 10
    assert "initializeStorage:start failed:vol0:StorageVolInfo:not found:/dev/walb/vol0" in \
        result.stdout + result.stderr
