"""The layout's monitor block and the keeper's duties: pure, no engine."""

from __future__ import annotations

import json

import pytest

from tests.conftest import EXAMPLES
from walbctr.errors import LayoutError
from walbctr.keeper.duties import Config, Duties, Kick, ServerRef, parse_config
from walbctr.layout.loader import load_layout, read_layout
from walbctr.layout.monitor import KEEPER_SERVICE
from walbctr.render.compose import compose_project, render
from walbctr.render.keeper_service import keeper_config

LAB = (EXAMPLES / "lab.yaml").read_text()
WITHOUT_MONITOR = LAB.split("\nmonitor:")[0] + "\n"


def with_monitor(block: str, base: str = WITHOUT_MONITOR) -> str:
    return base + "monitor:\n" + "".join(f"  {line}\n" for line in block.splitlines())


def test_a_layout_without_a_monitor_block_renders_no_keeper() -> None:
    layout = load_layout(WITHOUT_MONITOR, "lab.yaml")
    assert layout.spec.monitor is None
    assert KEEPER_SERVICE not in compose_project(layout, "lab")["services"]


def test_the_examples_run_a_keeper() -> None:
    for name, host in (("lab.yaml", "lab"), ("seed-large.yaml", "hostA0")):
        layout = read_layout(EXAMPLES / name)
        assert layout.spec.monitor is not None, name
        assert layout.spec.monitor.host == host
        assert KEEPER_SERVICE in compose_project(layout, host)["services"]


def test_the_keeper_service_is_unprivileged_read_only_and_without_docker_socket() -> None:
    layout = load_layout(with_monitor("host: lab\nport: 9599\ninterval: 5"), "lab.yaml")
    svc = compose_project(layout, "lab")["services"][KEEPER_SERVICE]
    assert svc["restart"] == "unless-stopped"
    assert svc["read_only"] is True
    assert svc["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in svc["security_opt"]
    assert "privileged" not in svc and "cap_add" not in svc
    assert not any("docker.sock" in json.dumps(v) for v in svc.get("volumes", []))
    assert svc["user"] == "65534:65534"
    assert svc["image"] == "walbctr/walb-keeper:1.0.19-d7295d2"
    assert svc["ports"][0]["published"] == "9599"
    assert svc["ports"][0]["host_ip"] == "127.0.0.1"
    assert svc["networks"] == {"walb": {"aliases": [KEEPER_SERVICE]}}
    assert "depends_on" not in svc  # servers of other hosts: walbctr up orders it last


def test_in_host_mode_the_keeper_uses_the_host_network_and_the_hosts_addresses() -> None:
    layout = read_layout(EXAMPLES / "seed-large.yaml")
    svc = compose_project(layout, "hostA0")["services"][KEEPER_SERVICE]
    assert svc["network_mode"] == "host"
    assert "ports" not in svc
    config = json.loads(svc["environment"]["WALBCTR_KEEPER_CONFIG"])
    assert {s["id"]: s["address"] for s in config["servers"]}["p1"] == "hostP1"


def test_the_keeper_reads_the_configuration_walbctr_renders() -> None:
    layout = load_layout(with_monitor("host: lab\ninterval: 7\nprobe_interval: 0.5\n"
                                      "lag_threshold: 120"), "lab.yaml")
    config = parse_config(json.dumps(keeper_config(layout)))
    assert config.group == "lab"
    assert (config.interval, config.probe_interval, config.lag_threshold) == (7, 0.5, 120)
    assert [(s.id, s.role, s.address, s.port) for s in config.servers] == [
        ("a0", "archive", "a0", 10000), ("p0", "proxy", "p0", 10000),
        ("s0", "storage", "s0", 10000)]


@pytest.mark.parametrize(("block", "words"), [
    ("host: nosuch", "monitor.host: host 'nosuch' runs no server"),
    ("host: lab\nintervall: 5", "unknown key 'intervall' (did you mean 'interval'?)"),
    ("host: lab\ninterval: 0", "monitor.interval"),
    ("host: lab\nport: 70000", "monitor.port"),
    ("host: lab\ninterval: 5\nprobe_interval: 10", "probe_interval 10 s is longer than"),
    ("port: 9580", "required field 'host'"),
])
def test_a_bad_monitor_block_is_refused_with_its_field(block: str, words: str) -> None:
    with pytest.raises(LayoutError) as caught:
        load_layout(with_monitor(block), "lab.yaml")
    assert words in str(caught.value)


def test_the_keepers_port_may_not_be_a_servers_port_in_host_mode() -> None:
    text = (EXAMPLES / "seed-large.yaml").read_text().split("\nmonitor:")[0]
    with pytest.raises(LayoutError) as caught:
        load_layout(with_monitor("host: hostA0\nport: 10000", text + "\n"), "large.yaml")
    assert "port 10000 is a0's port on hostA0" in str(caught.value)


def test_rendering_puts_the_keeper_only_in_its_hosts_file() -> None:
    files = render(read_layout(EXAMPLES / "seed-large.yaml"))
    assert [h for h, text in files.items() if KEEPER_SERVICE + ":" in text] == ["hostA0"]


# --- the keeper's duties (doc/recover.md) ------------------------------------------------

SERVERS = (ServerRef("a0", "archive", "a0", 1), ServerRef("a1", "archive", "a1", 1),
           ServerRef("p0", "proxy", "p0", 1), ServerRef("p1", "proxy", "p1", 1),
           ServerRef("s0", "storage", "s0", 1), ServerRef("s1", "storage", "s1", 1))
ALL_UP = {s.id: True for s in SERVERS}


def duties() -> Duties:
    d = Duties(Config("g", SERVERS), resend_after=300)
    d.probed(ALL_UP)
    return d


def targets(kicks: list[Kick]) -> list[tuple[str, tuple[str, ...], str]]:
    return sorted((k.target, k.args, k.reason) for k in kicks)


def test_at_its_start_the_keeper_kicks_every_proxy_and_storage_once() -> None:
    d = Duties(Config("g", SERVERS))
    kicks = d.probed(ALL_UP)
    assert targets(kicks) == [(t, (), "keeper_start") for t in ("p0", "p1", "s0", "s1")]
    assert d.probed(ALL_UP) == []  # nothing changed: nothing to do


def test_an_archive_that_answers_again_gets_every_proxy_kicked() -> None:
    d = duties()
    assert d.probed({**ALL_UP, "a1": False}) == []
    kicks = d.probed(ALL_UP)
    assert targets(kicks) == [("p0", (), "archive_restart"), ("p1", (), "archive_restart")]
    assert "archive a1 answers again" in kicks[0].why
    assert "doc/recover.md" in kicks[0].why
    assert d.restarts == {"a1": 1}


def test_a_proxy_that_answers_again_gets_every_storage_kicked() -> None:
    d = duties()
    d.probed({**ALL_UP, "p1": False})
    assert targets(d.probed(ALL_UP)) == [("s0", (), "proxy_restart"),
                                         ("s1", (), "proxy_restart")]


def test_a_storage_coming_back_needs_no_kick() -> None:
    d = duties()
    d.probed({**ALL_UP, "s0": False})
    assert d.probed(ALL_UP) == []
    assert d.restarts == {"s0": 1}


def test_a_kick_owed_to_a_proxy_that_is_down_is_sent_when_it_answers() -> None:
    d = duties()
    d.probed({**ALL_UP, "a0": False, "p1": False})
    assert targets(d.probed({**ALL_UP, "p1": False})) == [("p0", (), "archive_restart")]
    # p1 comes back: it is owed the archive's kick, and the storages are owed its own.
    assert targets(d.probed(ALL_UP)) == [("p1", (), "archive_restart"),
                                         ("s0", (), "proxy_restart"),
                                         ("s1", (), "proxy_restart")]


def test_a_send_error_is_kicked_once_its_archive_answers_and_not_again_at_once() -> None:
    d = duties()
    d.probed({**ALL_UP, "a0": False})
    flag = [("p0", "vol0", "a0")]
    assert d.send_errors(flag, now=1000) == []  # the archive does not answer yet
    d.probed(ALL_UP)
    assert targets(d.send_errors(flag, now=1001)) == [("p0", ("vol0", "a0"), "send_error")]
    assert d.send_errors(flag, now=1100) == []  # still set: not kicked again so soon
    assert len(d.send_errors(flag, now=1400)) == 1  # still set much later: kicked again


def test_a_server_that_stops_answering_keeps_its_last_known_volume_series() -> None:
    """Dropping a dead server's series would resolve the alerts on them (the lag of a
    storage, the age of an archive's latest snapshot) because the server died."""
    from datetime import UTC, datetime

    from walbctr.keeper.duties import scan_samples, volume_samples
    from walbctr.keeper.metrics import Snapshot
    from walbctr.walb.volumes import TsDelta, VolumeRecord

    archive = ServerRef("a0", "archive", "a0", 1)
    taken = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    lag = TsDelta("vol0", "a1", "archive", "archive", 7, taken, 5, taken, 900)
    record = VolumeRecord("vol0", "archive", state="Archived", ts_deltas=(lag,),
                          restorable=2, latest_snapshot=taken)
    fresh, _flags = volume_samples(archive, [record], lag_threshold=600)
    snapshot = Snapshot()
    snapshot.replace("a0", scan_samples(archive, True, (1000.0, fresh)))
    before = snapshot.values("walb_volume_latest_snapshot_timestamp_seconds")
    assert before == {("a0", "archive", "vol0"): taken.timestamp()}
    # the next scan cannot reach a0: its volume series stay, marked as not fresh
    snapshot.replace("a0", scan_samples(archive, False, (1000.0, fresh)))
    assert snapshot.values("walb_volume_latest_snapshot_timestamp_seconds") == before
    assert snapshot.values("walb_volume_lagging") == {("a0", "archive", "vol0", "a1"): 1.0}
    assert snapshot.values("walb_server_scan_ok") == {("a0", "archive"): 0.0}
    assert snapshot.values("walb_server_last_seen_timestamp_seconds") == {
        ("a0", "archive"): 1000.0}
    # a server never read has nothing to keep, and no time it was last seen
    snapshot.replace("s0", scan_samples(ServerRef("s0", "storage", "s0", 1), False, None))
    assert snapshot.values("walb_server_scan_ok")[("s0", "storage")] == 0.0
    assert ("s0", "storage") not in snapshot.values("walb_server_last_seen_timestamp_seconds")


def test_the_kick_counters_start_at_zero_for_every_reason_the_duties_give() -> None:
    """A failed kick whose series first appears at 1 shows no increase() to the alert."""
    from walbctr.keeper.metrics import KICK_REASONS

    d = Duties(Config("g", SERVERS))
    kicks = d.probed(ALL_UP)
    kicks += d.probed({**ALL_UP, "a0": False, "p0": False}) + d.probed(ALL_UP)
    kicks += d.send_errors([("p0", "vol0", "a0")], now=1)
    roles = {s.id: s.role for s in SERVERS}
    given = {(roles[k.target], k.reason) for k in kicks}
    assert given == {(role, reason) for role, reasons in KICK_REASONS.items()
                     for reason in reasons}


def test_a_bad_configuration_is_refused_in_words() -> None:
    with pytest.raises(ValueError, match="unknown role for x"):
        parse_config(json.dumps({"group": "g", "servers": [
            {"id": "x", "role": "router", "address": "x", "port": 1}]}))
    with pytest.raises(ValueError, match="bad keeper configuration"):
        parse_config("{not json")


def test_the_keeper_probes_with_walbctrs_own_readiness_probe() -> None:
    """The keeper's image has no pydantic, so it cannot import readiness.py; the probe
    it builds must stay the one walbctr waits with (issue 12: one probe everywhere)."""
    from walbctr.keeper.duties import server_argv
    from walbctr.walb.readiness import host_type_argv

    server = ServerRef("a0", "archive", "10.0.0.1", 10000)
    assert server_argv(server, ["get", "host-type"], 3) == host_type_argv(10000, "10.0.0.1", 3)


LARGE = (EXAMPLES / "seed-large.yaml").read_text().split("\nmonitor:")[0] + "\n"


def test_the_keeper_listens_on_its_hosts_layout_address_not_every_interface() -> None:
    layout = load_layout(with_monitor("host: hostA0", LARGE), "large.yaml")
    assert keeper_config(layout)["listen"] == layout.hosts["hostA0"].address == "hostA0"
    check = compose_project(layout, "hostA0")["services"][KEEPER_SERVICE]["healthcheck"]
    assert check["test"][:3] == ["CMD", "bash", "-c"]
    assert "exec 3<>/dev/tcp/hostA0/9580 && printf 'GET /-/healthy" in check["test"][3]


def test_monitor_listen_chooses_the_address() -> None:
    layout = load_layout(with_monitor("host: hostA0\nlisten: 127.0.0.1", LARGE), "large.yaml")
    assert keeper_config(layout)["listen"] == "127.0.0.1"
    assert layout.warnings == ()


def test_listening_on_every_interface_or_publishing_there_is_an_advisory() -> None:
    host = load_layout(with_monitor("host: hostA0\nlisten: 0.0.0.0", LARGE), "large.yaml")
    assert [w.path for w in host.warnings] == ["monitor.listen"]
    bridge = load_layout(with_monitor("host: lab\npublish: 0.0.0.0"), "lab.yaml")
    assert [w.path for w in bridge.warnings] == ["monitor.publish"]
    assert "every interface" in bridge.warnings[0].message


@pytest.mark.parametrize(("block", "words"), [
    ("host: lab\nlisten: 127.0.0.1", "monitor.listen: listen applies to host mode only"),
    ("host: lab\nweb_config: web.yml", "web_config 'web.yml' is relative"),
    ("host: lab\nweb_config: /etc/web.yml", "its directory /etc would be bound"),
])
def test_a_bad_listen_or_web_config_is_refused_with_its_field(block: str, words: str) -> None:
    with pytest.raises(LayoutError) as caught:
        load_layout(with_monitor(block), "lab.yaml")
    assert words in str(caught.value)


def test_a_web_config_is_bound_read_only_and_the_check_only_connects() -> None:
    layout = load_layout(with_monitor("host: lab\nweb_config: /etc/walbctr/kw/web.yml"),
                         "lab.yaml")
    svc = compose_project(layout, "lab")["services"][KEEPER_SERVICE]
    assert svc["volumes"] == [{"type": "bind", "source": "/etc/walbctr/kw",
                               "target": "/etc/walb-keeper/web", "read_only": True}]
    assert keeper_config(layout)["web_config"] == "/etc/walb-keeper/web/web.yml"
    assert svc["healthcheck"]["test"][3] == "exec 3<>/dev/tcp/127.0.0.1/9580"


def test_the_keeper_reads_listen_and_web_config_from_its_configuration() -> None:
    layout = load_layout(with_monitor("host: lab\nweb_config: /srv/kw/web.yml"), "lab.yaml")
    config = parse_config(json.dumps(keeper_config(layout)))
    assert (config.listen, config.web_config) == ("0.0.0.0", "/etc/walb-keeper/web/web.yml")


# --- the version each server reports -------------------------------------------------------


def test_walbc_version_is_read_from_upstreams_ltsv_or_a_bare_string() -> None:
    from walbctr.walb.version import parse_version

    upstream = "version:1.0.19\tbuild_date:2023-11-14T22:13:20\tlog_version:1\tcommit:d7295d2\n"
    assert parse_version(upstream) == "1.0.19"
    assert parse_version("1.0.19-double\n") == "1.0.19-double"
    for bad in ("", "\n", "build_date:x\tcommit:y", "two words", "v" * 101):
        with pytest.raises(ValueError):
            parse_version(bad)


def test_a_server_that_does_not_say_its_version_drops_out_of_the_version_metric() -> None:
    from walbctr.keeper.duties import version_samples

    a0 = ServerRef("a0", "archive", "a0", 1)
    assert version_samples(a0, (0, "version:1.0.20\tcommit:x\n", "")) == [
        ("walb_server_version_info", ("a0", "archive", "1.0.20"), 1.0)]
    assert version_samples(a0, (1, "", "ERROR walbc error: timeout")) == []
    assert version_samples(a0, None) == []  # not asked: it did not answer the probe
    assert version_samples(a0, (0, "", "")) == []
