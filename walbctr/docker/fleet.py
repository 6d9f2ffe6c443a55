"""The hosts of one layout and their engines, worked on in parallel."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

from walbctr.docker.compose_files import identity
from walbctr.docker.containers import Observed, group_containers
from walbctr.docker.engine import Engine

if TYPE_CHECKING:
    from walbctr.layout.spec import Layout

T = TypeVar("T")


class Fleet:
    def __init__(self, layout: Layout, only_host: str | None = None) -> None:
        self.layout = layout
        self.identity = identity(layout)  # this controller's name for the layout file
        self.hosts = layout.select_hosts(only_host)
        shared: dict[str, Engine] = {}
        self.engines: dict[str, Engine] = {}
        for name in self.hosts:
            host = layout.hosts[name]
            engine = shared.setdefault(host.engine_key, Engine(host.engine, name, host.tls))
            self.engines[name] = engine

    def engine_groups(self) -> dict[str, list[str]]:
        """engine key -> the hosts it serves (several hosts may share one engine)."""
        groups: dict[str, list[str]] = {}
        for name in self.hosts:
            groups.setdefault(self.layout.hosts[name].engine_key, []).append(name)
        return groups

    def each(self, hosts: Iterable[str], work: Callable[[str], T]) -> dict[str, T | Exception]:
        """Run `work(host)` for every host at once; exceptions are returned, not raised."""
        hosts = list(hosts)
        results: dict[str, T | Exception] = {}
        if not hosts:
            return results
        with ThreadPoolExecutor(max_workers=min(16, len(hosts))) as pool:
            futures = {h: pool.submit(work, h) for h in hosts}
            for h, fut in futures.items():
                try:
                    results[h] = fut.result()
                except Exception as err:  # reported per host by the caller
                    results[h] = err
        return results

    def unreachable(self, why: Callable[[Exception], str]) -> dict[str, str]:
        """host -> why its engine cannot be reached (in `why`'s words), asked once per
        engine: hosts that share an engine share its answer, and each engine keeps the
        connection that worked, so nothing waits on a dead host twice."""
        groups = self.engine_groups()
        reach = self.each([hosts[0] for hosts in groups.values()],
                          lambda h: self.engines[h].api)
        down: dict[str, str] = {}
        for hosts in groups.values():
            outcome = reach[hosts[0]]
            if isinstance(outcome, Exception):
                down.update({h: why(outcome) for h in hosts})
        return down

    def old_engines(self, hosts: Iterable[str] | None = None) -> frozenset[str]:
        """Hosts whose engine predates health-check start intervals (see compose.py)."""
        return frozenset(h for h in (self.hosts if hosts is None else hosts)
                         if not self.engines[h].has_start_interval)

    def owns(self, obs: Observed) -> bool:
        """Whether this layout started the container: its layout label is this layout's,
        or it has none (walbctr before the label). Another layout's is left alone."""
        return obs.layout in ("", self.identity)

    def not_in_layout(self) -> list[tuple[Engine, Observed]]:
        """The group's containers whose server is not in the layout (see `owns`)."""
        known = {s.id for s in self.layout.servers}
        found = []
        for hosts in self.engine_groups().values():
            engine = self.engines[hosts[0]]
            found += [(engine, obs) for sid, obs in
                      group_containers(engine, self.layout.group).items() if sid not in known]
        return found

    def observe(self) -> dict[str, Observed]:
        """server id -> container, across every engine; an unreachable engine raises."""
        seen: dict[str, Observed] = {}
        keys = self.engine_groups()
        results = self.each([hosts[0] for hosts in keys.values()],
                            lambda h: group_containers(self.engines[h], self.layout.group))
        for outcome in results.values():
            if isinstance(outcome, Exception):
                raise outcome
            seen.update(outcome)
        return seen
