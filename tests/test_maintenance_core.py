"""Maintenance mode without an engine: the record in the state dir, the refusal `up`,
`restart` and `upgrade` give, the keeper's maintenance set, the Alertmanager silence's
body, the layout's alertmanager_url, and the CLI's answer to a host that is none."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from tests.conftest import EXAMPLES, ROOT
from walbctr.commands.maintenance import parse_duration
from walbctr.commands.silences import silence_body
from walbctr.docker.state import (
    Maintenance,
    maintained_servers,
    read_maintenance,
    refuse_maintained,
    write_maintenance,
)
from walbctr.errors import LayoutError, WalbctrError
from walbctr.keeper import duties
from walbctr.keeper.ask import ask_through
from walbctr.keeper.duties import Config, Keeper, MaintenanceFile, ServerRef
from walbctr.keeper.metrics import KeeperMetrics
from walbctr.layout import monitor
from walbctr.layout.loader import load_layout

LAB = (EXAMPLES / "lab.yaml").read_text()


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("WALBCTR_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


def record(host: str = "hostB", servers: tuple[str, ...] = ("s1", "p1")) -> Maintenance:
    return Maintenance(host, "2026-01-02T03:04:05Z", servers,
                       {"s1": "unless-stopped", "p1": "always"}, "sil-1",
                       {"p1": {"vol0": "Stopped"}})


def test_the_maintenance_record_reads_back_as_written_and_goes_when_empty(
        state_dir: Path) -> None:
    write_maintenance("g", {"hostB": record()})
    path = state_dir / "g" / "maintenance.json"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert read_maintenance("g") == {"hostB": record()}
    assert set(maintained_servers("g")) == {"s1", "p1"}
    write_maintenance("g", {})
    assert not path.exists()
    assert read_maintenance("g") == {}


def test_a_torn_maintenance_record_is_refused_not_taken_for_no_maintenance(
        state_dir: Path) -> None:
    write_maintenance("g", {"hostB": record()})
    (state_dir / "g" / "maintenance.json").write_text('{"hosts": {"hostB": {"host"')
    with pytest.raises(WalbctrError, match=r"maintenance record .* cannot be read"):
        read_maintenance("g")


def test_up_restart_and_upgrade_refuse_a_server_of_a_host_in_maintenance(
        state_dir: Path) -> None:
    write_maintenance("g", {"hostB": record()})
    refuse_maintained("g", ["a0", "s0"], "up", "l.yaml")  # other hosts: no refusal
    with pytest.raises(WalbctrError) as caught:
        refuse_maintained("g", ["a0", "p1"], "restart", "l.yaml")
    text = str(caught.value)
    assert "'walbctr restart' would start servers of a host in maintenance: host hostB " \
        "(since 2026-01-02T03:04:05Z: s1, p1); nothing was changed" in text
    assert "'walbctr maintenance exit l.yaml hostB'" in text


@pytest.mark.parametrize(("text", "seconds"), [("4h", 14400), ("90m", 5400), ("1d12h", 129600),
                                               ("45s", 45), ("600", 600)])
def test_a_duration_is_read_in_the_units_an_operator_writes(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "4x", "h4", "0", "0m", "4h junk"])
def test_a_duration_that_is_none_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_the_silence_matches_the_hosts_servers_for_the_duration() -> None:
    body = silence_body("g", "hostB", ["s1", "p1"], 3600,
                        now=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert body["matchers"] == [{"name": "server", "value": "s1|p1", "isRegex": True,
                                 "isEqual": True}]
    assert (body["startsAt"], body["endsAt"]) == ("2026-01-02T03:04:05.000Z",
                                                  "2026-01-02T04:04:05.000Z")
    assert body["createdBy"] == "walbctr"
    assert "host hostB of group g" in str(body["comment"])


def with_monitor(extra: str) -> str:
    base = LAB.split("\nmonitor:")[0] + "\n"
    return base + f"monitor:\n  host: lab\n  {extra}\n"


def test_an_alertmanager_url_is_taken() -> None:
    lay = load_layout(with_monitor("alertmanager_url: https://am.example:9093/"), "lab.yaml")
    assert lay.spec.monitor is not None
    assert lay.spec.monitor.alertmanager_url == "https://am.example:9093/"


@pytest.mark.parametrize(("url", "words"), [
    ("am:9093", "is not an http:// or https:// URL"),
    ("ftp://am:9093", "is not an http:// or https:// URL"),
    ("http://", "names no host"),
    ("http://user:pw@am:9093", "user name or password"),
    ("http://am:99999", "port that is not a number"),
    ("'http://am:9093/?a=b'", "has the character '?'"),
])
def test_a_bad_alertmanager_url_is_refused_with_its_field(url: str, words: str) -> None:
    with pytest.raises(LayoutError) as caught:
        load_layout(with_monitor(f"alertmanager_url: {url}"), "lab.yaml")
    assert "monitor.alertmanager_url" in str(caught.value)
    assert words in str(caught.value)


def test_walbctr_and_the_keeper_name_the_same_maintenance_file() -> None:
    assert monitor.MAINTENANCE_FILE == duties.MAINTENANCE_FILE


def test_the_maintenance_file_is_read_again_only_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    watch = MaintenanceFile(str(path))
    assert watch.read() == ({}, False)
    path.write_text(json.dumps({"group": "g", "servers": {"s0": "hostS"}}))
    assert watch.read() == ({"s0": "hostS"}, True)
    assert watch.read() == ({"s0": "hostS"}, False)
    path.write_text("{torn")
    assert watch.read() == ({"s0": "hostS"}, False)  # the last good set stays
    path.unlink()
    assert watch.read() == ({}, True)


SERVERS = (ServerRef("a0", "archive", "a0", 1), ServerRef("p0", "proxy", "p0", 1),
           ServerRef("s0", "storage", "s0", 1), ServerRef("s1", "storage", "s1", 1))
ROLE_OF = {s.id: s.role for s in SERVERS}


def test_the_keeper_neither_kicks_nor_scans_a_server_in_maintenance_and_exports_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The keeper's own `run` seam (what it hands walbc command lines to), recording the
    command lines: a proxy comes back, and of the storages only the one not in maintenance
    is kicked."""
    sent: list[tuple[str, list[str]]] = []
    answering = {"a0": True, "p0": False, "s0": True, "s1": True}

    def run(argvs: dict[str, list[str]], _timeout: float) -> dict[str, tuple[int, str, str]]:
        out = {}
        for key, argv in argvs.items():
            sent.append((key, argv))
            if "host-type" in argv:
                out[key] = (0, ROLE_OF[key] + "\n", "") if answering[key] else (1, "", "down")
            else:
                out[key] = (0, "", "")
        return out

    path = tmp_path / "m.json"
    path.write_text(json.dumps({"servers": {"s1": "hostS1"}}))
    metrics = KeeperMetrics(CollectorRegistry())
    keeper = Keeper(Config("g", SERVERS), metrics, run, maintenance_file=str(path),
                    ask=ask_through(run))
    keeper.probe_once()
    sent.clear()
    answering["p0"] = True
    keeper.probe_once()
    kicked = {argv[argv.index("-a") + 1] for _key, argv in sent if "kick" in argv}
    assert "s0" in kicked and "s1" not in kicked, kicked
    log = capsys.readouterr().out
    assert "in maintenance now: s1 (host hostS1); no kick or volume scan" in log
    assert "kick s1: not sent, host hostS1 is in maintenance" in log
    assert metrics.snapshot.values("walb_server_maintenance") == {("s1", "hostS1"): 1.0}
    sent.clear()
    keeper.scan_once()
    assert {key.removeprefix(duties.VERSION_KEY) for key, _ in sent} == {"a0", "p0", "s0"}
    path.write_text(json.dumps({"servers": {}}))
    keeper.probe_once()
    assert metrics.snapshot.values("walb_server_maintenance") == {}


def walbctr(*args: str, state: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "walbctr", *args], capture_output=True,
                          text=True, cwd=ROOT, check=False,
                          env={**os.environ, "WALBCTR_STATE_DIR": str(state)})


def test_entering_maintenance_on_a_host_that_is_none_names_the_hosts_and_does_nothing(
        tmp_path: Path) -> None:
    run = walbctr("maintenance", "enter", str(EXAMPLES / "seed-large.yaml"), "hostZ",
                  state=tmp_path / "state")
    assert run.returncode == 2, run.stderr
    assert "host 'hostZ' is not a host of" in run.stderr
    assert "give one of the hosts that run servers: hostA0" in run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "state").exists() or not list((tmp_path / "state").rglob(
        "maintenance.json"))
    run = walbctr("maintenance", "exit", str(EXAMPLES / "seed-large.yaml"), "hostZ",
                  state=tmp_path / "state")
    assert run.returncode == 2 and "not a host of" in run.stderr
    listed = walbctr("maintenance", "list", str(EXAMPLES / "seed-large.yaml"),
                     state=tmp_path / "state")
    assert listed.returncode == 0, listed.stderr
    assert "no host is in maintenance" in listed.stdout


def test_an_alertmanager_that_does_not_answer_is_a_warning_not_a_failure() -> None:
    from tests.test_deploy import free_ports
    from walbctr.commands.maintenance import Report, _silence

    port = free_ports(1)[0]  # nothing listens there
    lay = load_layout(with_monitor(f"alertmanager_url: http://127.0.0.1:{port}"), "lab.yaml")
    report = Report()
    held = Maintenance("lab", "2026-01-02T03:04:05Z", ("s0", "p0", "a0"))
    assert _silence(lay, held, 3600, report) == held  # no silence id
    assert len(report.notes) == 1, report.notes
    assert report.notes[0].startswith(f"warning: no Alertmanager silence for host lab "
                                      f"(http://127.0.0.1:{port}: ")
