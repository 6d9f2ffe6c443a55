"""Host paths a server may not be given: the host's system trees, sockets, and the binds
walbctr itself makes. A base dir or a log's directory is bound read-write into the
server's container (compose `create_host_path`), so a path under these would hand the
container part of the host."""

from __future__ import annotations

# Refused exactly: binding one of these (as a base dir, or as a log file's directory)
# would hand the container the host's system files.
SYSTEM_DIRS = frozenset({
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/opt", "/proc",
    "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var", "/var/lib",
    "/var/log", "/var/run", "/var/tmp",
})
# Refused by prefix as well: `/etc/cron.d/x` or `/var/lib/docker` is as dangerous as `/etc`.
SYSTEM_TREES = ("/etc", "/proc", "/sys", "/dev", "/boot", "/run", "/var/run",
                "/var/lib/docker", "/root/.ssh", "/usr", "/bin", "/sbin", "/lib", "/lib64")
# Under /run only this, per group, is walbctr's: a tmpfs, for scratch that need not
# outlive a reboot.
RUN_OWN = "/run/walbctr"

# The archive's LVM passthrough (see README, "LVM inside the archive container"): the host's
# udev database and locks, so that lvcreate inside the container and lvm on the host take
# the same locks and new /dev/VG/LV nodes come from the host's udev; the host's metadata
# backups, so the host keeps its history. Host IPC carries device-mapper's udev cookies.
LVM_BINDS = ("/run/lvm", "/run/lock/lvm", "/etc/lvm/backup", "/etc/lvm/archive")
UDEV_DIR = "/run/udev"


def inside(path: str, tree: str) -> bool:
    """Whether normalized `path` is `tree` or below it."""
    return path == tree or path.startswith(tree.rstrip("/") + "/")


def system_tree(path: str, group: str) -> str | None:
    """Why `path` (absolute, normalized) may not be bound into a server's container, as
    words that follow the path ("is under /etc, a system tree"), or None when the group
    may have it."""
    if any(part.endswith(".sock") for part in path.split("/")):
        return "is a socket path (*.sock)"
    own = f"{RUN_OWN}/{group}"
    if inside(path, own) and path != own:
        return None
    tree = next((t for t in SYSTEM_TREES if inside(path, t)), None)
    if tree is not None:
        return f"is under {tree}, a system tree"
    for bind in (*LVM_BINDS, UDEV_DIR):
        if inside(path, bind) or inside(bind, path):
            return f"overlaps {bind}, which walbctr binds into archives for LVM and udev"
    return None
