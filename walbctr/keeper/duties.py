"""The keeper: watches one backup group through the walb protocol and does walb's
recovery duties (walb-tools doc/recover.md) as soon as they are due.

    python3 -m walbctr.keeper [CONFIG]

CONFIG is a JSON file (`walbctr/layout/monitor.py` writes its content; the compose service passes
it in $WALBCTR_KEEPER_CONFIG instead). It runs in its own image (the walb-tools runtime
plus python3 and prometheus-client), needs the stdlib, prometheus-client, walbc and
nothing else, and sees the servers only as a walbc client does: no Docker socket.

Duties, from doc/recover.md:
- an archive (re)started: kick every proxy (their wdiff transfers may have stopped by
  timeout);
- a proxy (re)started: kick every storage (recommended, for faster wlog transfers);
- a proxy reports a wdiff send error for an archive that answers: kick that volume and
  archive on that proxy.
Servers of a host in maintenance (`walbctr maintenance enter`, which writes their ids to
MAINTENANCE_FILE in the keeper's /tmp through `docker exec`, re-read at every probe) get
no kick and no volume scan, and are exported as walb_server_maintenance so that the alert
rules leave them out; they are still probed, so walb_server_up stays true to what answers.
A restart is seen as a server that stopped answering `get host-type` and answers again
(probed every probe_interval). A restart faster than that is missed by the probe; the
send-error flag the proxy then raises is the safety net, checked every interval. When the
keeper itself starts it cannot know what it missed, so it kicks once on first contact.
Kicks are idempotent (a kick with nothing to do does nothing), so running two keepers, or
restarting one, is safe. The keeper never stops, deletes, backs up or restores anything.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from walbctr.keeper.ask import Ask, Asker, ask, parallel
from walbctr.keeper.policy import PolicyRunner
from walbctr.walb import volumes, worker
from walbctr.walb.version import parse_version
from walbctr.walb.walbc import walbc_argv

CONFIG_ENV = "WALBCTR_KEEPER_CONFIG"
# Where walbctr writes the servers in maintenance: the keeper's one writable place (a
# tmpfs; its root is read-only). walbctr.layout.monitor names the same path.
MAINTENANCE_FILE = "/tmp/walbctr-maintenance.json"
ROLES = ("archive", "proxy", "storage")
Sample = tuple[str, tuple[str, ...], float]  # metric family, label values, value
VERSION_KEY = "version "  # run_all keys of the version asks: a server id has no space


@dataclass(frozen=True)
class ServerRef:
    id: str
    role: str
    address: str
    port: int


@dataclass(frozen=True)
class Config:
    group: str
    servers: tuple[ServerRef, ...]
    port: int = 9580
    interval: float = 30.0
    probe_interval: float = 0.25
    lag_threshold: float = 600.0
    listen: str = "127.0.0.1"  # the address /metrics is served on
    web_config: str | None = None  # a Prometheus web config file: TLS, basic auth
    policy: Mapping[str, Any] | None = None  # the layout's policy block, in bytes and seconds
    ask: str = "wire"  # or "walbc": a process per question (monitor.ask)

    def of_role(self, role: str) -> tuple[ServerRef, ...]:
        return tuple(s for s in self.servers if s.role == role)


def parse_config(text: str) -> Config:
    """The keeper's configuration from its JSON; ValueError says what is wrong."""
    try:
        data = json.loads(text)
        servers = tuple(ServerRef(str(s["id"]), str(s["role"]), str(s["address"]),
                                  int(s["port"])) for s in data["servers"])
        config = Config(str(data["group"]), servers, int(data.get("port", 9580)),
                        float(data.get("interval", 30)),
                        float(data.get("probe_interval", 0.25)),
                        float(data.get("lag_threshold", 600)),
                        str(data.get("listen", "127.0.0.1")),
                        None if data.get("web_config") is None else str(data["web_config"]),
                        data.get("policy"), str(data.get("ask", "wire")))
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"bad keeper configuration: {type(err).__name__}: {err}") from None
    bad = [s.id for s in servers if s.role not in ROLES]
    if bad:
        raise ValueError(f"bad keeper configuration: unknown role for {', '.join(bad)}")
    if config.ask not in ("wire", "walbc"):
        raise ValueError(f"bad keeper configuration: ask is {config.ask!r}, not wire or walbc")
    if config.interval <= 0 or config.probe_interval <= 0:
        raise ValueError("bad keeper configuration: intervals must be positive")
    return config


def server_argv(server: ServerRef, args: Sequence[str], timeout: int = 3) -> list[str]:
    return walbc_argv(server.port, args, address=server.address, timeout_s=timeout)


# --- what to kick, and when: pure -------------------------------------------------------


@dataclass(frozen=True)
class Kick:
    target: str  # server id
    args: tuple[str, ...]  # after 'kick': () for all, (VOL, ARCHIVE) for one transfer
    reason: str  # short, for the metric label
    why: str  # the sentence the log line gives

    def describe(self) -> str:
        return f"kick {self.target}" + (" " + " ".join(self.args) if self.args else "")


@dataclass
class Duties:
    """Turns what the keeper sees into the kicks doc/recover.md asks for.

    Fed with probe results (which servers answer) and with the proxies' send-error flags;
    returns the kicks to send now. No I/O: the keeper sends them and logs.
    """

    config: Config
    resend_after: float = 300.0  # a send error that stays is kicked again after this long
    answering: dict[str, bool] = field(default_factory=dict)  # absent: never probed
    restarts: dict[str, int] = field(default_factory=dict)
    pending: dict[str, Kick] = field(default_factory=dict)  # for targets not answering yet
    last_send_kick: dict[tuple[str, str, str], float] = field(default_factory=dict)

    def probed(self, answers: Mapping[str, bool]) -> list[Kick]:
        kicks: list[Kick] = []
        for s in self.config.servers:
            if s.id not in answers:
                continue
            before = self.answering.get(s.id)
            now = answers[s.id]
            self.answering[s.id] = now
            if not now or before is True:
                continue
            if before is False:
                self.restarts[s.id] = self.restarts.get(s.id, 0) + 1
                came = f"{s.role} {s.id} answers again after it stopped answering"
                kind = f"{s.role}_restart"
            else:  # first contact: what happened before the keeper ran is unknown
                came = f"{s.role} {s.id} answers at the keeper's start (a restart before it " \
                    "would have gone unseen)"
                kind = "keeper_start"
            kicks += self._after_comeback(s, came, kind)
        # Kicks owed to a server that did not answer then: due once it does.
        for sid in list(self.pending):
            if self.answering.get(sid):
                kicks.append(self.pending.pop(sid))
        return _unique(kicks)

    def _after_comeback(self, server: ServerRef, came: str, kind: str) -> list[Kick]:
        if server.role == "archive":
            targets, duty = self.config.of_role("proxy"), \
                "after an archive restarts the proxies' wdiff transfers may have stopped by " \
                "timeout and must be kicked (doc/recover.md)"
        elif server.role == "proxy":
            targets, duty = self.config.of_role("storage"), \
                "after a proxy restarts the storages should be kicked to resume wlog " \
                "transfers (doc/recover.md)"
        else:
            return []
        kicks = []
        for t in targets:
            kick = Kick(t.id, (), kind, f"{came}; {duty}")
            if self.answering.get(t.id):
                kicks.append(kick)
            else:
                self.pending[t.id] = kick
        return kicks

    def send_errors(self, flags: Iterable[tuple[str, str, str]], now: float) -> list[Kick]:
        """(proxy, volume, archive) with the send-error flag set: kick each whose archive
        and proxy answer, at most once per `resend_after` for one that stays set."""
        kicks = []
        for proxy, vol, archive in flags:
            if not self.answering.get(proxy) or not self.answering.get(archive, False):
                continue
            last = self.last_send_kick.get((proxy, vol, archive))
            if last is not None and now - last < self.resend_after:
                continue
            self.last_send_kick[(proxy, vol, archive)] = now
            kicks.append(Kick(proxy, (vol, archive), "send_error",
                              f"proxy {proxy} reports a wdiff send error for volume {vol} to "
                              f"archive {archive}, which answers: kick the transfer "
                              "(doc/recover.md)"))
        return kicks


def _unique(kicks: list[Kick]) -> list[Kick]:
    seen: dict[tuple[str, tuple[str, ...]], Kick] = {}
    for k in kicks:
        seen.setdefault((k.target, k.args), k)
    return list(seen.values())


# --- hosts in maintenance -----------------------------------------------------------------


def parse_maintenance(text: str) -> dict[str, str]:
    """server id -> its host, from the file walbctr writes ({"servers": {ID: HOST}})."""
    data = json.loads(text)
    servers = data.get("servers", {}) if isinstance(data, dict) else None
    if not isinstance(servers, dict):
        raise ValueError("no 'servers' object in it")
    return {str(sid): str(host) for sid, host in servers.items()}


class MaintenanceFile:
    """The servers walbctr put in maintenance, read again whenever the file changes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._seen: tuple[int, int, int] | None = None
        self.servers: dict[str, str] = {}

    def read(self) -> tuple[dict[str, str], bool]:
        """The current set, and whether it changed since the last read."""
        try:
            st = os.stat(self.path)
            seen: tuple[int, int, int] | None = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            seen = None
        with self._lock:
            if seen == self._seen:
                return dict(self.servers), False
            self._seen = seen
            try:
                if seen is None:
                    fresh = {}
                else:
                    with open(self.path, encoding="utf-8") as f:
                        fresh = parse_maintenance(f.read())
            except (OSError, ValueError) as err:
                # The last good set stays: a torn or foreign file must not end a maintenance.
                log(f"cannot read {self.path}: {err}; keeping the maintenance set as it was")
                return dict(self.servers), False
            changed = fresh != self.servers
            self.servers = fresh
            return dict(fresh), changed


# --- the running keeper -------------------------------------------------------------------


def log(text: str) -> None:
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"
    print(f"{stamp} keeper: {text}", flush=True)


def run_all(argvs: Mapping[str, list[str]], timeout: float) -> dict[str, tuple[int, str, str]]:
    """Run every argv at once; id -> (exit status, stdout, stderr); 124 for a timeout."""
    procs: dict[str, subprocess.Popen[str] | OSError] = {}
    for key, argv in argvs.items():
        try:
            procs[key] = subprocess.Popen(argv, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True)
        except OSError as err:
            procs[key] = err
    deadline = time.monotonic() + timeout
    out: dict[str, tuple[int, str, str]] = {}
    for key, proc in procs.items():
        if isinstance(proc, OSError):
            out[key] = (127, "", str(proc))
            continue
        try:
            stdout, stderr = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
            out[key] = (proc.returncode, stdout, stderr)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
            out[key] = (124, stdout, stderr + "\n(timed out)")
    return out


class Keeper:
    def __init__(self, config: Config, metrics: Any = None,
                 run: Callable[[Mapping[str, list[str]], float],
                               dict[str, tuple[int, str, str]]] = run_all,
                 maintenance_file: str = MAINTENANCE_FILE,
                 ask: Ask = ask) -> None:
        self.config = config
        self.maintenance = MaintenanceFile(maintenance_file)
        self.held: dict[str, str] = {}  # server id -> host, of hosts in maintenance
        self.duties = Duties(config, resend_after=max(300.0, 10 * config.interval))
        self.metrics = metrics
        self.run = run
        self.asker = Asker(run, log, ask)
        if config.ask == "walbc":
            self.asker.always_walbc.update(s.id for s in config.servers)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.probe_timeout = max(1, min(3, round(config.probe_interval * 2)))
        # server id -> (when, volume samples) of its last scan that succeeded
        self.seen: dict[str, tuple[float, list[Sample]]] = {}

    # probing: who answers, and so who came back. Each server has its own loop, so that a
    # host that times out never delays seeing another server's restart.
    def refresh_maintenance(self) -> dict[str, str]:
        held, changed = self.maintenance.read()
        known = {s.id for s in self.config.servers}
        held = {sid: host for sid, host in held.items() if sid in known}
        with self.lock:
            self.held = held
        if changed:
            log("in maintenance now: " + (", ".join(f"{sid} (host {host})" for sid, host
                                                    in sorted(held.items())) or "none")
                + ("; no kick or volume scan is aimed at them" if held else ""))
            if self.metrics is not None:
                self.metrics.snapshot.replace("maintenance", [
                    ("walb_server_maintenance", (sid, host), 1.0)
                    for sid, host in sorted(held.items())])
        return held

    def probe_once(self, servers: Sequence[ServerRef] | None = None) -> dict[str, bool]:
        self.refresh_maintenance()
        servers = self.config.servers if servers is None else servers
        results = self.asker.each({s.id: (s.id, s.address, s.port, ["get", "host-type"])
                                   for s in servers}, self.probe_timeout)
        answers = {sid: r[0] == 0 for sid, r in results.items()}
        healthy = {s.id: answers[s.id] and results[s.id][1].strip() == s.role
                   for s in servers}
        with self.lock:
            before = dict(self.duties.answering)
            kicks = self.duties.probed(answers)
        for s in servers:
            was, now = before.get(s.id), answers[s.id]
            if was is True and not now:
                log(f"{s.role} {s.id} stopped answering: {_last_line(results[s.id][2])}")
            elif was is False and now:
                log(f"{s.role} {s.id} answers again")
                if self.metrics is not None:
                    self.metrics.restarts.labels(s.id, s.role).inc()
        if self.metrics is not None:
            for s in servers:
                self.metrics.snapshot.replace(f"probe {s.id}", [
                    ("walb_server_up", (s.id, s.role), float(answers[s.id])),
                    ("walb_server_healthy", (s.id, s.role), float(healthy[s.id]))])
        self.send(kicks)
        return answers

    def send(self, kicks: Sequence[Kick]) -> None:
        with self.lock:
            held = dict(self.held)
        for k in kicks:
            if k.target in held:
                log(f"{k.describe()}: not sent, host {held[k.target]} is in maintenance. "
                    f"Why it was due: {k.why}")
        kicks = [k for k in kicks if k.target not in held]
        if not kicks:
            return
        servers = {s.id: s for s in self.config.servers}
        argvs = {str(i): server_argv(servers[k.target], ["kick", *k.args], 10)
                 for i, k in enumerate(kicks)}
        results = self.run(argvs, 15)
        for i, k in enumerate(kicks):
            status, _out, err = results[str(i)]
            if status == 0:
                log(f"{k.describe()}: done. Why: {k.why}")
            else:
                log(f"{k.describe()}: FAILED ({_last_line(err)}). Why: {k.why}")
            if self.metrics is not None:
                self.metrics.kicks.labels(k.target, k.reason).inc()
                if status != 0:
                    self.metrics.kick_failures.labels(k.target, k.reason).inc()

    # scanning: the volumes, one walbc batch per server
    def scan_once(self) -> None:
        started = time.monotonic()
        with self.lock:
            answering = dict(self.duties.answering)
            held = dict(self.held)
        targets = [s for s in self.config.servers if answering.get(s.id) and s.id not in held]
        calls: dict[str, Callable[[], tuple[int, str, str]]] = {
            s.id: functools.partial(self.asker.scan, s.id, s.role, s.address, s.port, 10.0)
            for s in targets}
        # Asked every scan, at the same time: a restart the probe missed (a recreated
        # container) may have brought another version.
        calls |= {VERSION_KEY + s.id: functools.partial(
            self.asker.one, s.id, s.address, s.port, ["version"], 10.0) for s in targets}
        results = parallel(calls, max(30.0, self.config.interval))
        flags: list[tuple[str, str, str]] = []
        total = 0
        for s in self.config.servers:
            if s.id in held:  # stopped on purpose: no stale volume rows, no scan verdict
                if self.metrics is not None:
                    self.metrics.snapshot.replace(s.id, [])
                continue
            found = _read_scan(s, results.get(s.id))
            if found is not None:
                samples, errors = volume_samples(s, found, self.config.lag_threshold)
                flags += errors
                total += len(found)
                self.seen[s.id] = (time.time(), samples)
            if self.metrics is not None:
                self.metrics.snapshot.replace(s.id, [
                    *scan_samples(s, found is not None, self.seen.get(s.id)),
                    *version_samples(s, results.get(VERSION_KEY + s.id))])
        with self.lock:
            kicks = self.duties.send_errors(flags, time.time())
        self.send(kicks)
        if self.metrics is not None:
            self.metrics.scan_seconds.set(time.monotonic() - started)
            self.metrics.volumes_scanned.set(total)
            self.metrics.last_scan.set(time.time())

    def loop(self, every: float, work: Callable[[], object], name: str) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                work()
            except Exception as err:  # a bad round must not end the keeper's watch
                log(f"{name} failed: {type(err).__name__}: {err}")
            self.stop.wait(max(0.0, every - (time.monotonic() - started)))

    def _policy_threads(self) -> list[threading.Thread]:
        """One loop per archive carrying out the policy, when the layout has one."""
        archives = self.config.of_role("archive")
        if self.config.policy is None or not archives:
            return []
        policy = worker.parse_policy(self.config.policy, [a.id for a in archives[1:]])
        self.policy = PolicyRunner(archives, policy, self.run, log, self.stop, self.metrics)
        self.policy.held = lambda: dict(self.held)
        log(f"policy: {', '.join(self._policy_summary(policy))}")
        return [threading.Thread(target=self.policy.loop, name=f"policy {a.id}", daemon=True,
                                 args=(a, max(10.0, self.config.interval)))
                for a in archives]

    @staticmethod
    def _policy_summary(policy: worker.Policy) -> list[str]:
        g = policy.group
        return [f"keep {g.keep_period} s" if g.keep_period else "no apply",
                "merge" if g.merge else "no merge",
                f"replicate to {', '.join(g.replicate.to)}" if g.replicate else "no replication",
                f"verify every {g.verify.interval} s" if g.verify else "no verification",
                f"{len(policy.volumes)} volume overrides"]

    def run_forever(self) -> None:
        log(f"watching group {self.config.group}: {len(self.config.servers)} servers, probe "
            f"every {self.config.probe_interval:g} s, volume scan every "
            f"{self.config.interval:g} s, lag threshold {self.config.lag_threshold:g} s, asking "
            + ("on walb's wire protocol" if self.config.ask == "wire" else "through walbc"))
        self.probe_once()  # all at once first: the scan needs to know who answers
        threads = [threading.Thread(target=self.loop, name="scan", daemon=True,
                                    args=(self.config.interval, self.scan_once,
                                          "volume scan"))]
        threads += self._policy_threads()
        threads += [threading.Thread(
            target=self.loop, name=f"probe {s.id}", daemon=True,
            args=(self.config.probe_interval, lambda s=s: self.probe_once([s]),
                  f"probe of {s.id}")) for s in self.config.servers]
        for t in threads:
            t.start()
        while not self.stop.wait(1.0):  # a timeout keeps the main thread open to signals
            pass
        deadline = time.monotonic() + 3  # a scan or kick under way may not finish: daemons
        for t in threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        log("stopped")


def _read_scan(server: ServerRef,
               result: tuple[int, str, str] | None) -> list[volumes.VolumeRecord] | None:
    """The volumes one batch found; None when the server was not asked or the batch failed."""
    if result is None:
        return None
    if result[0] != 0:
        log(f"volume scan of {server.id} failed: {_last_line(result[2])}")
        return None
    try:
        return volumes.parse_batch(server.role, result[1])
    except ValueError as err:
        log(f"cannot read the volume scan of {server.id}: {err}")
        return None


def scan_samples(server: ServerRef, ok: bool,
                 seen: tuple[float, list[Sample]] | None) -> list[Sample]:
    """A server's part of the snapshot after a scan: the volume samples of its last scan
    that succeeded (this one's when `ok`), then whether this one did and when that was.

    The last known values stay while a server is away: dropping them would resolve every
    alert on them (a lag, a send error, an old snapshot) just because the server died.
    """
    who = (server.id, server.role)
    samples = list(seen[1]) if seen is not None else []
    samples.append(("walb_server_scan_ok", who, float(ok)))
    if seen is not None:
        samples.append(("walb_server_last_seen_timestamp_seconds", who, seen[0]))
    return samples


def version_samples(server: ServerRef, result: tuple[int, str, str] | None) -> list[Sample]:
    """The version the server reports, as walb_server_version_info; none when it did not
    say (a server that does not answer drops out of the count of versions)."""
    if result is None or result[0] != 0:
        return []
    try:
        version = parse_version(result[1])
    except ValueError as err:
        log(f"cannot read the version of {server.id}: {err}")
        return []
    return [("walb_server_version_info", (server.id, server.role, version), 1.0)]


def volume_samples(server: ServerRef, found: Sequence[volumes.VolumeRecord],
                   lag_threshold: float) -> tuple[list[Sample], list[tuple[str, str, str]]]:
    """A server's scanned volumes as metric samples, and its send-error flags set."""
    who = (server.id, server.role)
    samples: list[Sample] = [("walb_server_volumes", who, float(len(found)))]
    flags = []
    for r in found:
        vol = (*who, r.name)
        samples += _state_samples(vol, r)
        samples += _send_error_samples(vol, r)
        flags += [(server.id, r.name, archive)
                  for archive, flag in sorted(r.send_error.items()) if flag]
        samples += _lag_samples(vol, r, lag_threshold)
        if server.role == "archive":
            samples += _archive_samples(vol, r)
    return samples, flags


def _state_samples(vol: tuple[str, ...], r: volumes.VolumeRecord) -> list[Sample]:
    samples: list[Sample] = []
    if r.state is not None:
        samples.append(("walb_volume_state", (*vol, r.state), 1.0))
    if r.overflow is not None:
        samples.append(("walb_volume_overflow", vol, float(r.overflow)))
    return samples


def _send_error_samples(vol: tuple[str, ...], r: volumes.VolumeRecord) -> list[Sample]:
    return [("walb_volume_wdiff_send_error", (*vol, archive), float(flag))
            for archive, flag in sorted(r.send_error.items())]


def _lag_samples(vol: tuple[str, ...], r: volumes.VolumeRecord,
                 lag_threshold: float) -> list[Sample]:
    """The lag to each destination that has a snapshot; one without has no lag to show."""
    samples: list[Sample] = []
    for d in r.ts_deltas:
        if d.delta_s is not None:
            samples.append(("walb_volume_ts_delta_seconds", (*vol, d.dest), float(d.delta_s)))
            samples.append(("walb_volume_lagging", (*vol, d.dest),
                            float(d.delta_s > lag_threshold)))
    return samples


def _archive_samples(vol: tuple[str, ...], r: volumes.VolumeRecord) -> list[Sample]:
    samples: list[Sample] = []
    # a failed all-actions query leaves the counts unknown, not zero
    if not any(query == "all-actions" for query, _ in r.errors):
        for action in volumes.ARCHIVE_ACTIONS:
            samples.append(("walb_volume_running_actions", (*vol, action),
                            float(r.running_actions.get(action, 0))))
    if r.restorable is not None:
        samples.append(("walb_volume_restorable_snapshots", vol, float(r.restorable)))
    if r.latest_snapshot is not None:
        samples.append(("walb_volume_latest_snapshot_timestamp_seconds", vol,
                        r.latest_snapshot.timestamp()))
    return samples


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "STACKTRACE" not in ln]
    return lines[-1] if lines else "no output"


def main(argv: Sequence[str]) -> int:
    try:
        if len(argv) > 1:
            with open(argv[1], encoding="utf-8") as f:
                text = f.read()
        elif os.environ.get(CONFIG_ENV):
            text = os.environ[CONFIG_ENV]
        else:
            print(f"usage: python3 -m walbctr.keeper CONFIG.json (or ${CONFIG_ENV})",
                  file=sys.stderr)
            return 2
        config = parse_config(text)
    except (OSError, ValueError) as err:
        print(f"walb-keeper: {err}", file=sys.stderr)
        return 2
    from walbctr.keeper.metrics import KeeperMetrics  # noqa: PLC0415 (tests run the keeper without)

    metrics = KeeperMetrics()
    metrics.lag_threshold.set(config.lag_threshold)
    metrics.scan_interval.set(config.interval)
    metrics.known_servers([(s.id, s.role) for s in config.servers])
    try:
        from walbctr.keeper import web  # noqa: PLC0415 (as metrics above)

        settings = None if config.web_config is None else web.load(config.web_config)
        metrics.serve(config.port, config.listen, settings)
    except (OSError, ValueError, ImportError) as err:
        where = f" (web config {config.web_config})" if config.web_config else ""
        print(f"walb-keeper: cannot serve /metrics on {config.listen}:{config.port}{where}: "
              f"{err}", file=sys.stderr)
        return 2
    log(f"serving /metrics on {config.listen}:{config.port}"
        + (" with TLS" if settings is not None and settings.tls else "")
        + (" and basic auth" if settings is not None and settings.users else ""))
    keeper = Keeper(config, metrics)

    def stop(signum: int, _frame: object) -> None:
        log(f"{signal.Signals(signum).name} received, stopping")
        keeper.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    keeper.run_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
