"""The keeper across separate Docker engines (tests/harness): host networking, the keeper
on the archive's host reaching the proxy and storage on other engines by their layout
addresses, its image copied there by `walbctr push`, and a killed archive's proxy kicked
on its own engine."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.test_many_hosts import Deployment, fleet  # noqa: F401 (fleet is a fixture)
from walbctr.layout.imagetag import keeper_image

INTERVAL = 2


@pytest.fixture
def kept_across(tmp_path: Path, fleet: Any, double_image: str,  # noqa: F811
                loop_vg: str) -> Iterator[Deployment]:
    d = Deployment(tmp_path / "d", double_image, loop_vg, fleet)
    d.path.write_text(d.path.read_text() + f"monitor: {{host: hostA0, interval: {INTERVAL}, "
                      "probe_interval: 0.25}\n")
    try:
        yield d
    finally:
        d.cleanup()


def test_keeper_on_another_engine_kicks_the_proxy_after_the_archive_is_killed(
        kept_across: Deployment, double_image: str) -> None:
    d = kept_across
    push = d.walbctr("push", str(d.path))
    assert push.returncode == 0, push.stderr
    assert f"hostA0: loaded {keeper_image(double_image)}" in push.stdout
    up = d.walbctr("up", str(d.path), "--plain")
    assert up.returncode == 0, up.stderr
    a0_engine = d.hosts["hostA0"].client()
    keeper = a0_engine.containers.get(f"walbctr-{d.name}-keeper")
    assert keeper.attrs["HostConfig"]["NetworkMode"] == "host"
    deadline = time.monotonic() + 30
    while "kick p0: done" not in keeper.logs().decode():  # its first contact
        assert time.monotonic() < deadline, keeper.logs().decode()[-2000:]
        time.sleep(0.2)
    killed = time.time()
    d.container("a0").exec_run(["sh", "-c", 'for p in /proc/[0-9]*; do [ "$(cat $p/comm)" = '
                                "walb-archive ] && kill -9 ${p#/proc/}; done; true"])
    p0 = d.container("p0")
    deadline = time.monotonic() + 30
    while True:
        since = p0.logs(since=int(killed)).decode()
        if "kick requested" in since and "archive a0 answers again" in keeper.logs().decode():
            break
        assert time.monotonic() < deadline, keeper.logs().decode()[-2000:]
        time.sleep(0.2)
    assert time.time() - killed <= 2 * INTERVAL + 3
    # No volumes, nothing wrong, once the restarted archive answers its volume questions
    # too: the keeper's probe (get host-type) can answer a moment before a loaded engine
    # runs an exec in the new container.
    deadline = time.monotonic() + 20
    while True:
        volumes = d.walbctr("status", str(d.path), "--volumes", "--json")
        if volumes.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert volumes.returncode == 0, volumes.stdout + volumes.stderr
