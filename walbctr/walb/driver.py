"""The walb kernel driver as a storage host meets it: which kernels walb-driver supports,
and which WalB devices a storage's base dir says walb-storage will need at start.

What walb-storage v1.0.19 does at start (binsrc/walb-storage.cpp:105-111 and
src/storage_vol_info.hpp:50-58, 200-210): it takes every directory of its base dir for a
volume, reads the volume's `path` file (its WalB device, /dev/walb/NAME) and stops with
"initializeStorage:start failed" and exit 1 when that device does not exist, whatever the
volume's state. For volumes in Target or Standby it then opens
/sys/block/walb!NAME/walb/lsids (src/log_dev_monitor.cpp:92) and exits 1 when it cannot.
An empty base dir needs nothing: the storage starts and answers without the driver.
"""

from __future__ import annotations

import base64
import re
import struct
from dataclasses import dataclass

# walb-driver's README ("Supported kernel version"): branch, tag, first and last kernel.
# master (v1.5.1, 2019) says "4.14-", but its code has version guards up to 4.20 only and
# calls block-layer functions that 5.x kernels removed (blk_queue_make_request,
# generic_make_request, generic_start_io_acct): no release builds for 5.x or 6.x.
DRIVER_BRANCHES: tuple[tuple[str, str, tuple[int, int], tuple[int, int]], ...] = (
    ("master", "v1.5.x", (4, 14), (4, 99)),
    ("for-4.8", "v1.4.x", (4, 8), (4, 12)),
    ("for-4.3", "v1.3.x", (4, 3), (4, 7)),
    ("for-3.14 (EOL)", "v1.2.x", (3, 14), (4, 2)),
    ("for-3.10 (EOL)", "v1.1.x", (3, 10), (3, 13)),
    ("for-3.2 (EOL)", "v1.0.x", (3, 2), (3, 8)),
)
SUPPORTED = "master (v1.5.x) for 4.14 and later 4.x, older branches back to 3.2"
WALB_DEV = "/dev/walb/"
# The states whose log device walb-storage starts monitoring at once (src/storage.cpp:371).
MONITORED_STATES = frozenset({"Target", "Standby"})


def kernel_support(release: str) -> tuple[bool, str]:
    """Whether a walb-driver release is written for kernel `release` (uname -r), and why."""
    m = re.match(r"(\d+)\.(\d+)", release)
    if m is None:
        return False, (f"kernel {release!r}: its version cannot be read (walb-driver's README: "
                       f"{SUPPORTED})")
    version = (int(m.group(1)), int(m.group(2)))
    for branch, tag, first, last in DRIVER_BRANCHES:
        if first <= version <= last:
            return True, f"Linux {release}: walb-driver {branch} ({tag}) supports it"
    return False, (f"Linux {release}: walb-driver has no release for it (its README: "
                   f"{SUPPORTED}; none for 5.x or 6.x)")


def decode_saved_string(data: bytes) -> str | None:
    """A std::string as walb saves it in a volume's files (cybozu's serializer: a
    variable-length size, then the bytes), or None when `data` is not one."""
    if not data:
        return None
    head, rest = data[0], data[1:]
    sizes = {0x80: "<B", 0x81: "<H", 0x82: "<I", 0x83: "<Q"}
    if head < 0x80:
        size = head
    elif head in sizes:
        width = struct.calcsize(sizes[head])
        if len(rest) < width:
            return None
        size, rest = struct.unpack(sizes[head], rest[:width])[0], rest[width:]
    else:
        return None
    if len(rest) != size:
        return None
    return rest.decode(errors="replace")


@dataclass(frozen=True)
class StorageVolume:
    """A directory in a storage's base dir, as walb-storage will read it at start."""

    name: str
    device: str | None  # its `path` file: the WalB device; None when missing or unreadable
    state: str | None  # its `state` file

    @property
    def wdev_name(self) -> str | None:
        if self.device is None or not self.device.startswith(WALB_DEV):
            return None
        return self.device[len(WALB_DEV):]


@dataclass(frozen=True)
class StorageHostView:
    """What a read-only probe saw on a storage host: the driver, its devices, the volumes."""

    control: bool  # /dev/walb/control: the driver is loaded
    devices: frozenset[str]  # names under /dev/walb
    lsids: frozenset[str]  # NAME for every /sys/block/walb!NAME/walb/lsids
    volumes: tuple[StorageVolume, ...]

    @classmethod
    def parse(cls, text: str) -> StorageHostView:
        """Read the storage probe's lines: `control`, `dev :B64`, `lsids :B64`,
        `vol :B64NAME :B64PATH|- :B64STATE|-` (base64 keeps any byte on one line)."""
        control = False
        devices: set[str] = set()
        lsids: set[str] = set()
        volumes = []
        for line in text.splitlines():
            kind, *fields = line.split()
            if kind == "control":
                control = True
            elif kind == "dev" and fields:
                devices.add(_text(fields[0]))
            elif kind == "lsids" and fields:
                lsids.add(_text(fields[0]))
            elif kind == "vol" and len(fields) == 3:
                path, state = (decode_saved_string(_bytes(f)) if f != "-" else None
                               for f in fields[1:])
                volumes.append(StorageVolume(_text(fields[0]), path, state))
        return cls(control, frozenset(devices), frozenset(lsids),
                   tuple(sorted(volumes, key=lambda v: v.name)))

    def start_problems(self) -> list[str]:
        """Why walb-storage would exit 1 at start with this base dir on this host."""
        out = []
        for v in self.volumes:
            if v.device is None:
                out.append(f"{v.name} is not a walb volume (no readable 'path' file); move it "
                           "out of the base dir")
                continue
            name = v.wdev_name
            state = v.state or "state unknown"
            if name is None or name not in self.devices:
                out.append(f"volume {v.name} ({state}) needs {v.device}, which is missing")
            elif v.state in MONITORED_STATES and name not in self.lsids:
                out.append(f"volume {v.name} ({state}) needs /sys/block/walb!{name}/walb/lsids,"
                           " which is missing")
        return out


def _bytes(field: str) -> bytes:
    return base64.b64decode(field.removeprefix(":"))


def _text(field: str) -> str:
    return _bytes(field).decode(errors="replace")
