"""The controller's state dir: the runs walbctr saw answer (walbctr/docker/state.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from walbctr.docker.state import record_ready, seen_ready


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("WALBCTR_STATE_DIR", str(tmp_path))
    return tmp_path


def test_a_servers_next_run_replaces_its_entry_so_the_file_never_outgrows_the_group() -> None:
    record_ready("g", {"a0": ("c1", "t1"), "p0": ("c2", "t2")})
    record_ready("g", {"a0": ("c3", "t3")})  # a0 recreated
    assert seen_ready("g") == {"a0": ("c3", "t3"), "p0": ("c2", "t2")}


def test_a_missing_or_foreign_file_means_nothing_was_seen(state_dir: Path) -> None:
    assert seen_ready("g") == {}
    (state_dir / "g").mkdir()
    # An older walbctr keyed the file by container id: it only costs a probe.
    (state_dir / "g" / "ready.json").write_text('{"c1": "t1", "a0": ["c2", "t2"]}')
    assert seen_ready("g") == {"a0": ("c2", "t2")}
    (state_dir / "g" / "ready.json").write_text("not json")
    assert seen_ready("g") == {}
