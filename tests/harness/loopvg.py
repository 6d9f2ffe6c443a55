"""An LVM volume group on a loop device, made and removed through an image's own lvm2.

Archives need an existing VG; on a machine without device-mapper a VG on a loop device
still satisfies walb-archive's start-up check (vgs/lvs). Used by the tests and benches.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def loop_vg(engine: Any, image: str, workdir: Path, prefix: str = "walbctr_test") -> Iterator[str]:
    """Yield the name of a fresh 64 MiB VG; remove VG, PV, loop device and file after."""
    name = f"{prefix}_{secrets.token_hex(3)}"
    kwargs: dict[str, Any] = {
        "cap_add": ["SYS_ADMIN"], "device_cgroup_rules": ["b 7:* rmw", "c 10:237 rmw"],
        "volumes": {"/dev": {"bind": "/dev", "mode": "rw"},
                    str(workdir): {"bind": "/work", "mode": "rw"}},
        "remove": True, "labels": {"io.walbctr.probe": "loop-vg"},
    }
    script = ("truncate -s 64M /work/pv.img && dev=$(losetup -f --show /work/pv.img) && "
              f"pvcreate -q $dev >&2 && vgcreate -q {name} $dev >&2 && echo $dev")
    device = engine.containers.run(image, ["sh", "-c", script], **kwargs).decode().split()[-1]
    try:
        yield name
    finally:
        engine.containers.run(image, ["sh", "-c", f"vgremove -q -f {name}; "
                                      f"pvremove -q {device}; losetup -d {device}"], **kwargs)
