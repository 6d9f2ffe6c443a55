"""An LVM volume group on a loop file, made, found and removed through an image's own lvm2.

A VG on a loop device satisfies walb-archive (its start-up check runs vgs and lvs) on a
machine with no spare disk: walbctr makes one for labs (walbctr.commands.lab) and the tests
make throwaway ones. The host needs no lvm2 of its own: a probe container of the
walb-tools image runs it, with /dev bound and the device access loop devices and
device-mapper need. The loop file is bound at the same path inside, so `losetup -j`
finds its device by the file's inode whichever namespace attached it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from docker.errors import ContainerError

from walbctr.docker.throwaway import run_probe, sh
from walbctr.errors import WalbctrError, last_line

if TYPE_CHECKING:
    from walbctr.docker.engine import Engine


@dataclass(frozen=True)
class LoopVg:
    name: str  # the volume group
    file: Path  # its backing file, on the engine's machine
    size: str  # truncate(1) size of a new file, e.g. "1G" (sparse)
    tag: str  # LVM tag that marks the VG as made by walbctr


@dataclass(frozen=True)
class Seen:
    """What the engine's machine has of a loop VG."""

    exists: bool  # a VG of that name (maybe not ours)
    tags: tuple[str, ...]
    pvs: tuple[str, ...]  # the VG's physical volumes
    file: bool  # the backing file exists
    loops: tuple[str, ...]  # loop devices attached to the backing file

    def tagged(self, tag: str) -> bool:
        return tag in self.tags

    @property
    def only_on_its_file(self) -> bool:
        """Every PV of the VG is a loop device of the file: nothing else would go."""
        return bool(self.pvs) and set(self.pvs) <= set(self.loops)


_INSPECT = """
f=$1 vg=$2
if vgs "$vg" >/dev/null 2>&1; then
  echo "tags $(vgs --noheadings -o vg_tags "$vg" | tr -d ' ')"
  pvs --noheadings -o pv_name,vg_name 2>/dev/null | while read -r pv v; do
    [ "$v" = "$vg" ] && echo "pv $pv"
  done
fi
[ -e "$f" ] && echo "file"
losetup -j "$f" 2>/dev/null | cut -d: -f1 | sed 's/^/loop /'
true
"""

# A new file gets a PV and a VG; an existing one (after a reboot detached it) is attached
# again, and LVM finds the VG on it by scanning. A failed first make leaves nothing behind.
_CREATE = """
f=$1 vg=$2 new=
# A link planted at the file's name would have truncate and losetup work on its target.
if [ -L "$f" ]; then echo "$f is a symbolic link; walbctr makes lab VG files itself" >&2; exit 5; fi
dev=$(losetup -j "$f" | cut -d: -f1 | head -n 1)
if [ -z "$dev" ]; then
  if [ ! -e "$f" ]; then truncate -s "$3" "$f" || exit 1; new=1; fi
  if ! dev=$(losetup -f --show "$f"); then [ -z "$new" ] || rm -f "$f"; exit 1; fi
fi
if [ -n "$new" ]; then
  if ! { pvcreate -q "$dev" && vgcreate -q --addtag "$4" "$vg" "$dev"; } >&2; then
    pvremove -q "$dev" >/dev/null 2>&1; losetup -d "$dev"; rm -f "$f"; exit 1
  fi
else
  vgchange -q -ay "$vg" >/dev/null 2>&1
fi
echo "$dev"
"""

# The tag is checked again right before vgremove: only a VG walbctr made ever goes.
_REMOVE = """
f=$1 vg=$2 tag=$3
if vgs "$vg" >/dev/null 2>&1; then
  case ",$(vgs --noheadings -o vg_tags "$vg" | tr -d ' ')," in
    *",$tag,"*) ;;
    *) echo "volume group $vg does not carry the tag $tag" >&2; exit 3 ;;
  esac
  # Checked again here, right before vgremove: a PV added since 'down' began would go too.
  loops=" $(losetup -j "$f" | cut -d: -f1 | tr '\n' ' ')"
  for pv in $(vgs --noheadings -o pv_name "$vg"); do
    case "$loops" in
      *" $pv "*) ;;
      *) echo "volume group $vg also lies on $pv, not only on the loop file $f;" \
           "nothing was removed" >&2; exit 4 ;;
    esac
  done
  vgremove -q -f "$vg" >&2 || exit 1
fi
for dev in $(losetup -j "$f" | cut -d: -f1); do
  pvremove -q "$dev" >/dev/null 2>&1
  losetup -d "$dev" || exit 1
done
rm -f "$f"
"""


def parse_seen(text: str) -> Seen:
    tags: tuple[str, ...] = ()
    exists = file = False
    pvs: list[str] = []
    loops: list[str] = []
    for line in text.splitlines():
        kind, _, value = line.strip().partition(" ")
        if kind == "tags":
            exists = True
            tags = tuple(t for t in value.split(",") if t)
        elif kind == "pv":
            pvs.append(value)
        elif kind == "file":
            file = True
        elif kind == "loop" and value:
            loops.append(value)
    return Seen(exists, tags, tuple(pvs), file, tuple(loops))


def _probe(engine: Engine, image: str, vg: LoopVg, script: str, *args: str) -> str:
    folder = str(vg.file.parent)
    options: dict[str, Any] = {
        # Loop devices (block 7), device-mapper's nodes (a block major of its own) and
        # the misc control nodes (loop-control 10:237, device-mapper 10:236).
        "cap_add": ["SYS_ADMIN"], "device_cgroup_rules": ["b *:* rwm", "c 10:* rwm"],
        "ipc_mode": "host",  # device-mapper's udev cookies, as in the archive container
    }
    volumes = {"/dev": {"bind": "/dev", "mode": "rw"}, folder: {"bind": folder, "mode": "rw"}}
    return run_probe(engine, image, sh(script, str(vg.file), vg.name, *args), purpose="loop-vg",
                     volumes=volumes, **options)


def _failed(what: str, vg: LoopVg, err: ContainerError, fix: str) -> WalbctrError:
    said = err.stderr.decode(errors="replace") if isinstance(err.stderr, bytes) else ""
    return WalbctrError(f"cannot {what} volume group {vg.name} on the loop file {vg.file}: "
                        f"{last_line(said, f'exit status {err.exit_status}')}", fix)


def inspect(engine: Engine, image: str, vg: LoopVg) -> Seen:
    try:
        return parse_seen(_probe(engine, image, vg, _INSPECT))
    except ContainerError as err:
        raise _failed("look for", vg, err, "") from None


def create(engine: Engine, image: str, vg: LoopVg, fix: str = "") -> str:
    """Make the VG (or attach its existing file again); the loop device it is on."""
    vg.file.parent.mkdir(parents=True, exist_ok=True)
    try:
        return _probe(engine, image, vg, _CREATE, vg.size, vg.tag).split()[-1]
    except ContainerError as err:
        raise _failed("make", vg, err, fix) from None


def remove(engine: Engine, image: str, vg: LoopVg) -> None:
    """Remove the VG (only when it carries vg.tag), its PV, loop devices and file."""
    try:
        _probe(engine, image, vg, _REMOVE, vg.tag)
    except ContainerError as err:
        fix = ("take the other PV out with vgreduce, or remove the VG yourself"
               if err.exit_status == 4 else "")
        raise _failed("remove", vg, err, fix) from None
