"""What `walbctr up` does for a newcomer beyond deploying: build the missing image, make
the lab's volume groups, and say what to try next.

On a machine with only Docker, `walbctr up examples/lab.yaml` must end with a running
group: the image is built from pinned upstream walb-tools when the operator says yes (on
a terminal, or `--build` up front), and an archive with `lab_vg_size` gets its VG on a
loop file (walbctr.commands.lab). Without a terminal and without `--build`, nothing is built and
the error gives the exact command that would.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

from walbctr.commands import lab as labvg
from walbctr.commands.deploy import ImageMissingError
from walbctr.docker.engine import Engine
from walbctr.image.build import build as run_build
from walbctr.layout.imagetag import UPSTREAM_COMMIT, UPSTREAM_URL, UPSTREAM_VERSION, keeper_image
from walbctr.layout.server import Role
from walbctr.render.keeper_service import image_of, monitor_of

if TYPE_CHECKING:
    from walbctr.display import ProgressMode
    from walbctr.layout.spec import Layout

Echo = Callable[[str], None]


def source_words(source: str | None) -> str:
    if source:
        return f"from {source}"
    return (f"from upstream walb-tools v{UPSTREAM_VERSION} ({UPSTREAM_URL}, commit "
            f"{UPSTREAM_COMMIT[:7]})")


def built_images(layout: Layout, hosts: Collection[str]) -> list[str]:
    """The images `walbctr build` makes that the layout runs on this machine's engine:
    the servers' image, and the keeper's unless the monitor block names another."""
    local = [h for h in hosts if layout.hosts[h].engine is None]
    wanted = [layout.image] if local else []
    m = monitor_of(layout)
    if m is not None and m.host in local and not m.image:
        wanted.append(image_of(layout))
    return wanted


def lacking_images(layout: Layout, hosts: Collection[str]) -> tuple[list[str], list[str]]:
    """(images this machine's engine lacks, its hosts): what a build would provide."""
    wanted = built_images(layout, hosts)
    if not wanted:
        return [], []
    engine = Engine()
    missing = [image for image in wanted if engine.image_or_none(image) is None]
    local = [h for h in hosts if layout.hosts[h].engine is None]
    return missing, local if missing else []


def build_command(layout_arg: str, source: str | None, host: str | None) -> str:
    words = ["walbctr", "up", "--build"]
    if source:
        words += ["--source", source]
    if host:
        words += ["--host", host]
    return shlex.join([*words, layout_arg])


def missing_image(images: list[str], hosts: list[str], command: str,
                  source: str | None) -> ImageMissingError:
    err = ImageMissingError(
        f"image {' and '.join(images)} {'is' if len(images) == 1 else 'are'} not on the "
        f"engine of {', '.join(hosts)}; nothing was started",
        f"run '{command}' to build it {source_words(source)} and go on (or build it "
        "first with 'walbctr build')")
    err.remote = False
    return err


def build_image(layout: Layout, source: str | None, progress: ProgressMode,
                echo: Echo) -> str:
    """Build the layout's image; a build of another source is tagged as it too."""
    echo(f"building {layout.image} {source_words(source)}")
    built = run_build(source=source, ref=None, base_image=None, target="core", extra_tags=(),
                  no_cache=False, pull=True, progress=progress, echo=echo)
    if built.tag != layout.image:
        # The layout names its image; the build names it after its source. Tag the build
        # as the layout's image, so `up` runs what was just built.
        api = Engine().api
        api.images.get(built.tag).tag(layout.image)
        if built.keeper_tag and keeper_image(layout.image) != built.keeper_tag:
            api.images.get(built.keeper_tag).tag(keeper_image(layout.image))
        echo(f"tagged {built.tag} as {layout.image}, the layout's image")
    return built.tag


def prepare(layout: Layout, hosts: Collection[str], *, build: bool, source: str | None,
            confirm: Callable[[str], bool], command: str, progress: ProgressMode,
            echo: Echo) -> None:
    """Before `up`: the image on this machine (built if allowed), then the lab VGs."""
    images, lacking = lacking_images(layout, hosts)
    if lacking:
        question = (f"image {' and '.join(images)} {'is' if len(images) == 1 else 'are'} not "
                    f"on this machine's engine.\nBuild {'it' if len(images) == 1 else 'them'} "
                    f"now {source_words(source)}? (compiling walb-tools takes a few minutes)")
        if not (build or confirm(question)):
            raise missing_image(images, lacking, command, source)
        build_image(layout, source, progress, echo)
    labvg.ensure(layout, hosts, echo)


def next_steps(layout: Layout, layout_arg: str) -> str:
    """The commands to try once a group is up, for this layout."""
    path = shlex.quote(layout_arg)
    storages = layout.of_role(Role.STORAGE)
    some = storages[0] if storages else layout.servers[0]
    archive = layout.of_role(Role.ARCHIVE)[0]
    down = f"walbctr down {path}" + (" --purge-lab" if labvg.lab_vgs(layout) else "")
    rows = [
        (f"walbctr status {path}", "one row per server: state, health, uptime"),
        (f"walbctr walbc {path} {some.id} status", f"ask {some.id} through walbc"),
        (f"walbctr logs {path} {archive.id}", f"{archive.id}'s log (-f to follow)"),
        (down, "stop the group" + (", and remove the lab VG" if "purge" in down else
                                   "; data stays")),
    ]
    width = max(len(c) for c, _ in rows)
    return "next:\n" + "\n".join(f"  {c.ljust(width)}  # {why}" for c, why in rows)

