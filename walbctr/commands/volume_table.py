"""`walbctr status --volumes`: one row per (server, volume), read with one exec per server.

Each running server's container runs walbctr.walb.volumes' batch query (every volume's facts in
one process, walbc against the server on 127.0.0.1), all servers at once; the rows carry
the problems walbctr.walb.volumes finds, in words with walb's remedy. A host whose engine
cannot be reached, or a server that is not running, gives one `unknown` row for that
server instead of failing the command.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from docker.errors import NotFound
from prometheus_client.parser import text_string_to_metric_families

from walbctr.commands.keeper_container import read_metrics, running_keeper
from walbctr.commands.status import format_duration
from walbctr.docker.fleet import Fleet
from walbctr.errors import explain
from walbctr.render.compose import container_name
from walbctr.walb import volumes

if TYPE_CHECKING:
    from walbctr.layout.server import Server
    from walbctr.layout.spec import Layout

DEFAULT_LAG_THRESHOLD_S = 600  # without a monitor block: 10 minutes behind is worth a look
EXEC_WORKERS = 32


@dataclass(frozen=True)
class VolumeRow:
    server: str
    role: str
    host: str
    volume: str  # "" for a row about the server itself (unknown, no volumes)
    state: str  # the volume's walb state; 'unknown' when the server could not be asked
    overflow: bool | None = None  # storage
    send_error: dict[str, bool] = field(default_factory=dict)  # proxy: archive -> flag
    lag_s: int | None = None  # storage, archive: the largest ts-delta
    lag_dest: str = ""
    running_actions: dict[str, int] = field(default_factory=dict)  # archive
    restorable: int | None = None  # archive
    latest_snapshot: str | None = None  # archive: newest restorable snapshot, ISO 8601 UTC
    verified: str | None = None  # archive: the keeper's last restore verification
    problems: list[str] = field(default_factory=list)  # in words, with walb's remedy
    severity: str = ""  # the worst problem's: error, warning, info, or ""
    note: str = ""

    @property
    def needs_attention(self) -> bool:
        return self.state == "unknown" or self.severity in ("error", "warning")


def lag_threshold(layout: Layout, given: float | None) -> float:
    """--lag-threshold, else the monitor block's, else the default."""
    if given is not None:
        return given
    m = layout.spec.monitor
    return float(m.lag_threshold) if m is not None else DEFAULT_LAG_THRESHOLD_S


def volume_rows(layout: Layout, only_host: str | None, threshold: float) -> list[VolumeRow]:
    fleet = Fleet(layout, only_host)
    down = fleet.unreachable(explain)
    servers = [s for s in layout.servers if s.host in fleet.hosts]
    asked = [s for s in servers if s.host not in down]
    with ThreadPoolExecutor(max_workers=max(1, min(EXEC_WORKERS, len(asked)))) as pool:
        answers = dict(zip((s.id for s in asked),
                           pool.map(lambda s: _ask(layout, fleet, s), asked), strict=True))
    rows: list[VolumeRow] = []
    for s in servers:
        if s.host in down:
            rows.append(_unknown(s, f"host unreachable: {down[s.host]}"))
            continue
        answer = answers[s.id]
        if isinstance(answer, str):
            rows.append(_unknown(s, answer))
            continue
        if not answer:
            rows.append(VolumeRow(s.id, s.role.value, s.host, "", "", note="no volumes"))
        rows += [_row(s, r, threshold) for r in answer]
    return _with_verifications(layout, fleet, rows)


def _with_verifications(layout: Layout, fleet: Fleet, rows: list[VolumeRow]) -> list[VolumeRow]:
    """Archive rows get the keeper's last restore verification (its metrics), when the
    layout's policy verifies; a keeper that cannot be read leaves them as they are."""
    policy = layout.spec.policy
    if policy is None or (policy.verify is None and
                          not any(v.verify for v in policy.volumes.values())):
        return rows
    try:
        found = running_keeper(layout, fleet)
        text = read_metrics(layout, *found) if found is not None else ""
    except Exception:  # the table stands without it; the keeper's own alerts cover it
        return rows
    checks = verifications(text)
    return [_verified(r, checks[(r.server, r.volume)]) if (r.server, r.volume) in checks
            else r for r in rows]


def _verified(r: VolumeRow, verified: str) -> VolumeRow:
    if not verified.startswith("FAILED"):
        return replace(r, verified=verified)
    return replace(r, verified=verified, severity="error", problems=[
        *r.problems, f"the keeper's restore verification {verified} (its log says why: "
        "'policy ... verify'; restore it by hand with walbctr volume restore)"])


def verifications(metrics: str) -> dict[tuple[str, str], str]:
    """(archive, volume) -> 'ok at TIME' / 'FAILED at TIME', from the keeper's metrics."""
    ok: dict[tuple[str, str], float] = {}
    when: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            key = (sample.labels.get("archive", ""), sample.labels.get("volume", ""))
            if sample.name == "walb_volume_verify_ok":
                ok[key] = sample.value
            elif sample.name == "walb_volume_last_verify_timestamp_seconds":
                when[key] = sample.value
    return {k: ("ok" if ok.get(k) == 1 else "FAILED") + " at " +
            datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            for k, t in when.items()}


def _ask(layout: Layout, fleet: Fleet, server: Server) -> list[volumes.VolumeRecord] | str:
    """The server's volume records, or why it could not be asked."""
    try:
        container = fleet.engines[server.host].api.containers.get(
            container_name(layout, server))
    except NotFound:
        return "no container (start it with 'walbctr up')"
    except Exception as err:  # the engine failing now: the row says so
        return explain(err)
    if container.status != "running":
        return f"not running (its container is {container.status})"
    try:
        result = container.exec_run(volumes.batch_argv(server.role.value, "127.0.0.1",
                                                       server.port), demux=False)
        text = result.output.decode(errors="replace")
        return volumes.parse_batch(server.role.value, text)
    except ValueError as err:
        return f"cannot read its volumes: {err}"
    except Exception as err:  # an exec that fails (container gone meanwhile)
        return explain(err)


def _unknown(server: Server, why: str) -> VolumeRow:
    return VolumeRow(server.id, server.role.value, server.host, "", "unknown", note=why,
                     severity="warning", problems=[f"volumes unknown: {why}"])


_RANK = {"error": 3, "warning": 2, "info": 1, "": 0}


def _row(server: Server, r: volumes.VolumeRecord, threshold: float) -> VolumeRow:
    found = volumes.problems(r, threshold)
    worst = max((p.severity for p in found), key=lambda sev: _RANK.get(sev, 0), default="")
    lag = max((d for d in r.ts_deltas if d.delta_s is not None),
              key=lambda d: d.delta_s or 0, default=None)
    latest = r.latest_snapshot if server.role.value == "archive" else None
    return VolumeRow(
        server.id, server.role.value, server.host, r.name, r.state or "?",
        overflow=r.overflow, send_error=dict(r.send_error),
        lag_s=lag.delta_s if lag else None, lag_dest=lag.dest if lag else "",
        running_actions=dict(r.running_actions), restorable=r.restorable,
        latest_snapshot=latest.strftime("%Y-%m-%dT%H:%M:%SZ") if latest else None,
        problems=[p.text for p in found], severity=worst)


def rows_json(rows: list[VolumeRow]) -> str:
    return json.dumps([asdict(r) for r in rows], indent=2) + "\n"


def table_cells(r: VolumeRow) -> dict[str, str]:
    """The table's text for one row (empty where the role has no such fact)."""

    def flag(v: bool | None) -> str:
        return "" if v is None else ("YES" if v else "no")

    send = ", ".join(f"{a} {'ERROR' if f else 'ok'}" for a, f in sorted(r.send_error.items()))
    lag = f"{format_duration(r.lag_s)} to {r.lag_dest}" if r.lag_s is not None else ""
    actions = ", ".join(f"{a} {n}" for a, n in sorted(r.running_actions.items()))
    if r.role == "archive" and not actions and r.volume:
        actions = "-"
    return {"SERVER": r.server, "ROLE": r.role, "VOLUME": r.volume or "-",
            "STATE": r.state + (f" ({r.note})" if r.state == "unknown" else ""),
            "OVERFLOW": flag(r.overflow), "SEND": send, "LAG": lag, "ACTIONS": actions,
            "SNAPSHOTS": "" if r.restorable is None else str(r.restorable),
            "LATEST": r.latest_snapshot or "", "VERIFIED": r.verified or "",
            "PROBLEM": r.severity if r.problems else ""}


def problem_lines(rows: list[VolumeRow]) -> list[str]:
    """Every problem, one line each, prefixed by where it is."""
    out = []
    for r in rows:
        for text in r.problems:
            where = f"{r.server}" if not r.volume else f"{r.server} ({r.role})"
            out.append(f"{r.severity}: {where}: {text}")
    return out
