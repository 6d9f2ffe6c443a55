"""`walbctr collect`: the support bundle.

The pure pieces (names, redaction, bounds, the manifest) without Docker; then a lab group
on the real engine with the test double (a lab VG, a keeper), collected once with every
host reachable and once through a layout whose second host's engine refuses connections
and names TLS files that must never be read.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MINIMAL, ROOT
from tests.test_deploy import free_ports
from walbctr.commands.collect import (
    REDACTED,
    Entry,
    bounded,
    bundle_name,
    engine_facts,
    manifest_text,
    member_name,
    on_host,
    redact_inspect,
)
from walbctr.layout.imagetag import keeper_image

# --- pure ---------------------------------------------------------------------------------


def test_the_default_bundle_name_is_the_group_and_the_utc_time() -> None:
    tokyo = timezone(timedelta(hours=9))
    now = datetime(2025, 3, 4, 14, 5, 6, tzinfo=tokyo)
    assert bundle_name("lab", now) == "walbctr-collect-lab-20250304T050506Z.tar.gz"


@pytest.mark.parametrize(("name", "member"), [
    ("hostA0", "hostA0"), ("walbctr-g-a0", "walbctr-g-a0"), ("a/../b", "a_.._b"),
    ("..", "_.."), (".hidden", "_.hidden"), ("", "_"), ("host.example.com", "host.example.com"),
])
def test_member_names_are_single_path_components(name: str, member: str) -> None:
    assert member_name(name) == member


def test_inspect_keeps_environment_names_and_drops_their_values_wherever_they_are() -> None:
    attrs = {"Id": "abc", "Config": {"Env": ["TOKEN=s3cret", "PATH=/usr/bin", "BARE"],
                                     "Cmd": ["walb-proxy", "-p", "10000"]},
             "ContainerConfig": {"Env": ["OLD=hidden=too"]},
             "Mounts": [{"Source": "/var/walb/a0", "Destination": "/var/walb/a0"}]}
    out = redact_inspect(attrs)
    assert out["Config"]["Env"] == [f"TOKEN={REDACTED}", f"PATH={REDACTED}", "BARE"]
    assert out["ContainerConfig"]["Env"] == [f"OLD={REDACTED}"]
    assert out["Config"]["Cmd"] == ["walb-proxy", "-p", "10000"]
    assert out["Mounts"] == attrs["Mounts"]
    assert "s3cret" not in json.dumps(out) and "hidden" not in json.dumps(out)
    assert attrs["Config"]["Env"][0] == "TOKEN=s3cret"  # the input is left as it was


def test_log_driver_options_but_the_harmless_ones_are_redacted() -> None:
    attrs = {"HostConfig": {"LogConfig": {"Type": "splunk", "Config": {
        "splunk-token": "tok-123", "splunk-url": "https://splunk", "max-size": "20m",
        "tag": "{{.Name}}"}}}}
    options = redact_inspect(attrs)["HostConfig"]["LogConfig"]
    assert options["Type"] == "splunk"
    assert options["Config"] == {"splunk-token": REDACTED, "splunk-url": REDACTED,
                                 "max-size": "20m", "tag": "{{.Name}}"}


def test_engine_facts_keep_the_version_and_leave_out_the_proxy_settings() -> None:
    facts = engine_facts({"Version": "20.10.24", "ApiVersion": "1.41"},
                         {"KernelVersion": "6.1.0", "NCPU": 2,
                          "HttpProxy": "http://user:pw@proxy:3128", "RegistryConfig": {}})
    assert facts == {"version": {"Version": "20.10.24", "ApiVersion": "1.41"},
                     "info": {"KernelVersion": "6.1.0", "NCPU": 2}}


def test_a_bounded_log_keeps_the_last_whole_lines() -> None:
    lines = [f"line {i:03d}" for i in range(100)]  # 9 bytes each with the newline
    assert bounded(lines[:3], 100) == (b"line 000\nline 001\nline 002\n", False)
    data, cut = bounded(lines, 40)
    assert cut
    assert data == b"line 096\nline 097\nline 098\nline 099\n"
    assert bounded([], 10) == (b"", False)


def test_a_container_not_in_the_layout_goes_under_the_first_host_of_its_engine() -> None:
    sharing = ["hostA0", "hostP0"]
    assert on_host("hostP0", "hostP0", sharing)
    assert not on_host("hostP0", "hostA0", sharing)
    assert on_host(None, "hostA0", sharing) and not on_host(None, "hostP0", sharing)
    assert on_host("gone", "hostA0", sharing)  # a host the layout no longer has


def test_the_manifest_says_what_was_not_collected_and_why_before_what_was() -> None:
    header = {"group": "lab", "layout": "lab.yaml", "walbctr": "0.1.0",
              "collected_at": "2025-03-04T05:05:06Z"}
    text = manifest_text(header, [
        Entry("hosts/h1/logs/a0.log", "the log of a0", "h1", size=1200, note="the last 9"),
        Entry("hosts/h2/", "everything from its engine", "h2", error="host h2: refused"),
    ])
    assert "1 collected, 1 not collected." in text
    assert text.index("Not collected:") < text.index("Collected:")
    assert "  hosts/h2/  everything from its engine: host h2: refused" in text
    assert re.search(r"hosts/h1/logs/a0\.log +1\.2 kB  the log of a0 \(the last 9\)", text)
    assert "Left out on purpose:" in text and REDACTED in text


def test_collect_never_overwrites_a_file_and_leaves_nothing_behind(tmp_path: Path) -> None:
    layout = tmp_path / "layout.yaml"
    layout.write_text(MINIMAL)
    there = tmp_path / "case.tar.gz"
    there.write_text("an earlier bundle")
    run = subprocess.run([sys.executable, "-m", "walbctr", "collect", str(layout), "-o",
                          str(there)], capture_output=True, text=True, cwd=ROOT, check=False)
    assert run.returncode == 1
    assert f"{there} already exists, and collect never overwrites a file" in run.stderr
    assert "give another name with -o" in run.stderr and "Traceback" not in run.stderr
    assert there.read_text() == "an earlier bundle"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case.tar.gz", "layout.yaml"]


# --- a lab group on the real engine -------------------------------------------------------


@dataclass
class Lab:
    dir: Path
    group: str
    layout: Path
    env: dict[str, str]

    def walbctr(self, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
        # PYTHONPATH: the worktree's walbctr even when run from another directory.
        return subprocess.run([sys.executable, "-m", "walbctr", *args], capture_output=True,
                              text=True, cwd=cwd, env={**self.env, "PYTHONPATH": str(ROOT)},
                              stdin=subprocess.DEVNULL, check=False)


def lab_text(group: str, image: str, data: Path, ports: list[int], hosts: str = "lab: "
             "{address: 127.0.0.1}", servers: str = "", listen: str = "") -> str:
    a0, p0, s0, metrics = ports
    return (f"group: {group}\nimage: {image}\nnetwork: {{mode: host}}\n"
            f"hosts:\n  {hosts}\n"
            f"defaults:\n  base_dir: {data}/{{id}}\n  privileged: false\n"
            "  stop_grace_period: 10\n  nofile: 16384\n"
            f"archives:\n  - {{id: a0, host: lab, vg: walbctr_collect_{group}, "
            f"lab_vg_size: 128M, port: {a0}}}\n"
            f"proxies:\n  - {{id: p0, host: lab, port: {p0}}}\n"
            f"storages:\n  - {{id: s0, host: lab, port: {s0}}}\n{servers}"
            f"monitor: {{host: lab, port: {metrics}, interval: 2{listen}}}\n")


@pytest.fixture(scope="module")
def lab(engine: Any, double_image: str,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """One host-mode group on this engine (a0 on a lab VG, p0, s0, and a keeper), up for
    the module's tests; taken down with its lab VG at the end, its base dirs kept."""
    if engine.images.list(name=keeper_image(double_image)) == []:
        pytest.skip(f"no keeper image {keeper_image(double_image)} next to {double_image} "
                    "(an image built elsewhere, WALBCTR_TEST_IMAGE, without its keeper)")
    tmp = tmp_path_factory.mktemp("collect")
    group = f"t{secrets.token_hex(4)}"
    ports = free_ports(4)
    path = tmp / "layout.yaml"
    path.write_text(lab_text(group, double_image, tmp / "data", ports))
    made = Lab(tmp, group, path, {**os.environ, "WALBCTR_STATE_DIR": str(tmp / "state")})
    (tmp / "ports").write_text(json.dumps(ports))
    try:
        run = made.walbctr("up", str(path), "--plain")
        if run.returncode != 0 and "may attach loop devices" in run.stderr:
            pytest.skip(f"this engine cannot attach the lab VG's loop device: {run.stderr}")
        assert run.returncode == 0, run.stderr[-3000:]
        yield made
    finally:
        down = made.walbctr("down", str(path), "--purge-lab", "--yes", "--quiet")
        for label in ("io.walbctr.group", "io.walbctr.keeper"):  # if down itself failed
            for c in engine.containers.list(all=True, filters={"label": f"{label}={group}"}):
                c.remove(force=True)
        assert down.returncode == 0, down.stderr[-3000:]


def members(bundle: Path) -> dict[str, bytes]:
    """Every file in the bundle, by its path under the bundle's top directory."""
    out = {}
    with tarfile.open(bundle) as tar:
        tops = {m.name.split("/", 1)[0] for m in tar.getmembers()}
        assert len(tops) == 1, tops
        for m in tar.getmembers():
            if m.isfile():
                f = tar.extractfile(m)
                assert f is not None
                out[m.name.split("/", 1)[1]] = f.read()
    return out


def test_collect_bundles_logs_inspect_status_versions_and_a_manifest_without_secrets(
        lab: Lab, engine: Any, double_image: str) -> None:
    # A container of the group that the layout does not know, with a secret in its
    # environment: it must be inspected, and the secret must not be in the bundle.
    secret = f"walbctr-test-secret-{secrets.token_hex(8)}"
    visitor = engine.containers.run(
        double_image, ["sleep", "300"], detach=True, name=f"walbctr-{lab.group}-x9",
        labels={"io.walbctr.group": lab.group, "io.walbctr.server": "x9"},
        environment={"WALBCTR_TEST_TOKEN": secret})
    bundle = lab.dir / "case.tar.gz"
    try:
        started = time.monotonic()
        run = lab.walbctr("collect", str(lab.layout), "-o", str(bundle), "--log-lines", "5")
        took = time.monotonic() - started
    finally:
        visitor.remove(force=True)
    print(f"\ncollect of one host, 3 servers and a keeper: {took:.1f} s")
    assert run.returncode == 0, run.stderr[-3000:]
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o600
    assert re.fullmatch(rf"{re.escape(str(bundle))}: [0-9.]+ kB, \d+ items collected, 0 not "
                        r"\(MANIFEST.txt in it says why\)\n", run.stdout), run.stdout
    assert "] lab: collecting (3 servers, engine local)" in run.stderr
    assert re.search(r"\] lab: \d+ collected, 0 not collected, in [0-9.]+ s", run.stderr)
    assert [p.name for p in lab.dir.iterdir() if p.name.endswith(".partial")] == []
    got = members(bundle)
    for name, data in got.items():
        assert secret.encode() not in data, name

    manifest = json.loads(got["manifest.json"])
    assert [e for e in manifest["entries"] if not e["ok"]] == []
    listed = {e["path"] for e in manifest["entries"]}
    assert listed == set(got) - {"MANIFEST.txt", "manifest.json"}
    assert "0 not collected." in got["MANIFEST.txt"].decode()
    assert got[f"layout/{lab.layout.name}"] == lab.layout.read_bytes()

    base = "hosts/lab/"
    for sid in ("a0", "p0", "s0"):
        lines = got[f"{base}logs/{sid}.log"].decode().splitlines()
        assert len(lines) == 5, lines  # --log-lines 5 of a longer log
        assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z ", ln) for ln in lines)
        inspected = json.loads(got[f"{base}inspect/walbctr-{lab.group}-{sid}.json"])
        assert inspected["Config"]["Labels"]["io.walbctr.server"] == sid
        env = inspected["Config"]["Env"]
        assert f"WALBCTR_STOP_GRACE_S={REDACTED}" in env
        assert all(item.endswith("=" + REDACTED) for item in env), env
    x9 = json.loads(got[f"{base}inspect/walbctr-{lab.group}-x9.json"])
    assert f"WALBCTR_TEST_TOKEN={REDACTED}" in x9["Config"]["Env"]
    assert f"{base}inspect/walbctr-{lab.group}-keeper.json" in got

    status = {r["id"]: r for r in json.loads(got[f"{base}status.json"])}
    assert {sid: status[sid]["state"] for sid in ("a0", "p0", "s0")} == \
        dict.fromkeys(("a0", "p0", "s0"), "running")
    assert status["x9"]["role"] == "?"  # not in the layout, as status shows it
    volumes = json.loads(got[f"{base}volumes.json"])
    assert {r["server"] for r in volumes} == {"a0", "p0", "s0"}
    checks = json.loads(got[f"{base}check-host.json"])
    assert {"host": "lab", "check": "image", "result": "ok", "detail": double_image} in checks
    facts = json.loads(got[f"{base}engine.json"])
    assert facts["version"]["ApiVersion"] == engine.version()["ApiVersion"]
    assert "HttpProxy" not in facts["info"] and facts["info"]["KernelVersion"]
    compose = got[f"{base}compose.yaml"].decode()
    assert f"container_name: walbctr-{lab.group}-a0" in compose
    assert got[f"{base}compose-applied.yaml"] == \
        (lab.dir / "state" / lab.group / "lab.yaml").read_bytes()
    assert got[f"{base}keeper/keeper.log"].strip()
    assert b"walb_server_up{" in got[f"{base}keeper/metrics.txt"]


def test_an_unreachable_host_is_recorded_in_the_manifest_and_the_rest_is_collected(
        lab: Lab, double_image: str) -> None:
    # The same group seen through a layout with a second host whose engine refuses
    # connections, and whose TLS files hold what must never reach a bundle.
    tls = lab.dir / "far-tls"
    tls.mkdir(exist_ok=True)
    marker = f"walbctr-test-key-material-{secrets.token_hex(8)}"
    for name in ("ca", "cert", "key"):
        (tls / f"{name}.pem").write_text(f"-----BEGIN {name.upper()}-----\n{marker}\n")
    ports = json.loads((lab.dir / "ports").read_text())
    far = lab.dir / "far.yaml"
    far.write_text(lab_text(
        lab.group, double_image, lab.dir / "data", ports,
        # The lab's address must be one other hosts could reach for validation; the
        # keeper still listens where it does.
        hosts=("lab: {address: localhost.localdomain}\n  far: {address: far.example, "
               f"engine: 'tcp://127.0.0.1:1', tls: {{ca: {tls}/ca.pem, cert: {tls}/cert.pem, "
               f"key: {tls}/key.pem}}}}"),
        servers="  - {id: s1, host: far, port: 10000}\n", listen=", listen: 127.0.0.1"))
    here = lab.dir / "cwd"
    here.mkdir(exist_ok=True)
    started = time.monotonic()
    run = lab.walbctr("collect", str(far), cwd=here)
    took = time.monotonic() - started
    print(f"\ncollect with one host refusing its engine: {took:.1f} s")
    assert run.returncode == 0, run.stderr[-3000:]
    # A refused engine costs one attempt, not a wait per item.
    assert took < 60, took
    (bundle,) = here.iterdir()  # the default name, in the current directory
    assert re.fullmatch(rf"walbctr-collect-{lab.group}-\d{{8}}T\d{{6}}Z\.tar\.gz", bundle.name)
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o600
    assert ", 2 not (MANIFEST.txt in it says why)" in run.stdout, run.stdout
    assert "] far: not reached, recorded in MANIFEST.txt: host far: 127.0.0.1 refused" \
        in run.stderr, run.stderr
    got = members(bundle)
    for name, data in got.items():
        assert marker.encode() not in data, name
    assert f"key: {tls}/key.pem".encode() in got["layout/far.yaml"]  # its path, only

    entries = {e["path"]: e for e in json.loads(got["manifest.json"])["entries"]}
    failed = {p: e["error"] for p, e in entries.items() if not e["ok"]}
    assert set(failed) == {"hosts/far/", "hosts/far/compose-applied.yaml"}, failed
    assert "refused the connection to port 1 (tcp://127.0.0.1:1)" in failed["hosts/far/"]
    assert "hosts.far.engine" in failed["hosts/far/"]
    text = got["MANIFEST.txt"].decode()
    assert text.index("Not collected:") < text.index("hosts/lab/logs/a0.log")
    assert "hosts/far/compose.yaml" in got  # rendered from the layout, no engine needed
    for item in ("logs/a0.log", "logs/p0.log", "logs/s0.log", "status.json", "volumes.json",
                 "check-host.json", "engine.json", "keeper/keeper.log", "keeper/metrics.txt",
                 f"inspect/walbctr-{lab.group}-a0.json"):
        assert f"hosts/lab/{item}" in got, item
    controller = json.loads(got["controller.json"])
    assert controller["hosts"]["far"] == {"engine": "tcp://127.0.0.1:1", "servers": ["s1"],
                                          "reachable": False}
    assert controller["collected_at"].endswith("Z")
    assert datetime.fromisoformat(controller["collected_at"].replace("Z", "+00:00")) <= \
        datetime.now(UTC)
