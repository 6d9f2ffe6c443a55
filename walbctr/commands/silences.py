"""Alertmanager silences for a host in maintenance, through its v2 API (standard library).

walbctr's alert rules (monitoring/walb-alerts.yml) label their alerts with the server,
not its host, so the silence matches the host's servers by id (`server=~"s0|p0"`); the
rules themselves also leave out servers the keeper reports in maintenance, and the
silence covers the time the keeper cannot say so (it restarted, or is on that host).
A silence that cannot be made or expired is a warning for the caller, never a failure:
maintenance must not wait on the alerting system.
"""

from __future__ import annotations

import http.client
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

TIMEOUT_S = 10.0
CREATED_BY = "walbctr"


class SilenceError(Exception):
    """The Alertmanager did not take the request; the message says what it answered."""


def _url(base: str, path: str) -> str:
    return base.rstrip("/") + path


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _send(request: urllib.request.Request) -> bytes:
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as answer:
            return bytes(answer.read())
    except urllib.error.HTTPError as err:
        body = err.read().decode(errors="replace").strip()
        raise SilenceError(f"HTTP {err.code}: {body[:300] or err.reason}") from None
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as err:
        reason = getattr(err, "reason", err)
        raise SilenceError(str(reason)) from None


def silence_body(group: str, host: str, servers: Sequence[str], duration_s: float,
                 now: datetime | None = None) -> dict[str, object]:
    """The silence `create` posts: the host's servers, from now for `duration_s`."""
    start = now or datetime.now(UTC)
    ids = "|".join(re.escape(s) for s in servers)
    return {
        "matchers": [{"name": "server", "value": ids, "isRegex": True, "isEqual": True}],
        "startsAt": _stamp(start),
        "endsAt": _stamp(start + timedelta(seconds=duration_s)),
        "createdBy": CREATED_BY,
        "comment": f"walbctr maintenance enter: host {host} of group {group} "
                   f"({', '.join(servers)} stopped on purpose)",
    }


def create(base_url: str, body: dict[str, object]) -> str:
    """POST /api/v2/silences; the new silence's id."""
    request = urllib.request.Request(
        _url(base_url, "/api/v2/silences"), data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json"})
    raw = _send(request)
    try:
        return str(json.loads(raw)["silenceID"])
    except (ValueError, KeyError, TypeError):
        raise SilenceError(f"an answer without a silenceID: {raw[:200]!r}") from None


def expire(base_url: str, silence_id: str) -> None:
    """DELETE /api/v2/silence/ID: the silence ends now (Alertmanager keeps it, expired)."""
    path = "/api/v2/silence/" + urllib.parse.quote(silence_id, safe="")
    _send(urllib.request.Request(_url(base_url, path), method="DELETE"))
