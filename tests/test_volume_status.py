"""`walbctr status --volumes` on the real engine: volumes put into several states through
walbc and the double's test hooks, and a host whose engine is down."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import walbc_command
from tests.test_deploy import Group


def machine_address() -> str | None:
    """An address of this machine that is not loopback (layouts spanning engines refuse
    loopback addresses); servers in host networking listen on every interface."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
            address = str(s.getsockname()[0])
    except OSError:
        return None
    return None if address.startswith("127.") else address


class VolumeGroup(Group):
    def __init__(self, tmp: Path, engine: Any, image: str, vg: str, address: str) -> None:
        super().__init__(tmp, engine, image, vg, "host")
        self.path.write_text(self.path.read_text().replace("127.0.0.1", address))
        self.address = address

    def walbc(self, sid: str, *args: str) -> None:
        container = self.engine.containers.get(f"walbctr-{self.name}-{sid}")
        result = container.exec_run(walbc_command(self.ports[sid], *args, timeout=10))
        assert result.exit_code == 0, (sid, args, result.output.decode())

    def status(self, *args: str, layout: Path | None = None) -> Any:
        return self.walbctr("status", str(layout or self.path), "--volumes", *args)


@pytest.fixture(scope="module")
def volume_group(tmp_path_factory: pytest.TempPathFactory, engine: Any, double_image: str,
                 loop_vg: str) -> Iterator[VolumeGroup]:
    address = machine_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to put in a layout")
    g = VolumeGroup(tmp_path_factory.mktemp("volumes"), engine, double_image, loop_vg,
                    address)
    try:
        run = g.up()
        assert run.returncode == 0, run.stderr[-3000:]
        a0 = f"{address}:{g.ports['a0']}"
        g.walbc("a0", "init-vol", "vol0")  # SyncReady
        g.walbc("a0", "double-set-state", "vol1", "Archived")
        g.walbc("a0", "double-snapshot", "vol1", "5", "1700000000")
        g.walbc("a0", "double-snapshot", "vol1", "9", "1700003600")
        g.walbc("a0", "double-action", "vol1", "Merge", "600")
        g.walbc("p0", "archive-info", "add", "vol0", "a0", a0)
        g.walbc("p0", "start", "vol0")
        g.walbc("p0", "archive-info", "add", "vol1", "a0", a0)
        g.walbc("p0", "start", "vol1")
        g.walbc("p0", "double-send-error", "vol1", "a0", "1")
        g.walbc("s0", "double-set-state", "vol0", "Target")
        g.walbc("s0", "double-overflow", "vol0", "1")
        g.walbc("s0", "double-ts-delta", "vol0", "30")
        g.walbc("s0", "double-set-state", "vol1", "Target")
        g.walbc("s0", "double-ts-delta", "vol1", "5000")
        yield g
    finally:
        g.cleanup()


def rows_by_key(run: Any) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["server"], r["volume"]): r for r in json.loads(run.stdout)}


def test_status_volumes_shows_each_volume_with_its_role_facts(
        volume_group: VolumeGroup) -> None:
    run = volume_group.status("--json")
    assert run.returncode == 1, run.stderr  # an overflow, a send error, a lag: act on them
    rows = rows_by_key(run)
    assert set(rows) == {("a0", "vol0"), ("a0", "vol1"), ("p0", "vol0"), ("p0", "vol1"),
                         ("s0", "vol0"), ("s0", "vol1")}
    assert rows["a0", "vol0"]["state"] == "SyncReady"
    assert rows["a0", "vol1"]["state"] == "Archived"
    assert rows["a0", "vol1"]["restorable"] == 2
    assert rows["a0", "vol1"]["latest_snapshot"] == "2023-11-14T23:13:20Z"
    assert rows["a0", "vol1"]["running_actions"] == {"Merge": 1}
    assert rows["p0", "vol0"]["state"] == "Started"
    assert rows["p0", "vol0"]["send_error"] == {"a0": False}
    assert rows["p0", "vol1"]["send_error"] == {"a0": True}
    assert rows["s0", "vol0"]["overflow"] is True
    assert rows["s0", "vol0"]["lag_s"] == 30
    assert rows["s0", "vol1"]["overflow"] is False
    assert rows["s0", "vol1"]["lag_s"] == 5000


def test_status_volumes_names_each_problem_with_walbs_remedy(
        volume_group: VolumeGroup) -> None:
    run = volume_group.status("--json")
    rows = rows_by_key(run)
    assert {("s0", "vol0"), ("p0", "vol1"), ("s0", "vol1"), ("p0", "vol0")} <= set(rows), (
        run.stdout + run.stderr)
    assert rows["s0", "vol0"]["severity"] == "error"
    assert any("hash backup" in p for p in rows["s0", "vol0"]["problems"])
    assert any("kick" in p for p in rows["p0", "vol1"]["problems"])
    assert any("lag" in p for p in rows["s0", "vol1"]["problems"])
    assert rows["p0", "vol0"]["problems"] == []
    # the threshold decides what lags: above 5000 s nothing does
    relaxed = rows_by_key(volume_group.status("--json", "--lag-threshold", "6000"))
    assert not any("lag" in p for p in relaxed["s0", "vol1"]["problems"])


def test_status_volumes_as_a_table_prints_rows_and_the_remedies(
        volume_group: VolumeGroup) -> None:
    run = volume_group.status()
    assert run.returncode == 1
    lines = run.stdout.splitlines()
    assert lines[0].split()[:4] == ["SERVER", "ROLE", "VOLUME", "STATE"]
    assert any(line.split()[:4] == ["s0", "storage", "vol0", "Target"] for line in lines)
    assert "error: s0 (storage): vol0: the walb log device overflowed" in run.stderr
    assert "Traceback" not in run.stderr


def test_status_volumes_shows_a_down_hosts_servers_as_unknown(
        volume_group: VolumeGroup) -> None:
    # The same group, with hostS0's engine at an address where no engine answers.
    broken = volume_group.path.with_name("down.yaml")
    broken.write_text(volume_group.path.read_text().replace(
        f"hostS0: {{address: {volume_group.address}}}",
        f"hostS0: {{address: {volume_group.address}, engine: 'tcp://127.0.0.1:9', "
        "insecure: true}"))
    run = volume_group.status("--json", layout=broken)
    assert run.returncode == 1
    rows = rows_by_key(run)
    assert rows["s0", ""]["state"] == "unknown"
    assert "host unreachable" in rows["s0", ""]["note"]
    assert rows["a0", "vol1"]["state"] == "Archived"  # the other hosts answer as before
    assert rows["p0", "vol1"]["send_error"] == {"a0": True}
    table = volume_group.status(layout=broken)
    assert "unknown (host unreachable" in table.stdout
    assert "Traceback" not in table.stderr
