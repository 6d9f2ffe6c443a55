"""Lab volume groups: an archive's VG made on a loop file, for labs and tests only.

An archive with `lab_vg_size` whose `vg` does not exist gets one from `walbctr up`: a
sparse file `lab-vg-VG.img` in the group's state directory, attached to a loop device,
holding VG `vg` tagged `walbctr-lab-GROUP`. The tag and the file are how walbctr knows the
VG is its own: `walbctr down --purge-lab` removes only a VG that carries the tag and
lies on nothing but that file. A VG that already exists without the tag is a real one:
the archive uses it as it is, and walbctr never creates, changes or removes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from walbctr.docker import loop_vg as loopvg
from walbctr.docker.containers import group_containers
from walbctr.docker.engine import Engine
from walbctr.docker.state import GroupLock, group_dir, state_dir
from walbctr.errors import WalbctrError
from walbctr.layout.server import Role

if TYPE_CHECKING:
    from collections.abc import Callable, Collection

    from walbctr.layout.spec import Layout

TAG_PREFIX = "walbctr-lab-"


def lab_tag(group: str) -> str:
    return TAG_PREFIX + group


def whose(seen: loopvg.Seen) -> str:
    """How an existing VG that is not this group's lab VG reads in a message."""
    groups = [t.removeprefix(TAG_PREFIX) for t in seen.tags if t.startswith(TAG_PREFIX)]
    if groups:
        return f"is the lab VG of group {groups[0]}"
    return "is not a lab VG"


@dataclass(frozen=True)
class LabVg:
    host: str
    archives: tuple[str, ...]  # the archives that keep their volumes in it
    vg: loopvg.LoopVg


def lab_vgs(layout: Layout, hosts: Collection[str] | None = None) -> list[LabVg]:
    """The lab VGs the layout asks for (on `hosts`), one per host and VG name."""
    found: dict[tuple[str, str], LabVg] = {}
    for s, entry in zip(layout.of_role(Role.ARCHIVE), layout.spec.archives, strict=True):
        if entry.lab_vg_size is None or (hosts is not None and s.host not in hosts):
            continue
        name = str(s.options["vg"])
        key = (s.host, name)
        if key in found:
            found[key] = LabVg(s.host, (*found[key].archives, s.id), found[key].vg)
            continue
        file = state_dir() / layout.group / f"lab-vg-{name}.img"  # the group_dir
        found[key] = LabVg(s.host, (s.id,), loopvg.LoopVg(name, file, entry.lab_vg_size,
                                                           lab_tag(layout.group)))
    return list(found.values())


_LOOP_FIX = ("a lab VG needs a Docker engine on this machine that may attach loop devices "
             "(rootful Docker on Linux); otherwise create the volume group yourself and "
             "remove lab_vg_size")


def ensure(layout: Layout, hosts: Collection[str], echo: Callable[[str], None]) -> None:
    """Make (or attach again) every lab VG that does not exist; leave real VGs alone.

    Does nothing where the image is missing: `up` reports that itself before anything.
    """
    wanted = lab_vgs(layout, hosts)
    if not wanted:
        return
    engine = Engine(label=wanted[0].host)  # validation keeps lab VGs on the local engine
    running = {sid for sid, obs in group_containers(engine, layout.group).items()
               if obs.status == "running"}
    wanted = [lab for lab in wanted if not set(lab.archives) <= running]
    if not wanted or engine.image_or_none(layout.image) is None:
        return
    group_dir(layout.group)  # made 0700 and checked, before the loop file goes in it
    with GroupLock(layout.group, "up"):
        for lab in wanted:
            vg = lab.vg
            seen = loopvg.inspect(engine, layout.image, vg)
            if seen.exists:
                if not seen.tagged(vg.tag):
                    echo(f"note: volume group {vg.name} exists and {whose(seen)}; "
                         f"{', '.join(lab.archives)} use{'s' if len(lab.archives) == 1 else ''}"
                         " it as it is (lab_vg_size applies only when it is missing)")
                continue
            again = seen.file
            device = loopvg.create(engine, layout.image, vg, _LOOP_FIX)
            after = loopvg.inspect(engine, layout.image, vg)
            if not (after.exists and after.tagged(vg.tag)):
                raise WalbctrError(
                    f"{vg.file} holds no lab volume group {vg.name} (attached as {device})",
                    f"remove it with 'walbctr down {layout.source} --purge-lab', then run "
                    "'walbctr up' again to make a new one")
            if again:
                echo(f"lab volume group {vg.name}: attached {vg.file} again as {device}")
            else:
                echo(f"lab volume group {vg.name}: made on {device}, a sparse {vg.size} file "
                     f"{vg.file} (tag {vg.tag}; for labs and tests only)")


@dataclass(frozen=True)
class Purge:
    """What `down --purge-lab` will remove, found before anything stops."""

    engine: Engine
    image: str
    labs: list[tuple[LabVg, loopvg.Seen]]


def plan_purge(layout: Layout) -> Purge:
    """Refuse before anything stops if a VG to purge is not one walbctr made."""
    labs = lab_vgs(layout)
    if not labs:
        raise WalbctrError(
            f"{layout.source} asks for no lab VG (no archive has lab_vg_size), so there is "
            "nothing walbctr made to purge; walbctr never removes a real volume group",
            f"run 'walbctr down {layout.source}' without --purge-lab")
    engine = Engine(label=labs[0].host)
    if engine.image_or_none(layout.image) is None:
        raise WalbctrError(f"image {layout.image} is not on this machine's engine, and "
                           "purging a lab VG runs its lvm2", "build it with 'walbctr build'")
    seen = [(lab, loopvg.inspect(engine, layout.image, lab.vg)) for lab in labs]
    for lab, s in seen:
        if s.exists and not s.tagged(lab.vg.tag):
            raise WalbctrError(
                f"volume group {lab.vg.name} {whose(s)}: not one walbctr made for this group "
                f"(it does not carry the tag {lab.vg.tag}); walbctr never removes a real "
                "volume group, and nothing was stopped",
                f"run 'walbctr down {layout.source}' without --purge-lab, and remove the "
                "volume group yourself if you mean to")
        if s.exists and not s.only_on_its_file:
            raise WalbctrError(
                f"lab volume group {lab.vg.name} also lies on devices other than "
                f"{lab.vg.file} ({', '.join(sorted(set(s.pvs) - set(s.loops)))}); "
                "walbctr removes only what it made, and nothing was stopped",
                f"run 'walbctr down {layout.source}' without --purge-lab")
    return Purge(engine, layout.image, seen)


def purge(layout: Layout, plan: Purge) -> list[str]:
    """Remove the planned lab VGs, their loop devices and files; what was done."""
    done = []
    with GroupLock(layout.group, "down --purge-lab"):
        for lab, seen in plan.labs:
            if not (seen.exists or seen.file or seen.loops):
                done.append(f"lab volume group {lab.vg.name}: nothing to remove")
                continue
            loopvg.remove(plan.engine, plan.image, lab.vg)
            parts = ([f"volume group {lab.vg.name}"] if seen.exists else []) + \
                [f"loop device {d}" for d in seen.loops] + \
                ([f"file {lab.vg.file}"] if seen.file else [])
            done.append(f"lab volume group {lab.vg.name}: removed {', '.join(parts)}")
    return done
