"""The controller's state dir (walbctr/docker/state.py): the runs walbctr saw answer, and
what it refuses to trust there."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from walbctr.docker.compose_files import write_files
from walbctr.docker.state import GroupLock, group_dir, record_ready, seen_ready
from walbctr.errors import WalbctrError


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("WALBCTR_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file outside the state dir that a planted symlink points at."""
    path = tmp_path / "victim"
    path.write_text("precious\n")
    return path


def test_a_servers_next_run_replaces_its_entry_so_the_file_never_outgrows_the_group() -> None:
    record_ready("g", {"a0": ("c1", "t1"), "p0": ("c2", "t2")})
    record_ready("g", {"a0": ("c3", "t3")})  # a0 recreated
    assert seen_ready("g") == {"a0": ("c3", "t3"), "p0": ("c2", "t2")}


def test_a_missing_or_foreign_file_means_nothing_was_seen(state_dir: Path) -> None:
    assert seen_ready("g") == {}
    (state_dir / "g").mkdir(parents=True)
    # An older walbctr keyed the file by container id: it only costs a probe.
    (state_dir / "g" / "ready.json").write_text('{"c1": "t1", "a0": ["c2", "t2"]}')
    assert seen_ready("g") == {"a0": ("c2", "t2")}
    (state_dir / "g" / "ready.json").write_text("not json")
    assert seen_ready("g") == {}


def test_the_state_dir_and_a_group_dir_are_made_readable_by_their_owner_only(
        state_dir: Path) -> None:
    group_dir("g")
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((state_dir / "g").stat().st_mode) == 0o700


def test_a_state_dir_anyone_may_write_is_refused_with_the_chmod_that_fixes_it(
        state_dir: Path) -> None:
    state_dir.mkdir()
    state_dir.chmod(0o777)
    with pytest.raises(WalbctrError, match="writable by its group or others") as err:
        group_dir("g")
    assert str(state_dir) in err.value.message
    assert f"chmod 700 {state_dir}" in err.value.fix
    assert not (state_dir / "g").exists()


def test_a_group_dir_its_group_may_write_is_refused_before_the_lock_is_taken(
        state_dir: Path) -> None:
    (state_dir / "g").mkdir(parents=True)
    (state_dir / "g").chmod(0o770)
    with pytest.raises(WalbctrError, match="chmod 700"):
        record_ready("g", {"a0": ("c1", "t1")})
    assert list((state_dir / "g").iterdir()) == []


def test_a_state_dir_that_is_a_symlink_is_refused(state_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    state_dir.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(WalbctrError, match="is a symlink"), GroupLock("g", "up"):
        pass
    assert list((tmp_path / "elsewhere").iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a dir to another uid needs root")
def test_a_state_dir_another_uid_owns_is_refused_with_the_chown_that_fixes_it(
        state_dir: Path) -> None:
    state_dir.mkdir(mode=0o700)
    os.chown(state_dir, 12345, 12345)
    with pytest.raises(WalbctrError, match="owned by uid 12345") as err:
        group_dir("g")
    assert f"chown {os.geteuid()} {state_dir}" in err.value.fix


def test_a_symlink_at_the_lock_file_is_refused_and_its_target_untouched(
        state_dir: Path, victim: Path) -> None:
    state_dir.mkdir(mode=0o700)
    (state_dir / "g.lock").symlink_to(victim)
    with pytest.raises(WalbctrError, match="is a symlink"), GroupLock("g", "up"):
        pass
    assert victim.read_text() == "precious\n"


def test_a_symlink_at_a_compose_file_is_refused_and_its_target_untouched(
        state_dir: Path, victim: Path) -> None:
    (group_dir("g") / "h1.yaml").symlink_to(victim)
    with pytest.raises(WalbctrError, match="is a symlink"):
        write_files(group_dir("g"), {"h1.yaml": "services: {}\n"})
    assert victim.read_text() == "precious\n"


def test_a_compose_file_is_written_whole_by_rename_and_readable_by_its_owner_only(
        state_dir: Path) -> None:
    from walbctr.docker.compose_files import write_compose_files
    from walbctr.layout.loader import read_layout

    layout = read_layout(Path(__file__).parent.parent / "examples" / "minimal.yaml")
    paths = write_compose_files(layout, layout.used_hosts)
    for path in paths.values():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert {p.name for p in group_dir(layout.group).iterdir()} == {
        p.name for p in paths.values()}  # no temp file left behind


def test_a_symlink_at_ready_tmp_or_ready_json_leaves_its_target_untouched(
        state_dir: Path, victim: Path) -> None:
    (group_dir("g") / "ready.tmp").symlink_to(victim)  # the temp name walbctr once used
    record_ready("g", {"a0": ("c1", "t1")})
    assert victim.read_text() == "precious\n"
    assert seen_ready("g") == {"a0": ("c1", "t1")}
    (group_dir("g") / "ready.json").unlink()
    (group_dir("g") / "ready.json").symlink_to(victim)
    assert seen_ready("g") == {}  # a link is not read
    record_ready("g", {"p0": ("c2", "t2")})
    assert victim.read_text() == "precious\n"
    assert not (group_dir("g") / "ready.json").is_symlink()


def _plan(group: str) -> str:
    return json.dumps({"group": group, "layout": "l.yaml", "image": "new:2",
                       "created": "2026-01-01T00:00:00Z", "steps": []})


def test_an_upgrade_plan_for_another_group_is_refused() -> None:
    from walbctr.commands.upgrade import load_plan, plan_path

    plan_path("g").write_text(_plan("other"))
    with pytest.raises(WalbctrError, match="for group 'other', not 'g'"):
        load_plan("g")


def test_a_symlink_at_the_upgrade_plan_is_refused_even_to_this_groups_plan(
        tmp_path: Path) -> None:
    from walbctr.commands.upgrade import load_plan, plan_path

    (tmp_path / "swapped.json").write_text(_plan("g"))
    plan_path("g").symlink_to(tmp_path / "swapped.json")
    with pytest.raises(WalbctrError, match="is a symlink"):
        load_plan("g")


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another uid needs root")
def test_an_upgrade_plan_another_uid_owns_is_refused() -> None:
    from walbctr.commands.upgrade import load_plan, plan_path

    plan_path("g").write_text(_plan("g"))
    os.chown(plan_path("g"), 12345, 12345)
    with pytest.raises(WalbctrError, match="owned by uid 12345"):
        load_plan("g")


def test_the_lock_holder_is_read_without_taking_the_lock_and_a_dead_holder_is_none(
        state_dir: Path) -> None:
    from walbctr.docker.state import lock_holder

    assert lock_holder("g") is None
    with GroupLock("g", "upgrade"):
        assert lock_holder("g") == ("upgrade", os.getpid())
        with pytest.raises(WalbctrError, match="busy"):  # still held: reading took nothing
            GroupLock("g", "up").__enter__()
    assert lock_holder("g") is None
    # A holder killed without its cleanup leaves its text behind; its pid is gone.
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)
    (state_dir / "g.lock").write_text(f"'walbctr upgrade' (pid {dead}) is running on it")
    assert lock_holder("g") is None


def test_a_pause_request_is_a_file_the_group_lock_does_not_guard(victim: Path) -> None:
    from walbctr.commands.upgrade import (
        pause_path,
        pause_requested,
        request_pause,
        withdraw_pause,
    )
    from walbctr.layout.loader import load_layout

    layout = load_layout("group: g\narchives: [{id: a0, host: h, vg: vg0}]\n", "l.yaml")
    with GroupLock("g", "upgrade"):  # held, as by a running upgrade
        said = request_pause(layout)
    assert f"(pid {os.getpid()}) stops after the server it is on" in said
    assert pause_requested("g")
    assert stat.S_IMODE(pause_path("g").stat().st_mode) == 0o600
    assert "requested" in json.loads(pause_path("g").read_text())
    assert withdraw_pause("g") and not pause_requested("g") and not withdraw_pause("g")
    assert "no upgrade runs on it now, so the next 'walbctr upgrade l.yaml' stops before " \
        "its first server" in request_pause(layout)
    # A symlink planted at the name is replaced, never written through; it still counts.
    withdraw_pause("g")
    pause_path("g").symlink_to(victim)
    assert pause_requested("g")
    request_pause(layout)
    assert victim.read_text() == "precious\n" and not pause_path("g").is_symlink()
    withdraw_pause("g")
    assert victim.read_text() == "precious\n"
