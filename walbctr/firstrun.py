"""What `walbctr up` does for a newcomer beyond deploying: build the missing image, make
the lab's volume groups, and say what to try next.

On a machine with only Docker, `walbctr up examples/lab.yaml` must end with a running
group: the image is built from pinned upstream walb-tools when the operator says yes (on
a terminal, or `--build` up front), and an archive with `lab_vg_size` gets its VG on a
loop file (walbctr.labvg). Without a terminal and without `--build`, nothing is built and
the error gives the exact command that would.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

from walbctr import labvg
from walbctr.build import build as run_build
from walbctr.deploy import ImageMissingError
from walbctr.engine import Engine
from walbctr.imagetag import UPSTREAM_COMMIT, UPSTREAM_URL, UPSTREAM_VERSION
from walbctr.server import Role

if TYPE_CHECKING:
    from walbctr.display import ProgressMode
    from walbctr.layout import Layout

Echo = Callable[[str], None]


def source_words(source: str | None) -> str:
    if source:
        return f"from {source}"
    return (f"from upstream walb-tools v{UPSTREAM_VERSION} ({UPSTREAM_URL}, commit "
            f"{UPSTREAM_COMMIT[:7]})")


def local_hosts_lacking_image(layout: Layout, hosts: Collection[str]) -> list[str]:
    """Hosts of this machine's engine that lack the layout's image (pushing cannot help)."""
    local = [h for h in hosts if layout.hosts[h].engine is None]
    if not local or Engine(label=local[0]).image_or_none(layout.image) is not None:
        return []
    return local


def build_command(layout_arg: str, source: str | None, host: str | None) -> str:
    words = ["walbctr", "up", "--build"]
    if source:
        words += ["--source", source]
    if host:
        words += ["--host", host]
    return shlex.join([*words, layout_arg])


def missing_image(layout: Layout, hosts: list[str], command: str,
                  source: str | None) -> ImageMissingError:
    err = ImageMissingError(
        f"image {layout.image} is not on the engine of {', '.join(hosts)}; nothing was "
        "started",
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
        keeper = getattr(built, "keeper_tag", "")
        if keeper and ":" in layout.image:
            api.images.get(keeper).tag(keeper.rsplit(":", 1)[0] + ":"
                                       + layout.image.rsplit(":", 1)[1])
        echo(f"tagged {built.tag} as {layout.image}, the layout's image")
    return built.tag


def prepare(layout: Layout, hosts: Collection[str], *, build: bool, source: str | None,
            confirm: Callable[[str], bool], command: str, progress: ProgressMode,
            echo: Echo) -> None:
    """Before `up`: the image on this machine (built if allowed), then the lab VGs."""
    lacking = local_hosts_lacking_image(layout, hosts)
    if lacking:
        question = (f"image {layout.image} is not on this machine's engine.\nBuild it now "
                    f"{source_words(source)}? (compiling walb-tools takes a few minutes)")
        if not (build or confirm(question)):
            raise missing_image(layout, lacking, command, source)
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

