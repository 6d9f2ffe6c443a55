"""The volume procedures' decisions and the archive history parsers (pure: no Docker)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from walbctr.walb import history, steps
from walbctr.walb.steps import AddPlan, AddSeen, Blocked, Done, ProxySeen, Step, Wait

PLAN = AddPlan("vol0", "s0", "a0", "a0:10000", "/dev/walb/vol0")
HASH = AddPlan("vol0", "s0", "a0", "a0:10000", "/dev/walb/vol0", hash_backup=True)


def seen(storage: str = "Clear", archive: str = "Clear",
         proxies: dict[str, ProxySeen] | None = None, restorable: tuple[int, ...] = (),
         overflow: bool = False,
         kicked: frozenset[str] = frozenset()) -> AddSeen:
    if proxies is None:
        proxies = {"p0": ProxySeen("Clear"), "p1": ProxySeen("Clear")}
    return AddSeen(storage, archive, proxies, restorable, overflow, kicked)


def test_a_new_volume_is_initialized_on_the_storage_first_with_its_device() -> None:
    nxt = steps.next_add_step(PLAN, seen())
    assert isinstance(nxt, Step)
    assert (nxt.server, nxt.args, nxt.goal) == ("s0", ("init-vol", "vol0", "/dev/walb/vol0"),
                                                ("SyncReady",))


def test_then_the_archive_then_each_proxy_in_priority_order_then_the_full_backup() -> None:
    order = []
    archive = "Clear"
    proxies = {"p0": ProxySeen("Clear"), "p1": ProxySeen("Clear")}
    for _ in range(10):
        nxt = steps.next_add_step(PLAN, seen("SyncReady", archive, dict(proxies)))
        assert isinstance(nxt, Step)
        order.append((nxt.server, nxt.args[0]))
        if nxt.args[0] == "full-bkp":
            break
        if nxt.server == "a0":
            archive = "SyncReady"
        elif nxt.args[0] == "archive-info":
            proxies[nxt.server] = ProxySeen("Stopped", ("a0",))
        elif nxt.args[0] == "start":
            proxies[nxt.server] = ProxySeen("Started", ("a0",))
    assert order == [("a0", "init-vol"), ("p0", "archive-info"), ("p0", "start"),
                     ("p1", "archive-info"), ("p1", "start"), ("s0", "full-bkp")]


def test_the_proxies_are_told_the_archive_address_the_layout_gives() -> None:
    nxt = steps.next_add_step(PLAN, seen("SyncReady", "SyncReady"))
    assert isinstance(nxt, Step)
    assert nxt.args == ("archive-info", "add", "vol0", "a0", "a0:10000")


def test_a_running_full_backup_is_waited_for_with_the_archive_counting_progress() -> None:
    nxt = steps.next_add_step(PLAN, seen("FullSync", "FullSync"))
    assert isinstance(nxt, Wait) and nxt.progress_on == "a0" and nxt.volume == "vol0"


def test_after_the_backup_each_proxy_is_kicked_once_then_it_waits_then_it_is_done() -> None:
    started = {"p0": ProxySeen("Started", ("a0",)), "p1": ProxySeen("Started", ("a0",))}
    first = steps.next_add_step(PLAN, seen("Target", "Archived", started))
    assert isinstance(first, Step) and first.args == ("kick", "vol0", "a0")
    assert first.server == "p0"
    both = frozenset({"p0", "p1"})
    assert isinstance(steps.next_add_step(PLAN, seen("Target", "Archived", started,
                                                     kicked=both)), Wait)
    done = steps.next_add_step(PLAN, seen("Target", "Archived", started, (3, 7), kicked=both))
    assert isinstance(done, Done) and "gid 7" in done.what


def test_a_full_backup_onto_an_archive_that_holds_one_is_refused_with_the_hash_fix() -> None:
    nxt = steps.next_add_step(PLAN, seen("SyncReady", "Archived"))
    assert isinstance(nxt, Blocked)
    assert "a0 already holds a backup of vol0 (state Archived)" in nxt.message
    assert "--hash" in nxt.fix


def test_an_overflowed_target_is_blocked_until_asked_for_a_hash_backup() -> None:
    started = {"p0": ProxySeen("Started", ("a0",))}
    nxt = steps.next_add_step(PLAN, seen("Target", "Archived", started, (5,), overflow=True))
    assert isinstance(nxt, Blocked) and "overflowed" in nxt.message and "--hash" in nxt.fix
    first = steps.next_add_step(HASH, seen("Target", "Archived", started, (5,), overflow=True))
    assert isinstance(first, Step) and first.args == ("stop", "vol0") and first.goal == ("Stopped",)
    reset = steps.next_add_step(HASH, seen("Stopped", "Archived", started, (5,)))
    assert isinstance(reset, Step) and reset.args == ("reset-vol", "vol0")
    bkp = steps.next_add_step(HASH, seen("SyncReady", "Archived", started, (5,)))
    assert isinstance(bkp, Step) and bkp.args == ("hash-bkp", "vol0")


def test_a_hash_backup_needs_an_archive_copy_to_compare_with() -> None:
    nxt = steps.next_add_step(HASH, seen("SyncReady", "SyncReady"))
    assert isinstance(nxt, Blocked) and "without --hash" in nxt.fix


def test_a_started_proxy_without_the_archive_is_stopped_before_it_is_told() -> None:
    nxt = steps.next_add_step(PLAN, seen("SyncReady", "SyncReady",
                                         {"p0": ProxySeen("Started", ("a9",))}))
    assert isinstance(nxt, Step) and nxt.args == ("stop", "vol0", "force")


@pytest.mark.parametrize("state", ["Standby", "Stopped"])
def test_a_storage_volume_in_standby_or_stopped_is_brought_to_sync_ready_first(state: str) -> None:
    nxt = steps.next_add_step(PLAN, seen(state, "SyncReady"))
    assert isinstance(nxt, Step) and nxt.goal == ("SyncReady",)


def test_diffs_parse_as_walb_prints_them_and_print_back_the_same() -> None:
    text = ("|0|-->|5| M- 2026-12-07T10:00:00 4096\n"
            "|5|-->|7,9| -C 2026-12-07T10:01:02 123\n")
    diffs = history.parse_diffs(text)
    assert [str(d) for d in diffs] == text.splitlines()
    assert diffs[0].time == datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
    assert not diffs[1].e.clean and diffs[1].compared and not diffs[1].mergeable


def test_a_garbled_diff_line_is_refused_with_the_line() -> None:
    with pytest.raises(ValueError, match="not a wdiff line"):
        history.parse_diffs("|0|->|5| M- 2026-12-07T10:00:00 1\n")


def test_restored_gids_are_read_one_a_line_and_nothing_means_none() -> None:
    assert history.parse_gids("7\n3\n") == [3, 7]
    assert history.parse_gids("") == []
    with pytest.raises(ValueError):
        history.parse_gids("x\n")


def test_show_prints_each_server_and_the_archive_history_and_list_each_state() -> None:
    from walbctr.commands.volume import list_table, show_text
    from walbctr.group import DiffRecord, ServerVolume, SnapshotRecord, VolumeInfo, VolumeSummary

    t = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
    info = VolumeInfo(name="vol0", servers=[
        ServerVolume(server="a0", role="archive", host="h", state="Archived",
                     restorable=[SnapshotRecord(gid=5, time=t)], restored=[5],
                     diffs=[DiffRecord(begin="|0|", end="|5|", mergeable=True, compared=False,
                                       time=t, size=4096)], size_lb=8192),
        ServerVolume(server="s0", role="storage", host="h", state="Target", overflow=True)])
    text = show_text(info)
    assert "a0      archive  h     Archived  4 MiB; restored 5" in text
    assert "LOG OVERFLOWED" in text
    assert "diffs on a0: 1, 4096 bytes" in text and "|0|-->|5| M-" in text
    assert "latest snapshot: gid 5 at 2026-12-07T10:00:00+00:00" in text
    table = list_table([VolumeSummary(name="vol0", states={"a0": "Archived", "s0": "Target"},
                                      restorable={"a0": 2}, latest={"a0": t})], ["a0", "p0", "s0"])
    assert table.splitlines()[1].split() == ["vol0", "Archived", "-", "Target", "a0", "2", "a0",
                                             "2026-12-07", "10:00:00"]


@pytest.mark.parametrize("name", ["", "../x", "-x", ".x", "a b", "x" * 65, "v|w"])
def test_a_volume_name_walb_cannot_take_is_refused_before_any_call(name: str) -> None:
    from walbctr.errors import WalbctrError
    from walbctr.group import _vol

    with pytest.raises(WalbctrError, match="is not a walb volume name"):
        _vol(name)
