"""walbctr.walb.volumes: parsers of what walbc prints, the batch query, problems in words.

Texts come from /work/shared/walb-samples.md (real walb-tools v1.0.19 servers) and from
upstream's format code at tag v1.0.19 (file:line noted where a text is built from it).
The batch query is also run for real, in containers of the image built from the double.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from walbctr.walb import volumes as v

# --- real samples (walb-samples.md) ----------------------------------------------------------

SAMPLE_BAD_STATE = """\
ERROR walbc error: c2xGetClient:isOverflow:bad state:Clear
<<<STACKTRACE>>> 0x5581 0x5582 0x5583 0x5584 0x5585 0x5586 0x5587 0x5588 0x5589
<<<STACKTRACE>>> 0x7f01 0x7f02 0x7f03 0x7f04 0x7f05 0x7f06 0x7f07 0x7f08
"""
SAMPLE_BAD_ARCHIVE = """\
ERROR walbc error: c2xGetClient:isWdiffSendError:bad archive name:vol0:a9
<<<STACKTRACE>>> 0x5581 0x5582 0x5583 0x5584 0x5585 0x5586 0x5587 0x5588 0x5589
<<<STACKTRACE>>> 0x7f01 0x7f02 0x7f03 0x7f04 0x7f05 0x7f06 0x7f07 0x7f08
"""


SAMPLE_ARCHIVE_STATUS = """\
-----ArchiveGlobal-----
nodeId a0
baseDir /var/walb/a0
volumeGroup vg0
maxConnections 10
maxForegroundTasks 2
socketTimeout 10
keepAlive OFF
doAutoResize 0
keepOneColdSnapshot 0
-----Volume-----
volume vol0 state SyncReady totalNumAction 0 stopState NotStopping lastSyncTime --- \
lastWdiffReceivedTime --- numDiff 0 baseLv NOT FOUND
"""
SAMPLE_PROXY_STATUS = """\
-----ProxyGlobal-----
nodeId p0
baseDir /var/walb/p0
maxWdiffSendMb 128
minDelaySecForRetry 1
maxDelaySecForRetry 300
retryTimeout 1800
maxConnections 10
maxForegroundTasks 2
maxBackgroundTasks 1
socketTimeout 10
keepAlive OFF
-----TaskQueue 0-----
-----Volume-----
volume vol0 state Started numDiff 0 totalSize 0 timestamp ---
  archive a0 action None numDiff 0 totalSize 0 minGid 0 maxGid 0 ---
"""
SAMPLE_STORAGE_STATUS = """\
-----StorageGlobal-----
nodeId s0
baseDir /var/walb/s0
-----Archive-----
host 172.18.0.2:10000:10000
-----Proxy-----
host 172.18.0.3:10000:10000 isAvailable 1 timeToNextCheck 6
-----TaskQueue-----
-----Volume-----
"""


def t(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)


def test_samples_of_single_answers_parse_as_real_servers_print_them() -> None:
    assert v.parse_names("") == []  # `get vol` with no volume: nothing, exit 0
    assert v.parse_names("vol0\n") == ["vol0"]
    assert v.parse_names("a0\n") == ["a0"]  # archive-info list vol0
    assert v.parse_state("SyncReady\n") == "SyncReady"
    assert v.parse_state("Clear\n") == "Clear"  # get state nosuchvol
    assert v.parse_state("Stopped\n") == "Stopped"  # proxy after archive-info add
    assert v.parse_state("Started\n") == "Started"
    assert v.parse_flag("0\n") is False  # is-wdiff-send-error vol0 a0
    assert v.parse_flag("1\n") is True
    assert v.parse_count("0\n") == 0  # num-action vol0 Merge
    assert v.parse_restorable("") == []
    assert v.parse_ts_delta("") == []
    assert v.parse_base_all("") == []


def test_status_samples_give_each_volumes_state_and_archives() -> None:
    (a,) = v.parse_status_volumes(SAMPLE_ARCHIVE_STATUS).values()
    assert (a.name, a.state, a.fields["totalNumAction"], a.archives) == ("vol0", "SyncReady",
                                                                          "0", ())
    (p,) = v.parse_status_volumes(SAMPLE_PROXY_STATUS).values()
    assert (p.name, p.state, p.archives) == ("vol0", "Started", ("a0",))
    assert v.parse_status_volumes(SAMPLE_STORAGE_STATUS) == {}
    # a TaskQueue line "volume X archive Y timeDiffMs N" is not a volume line
    queued = SAMPLE_PROXY_STATUS.replace("-----TaskQueue 0-----\n",
                                         "-----TaskQueue 1-----\nvolume vol0 archive a0 "
                                         "timeDiffMs 100\n")
    assert v.parse_status_volumes(queued) == v.parse_status_volumes(SAMPLE_PROXY_STATUS)
    with pytest.raises(ValueError, match="not a status volume line"):
        v.parse_status_volumes("-----Volume-----\nvolume vol0 Started\n")


def test_walbc_errors_are_read_without_prefix_or_stack_traces() -> None:
    assert v.walbc_error(SAMPLE_BAD_STATE) == "c2xGetClient:isOverflow:bad state:Clear"
    assert v.walbc_error(SAMPLE_BAD_ARCHIVE) == (
        "c2xGetClient:isWdiffSendError:bad archive name:vol0:a9")
    # walbc's retries print "error: ..." and "retry N" before the final ERROR line
    assert v.walbc_error("error: timeout\nretry 1\n" + SAMPLE_BAD_STATE).endswith("Clear")
    assert v.walbc_error("error: cannot connect\nretry 1\n") == "error: cannot connect"
    # as real v1.0.19 walbc prints it, stamped (seen by hand on a real storage)
    assert v.walbc_error("2026-12-07 09:27:42.799 ERROR walbc error: c2xInitVolClient:"
                         "StorageVolInfo:not found:/dev/walb/vol0\n") == (
        "c2xInitVolClient:StorageVolInfo:not found:/dev/walb/vol0")
    assert v.walbc_error("") == "no message"


def test_garbage_is_refused_with_a_message_naming_it() -> None:
    for parse, text in ((v.parse_state, "Target Stopped\n"), (v.parse_state, "12\n"),
                        (v.parse_flag, "2\n"), (v.parse_flag, "yes"), (v.parse_count, "-1"),
                        (v.parse_names, "vol 0\n"), (v.parse_restorable, "3 ---\n"),
                        (v.parse_restorable, "x 2023-11-14T22:13:20 1\n"),
                        (v.parse_ts_delta, "name:vol0\n"), (v.parse_ts_delta, "garbage"),
                        (v.parse_base_all, "name:vol0\tmetastate:<3>-2023"),
                        (v.parse_all_actions, "vol0 Merge 1\n")):
        with pytest.raises(ValueError) as err:
            parse(text)
        assert str(err.value), (parse, text)


# --- upstream formats ------------------------------------------------------------------------

# src/ts_delta.hpp:29-59: the destination has a snapshot...
TS_DELTA_KNOWN = ("name:vol0\tdest:a0\tkind:storage\tdest_kind:archive\tgid:12\t"
                  "ts:2023-11-14T22:13:20\tdest_gid:11\tdest_ts:2023-11-14T22:11:20\tts_delta:120")
# ...or not (note dest_ts before dest_gid, all three empty)
TS_DELTA_UNKNOWN = ("name:vol1\tdest:a1\tkind:archive\tdest_kind:archive\tgid:3\t"
                    "ts:2023-11-14T22:13:20\tdest_ts:\tdest_gid:\tts_delta:")


def test_ts_delta_lines_in_both_of_upstreams_forms() -> None:
    known, unknown = v.parse_ts_delta(TS_DELTA_KNOWN + "\n" + TS_DELTA_UNKNOWN + "\n")
    assert known == v.TsDelta("vol0", "a0", "storage", "archive", 12, t("2023-11-14T22:13:20"),
                              11, t("2023-11-14T22:11:20"), 120)
    assert (unknown.name, unknown.dest, unknown.kind, unknown.gid) == ("vol1", "a1", "archive", 3)
    assert (unknown.dest_gid, unknown.dest_ts, unknown.delta_s) == (None, None, None)
    negative = TS_DELTA_KNOWN.replace("ts_delta:120", "ts_delta:-5")
    assert v.parse_ts_delta(negative)[0].delta_s == -5  # the archive ahead: int64 in upstream


def test_base_all_metastates_plain_ranged_and_applying() -> None:
    # src/archive.cpp:1702-1704 with MetaState::strTs(), src/meta.hpp:135-146, 335-346
    text = ("name:vol0\tmetastate:<|3|>-20231114221320\n"
            "name:vol1\tmetastate:<|4,7|>-20231114221321\n"
            "name:vol2\tmetastate:<|5|-->|9|>-20231114221322\n")
    plain, ranged, applying = v.parse_base_all(text)
    assert (plain.name, plain.gid, plain.applying_to) == ("vol0", 3, None)
    assert plain.timestamp == t("2023-11-14T22:13:20")
    assert plain.metastate == "<|3|>-20231114221320"
    assert (ranged.gid, ranged.applying_to) == (4, None)
    assert (applying.gid, applying.applying_to) == (5, 9)


def test_restorable_lines_with_explicit_flag_and_time() -> None:
    # src/archive.cpp:552-554: gid, util::timeToPrintable(ts) ('---' for 0), explicit 0/1
    snaps = v.parse_restorable("3 2023-11-14T22:13:20 1\n5 2023-11-14T22:23:20 0\n0 --- 1\n")
    assert snaps == [v.Snapshot(3, t("2023-11-14T22:13:20"), True),
                     v.Snapshot(5, t("2023-11-14T22:23:20"), False), v.Snapshot(0, None, True)]


def test_all_actions_lines_count_each_action() -> None:
    # src/archive.cpp:1602 with src/server_util.cpp:73-85 (useTime)
    text = ("vol0 Merge 1 2023-11-14T22:13:20 Apply 0 --- Restore 0 --- ReplSyncAsClient 0 --- "
            "Resize 0 ---\nvol1 Merge 0 --- Apply 2 2023-11-14T22:13:20 Restore 0 --- "
            "ReplSyncAsClient 0 --- Resize 0 ---\n")
    got = v.parse_all_actions(text)
    assert got["vol0"]["Merge"] == 1 and got["vol1"]["Apply"] == 2
    assert set(got["vol0"]) == set(v.ARCHIVE_ACTIONS)


# --- the batch: its script and its output ----------------------------------------------------


def test_batch_argv_passes_address_and_port_as_arguments_only() -> None:
    argv = v.batch_argv("proxy", "p0.example", 10000)
    assert argv[:2] == ["sh", "-c"] and argv[3:] == ["sh", "p0.example", "10000"]
    for role in v.ROLES:
        odd = v.batch_argv(role, "$(touch /tmp/x)'\"", 1)
        assert odd[2] == v.batch_argv(role, "127.0.0.1", 10000)[2], "the script is constant"
        assert "$(touch" not in odd[2]
    with pytest.raises(ValueError, match="unknown role 'keeper'"):
        v.batch_argv("keeper", "x", 1)


def sections(*parts: tuple[str, int, str]) -> str:
    out = []
    for key, status, body in parts:
        out += [f"@@ {key}", *([body] if body else []), f"@@rc {status}"]
    return "\n".join([*out, "@@end"]) + "\n"


def test_a_storage_batch_becomes_records_with_overflow_and_lag() -> None:
    text = sections(("vol", 0, "vol0\nvol1"), ("ts-delta", 0, TS_DELTA_KNOWN),
                    ("state vol0", 0, "Target"), ("overflow vol0", 0, "1"),
                    ("state vol1", 0, "Clear"),
                    ("overflow vol1", 1, SAMPLE_BAD_STATE.rstrip()))
    r0, r1 = v.parse_batch("storage", text)
    assert (r0.name, r0.state, r0.overflow, r0.ts_delta_s) == ("vol0", "Target", True, 120)
    assert r0.latest_snapshot == t("2023-11-14T22:13:20")
    assert (r1.state, r1.overflow) == ("Clear", None)
    assert r1.errors == (("get is-overflow vol1", "c2xGetClient:isOverflow:bad state:Clear"),)
    words = [p.text for p in v.problems(r0, 60)]
    assert any("hash backup" in w and "hash-bkp vol0" in w for w in words), words
    assert any("backup lag 120 s to a0 is above 60 s" in w for w in words), words
    assert not [p for p in v.problems(r0, 600) if p.kind == "lag"], "under the threshold"
    assert v.problems(r1, 60) == [], "a Clear volume's bad state is no problem"


STORAGE_STATUS = """-----StorageGlobal-----
nodeId s0
-----TaskQueue-----
volume vol1 timeDiffMs 120
-----Volume-----
volume vol0 state Target logUsagePb 3 logCapacityPb 1024 oldestGid 1 latestGid 5 oldestLsid 0 \
permanentLsid 0"""


def test_a_storage_batch_reads_states_from_status_and_asks_them_only_when_it_failed() -> None:
    text = sections(("vol", 0, "vol0\nvol1"), ("ts-delta", 0, ""), ("status", 0, STORAGE_STATUS),
                    ("overflow vol0", 0, "0"),
                    ("overflow vol1", 1, SAMPLE_BAD_STATE.rstrip()))
    r0, r1 = v.parse_batch("storage", text)
    assert (r0.state, r0.overflow, r1.state) == ("Target", False, "Clear")  # unlisted: Clear
    failed = sections(("vol", 0, "vol0"), ("status", 1, "ERROR walbc error: c2xGetStrVecClient:"
                                                        "getLogUsagePb:no such device"),
                      ("state vol0", 0, "Stopped"), ("overflow vol0", 0, "1"))
    (r,) = v.parse_batch("storage", failed)
    assert (r.state, r.overflow) == ("Stopped", True)
    assert r.errors[0][0] == "status" and "no such device" in r.errors[0][1]
    asked = []
    v.batch_text("storage", lambda args: (asked.append(list(args)), (0, {
        "vol": "vol0\nvol1\n", "status": STORAGE_STATUS + "\n"}.get(args[-1], "0\n")))[1])
    assert ["get", "state", "vol0"] not in asked and ["get", "is-overflow", "vol1"] in asked
    asked.clear()
    v.batch_text("storage", lambda args: (asked.append(list(args)), (
        (1, "ERROR x") if args == ["status"] else (0, "vol0\n")))[1])
    assert ["get", "state", "vol0"] in asked


def test_a_proxy_batch_reports_send_errors_per_archive() -> None:
    status = SAMPLE_PROXY_STATUS + "  archive a1 action None numDiff 0 totalSize 0 ---\n"
    text = sections(("vol", 0, "vol0"), ("status", 0, status), ("send-error vol0 a0", 0, "0"),
                    ("send-error vol0 a1", 0, "1"))
    (r,) = v.parse_batch("proxy", text)
    assert (r.state, r.archives, dict(r.send_error)) == ("Started", ("a0", "a1"),
                                                          {"a0": False, "a1": True})
    (p,) = v.problems(r, 600)
    assert p.kind == "send_error" and p.severity == "error"
    assert "archive a1" in p.text and "kick vol0 a1" in p.text


def test_an_archive_batch_counts_snapshots_actions_and_base() -> None:
    text = sections(
        ("vol", 0, "vol0\nvol1"), ("ts-delta", 0, TS_DELTA_UNKNOWN.replace("vol1", "vol0")),
        ("base-all", 0, "name:vol0\tmetastate:<|3|>-20231114221320"),
        ("all-actions", 0, "vol0 Merge 1 2023-11-14T22:13:20 Apply 0 --- Restore 0 --- "
                           "ReplSyncAsClient 0 --- Resize 0 ---"),
        ("status", 0, SAMPLE_ARCHIVE_STATUS.replace("vol0 state SyncReady", "vol1 state SyncReady")
         + "volume vol0 state Archived totalNumAction 1 stopState NotStopping\n"),
        ("restorable vol0", 0, "3 2023-11-14T22:13:20 1\n5 2023-11-14T22:23:20 1"),
        ("restorable vol1", 0, ""))
    r0, r1 = v.parse_batch("archive", text)
    assert (r0.state, r0.restorable, dict(r0.running_actions)) == ("Archived", 2, {"Merge": 1})
    assert r0.latest_snapshot == t("2023-11-14T22:23:20")
    assert r0.base is not None and r0.base.gid == 3
    assert r0.ts_delta_s is None and r0.ts_deltas[0].dest == "a1"
    kinds = {p.kind: p for p in v.problems(r0, 600)}
    assert set(kinds) == {"no_snapshot", "action"}
    assert "Merge 1" in kinds["action"].text and kinds["action"].severity == "info"
    assert (r1.state, r1.restorable, r1.latest_snapshot, r1.base) == ("SyncReady", 0, None, None)


def test_a_failed_or_cut_off_batch_is_an_error_not_an_empty_list() -> None:
    down = sections(("vol", 1, "ERROR walbc error: cannot connect to 127.0.0.1:10000"))
    with pytest.raises(ValueError, match="get vol failed: cannot connect"):
        v.parse_batch("proxy", down)
    cut = sections(("vol", 0, "vol0")).replace("@@end\n", "@@ state vol0\nStarted\n")
    with pytest.raises(ValueError, match="cut off"):
        v.parse_batch("proxy", cut)
    with pytest.raises(ValueError, match="outside a section"):
        v.parse_batch("proxy", "hello\n" + sections(("vol", 0, "")))
    assert v.parse_batch("storage", sections(("vol", 0, ""), ("ts-delta", 0, ""))) == []


def test_a_volume_missing_from_status_is_clear_and_a_failed_status_is_reported() -> None:
    text = sections(("vol", 0, "vol0\nvol1"), ("status", 0, SAMPLE_PROXY_STATUS),
                    ("send-error vol0 a0", 0, "0"))
    r0, r1 = v.parse_batch("proxy", text)
    assert (r0.state, r1.state, r1.archives) == ("Started", "Clear", ())
    failed = sections(("vol", 0, "vol0"), ("status", 1, "ERROR walbc error: timeout"))
    (r,) = v.parse_batch("archive", failed)
    assert r.state is None and ("status", "timeout") in r.errors
    assert [p.text for p in v.problems(r, 600)] == ["vol0: 'status' failed: timeout"]


def test_query_failures_become_warnings_naming_the_command() -> None:
    status = SAMPLE_PROXY_STATUS.replace("archive a0", "archive a9")
    text = sections(("vol", 0, "vol0"), ("status", 0, status),
                    ("send-error vol0 a9", 1, SAMPLE_BAD_ARCHIVE.rstrip()))
    (r,) = v.parse_batch("proxy", text)
    (p,) = v.problems(r, 600)
    assert p.kind == "query"
    assert "'get is-wdiff-send-error vol0 a9' failed" in p.text and "bad archive name" in p.text
    assert v.summarize([r, r], 600) == {"query": 2}


# --- the batch for real: docker exec in containers of the double's image --------------------


@pytest.fixture
def net(engine: Any, double_image: str) -> Iterator[tuple[Any, str, list[Any]]]:
    if os.environ.get("WALBCTR_TEST_IMAGE"):
        pytest.skip("uses the double's test hooks, which real walb-tools lacks")
    name = f"walbctr-voltest-{secrets.token_hex(3)}"
    network = engine.networks.create(name, labels={"io.walbctr.test": "volumes"})
    made: list[Any] = []
    try:
        yield engine, name, made
    finally:
        for container in made:
            with contextlib.suppress(Exception):
                container.remove(force=True)
        network.remove()


def start(net: tuple[Any, str, list[Any]], image: str, sid: str, command: list[str],
          **kwargs: Any) -> Any:
    import time

    engine, name, made = net
    container = engine.containers.run(image, command, detach=True, name=f"{name}-{sid}",
                                      hostname=sid, network=name,
                                      labels={"io.walbctr.test": "volumes"}, **kwargs)
    made.append(container)
    deadline = time.monotonic() + 30
    while walbc(container, "get", "host-type")[0] != 0:
        assert time.monotonic() < deadline, container.logs().decode()
        time.sleep(0.2)
    return container


def walbc(container: Any, *args: str) -> tuple[int, str]:
    code, out = container.exec_run(["walbc", "-a", "127.0.0.1", "-p", "10000", *args])
    return code, out.decode()


def batch(container: Any, role: str, address: str = "127.0.0.1") -> tuple[int, str, str]:
    code, (out, err) = container.exec_run(v.batch_argv(role, address, 10000), demux=True)
    return code, (out or b"").decode(), (err or b"").decode()


def wire_scan(container: Any, role: str) -> tuple[int, str, str]:
    """The keeper's scan of the server in `container`, asked from this process on walb's
    wire protocol (walbctr.keeper.ask), as the keeper asks it from its own container."""
    from walbctr.keeper.ask import Asker
    from walbctr.keeper.duties import run_all

    container.reload()
    address = next(iter(container.attrs["NetworkSettings"]["Networks"].values()))["IPAddress"]
    fell_back: list[str] = []
    asker = Asker(run_all, fell_back.append)
    result = asker.scan(container.name, role, address, 10000, 5)
    assert fell_back == [] and asker.speaks_wire(container.name), fell_back
    return result


def assert_wire_scan_reads_as_the_batch(container: Any, role: str) -> None:
    """Both executors of the batch's questions give the same records: the script run in the
    server's container (status --volumes) and the keeper's questions on the wire."""
    code, out, err = batch(container, role)
    assert code == 0, err
    status, text, why = wire_scan(container, role)
    assert status == 0, why
    assert v.parse_batch(role, text) == v.parse_batch(role, out), (text, out)


def test_one_exec_per_server_gathers_proxy_and_storage_volumes(
        net: Any, double_image: str) -> None:
    p0 = start(net, double_image, "p0", ["walb-proxy", "-p", "10000", "-b", "/var/walb/p0",
                                         "-id", "p0"])
    s0 = start(net, double_image, "s0", ["walb-storage", "-p", "10000", "-b", "/var/walb/s0",
                                         "-id", "s0", "-archive", "a0:10009",
                                         "-proxy", "p0:10000"], extra_hosts={"a0": "127.0.0.1"})
    code, out, err = batch(p0, "proxy")
    assert code == 0 and v.parse_batch("proxy", out) == [], (out, err)
    for args in (["archive-info", "add", "vol0", "a0", "a0:10000"],
                 ["archive-info", "add", "vol0", "a1", "a1:10000"], ["start", "vol0"],
                 ["double-send-error", "vol0", "a1", "1"],
                 ["archive-info", "add", "vol1", "a0", "a0:10000"]):
        assert walbc(p0, *args)[0] == 0, args
    for args in (["double-set-state", "vol0", "Target"], ["double-overflow", "vol0", "1"],
                 ["double-ts-delta", "vol0", "900"], ["double-set-state", "vol1", "SyncReady"]):
        assert walbc(s0, *args)[0] == 0, args

    code, out, err = batch(p0, "proxy")
    assert code == 0, err
    r0, r1 = v.parse_batch("proxy", out)
    assert (r0.name, r0.state, dict(r0.send_error)) == ("vol0", "Started",
                                                        {"a0": False, "a1": True})
    assert (r1.name, r1.state, r1.archives) == ("vol1", "Stopped", ("a0",))
    assert [p.kind for p in v.problems(r0, 600)] == ["send_error"]

    code, out, err = batch(s0, "storage")
    assert code == 0, err
    r0, r1 = v.parse_batch("storage", out)
    assert (r0.state, r0.overflow, r0.ts_delta_s) == ("Target", True, 900)
    assert r0.ts_deltas[0].dest == "a0"
    assert (r1.state, r1.overflow, r1.ts_deltas) == ("SyncReady", False, ())
    assert sorted(p.kind for p in v.problems(r0, 600)) == ["lag", "overflow"]
    assert_wire_scan_reads_as_the_batch(p0, "proxy")
    assert_wire_scan_reads_as_the_batch(s0, "storage")

    # A hostile address stays an argument: walbc cannot resolve it, nothing is run.
    code, out, _ = batch(p0, "proxy", "$(touch /tmp/pwned)")
    with pytest.raises(ValueError, match="get vol failed"):
        v.parse_batch("proxy", out)
    assert p0.exec_run(["test", "-e", "/tmp/pwned"])[0] == 1
    # A server that does not answer: the batch says so.
    p0.exec_run(["walbc", "-a", "127.0.0.1", "-p", "10000", "shutdown"])
    code, out, _ = batch(s0, "proxy", "p0")
    with pytest.raises(ValueError, match="get vol failed"):
        v.parse_batch("proxy", out)


def test_one_exec_gathers_an_archives_volumes(net: Any, double_image: str,
                                              loop_vg: str, tmp_path: Path) -> None:
    a0 = start(net, double_image, "a0",
               ["walb-archive", "-p", "10000", "-b", "/var/walb", "-id", "a0", "-vg", loop_vg],
               cap_add=["SYS_ADMIN"], device_cgroup_rules=["b 7:* rmw", "c 10:237 rmw"],
               volumes={"/dev": {"bind": "/dev", "mode": "rw"},
                        str(tmp_path): {"bind": "/var/walb", "mode": "rw"}})
    for args in (["init-vol", "vol0"], ["dbg-set-state", "vol0", "Archived"],
                 ["double-snapshot", "vol0", "3", "1700000000"],
                 ["double-snapshot", "vol0", "5", "1700000600"],
                 ["double-action", "vol0", "Apply", "60"], ["init-vol", "vol1"]):
        assert walbc(a0, *args)[0] == 0, args
    code, out, err = batch(a0, "archive")
    assert code == 0, err
    r0, r1 = v.parse_batch("archive", out)
    assert (r0.state, r0.restorable, dict(r0.running_actions)) == ("Archived", 2, {"Apply": 1})
    assert r0.latest_snapshot == t("2023-11-14T22:23:20")
    assert r0.base is not None and r0.base.metastate == "<|3|>-20231114221320"
    assert (r1.state, r1.restorable, r1.base, r1.errors) == ("SyncReady", 0, None, ())
    assert [p.kind for p in v.problems(r0, 600)] == ["action"]
    assert_wire_scan_reads_as_the_batch(a0, "archive")
