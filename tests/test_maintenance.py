"""`walbctr maintenance enter/exit` on the real engine, with the test double.

The lab group of test_upgrade.py (bridge mode, one implicit host per server, logs in
files so that a server's shutdowns and the kicks it received survive its restarts), once
with the archive and the proxy sharing a host, so that one host holds two tiers.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.test_deploy import free_ports
from tests.test_keeper import INTERVAL, KeptGroup, wait_for
from tests.test_upgrade import Lab, board_order, lab_up
from walbctr.layout.imagetag import keeper_image


class HostLab(Lab):
    def __init__(self, tmp: Path, engine: Any, image: str, vg: str, shared: bool) -> None:
        super().__init__(tmp, engine, image, vg)
        if shared:  # a0 and p0 on hostA0, s0 alone on hostS0
            self.path.write_text(self.path.read_text().replace("host: hostP0", "host: hostA0"))

    def maintenance(self, *args: str) -> Any:
        return self.walbctr("maintenance", args[0], str(self.path), *args[1:])

    def record(self) -> Path:
        return Path(self.env["WALBCTR_STATE_DIR"]) / self.name / "maintenance.json"

    def inspect(self, sid: str) -> dict[str, Any]:
        c = self.containers()[sid]
        c.reload()
        return dict(c.attrs)

    def status(self) -> dict[str, dict[str, Any]]:
        run = self.walbctr("status", str(self.path), "--json")
        return {r["id"]: r for r in json.loads(run.stdout)}


def make_lab(tmp: Path, engine: Any, image: str, vg: str, shared: bool) -> Iterator[HostLab]:
    yield from lab_up(HostLab(tmp, engine, image, vg, shared))


@pytest.fixture
def shared(tmp_path: Path, engine: Any, double_image: str, loop_vg: str) -> Iterator[HostLab]:
    yield from make_lab(tmp_path / "lab", engine, double_image, loop_vg, shared=True)


@pytest.fixture
def lab(tmp_path: Path, engine: Any, double_image: str, loop_vg: str) -> Iterator[HostLab]:
    yield from make_lab(tmp_path / "lab", engine, double_image, loop_vg, shared=False)


def test_a_host_in_maintenance_is_stopped_proxies_before_archives_and_held_stopped_until_exit(
        shared: HostLab) -> None:
    lab = shared
    before = lab.states()
    kicks_before = lab.log("s0").count("kick requested")
    enter = lab.maintenance("enter", "hostA0", "--plain")
    assert enter.returncode == 0, enter.stdout + enter.stderr
    assert board_order(enter.stdout + enter.stderr, "stopped") == ["p0", "a0"]
    assert "host hostA0 is in maintenance since" in enter.stdout
    for sid in ("a0", "p0"):
        attrs = lab.inspect(sid)
        assert attrs["State"]["Status"] == "exited"
        assert attrs["HostConfig"]["RestartPolicy"]["Name"] == "no"
        log = lab.log(sid)
        assert "shutdown (graceful: walbc shutdown graceful)" in log, log[-2000:]
        assert "forced shutdown" not in log, log[-2000:]
    assert lab.inspect("s0")["State"]["Status"] == "running"
    record = json.loads(lab.record().read_text())["hosts"]["hostA0"]
    assert record["servers"] == ["p0", "a0"]
    assert record["policies"] == {"p0": "unless-stopped", "a0": "unless-stopped"}
    assert record["volumes"]["p0"]["vol1"] == "Stopped"

    rows = lab.status()
    assert (rows["a0"]["state"], rows["p0"]["state"], rows["s0"]["state"]) == (
        "maintenance", "maintenance", "running")
    assert rows["a0"]["maintenance_since"] == record["since"]
    table = lab.walbctr("status", str(lab.path))
    assert table.returncode == 0, table.stdout + table.stderr  # stopped on purpose
    assert f"maintenance since {record['since']}" in table.stdout

    # Nothing brings them back behind the operator's back: not Docker (policy 'no', the
    # servers exited on their own), not up, restart or upgrade.
    time.sleep(3)
    assert lab.inspect("a0")["State"]["Status"] == "exited"
    for command in (("up", str(lab.path), "--plain"), ("restart", str(lab.path), "a0"),
                    ("upgrade", str(lab.path))):
        run = lab.walbctr(*command)
        assert run.returncode == 1, run.stdout + run.stderr
        assert "would start servers of a host in maintenance: host hostA0" in run.stderr
    assert lab.inspect("p0")["State"]["Status"] == "exited"
    listed = lab.maintenance("list")
    assert listed.stdout.startswith("hostA0: in maintenance since"), listed.stdout

    exit_ = lab.maintenance("exit", "hostA0", "--plain")
    assert exit_.returncode == 0, exit_.stdout + exit_.stderr
    out = exit_.stdout + exit_.stderr
    assert board_order(out, "healthy") == ["a0", "p0"]
    for sid in ("a0", "p0"):
        attrs = lab.inspect(sid)
        assert attrs["State"]["Status"] == "running"
        assert attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
        lab.wait_healthy(sid, timeout=5)
    # walb-proxy started vol1 again at its start; exit stopped it, as upgrade does.
    assert lab.states() == before
    assert "p0: vol1 was Stopped before; walb-proxy starts every volume at start" in out
    assert "p0: kicked s0" in out
    assert lab.log("s0").count("kick requested") > kicks_before
    assert not lab.record().exists()
    assert all(r["state"] == "running" for r in lab.status().values())
    again = lab.up()
    assert again.returncode == 0 and "nothing to change" in again.stdout, again.stderr


def test_a_storage_that_overflowed_keeps_its_host_out_of_maintenance_and_an_archive_exit_kicks(
        lab: HostLab) -> None:
    lab.walbc("s0", "double-overflow", "vol0", "1")
    refused = lab.maintenance("enter", "hostS0", "--plain")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "maintenance enter stopped at s0 (storage on hostS0), gate 'no overflow'" in \
        refused.stderr
    assert lab.inspect("s0")["State"]["Status"] == "running"
    assert lab.inspect("s0")["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert not lab.record().exists()
    lab.walbc("s0", "double-overflow", "vol0", "0")

    kicks = lab.log("p0").count("kick requested")
    assert lab.maintenance("enter", "hostA0").returncode == 0
    assert lab.status()["a0"]["state"] == "maintenance"
    again = lab.maintenance("enter", "hostA0")  # finishes an interrupted one; here a no-op
    assert again.returncode == 0, again.stderr
    exit_ = lab.maintenance("exit", "hostA0")
    assert exit_.returncode == 0, exit_.stdout + exit_.stderr
    assert "a0: kicked p0" in exit_.stdout + exit_.stderr
    assert lab.log("p0").count("kick requested") > kicks
    not_in = lab.maintenance("exit", "hostA0")
    assert not_in.returncode == 1 and "host hostA0 is not in maintenance" in not_in.stderr

    # down removes the containers of a host in maintenance, and so ends it.
    assert lab.maintenance("enter", "hostS0").returncode == 0
    down = lab.walbctr("down", str(lab.path), "--quiet")
    assert down.returncode == 0, down.stderr
    assert "host hostS0 was in maintenance since" in down.stderr
    assert not lab.record().exists()


# --- the keeper and Alertmanager ------------------------------------------------------------


ALERTMANAGER = "/usr/bin/prometheus-alertmanager"


class Alertmanager:
    def __init__(self, tmp: Path) -> None:
        self.port = free_ports(1)[0]
        self.url = f"http://127.0.0.1:{self.port}"
        tmp.mkdir(parents=True, exist_ok=True)
        config = tmp / "alertmanager.yml"
        config.write_text("route:\n  receiver: nowhere\nreceivers:\n  - name: nowhere\n")
        self.proc = subprocess.Popen(
            [ALERTMANAGER, f"--config.file={config}", f"--storage.path={tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address="],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self.ready, "Alertmanager to answer")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=2):
                return True
        except OSError:
            return False

    def silences(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(self.url + "/api/v2/silences", timeout=5) as answer:
            return list(json.loads(answer.read()))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


class SilencedGroup(KeptGroup):
    def __init__(self, tmp: Path, engine: Any, image: str, vg: str, alertmanager: str) -> None:
        super().__init__(tmp, engine, image, vg)
        self.path.write_text(self.path.read_text().replace(
            "lag_threshold: 300}", f"lag_threshold: 300, alertmanager_url: {alertmanager}}}"))

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as answer:
            return str(answer.read().decode())


@pytest.fixture
def silenced(tmp_path: Path, engine: Any, double_image: str,
             loop_vg: str) -> Iterator[tuple[SilencedGroup, Alertmanager]]:
    if engine.images.list(name=keeper_image(double_image)) == []:
        pytest.skip(f"no keeper image {keeper_image(double_image)} next to {double_image}")
    if not Path(ALERTMANAGER).exists():
        pytest.skip(f"{ALERTMANAGER} is missing (Debian's prometheus-alertmanager; "
                    ".ci/install-host-tools installs it)")
    am = Alertmanager(tmp_path / "am")
    group = SilencedGroup(tmp_path / "g", engine, double_image, loop_vg, am.url)
    try:
        run = group.up()
        assert run.returncode == 0, run.stderr[-3000:]
        yield group, am
    finally:
        group.cleanup()
        am.stop()


def test_the_keeper_spares_a_host_in_maintenance_and_alertmanager_silences_it(
        silenced: tuple[SilencedGroup, Alertmanager]) -> None:
    g, am = silenced
    wait_for(lambda: "watching group" in g.keeper().logs().decode(), "the keeper")
    enter = g.walbctr("maintenance", "enter", str(g.path), "hostS0", "--duration", "2h")
    assert enter.returncode == 0, enter.stdout + enter.stderr
    assert "silenced the alerts of s0" in enter.stdout
    metric = 'walb_server_maintenance{host="hostS0",server="s0"} 1.0'
    wait_for(lambda: metric in g.metrics(), "the keeper to export s0's maintenance "
             f"({enter.stderr[-1500:]})")
    assert "in maintenance now: s0 (host hostS0)" in g.keeper().logs().decode()
    [silence] = [s for s in am.silences() if s["createdBy"] == "walbctr"]
    assert silence["status"]["state"] == "active"
    assert silence["matchers"][0]["name"] == "server"
    assert silence["matchers"][0]["value"] == "s0"
    assert "host hostS0" in silence["comment"]

    # Not scanned: after a scan round or two, s0 has no scan verdict (a stopped server
    # not in maintenance gets walb_server_scan_ok 0), p0 still has its.
    time.sleep(2 * INTERVAL + 1)
    seen = g.metrics()
    assert 'walb_server_scan_ok{role="proxy",server="p0"} 1.0' in seen
    assert 'walb_server_scan_ok{role="storage",server="s0"}' not in seen
    assert 'walb_server_up{role="storage",server="s0"} 0.0' in seen  # still probed

    exit_ = g.walbctr("maintenance", "exit", str(g.path), "hostS0")
    assert exit_.returncode == 0, exit_.stdout + exit_.stderr
    assert f"expired the Alertmanager silence {silence['id']}" in exit_.stdout
    [after] = [s for s in am.silences() if s["id"] == silence["id"]]
    assert after["status"]["state"] == "expired"
    wait_for(lambda: "walb_server_maintenance{" not in g.metrics(),
             "the keeper to drop s0's maintenance")
    assert "in maintenance now: none" in g.keeper().logs().decode()
