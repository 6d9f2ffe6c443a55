"""`walbctr replace`'s pure parts: the layout edit (the text, the default id, what cannot
be edited in place) and the plan per role (upstream's doc/replace.md order, the resumed
run, and every refusal with its reason), without Docker."""

from __future__ import annotations

import pytest
import yaml

from walbctr.errors import LayoutError
from walbctr.layout.edit import default_new_id, move_server
from walbctr.layout.loader import load_layout
from walbctr.walb.replace_steps import (
    ReplaceSeen,
    VolumeSeen,
    describe,
    plan_replace,
)

LAYOUT = """\
# the backup group of the third floor
group: g
hosts:
  hA0: {address: 10.0.0.1}
  hA1: {address: 10.0.0.2}
  hP0: {address: 10.0.0.3}   # the proxy host
  hS0: {address: 10.0.0.4}
  hX: {address: 10.0.0.9}
archives:
  - {id: a0, host: hA0, vg: vg0}   # primary
  - {id: a1, host: hA1, vg: vg0}
proxies:
  - id: p0         # highest priority
    host: "hP0"
  - {id: p1, host: hP0, port: 10001}
storages:
  - {id: s0, host: hS0}
"""


def layout():  # type: ignore[no-untyped-def]
    return load_layout(LAYOUT, "floor3.yaml")


# --- the layout edit ------------------------------------------------------------------------


def test_the_edit_changes_only_the_id_and_host_keeping_comments_and_quotes() -> None:
    edit = move_server(LAYOUT, "floor3.yaml", layout(), "p0", "hX", "p2")
    assert edit.new_text is not None
    assert "  - id: p2         # highest priority\n    host: \"hX\"\n" in edit.new_text
    assert edit.new_text.replace("p2", "p0").replace('"hX"', '"hP0"') == LAYOUT
    assert edit.changes == ("proxies[0].id (line 13): p0 -> p2",
                            "proxies[0].host (line 14): hP0 -> hX")
    assert "-  - id: p0         # highest priority" in edit.diff
    assert "+    host: \"hX\"" in edit.diff
    moved = load_layout(edit.new_text, "floor3.yaml")
    assert [p.id for p in moved.proxies_by_priority] == ["p2", "p1"]  # same priority
    assert moved.server("p2").host == "hX"


def test_the_edit_of_a_flow_mapping_keeps_the_line_as_it_is_otherwise() -> None:
    edit = move_server(LAYOUT, "floor3.yaml", layout(), "a0", "hX", "a2")
    assert edit.new_text is not None
    assert "  - {id: a2, host: hX, vg: vg0}   # primary\n" in edit.new_text
    assert load_layout(edit.new_text).primary_archive.id == "a2"


def test_a_host_name_yaml_would_read_as_another_type_is_quoted() -> None:
    text = LAYOUT.replace("hX:", "'on':").replace("group: g", "group: g\n")
    edit = move_server(text, "f.yaml", load_layout(text), "s0", "on", "s1")
    assert edit.new_text is not None
    assert "  - {id: s1, host: 'on'}\n" in edit.new_text
    assert load_layout(edit.new_text).server("s1").host == "on"


def test_an_id_shared_through_an_alias_is_not_edited_but_said_in_words() -> None:
    text = LAYOUT.replace("  - {id: s0, host: hS0}", "  - {id: s0, host: &h hS0}\n"
                          "  - {id: s9, host: *h, port: 10001}")
    edit = move_server(text, "f.yaml", load_layout(text), "s0", "hX", "s1")
    assert edit.new_text is None and edit.diff == ""
    assert edit.changes[1] == "storages[0].host (line 17): hS0 -> hX"


def test_a_host_from_a_merge_key_is_not_edited_in_place() -> None:
    text = LAYOUT.replace("  - {id: s0, host: hS0}", "  - {<<: {host: hS0}, id: s0}")
    edit = move_server(text, "f.yaml", load_layout(text), "s0", "hX", "s1")
    assert edit.new_text is None
    assert edit.changes == ("storages[0].id (line 17): s0 -> s1", "storages[0].host: hS0 -> hX")


def test_the_default_new_id_is_the_next_free_number() -> None:
    lay = layout()
    assert default_new_id(lay, "p0") == "p2"  # p1 is taken
    assert default_new_id(lay, "a1") == "a2"
    assert default_new_id(lay, "s0") == "s1"
    text = LAYOUT.replace("{id: s0,", "{id: store,")
    assert default_new_id(load_layout(text), "store") == "store2"
    text = LAYOUT.replace("{id: s0,", "{id: s09,")
    assert default_new_id(load_layout(text), "s09") == "s10"


def test_an_edit_that_leaves_the_layout_invalid_is_found_by_the_loader_with_its_line() -> None:
    text = LAYOUT + "monitor: {host: hS0}\n"
    edit = move_server(text, "f.yaml", load_layout(text), "s0", "hX", "s1")
    assert edit.new_text is not None
    with pytest.raises(LayoutError) as err:
        load_layout(edit.new_text, "f.yaml")
    assert "monitor.host" in str(err.value) and "f.yaml:18" in str(err.value)


def test_the_edited_text_reads_back_as_the_old_data_with_one_server_moved() -> None:
    edit = move_server(LAYOUT, "floor3.yaml", layout(), "p1", "hX", "p2")
    assert edit.new_text is not None
    old, new = yaml.safe_load(LAYOUT), yaml.safe_load(edit.new_text)
    old["proxies"][1].update(id="p2", host="hX")
    assert new == old


# --- the plans ------------------------------------------------------------------------------

ENDPOINTS = {"a0": "10.0.0.1:10000", "a1": "10.0.0.2:10000", "a2": "10.0.0.9:10000",
             "p0": "10.0.0.3:10000", "p2": "10.0.0.9:10000", "p1": "10.0.0.3:10001"}


def proxy_seen(*volumes: VolumeSeen, **kw: object) -> ReplaceSeen:
    base: dict[str, object] = dict(
        role="proxy", old="p0", new="p2", old_host="hP0", new_host="hX", volumes=volumes,
        primary_archive="a0", proxies=("p2", "p1"), storages=("s0",), endpoints=ENDPOINTS)
    base.update(kw)
    return ReplaceSeen(**base)  # type: ignore[arg-type]


def ops(plan: object) -> list[tuple[str, str, str]]:
    return [(a.op, a.server, a.volume) for a in plan.actions]  # type: ignore[attr-defined]


def test_a_proxy_is_replaced_in_the_docs_order() -> None:
    plan = plan_replace(proxy_seen(
        VolumeSeen("vol0", "Started", archives=("a0", "a1")),
        VolumeSeen("vol1", "Stopped", archives=("a0",))))
    assert not plan.refusals
    assert ops(plan) == [
        ("deploy", "p2", ""),
        ("copy-archive-info", "p2", "vol0"), ("copy-archive-info", "p2", "vol1"),
        ("stop-empty", "p0", "vol0"),
        ("clear", "p0", "vol0"), ("clear", "p0", "vol1"),
        ("recreate", "s0", ""),
        ("stop-server", "p0", "")]
    copy0 = plan.actions[1]
    assert copy0.source == "p0"
    assert copy0.calls == (
        "p2: archive-info add vol0 a0 10.0.0.1:10000 (compression and delay as on p0)",
        "p2: archive-info add vol0 a1 10.0.0.2:10000 (compression and delay as on p0)",
        "p2: start vol0")
    # a volume the operator stopped stays stopped on the new proxy
    assert "p2: start vol1" not in plan.actions[2].calls
    assert "stays Stopped there" in plan.actions[2].what
    text = "\n".join(describe(plan))
    assert "p0: stop vol0 empty" in text and "p0: archive-info delete vol1 a0" in text
    assert "compose up s0 with the new command line" in text


def test_a_proxy_replace_run_again_plans_only_what_is_left() -> None:
    plan = plan_replace(proxy_seen(
        VolumeSeen("vol0", "Clear", new_state="Started", new_archives=("a0",)),
        VolumeSeen("vol1", "WaitForEmpty", archives=("a0",), new_state="Started",
                   new_archives=("a0",)),
        new_running=True, storages=()))
    assert ops(plan) == [("wait-stopped", "p0", "vol1"), ("clear", "p0", "vol1"),
                         ("stop-server", "p0", "")]


def test_a_proxy_with_a_busy_volume_a_send_error_or_an_overflowed_storage_is_refused() -> None:
    plan = plan_replace(proxy_seen(
        VolumeSeen("vol0", "AddArchiveInfo", archives=("a0",)),
        VolumeSeen("vol1", "Started", archives=("a0",), send_errors=("a0",)),
        overflowed=("s0 vol2",)))
    assert plan.actions == ()
    messages = [r.message for r in plan.refusals]
    assert messages == [
        "s0's log device for vol2 overflowed, and the replace restarts s0 with its new "
        "command line",
        "p0 has vol0 in state AddArchiveInfo: walb is still changing it, and the replace "
        "starts only from settled states",
        "p0 failed to send vol1 to a0 (a wdiff send error): emptying it would wait for ever"]
    assert "--hash" in plan.refusals[0].fix
    assert "wait until it settles" in plan.refusals[1].fix
    assert "kick vol1" in plan.refusals[2].fix


def archive_seen(old: str, *volumes: VolumeSeen, **kw: object) -> ReplaceSeen:
    base: dict[str, object] = dict(
        role="archive", old=old, new="a2", old_host="hA0", new_host="hX", volumes=volumes,
        primary_archive="a0", proxies=("p0", "p1"), endpoints=ENDPOINTS)
    base.update(kw)
    return ReplaceSeen(**base)  # type: ignore[arg-type]


def test_the_primary_archive_is_replicated_with_sync_then_storages_then_stop_sync() -> None:
    plan = plan_replace(archive_seen(
        "a0", VolumeSeen("vol0", "Archived", synchronizing=True, restorable=True),
        VolumeSeen("vol1", "SyncReady"), storages=("s0",)))
    assert ops(plan) == [("deploy", "a2", ""), ("replicate", "a2", "vol0"),
                         ("recreate", "s0", ""), ("stop-synchronizing", "a0", "vol0"),
                         ("stop-server", "a0", "")]
    rep = plan.actions[1]
    assert rep.source == "a0" and rep.sync
    assert rep.calls[:3] == ("a2: init-vol vol0",
                             "a0: replicate vol0 gid LATEST 10.0.0.9:10000",
                             "a2: wait for the gid (get restorable vol0)")
    # walblib's synchronize: the proxies stop (empty) and learn a2, then a second
    # replication takes what arrived meanwhile, then they start again
    assert rep.calls[3:] == (
        "p0: stop vol0 empty (if started)", "p0: archive-info add vol0 a2 10.0.0.9:10000",
        "p1: stop vol0 empty (if started)", "p1: archive-info add vol0 a2 10.0.0.9:10000",
        "a0: replicate vol0 again (what arrived meanwhile)",
        "p0: start vol0", "p1: start vol0", "every storage: kick")
    assert plan.actions[3].calls[:2] == ("p0: stop vol0 force (if started)",
                                         "p0: archive-info delete vol0 a0")
    assert "backups (LVM volumes) stay" in plan.actions[-1].what
    assert plan.notes == ("vol1 holds no backup on a0 yet (SyncReady): nothing to copy",)


def test_a_secondary_archive_keeps_synchronizing_only_what_it_synchronized() -> None:
    plan = plan_replace(archive_seen(
        "a1", VolumeSeen("vol0", "Archived", synchronizing=True, restorable=True),
        VolumeSeen("vol1", "Archived", synchronizing=False, restorable=True),
        old_host="hA1"))
    assert ops(plan) == [("deploy", "a2", ""), ("replicate", "a2", "vol0"),
                         ("replicate", "a2", "vol1"), ("stop-synchronizing", "a1", "vol0"),
                         ("stop-server", "a1", "")]
    assert [a.sync for a in plan.actions if a.op == "replicate"] == [True, False]
    assert all(a.op != "recreate" for a in plan.actions)  # storages name the primary only


def test_an_archive_replace_refuses_what_a_replication_cannot_start_from() -> None:
    plan = plan_replace(archive_seen(
        "a0",
        VolumeSeen("v0", "HashSync"),
        VolumeSeen("v1", "Stopped"),
        VolumeSeen("v2", "Archived", restorable=True, actions=("ReplSyncAsClient",)),
        VolumeSeen("v3", "Archived", restorable=False, synchronizing=True),
        VolumeSeen("v4", "Archived", restorable=True, synchronizing=None),
        VolumeSeen("v5", "Archived", restorable=True, synchronizing=True,
                   new_state="ReplSyncAsServer")))
    assert plan.actions == ()
    got = [r.message for r in plan.refusals]
    assert got[0].startswith("a0 has v0 in state HashSync: walb is still changing it")
    assert got[1] == "a0 has v1 Stopped, and a replication copies only an Archived volume"
    assert got[2] == "a0 runs ReplSyncAsClient on v2"
    assert got[3] == "a0 has no restorable snapshot of v3 to replicate"
    assert got[4].startswith("some proxies send v4 to a0 and some do not")
    assert got[5].startswith("a2 has v5 in state ReplSyncAsServer")
    assert "start v1 --server a0" in plan.refusals[1].fix
    assert "snapshot v3" in plan.refusals[3].fix


def storage_seen(*volumes: VolumeSeen, **kw: object) -> ReplaceSeen:
    base: dict[str, object] = dict(
        role="storage", old="s0", new="s1", old_host="hS0", new_host="hX", volumes=volumes,
        primary_archive="a0", proxies=("p0", "p1"), endpoints=ENDPOINTS)
    base.update(kw)
    return ReplaceSeen(**base)  # type: ignore[arg-type]


def test_a_storage_goes_standby_then_the_new_one_inits_and_hash_backs_up() -> None:
    plan = plan_replace(storage_seen(
        VolumeSeen("vol0", "Target", device="/dev/walb/vol0", secondaries=("a1",)),
        VolumeSeen("vol1", "Standby", device="/dev/md1", others={"s9": "Target"})))
    assert ops(plan) == [("deploy", "s1", ""), ("go-standby", "s0", "vol0"),
                         ("init-storage", "s1", "vol0"), ("init-storage", "s1", "vol1"),
                         ("hash-backup", "s1", "vol0"), ("stop-server", "s0", "")]
    assert plan.actions[1].calls == (
        "s0: stop vol0 force", "p0: archive-info delete vol0 a0",
        "p1: archive-info delete vol0 a0", "s0: reset-vol vol0", "s0: start vol0 standby")
    assert plan.actions[3].device == "/dev/md1"
    assert plan.actions[3].calls == ("s1: init-vol vol1 /dev/md1", "s1: start vol1 standby")
    assert "s1: hash-bkp vol0" in plan.actions[4].calls
    assert "p0: archive-info delete vol0 a1 (stops its synchronization)" in \
        plan.actions[4].calls
    assert plan.notes[0].startswith("a1 no longer synchronizes vol0")
    assert "replicate vol0 --to a1 --sync" in plan.notes[0]


def test_a_storage_replace_run_again_after_go_standby_still_backs_the_volume_up() -> None:
    plan = plan_replace(storage_seen(
        VolumeSeen("vol0", "Standby", new_state="Standby", device="/d", was_target=True),
        new_running=True))
    assert ops(plan) == [("hash-backup", "s1", "vol0"), ("stop-server", "s0", "")]


def test_a_storage_replace_refuses_volumes_it_cannot_carry() -> None:
    plan = plan_replace(storage_seen(
        VolumeSeen("v0", "FullSync", device="/d"),
        VolumeSeen("v1", "Stopped", device="/d"),
        VolumeSeen("v2", "Target", device="/d", others={"s9": "Target"}),
        VolumeSeen("v3", "Target", device=""),
        VolumeSeen("v4", "Clear")))
    assert plan.actions == ()
    got = [r.message for r in plan.refusals]
    assert len(got) == 4
    assert got[0].startswith("s0 has v0 in state FullSync")
    assert got[1].startswith("s0 has v1 Stopped: the replace carries target volumes")
    assert got[2].startswith("v2 is Target on s0 but not Standby or Clear on s9 (Target)")
    assert got[3] == "no walb device is known for v3 on hX"
    assert plan.refusals[3].fix == "give it with --device v3=PATH"


def test_an_archive_the_policy_names_is_renamed_there_too() -> None:
    text = LAYOUT + ("monitor: {host: hS0}\n"
                     "policy:\n"
                     "  replicate: {to: [a1]}   # the copies\n"
                     "  verify: {archive: a1}\n"
                     "  volumes:\n"
                     "    vol0: {replicate: {to: [a1]}, keep_period: 30d}\n")
    edit = move_server(text, "f.yaml", load_layout(text), "a1", "hX", "a2")
    assert edit.new_text is not None
    assert edit.new_text == text.replace("a1, host: hA1", "a2, host: hX").replace(
        "[a1]", "[a2]").replace("archive: a1", "archive: a2")
    assert "policy.verify.archive (line 21): a1 -> a2" in edit.changes
    assert "policy.volumes.vol0.replicate.to[0] (line 23): a1 -> a2" in edit.changes
    moved = load_layout(edit.new_text)
    assert moved.spec.policy is not None and moved.spec.policy.replicate is not None
    assert moved.spec.policy.replicate.to == ["a2"]


def test_a_state_the_server_did_not_tell_is_refused_not_guessed() -> None:
    plan = plan_replace(proxy_seen(VolumeSeen("vol0", "unknown", archives=("a0",))))
    assert plan.actions == ()
    assert plan.refusals[0].message == "p0 did not say the state of vol0"
