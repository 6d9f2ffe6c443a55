"""walbctr's own state on the controller: rendered compose files, the group lock, the
hosts in maintenance.

Nothing here trusts what it finds. The state dir and each group dir are made 0700, and
one that exists must be a directory (not a symlink) owned by the euid that no group or
other may write (checked once per process). Every file is written whole through a new
temp file (mkstemp: O_CREAT|O_EXCL|O_NOFOLLOW, mode 0600) renamed over it, so a symlink
planted at a name is replaced, never followed; files are read with O_NOFOLLOW, and the
lock file is opened with O_NOFOLLOW and never truncated through a link.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import stat
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO

from walbctr.errors import WalbctrError

_PRIVATE_FILE = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # O_NONBLOCK: a FIFO never hangs
_checked: set[Path] = set()


def state_dir() -> Path:
    explicit = os.environ.get("WALBCTR_STATE_DIR")
    if explicit:
        return Path(explicit)
    if os.geteuid() == 0:
        return Path("/var/lib/walbctr")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "walbctr"


def private_dir(path: Path) -> Path:
    """`path`, made 0700 if missing; refused unless a directory only the euid may write."""
    if path in _checked:
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700)
        st = path.lstat()
    except OSError as err:
        raise WalbctrError(f"cannot make walbctr's state directory {path}: {err}",
                           "set WALBCTR_STATE_DIR to a directory you may write") from None
    _refuse_untrusted_dir(path, st)
    _checked.add(path)
    return path


def _refuse_untrusted_dir(path: Path, st: os.stat_result) -> None:
    euid = os.geteuid()
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        what = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory"
        problem, fix = what, (f"replace it with a real directory ('rm {path} && mkdir -m 700 "
                              f"{path}'), or set WALBCTR_STATE_DIR to one")
    elif st.st_uid != euid:
        problem = f"owned by uid {st.st_uid}, not by this walbctr's uid {euid}"
        fix = f"run 'chown {euid} {path}' if its content is yours, or set WALBCTR_STATE_DIR"
    elif st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        problem = f"writable by its group or others (mode {stat.S_IMODE(st.st_mode):04o})"
        fix = f"run 'chmod 700 {path}', or set WALBCTR_STATE_DIR to another directory"
    else:
        return
    raise WalbctrError(
        f"walbctr's state directory {path} is {problem}; walbctr keeps its compose files, "
        "the group lock and the upgrade plan there and trusts only a directory that no one "
        "else may change, so it did nothing", fix)


def group_dir(group: str) -> Path:
    return private_dir(private_dir(state_dir()) / group)


def write_private(path: Path, text: str, mode: int = 0o600) -> None:
    """Replace `path` with `text` whole: a new temp file in its dir (made 0600 with O_EXCL
    and O_NOFOLLOW, then given `mode`), synced, renamed over `path`.

    A symlink (or anything else) at `path` is replaced, never written through.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if mode != 0o600:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_private(path: Path) -> str | None:
    """The text of the file walbctr wrote at `path`, None if there is none.

    Refused (WalbctrError): a symlink, anything but a regular file, a file another uid owns.
    """
    try:
        fd = os.open(path, os.O_RDONLY | _PRIVATE_FILE)
    except FileNotFoundError:
        return None
    except OSError as err:
        if err.errno != errno.ELOOP:
            raise
        raise _foreign(path, "a symlink") from None
    with os.fdopen(fd, "r", encoding="utf-8", errors="replace") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _foreign(path, "not a regular file")
        if st.st_uid != os.geteuid():
            raise _foreign(path, f"owned by uid {st.st_uid}, not {os.geteuid()}")
        return f.read()


def _foreign(path: Path, problem: str) -> WalbctrError:
    return WalbctrError(f"{path} is {problem}, so walbctr did not write it and will not "
                        "use it", f"look at it, then remove it ('rm {path}') and run this again")


def open_lock(path: Path) -> IO[str]:
    """The lock file at `path`, opened (made 0600) without following a symlink or truncating."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | _PRIVATE_FILE, 0o600)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise _foreign(path, "a symlink") from None
        raise WalbctrError(f"cannot open the group lock {path}: {err}",
                           "set WALBCTR_STATE_DIR to a directory you may write") from None
    f = os.fdopen(fd, "r+", encoding="utf-8", errors="replace")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        f.close()
        raise _foreign(path, "not a regular file")
    return f


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
        data = json.loads(read_private(_ready_file(group)) or "{}")
    except (OSError, ValueError, WalbctrError):
        return {}
    if not isinstance(data, dict):
        return {}
    # Anything else (a file an older walbctr wrote, keyed by container) only costs a probe.
    return {str(sid): (str(run[0]), str(run[1])) for sid, run in data.items()
            if isinstance(run, list) and len(run) == 2}


def record_ready(group: str, runs: dict[str, tuple[str, str]]) -> None:
    """Set server id -> (container id, start time) for the runs that just answered."""
    merged = {**seen_ready(group), **runs}
    # Best effort: a state dir that cannot be written only costs a probe later.
    with contextlib.suppress(OSError):
        write_private(group_dir(group) / "ready.json", json.dumps(merged, sort_keys=True))


class GroupLock:
    """One `up`, `down` or `restart` at a time per group on this controller."""

    def __init__(self, group: str, command: str) -> None:
        self.group = group
        self.command = command
        self.path = state_dir() / f"{group}.lock"
        self.file: IO[str] | None = None

    def __enter__(self) -> GroupLock:
        private_dir(self.path.parent)
        f = open_lock(self.path)
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


# --- hosts in maintenance ---------------------------------------------------------------

MAINTENANCE_FILE = "maintenance.json"


@dataclass(frozen=True)
class Maintenance:
    """A host that `walbctr maintenance enter` took down: what it stopped, and how to undo.

    `servers` are in the order they were stopped (storages, proxies, archives);
    `policies` the restart policy each had before it was set to 'no', for `exit` to put
    back; `silence` the Alertmanager silence id, when one was made; `volumes` each
    volume's state before the stop, which `exit` checks (as `upgrade` does).
    """

    host: str
    since: str  # UTC, 2025-01-31T12:00:00Z
    servers: tuple[str, ...]
    policies: dict[str, str] = field(default_factory=dict)
    silence: str = ""
    volumes: dict[str, dict[str, str]] = field(default_factory=dict)  # server -> vol -> state


def _maintenance_path(group: str) -> Path:
    return group_dir(group) / MAINTENANCE_FILE


def read_maintenance(group: str) -> dict[str, Maintenance]:
    """host -> its maintenance record, for every host of `group` in maintenance."""
    path = _maintenance_path(group)
    try:
        data = json.loads(read_private(path) or "{}")
        return {str(h): Maintenance(str(r["host"]), str(r["since"]),
                                    tuple(str(s) for s in r["servers"]),
                                    {str(k): str(v) for k, v in r.get("policies", {}).items()},
                                    str(r.get("silence", "")),
                                    {str(sid): {str(v): str(st) for v, st in vols.items()}
                                     for sid, vols in r.get("volumes", {}).items()})
                for h, r in data.get("hosts", {}).items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        # Guessing here could start a host the operator is working on: refuse instead.
        raise WalbctrError(
            f"the maintenance record {path} cannot be read: {err}",
            "look at it: it lists the hosts 'walbctr maintenance enter' took down; fix it "
            "or move it away (then no host counts as in maintenance)") from None


def write_maintenance(group: str, records: dict[str, Maintenance]) -> None:
    path = _maintenance_path(group)
    try:
        if not records:
            path.unlink(missing_ok=True)
            return
        data = {"group": group, "hosts": {h: {**asdict(r), "servers": list(r.servers)}
                                          for h, r in sorted(records.items())}}
        write_private(path, json.dumps(data, indent=1) + "\n")
    except OSError as err:
        raise WalbctrError(f"cannot write the maintenance record {path}: {err}",
                           "set WALBCTR_STATE_DIR to a writable directory") from None


def maintained_servers(group: str) -> dict[str, Maintenance]:
    """server id -> the maintenance record of its host."""
    return {sid: r for r in read_maintenance(group).values() for sid in r.servers}


def refuse_maintained(group: str, server_ids: Iterable[str], command: str,
                      source: str) -> None:
    """`up`, `restart` and `upgrade` leave a host in maintenance alone: starting its
    servers behind the operator's back is what maintenance mode is there to prevent."""
    held = read_maintenance(group)
    wanted = set(server_ids)
    hit = {h: r for h, r in held.items() if wanted & set(r.servers)}
    if not hit:
        return
    what = "; ".join(f"host {h} (since {r.since}: {', '.join(r.servers)})"
                     for h, r in sorted(hit.items()))
    exits = " and ".join(f"'walbctr maintenance exit {source} {h}'" for h in sorted(hit))
    raise WalbctrError(
        f"'walbctr {command}' would start servers of a host in maintenance: {what}; "
        "nothing was changed",
        f"end the maintenance first ({exits}), or leave those servers out (--host of "
        "another host, or name the other servers)")
