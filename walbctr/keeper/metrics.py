"""The keeper's Prometheus metrics (prometheus-client): servers, volumes, the keeper's kicks.

Server and volume values are a snapshot the keeper replaces after each probe or scan, and
a custom collector exports exactly that snapshot: a volume that disappears, or a server
that stops answering, leaves no stale series behind. Kicks and restarts are counters.
Runs inside the keeper image: prometheus-client (Debian's 0.16 there) and the stdlib only.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from walbctr.keeper.web import WebConfig, serve


@dataclass(frozen=True)
class Family:
    name: str
    help: str
    labels: tuple[str, ...]


SERVER = ("server", "role")
# What the snapshot may hold; the names are what the alert rules and dashboard use.
FAMILIES = {f.name: f for f in (
    Family("walb_server_up", "1 when the server answers walbc get host-type", SERVER),
    Family("walb_server_healthy",
           "1 when the server answers get host-type with its own role", SERVER),
    Family("walb_server_scan_ok",
           "1 when the last volume scan of the server (one walbc batch) succeeded", SERVER),
    Family("walb_server_maintenance", "1 when the server's host is in maintenance (walbctr "
           "maintenance enter): stopped on purpose, neither kicked nor scanned",
           ("server", "host")),
    Family("walb_server_volumes", "volumes the server reports (get vol)", SERVER),
    Family("walb_volume_state", "1 for the volume's walb state (get state)",
           (*SERVER, "volume", "state")),
    Family("walb_volume_overflow", "1 when the storage's log device overflowed "
           "(get is-overflow); remedy: hash backup", (*SERVER, "volume")),
    Family("walb_volume_wdiff_send_error", "1 when the proxy stopped sending wdiffs to the "
           "archive (get is-wdiff-send-error); remedy: kick", (*SERVER, "volume", "archive")),
    Family("walb_volume_ts_delta_seconds", "backup lag: seconds between the latest snapshot "
           "here and at the destination (get ts-delta)", (*SERVER, "volume", "dest")),
    Family("walb_volume_lagging", "1 when ts-delta is above the keeper's lag threshold",
           (*SERVER, "volume", "dest")),
    Family("walb_volume_running_actions", "running archive actions (get num-action)",
           (*SERVER, "volume", "action")),
    Family("walb_volume_restorable_snapshots", "restorable snapshots (get restorable)",
           (*SERVER, "volume")),
    Family("walb_volume_latest_snapshot_timestamp_seconds",
           "time of the latest restorable snapshot, Unix seconds", (*SERVER, "volume")),
)}

Sample = tuple[str, tuple[str, ...], float]  # family name, label values, value


class Snapshot(Collector):
    """The latest values of the gauge families, replaced part by part (per server)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parts: dict[str, list[Sample]] = {}

    def replace(self, part: str, samples: Iterable[Sample]) -> None:
        fresh = list(samples)
        for name, labels, _ in fresh:
            if len(labels) != len(FAMILIES[name].labels):
                raise ValueError(f"{name}: {len(labels)} label values for "
                                 f"{FAMILIES[name].labels}")
        with self._lock:
            self._parts[part] = fresh

    def values(self, name: str) -> dict[tuple[str, ...], float]:
        with self._lock:
            return {labels: v for part in self._parts.values() for n, labels, v in part
                    if n == name}

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            parts = [list(p) for p in self._parts.values()]
        families = {name: GaugeMetricFamily(name, f.help, labels=list(f.labels))
                    for name, f in FAMILIES.items()}
        for part in parts:
            for name, labels, value in part:
                families[name].add_metric(list(labels), value)
        yield from families.values()


class KeeperMetrics:
    """Everything /metrics shows; `serve` starts the HTTP endpoint."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.registry = registry
        self.snapshot = Snapshot()
        registry.register(self.snapshot)
        self.kicks = Counter("walb_keeper_kicks", "kicks the keeper sent, by target server and "
                             "reason", ["target", "reason"], registry=registry)
        self.kick_failures = Counter("walb_keeper_kick_failures", "kicks that walbc could not "
                                     "deliver", ["target", "reason"], registry=registry)
        self.restarts = Counter("walb_server_restarts", "times the keeper saw the server come "
                                "back after it stopped answering (a restart or an outage)",
                                list(SERVER), registry=registry)
        self.lag_threshold = Gauge("walb_keeper_lag_threshold_seconds",
                                   "ts-delta above which a volume counts as lagging",
                                   registry=registry)
        self.scan_seconds = Gauge("walb_keeper_scan_duration_seconds",
                                  "how long the last volume scan of all servers took",
                                  registry=registry)
        self.volumes_scanned = Gauge("walb_keeper_volumes", "volume rows in the last scan",
                                     registry=registry)

        self._policy()

    def _policy(self) -> None:
        r = self.registry
        self.policy_tasks = Counter("walb_policy_tasks", "policy tasks the keeper ran, by "
                                    "archive, task (apply, merge, replicate, verify) and result",
                                    ["archive", "task", "result"], registry=r)
        self.policy_last_success = Gauge(
            "walb_policy_last_success_timestamp_seconds", "when a policy task of the volume "
            "last succeeded (target: the replica of a replicate)",
            ["archive", "volume", "task", "target"], registry=r)
        self.verify_ok = Gauge("walb_volume_verify_ok", "1 when the volume's last restore "
                               "verification succeeded, 0 when it failed",
                               ["archive", "volume"], registry=r)
        self.verify_time = Gauge("walb_volume_last_verify_timestamp_seconds",
                                 "when the volume's restore was last verified (either result)",
                                 ["archive", "volume"], registry=r)

    def policy_task(self, archive: str, volume: str, task: str, target: str, ok: bool,
                    when: float) -> None:
        """One policy task ended."""
        self.policy_tasks.labels(archive, task, "ok" if ok else "failed").inc()
        if ok:
            self.policy_last_success.labels(archive, volume, task, target).set(when)
        if task == "verify":
            where = target or archive
            self.verify_ok.labels(where, volume).set(float(ok))
            self.verify_time.labels(where, volume).set(when)

    def known_servers(self, servers: Sequence[tuple[str, str]]) -> None:
        """Start every server's counters at 0, so that increase() sees the first restart."""
        for sid, role in servers:
            self.restarts.labels(sid, role)

    def serve(self, port: int, address: str = "127.0.0.1",
              web: WebConfig | None = None) -> None:
        serve(make_wsgi_app(self.registry), address, port, web)
