"""Start and stop order across hosts: pure planning over a layout."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from walbctr.layout.server import START_ORDER, Role, Server

if TYPE_CHECKING:
    from walbctr.layout.spec import Layout

Tier = tuple[Role, dict[str, tuple[Server, ...]]]  # role, host -> its servers of that role


def start_tiers(layout: Layout, only: Iterable[str] | None = None) -> list[Tier]:
    """Archives everywhere, then proxies, then storages; servers grouped by host."""
    wanted = set(only) if only is not None else None
    tiers: list[Tier] = []
    for role in START_ORDER:
        by_host: dict[str, list[Server]] = {}
        for s in layout.of_role(role):
            if wanted is None or s.id in wanted:
                by_host.setdefault(s.host, []).append(s)
        if by_host:
            tiers.append((role, {h: tuple(v) for h, v in by_host.items()}))
    return tiers


def stop_tiers(layout: Layout, only: Iterable[str] | None = None) -> list[Tier]:
    """Storages first, then proxies, then archives: nothing loses a peer mid-send."""
    return list(reversed(start_tiers(layout, only)))


def storages_pointing_at(layout: Layout, server_ids: Iterable[str]) -> tuple[Server, ...]:
    """Storages whose -archive or -proxy names one of `server_ids`.

    A storage resolves its peers once at start-up, so when a peer's address may have
    changed (a recreated container on a bridge network), the storage must restart too.
    """
    peers = {p.id for p in layout.proxies_by_priority}
    if layout.of_role(Role.ARCHIVE):
        peers.add(layout.primary_archive.id)
    if not set(server_ids) & peers:
        return ()
    return layout.of_role(Role.STORAGE)


def stale_storages(layout: Layout, recreated: Sequence[str],
                   fresh: Iterable[str] = ()) -> tuple[Server, ...]:
    """Storages that must restart because a peer they resolved at start was recreated.

    `recreated` is in the order the containers were recreated: a storage recreated after
    the last of its peers resolved their new addresses already, as did the `fresh` ones
    (created in this run). Only on a bridge network does a recreated peer get a new
    address. `up` and `upgrade`/`restart` both decide with this; each restarts them its
    own way (a tier, or gated one by one).
    """
    if layout.network_mode != "bridge":
        return ()
    peers = {s.id for s in (*layout.of_role(Role.ARCHIVE), *layout.of_role(Role.PROXY))}
    last_peer = max((i for i, sid in enumerate(recreated) if sid in peers), default=-1)
    if last_peer < 0:
        return ()
    settled = set(recreated[last_peer + 1:]) | set(fresh)
    return tuple(s for s in storages_pointing_at(layout, recreated[:last_peer + 1])
                 if s.id not in settled)
