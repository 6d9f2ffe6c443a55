"""Start and stop order across hosts: pure planning over a layout."""

from __future__ import annotations

from collections.abc import Iterable
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
