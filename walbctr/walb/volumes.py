"""What walb servers say about their volumes: parsers of walbc's answers, one batch query per
server, and the problems an operator must act on, with walb's remedy.

Pure: no I/O. The formats are walb-tools v1.0.19's (file:line at tag v1.0.19):
- `get vol`, `archive-info list VOL`: one name a line, nothing when empty;
- `get state VOL`: one word (`Clear` for an unknown volume);
- `get is-overflow VOL`, `get is-wdiff-send-error VOL ARCHIVE`: `0` or `1`;
- `get num-action VOL ACTION`: a count;
- `get ts-delta` (src/ts_delta.hpp:29-59): LTSV `name dest kind dest_kind gid ts dest_gid
  dest_ts ts_delta`, or `... ts dest_ts: dest_gid: ts_delta:` when the destination has no
  snapshot yet; times `YYYY-MM-DDTHH:MM:SS` in UTC (include/time.hpp:81);
- `get base-all` (src/archive.cpp:1696-1707): LTSV `name metastate`, the MetaState
  `<|GID|>-YYYYMMDDHHMMSS`, `<|B,E|>-...` or, while applying, `<|B|-->|E|>-...`
  (src/meta.hpp:135-146, 335-346);
- `get restorable VOL` (src/archive.cpp:545-556): `GID TIME 0|1` (explicit snapshot);
- `get all-actions` (src/archive.cpp:1594-1605, src/server_util.cpp:73-85): per active
  volume `VOL Merge N TIME Apply N TIME Restore N TIME ReplSyncAsClient N TIME Resize N TIME`;
- errors: `ERROR walbc error: c2xGetClient:FUNCTION:bad state:...` on stderr, exit 1,
  followed by `<<<STACKTRACE>>>` lines (binsrc/walbc.cpp:354-356).

This module is also copied alone into the keeper's image: it imports the stdlib only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

ROLES = ("storage", "proxy", "archive")
ARCHIVE_ACTIONS = ("Merge", "Apply", "Restore", "ReplSyncAsClient", "Resize")
ERROR_PREFIX = "ERROR walbc error: "

# --- single answers ---------------------------------------------------------------------------


def parse_names(text: str) -> list[str]:
    """`get vol` or `archive-info list VOL`: one name a line; nothing means none."""
    names = [line.strip() for line in text.splitlines() if line.strip()]
    for name in names:
        if any(c.isspace() for c in name):
            raise ValueError(f"not a volume or archive name: {name!r}")
    return names


def parse_state(text: str) -> str:
    """`get state VOL`: one word."""
    words = text.split()
    if len(words) != 1 or not words[0].isalpha():
        raise ValueError(f"not a walb state: {text.strip()!r}")
    return words[0]


def parse_flag(text: str) -> bool:
    """`get is-overflow VOL` or `get is-wdiff-send-error VOL ARCHIVE`: 0 or 1."""
    value = text.strip()
    if value not in ("0", "1"):
        raise ValueError(f"expected 0 or 1, got {value!r}")
    return value == "1"


def parse_count(text: str) -> int:
    """`get num-action VOL ACTION` (and other counts): a non-negative integer."""
    value = text.strip()
    if not value.isdigit():
        raise ValueError(f"expected a count, got {value!r}")
    return int(value)


def parse_time(text: str) -> datetime | None:
    """walb's printable time, `YYYY-MM-DDTHH:MM:SS` in UTC; `---` (never) is None."""
    if text == "---":
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"not a walb time: {text!r}") from None


def parse_ltsv(line: str) -> dict[str, str]:
    """One LTSV record: `label:value` fields separated by tabs (a value may hold ':')."""
    record: dict[str, str] = {}
    for item in line.split("\t"):
        label, sep, value = item.partition(":")
        if not sep or not label:
            raise ValueError(f"not an LTSV field: {item!r} in {line!r}")
        record[label] = value
    return record


@dataclass(frozen=True)
class TsDelta:
    """One line of `get ts-delta`: how far `dest` is behind this server for a volume."""

    name: str
    dest: str
    kind: str  # 'storage' or 'archive': the server that answered
    dest_kind: str  # always 'archive'
    gid: int  # latest snapshot here
    ts: datetime
    dest_gid: int | None  # None: the destination has no snapshot of the volume yet
    dest_ts: datetime | None
    delta_s: int | None  # ts - dest_ts, seconds


def parse_ts_delta(text: str) -> list[TsDelta]:
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        r = parse_ltsv(line)
        try:
            ts = parse_time(r["ts"])
            if ts is None:
                raise ValueError("ts is '---'")
            known = r["ts_delta"] != ""
            out.append(TsDelta(
                name=r["name"], dest=r["dest"], kind=r["kind"], dest_kind=r["dest_kind"],
                gid=int(r["gid"]), ts=ts,
                dest_gid=int(r["dest_gid"]) if known else None,
                dest_ts=parse_time(r["dest_ts"]) if known else None,
                delta_s=int(r["ts_delta"]) if known else None))
        except KeyError as err:
            raise ValueError(f"ts-delta line without {err}: {line!r}") from None
        except ValueError as err:
            raise ValueError(f"bad ts-delta line ({err}): {line!r}") from None
    return out


_META_STATE = re.compile(r"<\|(\d+)(?:,(\d+))?\|(?:-->\|(\d+)(?:,(\d+))?\|)?>-(\d{14})")


@dataclass(frozen=True)
class BaseState:
    """One line of `get base-all`: the base image's MetaState of an archived volume."""

    name: str
    metastate: str  # as printed, e.g. '<|3|>-20231114221320'
    gid: int  # the base snapshot's first gid
    applying_to: int | None  # while an apply runs: the gid being applied up to
    timestamp: datetime


def parse_metastate(text: str) -> tuple[int, int | None, datetime]:
    m = _META_STATE.fullmatch(text)
    if not m:
        raise ValueError(f"not a walb MetaState: {text!r}")
    stamp = datetime.strptime(m.group(5), "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    return int(m.group(1)), int(m.group(3)) if m.group(3) else None, stamp


def parse_base_all(text: str) -> list[BaseState]:
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        r = parse_ltsv(line)
        if "name" not in r or "metastate" not in r:
            raise ValueError(f"base-all line without name or metastate: {line!r}")
        gid, applying, stamp = parse_metastate(r["metastate"])
        out.append(BaseState(r["name"], r["metastate"], gid, applying, stamp))
    return out


@dataclass(frozen=True)
class Snapshot:
    """One line of `get restorable VOL`."""

    gid: int
    time: datetime | None
    explicit: bool


def parse_restorable(text: str) -> list[Snapshot]:
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 3 or not parts[0].isdigit() or parts[2] not in ("0", "1"):
            raise ValueError(f"not a restorable snapshot line (GID TIME 0|1): {line!r}")
        out.append(Snapshot(int(parts[0]), parse_time(parts[1]), parts[2] == "1"))
    return out


def parse_all_actions(text: str) -> dict[str, dict[str, int]]:
    """`get all-actions`: volume -> action -> number running (active volumes only)."""
    out: dict[str, dict[str, int]] = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if (len(parts) - 1) % 3 != 0:
            raise ValueError(f"not an all-actions line (VOL ACTION N TIME...): {line!r}")
        counts = {}
        for i in range(1, len(parts), 3):
            action, count, _since = parts[i:i + 3]
            counts[action] = parse_count(count)
        out[parts[0]] = counts
    return out


@dataclass(frozen=True)
class StatusVolume:
    """A volume line of `walbc status` (and, on a proxy, its archive lines)."""

    name: str
    state: str
    fields: Mapping[str, str]  # the other 'key value' pairs of the line
    archives: tuple[str, ...] = ()  # proxy


def parse_status_volumes(text: str) -> dict[str, StatusVolume]:
    """The "-----Volume-----" section of `walbc status` (src/archive.cpp:1446-1483,
    src/proxy.cpp:691-723, src/storage.cpp:607-632): `volume NAME state STATE key value...`
    per volume that is not Clear; on a proxy, `  archive ID action ...` lines follow."""
    out: dict[str, StatusVolume] = {}
    inside = False
    current: str | None = None
    for line in text.splitlines():
        words = line.split()
        if not words:
            continue
        if words[0].startswith("-----"):
            inside = words[0] == "-----Volume-----"
            continue
        if not inside:
            continue
        if words[0] == "volume":
            if len(words) < 4 or words[2] != "state":
                raise ValueError(f"not a status volume line: {line!r}")
            pairs = dict(zip(words[4::2], words[5::2], strict=False))
            out[words[1]] = StatusVolume(words[1], words[3], pairs)
            current = words[1]
        elif words[0] == "archive" and current is not None and len(words) >= 2:
            vol = out[current]
            out[current] = replace(vol, archives=(*vol.archives, words[1]))
    return out


def walbc_error(stderr: str) -> str:
    """The message of walbc's error, without 'ERROR walbc error: ' and stack traces.
    Real walbc stamps the line first (`2026-12-07 09:27:42.799 ERROR walbc error: ...`)."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for line in lines:
        at = line.find(ERROR_PREFIX)
        if at >= 0:
            return line[at + len(ERROR_PREFIX):]
    useful = [ln for ln in lines
              if not ln.startswith("<<<STACKTRACE>>>") and not re.fullmatch(r"retry \d+", ln)]
    return useful[-1] if useful else "no message"


# --- one batch query per server --------------------------------------------------------------
#
# One process per server gathers every volume's facts: a constant POSIX sh script that runs
# walbc against ADDRESS PORT (passed as arguments, never pasted into the script) and prints
# one section per query:  '@@ KEY' / the query's output (stdout and stderr) / '@@rc STATUS',
# and '@@end' last, so that a cut-off answer is noticed. Queries that take -retry get
# '-retry 0' (walbc's default retries would print errors twice).
# Every walbc call costs a process and a connection, so every server's volumes' states (and
# a proxy's archive infos) come from one `status` (upstream's "-----Volume-----" section,
# which leaves out Clear volumes) instead of one call per volume; a storage's status reads
# every walb device's log counters, so when it fails (a device gone) its volumes' states are
# asked one by one instead.
# Per-volume queries run in four workers (`par`), each writing its sections to a file of
# its own under /tmp (a tmpfs in the read-only containers), printed whole in turn: a
# server answers many connections at once, and one walbc call costs a few ms of start-up.

_PRELUDE = r"""set -f
a=$1 p=$2
sec() { printf '@@ %s\n' "$1"; [ -n "$2" ] && printf '%s\n' "$2"; printf '@@rc %s\n' "$3"; }
q() { printf '@@ %s\n' "$1"; shift; walbc -a "$a" -p "$p" -to 10 -retry 0 "$@" 2>&1
      printf '@@rc %s\n' "$?"; }
g() { k=$1; shift; q "$k" get "$@"; }
par() { f=$1; shift
  d=$(mktemp -d 2>/dev/null) || { for x in "$@"; do "$f" "$x"; done; return; }
  i=0; for x in "$@"; do printf '%s\n' "$x" >> "$d/w$((i % 4))"; i=$((i + 1)); done
  for n in 0 1 2 3; do w=$d/w$n; [ -f "$w" ] || continue
    ( while read -r x; do "$f" "$x"; done < "$w" > "$w.out" ) & done
  wait; for n in 0 1 2 3; do [ -f "$d/w$n.out" ] && cat "$d/w$n.out"; done; rm -rf "$d"; }
vols=$(walbc -a "$a" -p "$p" -to 10 -retry 0 get vol 2>&1); rc=$?
sec vol "$vols" $rc
[ $rc = 0 ] || { echo @@end; exit 0; }
"""

_PER_ROLE = {
    "storage": r"""g ts-delta ts-delta
rc=1
if [ -n "$vols" ]; then
  st=$(walbc -a "$a" -p "$p" -to 10 -retry 0 status 2>&1); rc=$?
  sec status "$st" $rc
fi
if [ $rc = 0 ]; then one() { g "overflow $1" is-overflow "$1"; }
else one() { g "state $1" state "$1"; g "overflow $1" is-overflow "$1"; }; fi
par one $vols
""",
    "proxy": r"""[ -n "$vols" ] || { echo @@end; exit 0; }
st=$(walbc -a "$a" -p "$p" -to 10 -retry 0 status 2>&1); rc=$?
sec status "$st" $rc
[ $rc = 0 ] || { echo @@end; exit 0; }
pairs=$(printf '%s\n' "$st" | { in=; v=
  while read -r w1 w2 rest; do
    case $w1 in -----Volume-----) in=1; continue;; -----*) in=; continue;; esac
    [ -n "$in" ] || continue
    case $w1 in
      volume) v=$w2;;
      archive) printf '%s/%s\n' "$v" "$w2";;
    esac
  done; })
one() { g "send-error ${1%/*} ${1#*/}" is-wdiff-send-error "${1%/*}" "${1#*/}"; }
par one $pairs
""",
    "archive": r"""g ts-delta ts-delta
g base-all base-all
g all-actions all-actions
[ -n "$vols" ] && q status status
one() { g "restorable $1" restorable "$1"; }
par one $vols
""",
}

BATCH_SCRIPTS = {role: _PRELUDE + body + "echo @@end\n" for role, body in _PER_ROLE.items()}


def batch_argv(role: str, address: str, port: int) -> list[str]:
    """The argv (for `docker exec`, or run next to walbc) that queries every volume of one
    server at ADDRESS:PORT in a single process. Values are arguments, not script text."""
    if role not in BATCH_SCRIPTS:
        raise ValueError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    return ["sh", "-c", BATCH_SCRIPTS[role], "sh", address, str(port)]


Question = Callable[[Sequence[str]], tuple[int, str]]  # walbc ARGS -> (status, output)


def batch_text(role: str, question: Question) -> str:
    """What batch_argv(role, ...)'s script prints, with each walbc call made by `question`
    (the keeper asks on walb's wire protocol, in its own process). The same questions in
    the same order of dependence, so parse_batch reads either alike; a question that raises
    ends the batch (the caller treats that as a failed scan)."""
    if role not in BATCH_SCRIPTS:
        raise ValueError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    out: list[str] = []

    def q(key: str, *args: str) -> tuple[int, str]:
        status, text = question(list(args))
        out.append(f"@@ {key}\n" + text + ("\n" if text and not text.endswith("\n") else "")
                   + f"@@rc {status}\n")
        return status, text

    status, text = q("vol", "get", "vol")
    if status == 0:
        names = parse_names(text)
        _BATCH_BODY[role](q, names)
    return "".join(out) + "@@end\n"


def _storage_batch(q: Callable[..., tuple[int, str]], names: list[str]) -> None:
    q("ts-delta", "get", "ts-delta")
    listed = bool(names) and q("status", "status")[0] == 0
    for name in names:
        if not listed:
            q(f"state {name}", "get", "state", name)
        q(f"overflow {name}", "get", "is-overflow", name)


def _proxy_batch(q: Callable[..., tuple[int, str]], names: list[str]) -> None:
    if not names:
        return
    status, text = q("status", "status")
    if status != 0:
        return
    for vol in parse_status_volumes(text).values():
        for archive in vol.archives:
            q(f"send-error {vol.name} {archive}", "get", "is-wdiff-send-error", vol.name,
              archive)


def _archive_batch(q: Callable[..., tuple[int, str]], names: list[str]) -> None:
    q("ts-delta", "get", "ts-delta")
    q("base-all", "get", "base-all")
    q("all-actions", "get", "all-actions")
    if names:
        q("status", "status")
    for name in names:
        q(f"restorable {name}", "get", "restorable", name)


_BATCH_BODY = {"storage": _storage_batch, "proxy": _proxy_batch, "archive": _archive_batch}


@dataclass(frozen=True)
class Answer:
    status: int
    text: str  # stdout and stderr of the walbc call

    @property
    def ok(self) -> bool:
        return self.status == 0

    @property
    def error(self) -> str:
        return walbc_error(self.text)


def split_sections(text: str) -> dict[str, Answer]:
    sections: dict[str, Answer] = {}
    key: str | None = None
    body: list[str] = []
    ended = False
    for line in text.splitlines():
        if line.startswith("@@rc "):
            status = line[5:].strip()
            if key is None or not status.isdigit():
                raise ValueError(f"batch output: stray {line!r}")
            sections[key] = Answer(int(status), "\n".join(body))
            key, body = None, []
        elif line.startswith("@@ "):
            if key is not None:
                raise ValueError(f"batch output: section {key!r} has no status")
            key = line[3:]
        elif line == "@@end":
            ended = True
        elif key is not None:
            body.append(line)
        elif line.strip():
            raise ValueError(f"batch output: text outside a section: {line!r}")
    if not ended or key is not None:
        raise ValueError("batch output is cut off (no '@@end'): the query did not finish")
    return sections


# section kind -> the walbc command it ran, for messages
_COMMANDS = {"state": "get state", "overflow": "get is-overflow", "restorable": "get restorable",
             "send-error": "get is-wdiff-send-error"}


@dataclass(frozen=True)
class VolumeRecord:
    """What one server says about one of its volumes. None: not asked, or not known."""

    name: str
    role: str
    state: str | None = None
    overflow: bool | None = None  # storage
    archives: tuple[str, ...] = ()  # proxy: its archive infos (from status)
    send_error: Mapping[str, bool] = field(default_factory=dict)  # proxy: archive -> flag
    ts_deltas: tuple[TsDelta, ...] = ()  # storage, archive
    running_actions: Mapping[str, int] = field(default_factory=dict)  # archive, > 0 only
    restorable: int | None = None  # archive: restorable snapshots
    latest_snapshot: datetime | None = None  # archive: newest restorable; storage: ts-delta ts
    base: BaseState | None = None  # archive
    # (query, walbc's error message); query is 'ts-delta', 'base-all', 'all-actions' or
    # 'status' for a server-wide query, else the walbc command ('get is-overflow VOL', ...)
    errors: tuple[tuple[str, str], ...] = ()

    @property
    def ts_delta_s(self) -> int | None:
        """The largest known lag of this volume to any destination, seconds."""
        known = [d.delta_s for d in self.ts_deltas if d.delta_s is not None]
        return max(known) if known else None


@dataclass(frozen=True)
class _ServerWide:
    """One batch's answers, with the server-wide ones parsed once for all its volumes."""

    sections: Mapping[str, Answer]
    deltas: Mapping[str, list[TsDelta]]
    bases: Mapping[str, BaseState]
    actions: Mapping[str, dict[str, int]]
    listed: Mapping[str, StatusVolume] | None  # None: status not asked, or it failed
    errors: tuple[tuple[str, str], ...]  # every volume's record carries these


def parse_batch(role: str, text: str) -> list[VolumeRecord]:
    """The records of every volume from the output of `batch_argv(role, ...)`'s command.
    A failed server-wide query (get vol) raises ValueError with walbc's message."""
    if role not in BATCH_SCRIPTS:
        raise ValueError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    sections = split_sections(text)
    names = _volume_names(sections)
    wide = _server_wide(role, names, sections)
    build = _RECORD_OF[role]
    records = []
    for name in names:
        errors = list(wide.errors)
        record = build(wide, name, errors)
        records.append(replace(record, errors=tuple(errors)))
    return records


def _volume_names(sections: Mapping[str, Answer]) -> list[str]:
    """Without the volume list there is nothing to report, so its failure is the batch's."""
    vol = sections.get("vol")
    if vol is None:
        raise ValueError("batch output has no 'get vol' section")
    if not vol.ok:
        raise ValueError(f"get vol failed: {vol.error}")
    return parse_names(vol.text)


def _wide_text(sections: Mapping[str, Answer], key: str,
               errors: list[tuple[str, str]]) -> str | None:
    """The text of server-wide query KEY, if it succeeded; a failure goes to errors."""
    answer = sections.get(key)
    if answer is not None and not answer.ok:
        errors.append((key, answer.error))
    return answer.text if answer is not None and answer.ok else None


def _server_wide(role: str, names: list[str], sections: Mapping[str, Answer]) -> _ServerWide:
    errors: list[tuple[str, str]] = []
    deltas = _ts_deltas(role, sections, errors)
    bases: dict[str, BaseState] = {}
    actions: dict[str, dict[str, int]] = {}
    if role == "archive":
        if (text := _wide_text(sections, "base-all", errors)) is not None:
            bases = {b.name: b for b in parse_base_all(text)}
        if (text := _wide_text(sections, "all-actions", errors)) is not None:
            actions = parse_all_actions(text)
    listed: dict[str, StatusVolume] | None = None
    if (names and (text := _wide_text(sections, "status", errors)) is not None):
        listed = parse_status_volumes(text)
    return _ServerWide(sections, deltas, bases, actions, listed, tuple(errors))


def _ts_deltas(role: str, sections: Mapping[str, Answer],
               errors: list[tuple[str, str]]) -> dict[str, list[TsDelta]]:
    """Each volume's lags, from the one ts-delta query of a storage or an archive."""
    deltas: dict[str, list[TsDelta]] = {}
    if (role in ("storage", "archive")
            and (text := _wide_text(sections, "ts-delta", errors)) is not None):
        for d in parse_ts_delta(text):
            deltas.setdefault(d.name, []).append(d)
    return deltas


def _ask(wide: _ServerWide, errors: list[tuple[str, str]], kind: str, name: str,
         extra: str = "") -> Answer | None:
    """The answer to KIND VOL [EXTRA], if it succeeded; a failure goes to errors."""
    got = wide.sections.get(f"{kind} {name} {extra}".rstrip())
    if got is not None and not got.ok:
        errors.append((f"{_COMMANDS[kind]} {name} {extra}".rstrip(), got.error))
    return got if got is not None and got.ok else None


def _listed_state(wide: _ServerWide, name: str) -> str | None:
    """A server's state of NAME from its status, which lists every volume but the Clear ones
    (all three roles: src/storage.cpp:607-632, proxy.cpp:691-723, archive.cpp:1446-1483)."""
    listed = wide.listed
    return None if listed is None else listed[name].state if name in listed else "Clear"


def _storage_record(wide: _ServerWide, name: str,
                    errors: list[tuple[str, str]]) -> VolumeRecord:
    # from status when it answered; asked per volume only when it did not
    got = _ask(wide, errors, "state", name) if wide.listed is None else None
    state = parse_state(got.text) if got else _listed_state(wide, name)
    deltas = tuple(wide.deltas.get(name, ()))
    got = _ask(wide, errors, "overflow", name)
    times = [d.ts for d in deltas]
    return VolumeRecord(name=name, role="storage", state=state, ts_deltas=deltas,
                        overflow=parse_flag(got.text) if got else None,
                        latest_snapshot=max(times) if times else None)


def _proxy_record(wide: _ServerWide, name: str,
                  errors: list[tuple[str, str]]) -> VolumeRecord:
    listed = wide.listed
    archives = listed[name].archives if listed and name in listed else ()
    flags = {}
    for arch in archives:
        got = _ask(wide, errors, "send-error", name, arch)
        if got is not None:
            flags[arch] = parse_flag(got.text)
    return VolumeRecord(name=name, role="proxy", state=_listed_state(wide, name),
                        ts_deltas=tuple(wide.deltas.get(name, ())), archives=archives,
                        send_error=flags)


def _archive_record(wide: _ServerWide, name: str,
                    errors: list[tuple[str, str]]) -> VolumeRecord:
    got = _ask(wide, errors, "restorable", name)
    snaps = parse_restorable(got.text) if got else None
    stamps = [s.time for s in snaps or () if s.time is not None]
    return VolumeRecord(
        name=name, role="archive", state=_listed_state(wide, name),
        ts_deltas=tuple(wide.deltas.get(name, ())),
        restorable=len(snaps) if snaps is not None else None,
        latest_snapshot=max(stamps) if stamps else None, base=wide.bases.get(name),
        running_actions={a: n for a, n in wide.actions.get(name, {}).items() if n})


# each role's record of one volume; its own queries' failures go to the list it is given
_RECORD_OF: dict[str, Callable[[_ServerWide, str, list[tuple[str, str]]], VolumeRecord]] = {
    "storage": _storage_record, "proxy": _proxy_record, "archive": _archive_record}


# --- problems, in words, with walb's remedy --------------------------------------------------


@dataclass(frozen=True)
class VolumeProblem:
    kind: str  # overflow, send_error, lag, no_snapshot, action, query
    severity: str  # 'error' (act now), 'warning' (watch), 'info'
    text: str


def problems(record: VolumeRecord, lag_threshold_s: float) -> list[VolumeProblem]:
    """What an operator should know about a volume, with walb's remedy (doc/recover.md)."""
    out: list[VolumeProblem] = []
    vol = record.name
    if record.overflow:
        out.append(VolumeProblem(
            "overflow", "error",
            f"{vol}: the walb log device overflowed, continuous backup of this volume has "
            f"stopped: run a hash backup on this storage ('walbc ... hash-bkp {vol}'); the "
            f"volume synchronizes again after it"))
    for arch, flag in sorted(record.send_error.items()):
        if flag:
            out.append(VolumeProblem(
                "send_error", "error",
                f"{vol}: the proxy stopped sending wdiffs to archive {arch} (send error): "
                f"once {arch} answers, kick the proxy ('walbc ... kick {vol} {arch}')"))
    for d in record.ts_deltas:
        if d.delta_s is None:
            out.append(VolumeProblem(
                "no_snapshot", "warning",
                f"{vol}: {d.dest} has no snapshot of this volume yet (ts-delta unknown)"))
        elif d.delta_s > lag_threshold_s:
            remedy = ("check that its proxies and the archive run, kick the proxies "
                      "('walbc ... kick') and the storage ('walbc ... kick')"
                      if d.kind == "storage" else f"check the replication to {d.dest}")
            out.append(VolumeProblem(
                "lag", "warning",
                f"{vol}: backup lag {d.delta_s} s to {d.dest} is above {lag_threshold_s:g} s: "
                f"{remedy}"))
    if record.running_actions:
        running = ", ".join(f"{a} {n}" for a, n in sorted(record.running_actions.items()))
        out.append(VolumeProblem(
            "action", "info",
            f"{vol}: running {running}: a graceful shutdown of this archive waits for it"))
    for query, message in record.errors:
        if "bad state" in message and record.state == "Clear":
            continue  # a volume gone between `get vol` and the query: nothing to report
        out.append(VolumeProblem("query", "warning", f"{vol}: '{query}' failed: {message}"))
    return out


def summarize(records: Sequence[VolumeRecord], lag_threshold_s: float) -> dict[str, int]:
    """Counts of problem kinds over many records (for a one-line status)."""
    counts: dict[str, int] = {}
    for record in records:
        for p in problems(record, lag_threshold_s):
            counts[p.kind] = counts.get(p.kind, 0) + 1
    return counts
