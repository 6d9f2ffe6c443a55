"""A throwaway LVM volume group on a loop device, for the tests and benches.

Archives need an existing VG; on a machine without a spare disk a VG on a loop device
still satisfies walb-archive's start-up check (vgs/lvs). The work is walbctr's own
(walbctr/docker/loop_vg.py, which also makes lab VGs): the image's lvm2 in a probe container.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TEST_TAG = "walbctr-test"  # not a lab tag: `down --purge-lab` must refuse such a VG


@contextmanager
def loop_vg(engine: Any, image: str, workdir: Path, prefix: str = "walbctr_test") -> Iterator[str]:
    """Yield the name of a fresh 64 MiB VG; remove VG, PV, loop device and file after.

    `engine` is the local engine's docker client, which is where walbctr.docker.loop_vg works.
    """
    from walbctr.docker import loop_vg as loopvg
    from walbctr.docker.engine import Engine

    del engine  # the same local engine, reached through walbctr's Engine
    local = Engine()
    vg = loopvg.LoopVg(f"{prefix}_{secrets.token_hex(3)}", workdir / "pv.img", "64M", TEST_TAG)
    loopvg.create(local, image, vg)
    try:
        yield vg.name
    finally:
        loopvg.remove(local, image, vg)
