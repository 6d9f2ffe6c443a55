"""`walbctr push`: the image to every host's engine without a registry.

`docker save` from the local engine streams straight into `docker load` on each host's
engine through the Engine API: nothing is written to disk, hosts load in parallel, a
host that already has the same image id is skipped, and the id is checked on arrival.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from walbctr.docker.engine import Engine
from walbctr.docker.fleet import Fleet
from walbctr.errors import WalbctrError, explain
from walbctr.render.keeper_service import image_of

if TYPE_CHECKING:
    from walbctr.layout.spec import Layout

CHUNK = 1 << 20


@dataclass(frozen=True)
class Pushed:
    host: str  # the first host of the engine
    hosts: tuple[str, ...]  # every host that engine serves
    skipped: bool
    megabytes: float
    seconds: float
    image: str = ""  # what was pushed when it is not the layout's image (the keeper's)


Progress = Callable[[str, int, int], None]  # host, bytes sent, bytes expected


def push(layout: Layout, only_host: str | None, progress: Progress) -> list[Pushed]:
    """The layout's image to every host; with a monitor block, the keeper's image to the
    keeper's host too."""
    fleet = Fleet(layout, only_host)
    groups = fleet.engine_groups()
    out = push_image(layout, fleet, groups, layout.image, progress)
    m = layout.spec.monitor
    # The keeper's image is only needed where the keeper runs, and only copied there.
    if m is not None and m.host in fleet.hosts and layout.hosts[m.host].engine is not None:
        keeper = image_of(layout)
        first = groups[layout.hosts[m.host].engine_key][0]
        out += [replace(p, image=keeper) for p in push_image(
            layout, fleet, {layout.hosts[m.host].engine_key: [first]}, keeper, progress)]
    return out


def push_image(layout: Layout, fleet: Fleet, groups: dict[str, list[str]], name: str,
               progress: Progress) -> list[Pushed]:
    local = Engine()
    image = local.image_or_none(name)
    if image is None:
        raise WalbctrError(f"image {name} is not on this machine's engine",
                           "build it first with 'walbctr build'")
    expected = int(image.attrs.get("Size", 0))

    def send(host: str) -> Pushed:
        engine = fleet.engines[host]
        hosts = tuple(groups[layout.hosts[host].engine_key])
        started = time.monotonic()
        there = engine.image_or_none(name)
        if there is not None and there.id == image.id:
            progress(host, expected, expected)
            return Pushed(host, hosts, True, 0.0, time.monotonic() - started)
        sent = _stream(local, engine, host, name, lambda n: progress(host, n, expected))
        _check_arrival(engine, host, name, image.id)
        return Pushed(host, hosts, False, sent / 1e6, time.monotonic() - started)

    firsts = [hosts[0] for hosts in groups.values()]
    local_key = "local"
    results = fleet.each([h for h in firsts if layout.hosts[h].engine_key != local_key], send)
    out = [Pushed(h, tuple(groups[local_key]), True, 0.0, 0.0)
           for h in firsts if layout.hosts[h].engine_key == local_key]
    return out + _all_pushed(results)


def _stream(local: Engine, engine: Engine, host: str, name: str,
            sent_so_far: Callable[[int], None]) -> int:
    """docker save here into docker load there, chunk by chunk; the bytes sent."""
    sent = 0

    def counting() -> Iterator[bytes]:
        nonlocal sent
        for chunk in local.api.api.get_image(name, chunk_size=CHUNK):
            sent += len(chunk)
            sent_so_far(sent)
            yield chunk

    try:
        for _ in _load(engine, counting()):
            pass
    except Exception as err:
        raise WalbctrError(f"host {host}: loading {name} failed: {err}") from None
    return sent


def _check_arrival(engine: Engine, host: str, name: str, image_id: str) -> None:
    """The name there must now carry our image's id: a load that ends without an error
    message is not proof by itself that it does."""
    arrived = engine.image_or_none(name)
    if arrived is None or arrived.id != image_id:
        got = arrived.id if arrived is not None else "nothing"
        raise WalbctrError(f"host {host}: {name} arrived as {got}, not {image_id}",
                           "run 'walbctr push' again")


def _all_pushed(results: dict[str, Pushed | Exception]) -> list[Pushed]:
    """Every host's push, or one error naming every host that failed, so that one run
    shows them all."""
    out: list[Pushed] = []
    problems = []
    for result in results.values():
        if isinstance(result, Exception):
            problems.append(explain(result))
        else:
            out.append(result)
    if problems:
        raise WalbctrError("push failed:\n  " + "\n  ".join(problems))
    return out


def _load(engine: Engine, data: Iterator[bytes]) -> Iterator[Any]:
    """docker load, streaming the tar as it comes; yields the engine's messages."""
    for message in engine.api.api.load_image(data, quiet=True):
        if isinstance(message, dict) and message.get("error"):
            raise WalbctrError(str(message["error"]))
        yield message
