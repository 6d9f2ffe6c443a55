"""walbctr's own state on the controller: rendered compose files and the group lock."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from types import TracebackType
from typing import IO

from walbctr.errors import WalbctrError


def state_dir() -> Path:
    explicit = os.environ.get("WALBCTR_STATE_DIR")
    if explicit:
        return Path(explicit)
    if os.geteuid() == 0:
        return Path("/var/lib/walbctr")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "walbctr"


def group_dir(group: str) -> Path:
    path = state_dir() / group
    path.mkdir(parents=True, exist_ok=True)
    return path


def _ready_file(group: str) -> Path:
    return state_dir() / group / "ready.json"


def seen_ready(group: str) -> dict[str, tuple[str, str]]:
    """server id -> (container id, start time) of the last run walbctr saw answer its
    readiness probe.

    Docker's health stays 'starting' until its first check, up to one interval after a
    start; a run walbctr itself saw answer need not be asked again in that time. One entry
    per server, replaced by its next run, so the file never outgrows the group.
    """
    try:
        data = json.loads(_ready_file(group).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    # Anything else (a file an older walbctr wrote, keyed by container) only costs a probe.
    return {str(sid): (str(run[0]), str(run[1])) for sid, run in data.items()
            if isinstance(run, list) and len(run) == 2}


def record_ready(group: str, runs: dict[str, tuple[str, str]]) -> None:
    """Set server id -> (container id, start time) for the runs that just answered."""
    merged = {**seen_ready(group), **runs}
    path = _ready_file(group)
    # Best effort: a state dir that cannot be written only costs a probe later.
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(merged, sort_keys=True), encoding="utf-8")
        tmp.replace(path)


class GroupLock:
    """One `up`, `down` or `restart` at a time per group on this controller."""

    def __init__(self, group: str, command: str) -> None:
        self.group = group
        self.command = command
        self.path = state_dir() / f"{group}.lock"
        self.file: IO[str] | None = None

    def __enter__(self) -> GroupLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = self.path.open("a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another walbctr"
            f.close()
            raise WalbctrError(
                f"group {self.group!r} is busy: {holder}",
                "wait for it to finish, then run this again",
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"'walbctr {self.command}' (pid {os.getpid()}) is running on it")
        f.flush()
        self.file = f
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.file is not None:
            self.file.seek(0)
            self.file.truncate()
            fcntl.flock(self.file, fcntl.LOCK_UN)
            self.file.close()
