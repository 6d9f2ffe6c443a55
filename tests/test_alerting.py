"""Alerts that stay true when servers die, on the real engine: a kept lab group of the test
double, a real Prometheus (Debian's) scraping its keeper with monitoring/walb-alerts.yml
loaded, alerting to a real Alertmanager (Debian's) running monitoring/alertmanager.yml.

Servers and the keeper are killed for good (restart policy off first): the lag and RPO
alerts must keep firing on the keeper's last known values, the server-down alert must
inhibit the lag alert it explains, and the keeper's absence must be an alert of its own.
The rules' `for:` durations are cut to a second in the test's copy, so that the test waits
for the keeper's scans, not for the production hold times.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.compose import HttpService, compose_up
from tests.test_deploy import free_ports
from tests.test_keeper import RULES, KeptGroup, Prometheus, run_prometheus, wait_for
from walbctr.layout.imagetag import keeper_image

ALERTMANAGER_YML = Path(__file__).resolve().parent.parent / "monitoring" / "alertmanager.yml"
TEMPLATES = "/usr/share/prometheus/alertmanager"


class Alertmanager(HttpService):
    def alerts(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts", timeout=5) as response:
            found: list[dict[str, Any]] = json.load(response)
        return found

    def alert(self, name: str, **labels: str) -> dict[str, Any] | None:
        """The one alert `name` with these labels that Alertmanager holds, or None."""
        for a in self.alerts():
            if a["labels"].get("alertname") == name and all(
                    a["labels"].get(k) == v for k, v in labels.items()):
                return a
        return None


def run_alertmanager(name: str, tmp_path: Path, image: str) -> Iterator[Alertmanager]:
    """Debian's Alertmanager, as run_prometheus runs Prometheus: one compose service of
    pytest-docker, the binary bound read-only into the test image, host network, loopback,
    clustering off, its configuration the repository's alertmanager.yml."""
    binary = shutil.which("prometheus-alertmanager")
    if binary is None or not Path(TEMPLATES, "default.tmpl").is_file():
        pytest.skip("Debian's prometheus-alertmanager package is not installed (apt-get "
                    "install prometheus-alertmanager; .ci/install-host-tools does it)")
    port = free_ports(1)[0]
    home = tmp_path / "alertmanager"
    (home / "data").mkdir(parents=True, exist_ok=True)
    shutil.copy(ALERTMANAGER_YML, home / "alertmanager.yml")
    compose_file = home / "compose.yaml"
    compose_file.write_text(yaml.safe_dump({"services": {"alertmanager": {
        "image": image,
        "pull_policy": "never",
        "entrypoint": ["/usr/bin/alertmanager"],
        "command": ["--config.file=/etc/alertmanager-test/alertmanager.yml",
                    "--storage.path=/alertmanager", "--cluster.listen-address=",
                    f"--web.listen-address=127.0.0.1:{port}"],
        "network_mode": "host",
        "read_only": True,
        "volumes": [f"{Path(binary).resolve()}:/usr/bin/alertmanager:ro",
                    # Debian's build reads its notification templates from there
                    f"{TEMPLATES}:{TEMPLATES}:ro",
                    f"{home}:/etc/alertmanager-test:ro", f"{home / 'data'}:/alertmanager"],
        "mem_limit": "256m",
    }}}))
    manager = Alertmanager(port)
    with compose_up(compose_file, f"{name}-alertmanager", manager):
        yield manager


def quick_rules() -> str:
    """walb-alerts.yml with every `for:` cut to one second; the expressions as they are."""
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "1s"
    return yaml.safe_dump(rules, sort_keys=False)


@pytest.fixture
def watched(tmp_path: Path, engine: Any, double_image: str,
            loop_vg: str) -> Iterator[tuple[KeptGroup, Prometheus, Alertmanager]]:
    if engine.images.list(name=keeper_image(double_image)) == []:
        pytest.skip(f"no keeper image {keeper_image(double_image)} next to {double_image}")
    group = KeptGroup(tmp_path / "g", engine, double_image, loop_vg)
    try:
        run = group.up()
        assert run.returncode == 0, run.stderr[-3000:]
        manager = run_alertmanager(group.name, tmp_path, double_image)
        am = next(manager)
        try:
            url = am.url.removeprefix("http://")
            prom = run_prometheus(group, tmp_path, double_image, {}, quick_rules(), {
                "alerting": {"alertmanagers": [{"static_configs": [{"targets": [url]}]}]}})
            try:
                yield group, next(prom), am
            finally:
                prom.close()
        finally:
            manager.close()
    finally:
        group.cleanup()


def kill_for_good(container: Any) -> None:
    """SIGKILL, and no restart by Docker: the server stays dead."""
    container.update(restart_policy={"Name": "no"})
    container.kill()


def test_alerts_stay_true_when_servers_and_the_keeper_die(
        watched: tuple[KeptGroup, Prometheus, Alertmanager]) -> None:
    kept, prometheus, am = watched
    # vol0: a lag of 900 s at the storage (threshold 300), and a latest restorable
    # snapshot at the archive two hours old (the RPO is one hour)
    kept.walbc("a0", "init-vol", "vol0")
    kept.walbc("a0", "double-set-state", "vol0", "Archived")
    kept.walbc("a0", "double-snapshot", "vol0", "1", str(int(time.time()) - 7200))
    kept.walbc("s0", "double-set-state", "vol0", "Target")
    kept.walbc("s0", "double-ts-delta", "vol0", "900")
    lag = {"server": "s0", "volume": "vol0", "dest": "a0", "archive": "a0"}
    rpo = {"server": "a0", "volume": "vol0"}
    wait_for(lambda: am.alert("WalbBackupLag", **lag), "the lag alert in Alertmanager")
    wait_for(lambda: am.alert("WalbSnapshotTooOld", **rpo), "the RPO alert in Alertmanager")
    assert am.alert("WalbBackupLag", **lag)["status"]["state"] == "active"  # type: ignore[index]

    # the storage dies: its lag is the last known one, still firing, now explained by
    # (and inhibited by) WalbServerDown of s0
    kill_for_good(kept.container("s0"))
    down = wait_for(lambda: am.alert("WalbServerDown", server="s0"),
                    "WalbServerDown of s0 in Alertmanager")
    assert "archive" not in down["labels"]  # a storage inhibits only its own alerts
    inhibited = wait_for(lambda: (a := am.alert("WalbBackupLag", **lag)) is not None
                         and a["status"]["state"] == "suppressed" and a,
                         "the lag alert to show as inhibited")
    assert down["fingerprint"] in inhibited["status"]["inhibitedBy"]
    # the next scan (every INTERVAL) finds s0 gone; the probe that raised ServerDown may be first
    wait_for(lambda: prometheus.value('walb_server_scan_ok{server="s0"}') == 0,
             "s0's scan to fail in Prometheus")
    assert prometheus.value('walb_volume_lagging{server="s0",volume="vol0"}') == 1
    assert prometheus.query('ALERTS{alertname="WalbBackupLag",alertstate="firing"}')

    # the archive dies: the RPO alert keeps firing on its last known snapshot, and
    # nothing inhibits it (an outage is exactly when the restore point ages)
    kill_for_good(kept.container("a0"))
    wait_for(lambda: am.alert("WalbServerDown", server="a0", archive="a0"),
             "WalbServerDown of a0, with its archive label, in Alertmanager")
    wait_for(lambda: prometheus.value('walb_server_scan_ok{server="a0"}') == 0,
             "the keeper to fail its scan of a0")
    assert prometheus.value(
        'walb_volume_latest_snapshot_timestamp_seconds{server="a0",volume="vol0"}') is not None
    time.sleep(3)  # a few evaluations after the scan failed
    still = am.alert("WalbSnapshotTooOld", **rpo)
    assert still is not None and still["status"]["state"] == "active", still
    assert prometheus.query('ALERTS{alertname="WalbSnapshotTooOld",alertstate="firing"}')

    # the keeper dies: every walb series goes with it, and its absence is the alert
    assert am.alert("WalbKeeperAbsent") is None
    kill_for_good(kept.keeper())
    absent = wait_for(lambda: am.alert("WalbKeeperAbsent", job="walb-keeper"),
                      "WalbKeeperAbsent in Alertmanager")
    assert absent["status"]["state"] == "active"
    assert absent["labels"]["severity"] == "critical"
