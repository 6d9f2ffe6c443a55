"""Writing rendered compose files: only what changed, and pruning only what we generated."""

from __future__ import annotations

import os
import socket
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from walbctr.docker.state import group_dir, read_private, write_private
from walbctr.errors import WalbctrError
from walbctr.render.compose import GENERATED, compose_project, dump, file_name

if TYPE_CHECKING:
    from walbctr.docker.containers import Observed
    from walbctr.layout.spec import Layout


def write_files(directory: Path, files: dict[str, str], *, prune: bool = False,
                fix: str = "", mode: int = 0o644) -> dict[str, Path]:
    """Write name -> text into `directory`; with `prune`, remove generated files not named.

    Unchanged files are left alone, so their modification times keep meaning something.
    Each file is replaced whole (state.write_private), never written through a symlink;
    one already there is refused. `mode`: 0600 in walbctr's state dir, 0644 for `render`.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if prune:
            for stale in sorted(directory.glob("*.yaml")):
                if stale.name not in files and _generated(stale):
                    stale.unlink()
        paths = {}
        for name, text in files.items():
            path = directory / name
            if read_private(path) != text:
                write_private(path, text, mode)
            paths[name] = path
        return paths
    except OSError as err:
        raise WalbctrError(f"cannot write compose files to {directory}: {err}", fix) from None


def identity(layout: Layout) -> str:
    """The layout as this controller knows it: its host name and the file's real path."""
    return f"{socket.gethostname()}:{os.path.realpath(layout.source)}"


def write_compose_files(layout: Layout, hosts: Iterable[str],
                        old_engines: Collection[str] = (),
                        observed: Mapping[str, Observed] | None = None) -> dict[str, Path]:
    """host -> its compose file in walbctr's state dir, written where it changed.
    `observed`: the group's containers now, whose layout labels are kept as they are."""
    who = identity(layout)
    kept = {sid: obs.layout for sid, obs in (observed or {}).items()}
    texts = {host: dump(layout, compose_project(layout, host, host not in old_engines, who,
                                                kept)) for host in hosts}
    paths = write_files(group_dir(layout.group), {file_name(h): t for h, t in texts.items()},
                        fix="set WALBCTR_STATE_DIR to a writable directory", mode=0o600)
    return {host: paths[file_name(host)] for host in texts}


def _generated(path: Path) -> bool:
    """Whether walbctr wrote `path`; a file it would not read (a symlink...) is not its own."""
    try:
        return (read_private(path) or "").startswith(GENERATED)
    except WalbctrError:
        return False
