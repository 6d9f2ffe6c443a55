"""The local engine's exec events, recorded live for the whole test session.

The record lives here, in a module every test reaches by one name
(`tests.harness.execevents`), and not in conftest.py: pytest imports conftest.py as
`conftest`, while test modules import it as `tests.conftest`, which is a second module
object with its own globals. A registry kept in conftest.py was empty for every test that
read it through `tests.conftest` (CI: "no live record").
"""

from __future__ import annotations

import threading
import time
from typing import Any

RECORDS: list[ExecEvents] = []


def start(client: Any) -> ExecEvents:
    """Start recording `client`'s engine; readers find it in RECORDS by the engine's URL."""
    record = ExecEvents(client)
    RECORDS.append(record)
    return record


def state() -> str:
    """What the live records hold, for a failure that doubts them."""
    return "; ".join(f"live record of {r.url}: {len(r.events)} events, stream broke "
                     f"{len(r.broken)} times {r.broken[-3:]}" for r in RECORDS) \
        or "no live record"


class ExecEvents:
    """The engine's exec events, recorded live for the whole test session.

    The engine answers `events --since` from a ring of its last 256 events (moby's
    daemon/events eventsLimit), and under a loaded suite the keepers' probes of other
    groups push a group's readiness probes out of it within seconds (seen in CI: a lab's
    a0 "never answered" though the upgrade had waited for it). A live stream drops nothing.
    """

    def __init__(self, client: Any) -> None:
        self.url = client.api.base_url
        self.events: list[dict[str, Any]] = []
        self.broken: list[str] = []  # each time the stream ended early, and why
        self._client = client
        self._lock = threading.Lock()
        self._stream = self._open(None)
        threading.Thread(target=self._read, name="exec-events", daemon=True).start()

    def _open(self, since: float | None) -> Any:
        return self._client.api.events(since=since, decode=True, filters={
            "type": "container", "label": "io.walbctr.group",
            "event": ["exec_start", "exec_die"]})

    def _read(self) -> None:
        # A stream that breaks (the engine closed it, a read failed) is opened again from
        # the last event it gave, so the record has no hole; the duplicates that overlap
        # are dropped where the record is read (_exec_events).
        while True:
            try:
                for event in self._stream:
                    with self._lock:
                        self.events.append(event)
            except Exception as err:
                self.broken.append(f"{time.time():.3f}: {err!r}")
            with self._lock:
                last = self.events[-1].get("timeNano", 0) / 1e9 if self.events else None
            time.sleep(0.1)
            try:
                self._stream = self._open(last)
            except Exception as err:  # the engine went away at the end of the session
                self.broken.append(f"{time.time():.3f}: reopening: {err!r}")
                return

    def of_group(self, group: str, start: float) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.events if e.get("timeNano", 0) / 1e9 >= start and (
                (e.get("Actor") or {}).get("Attributes") or {}).get("io.walbctr.group") == group]
