"""Writing rendered compose files: only what changed, and pruning only what we generated."""

from __future__ import annotations

from pathlib import Path

from walbctr.compose import GENERATED
from walbctr.errors import WalbctrError


def write_files(directory: Path, files: dict[str, str], *, prune: bool = False,
                fix: str = "") -> dict[str, Path]:
    """Write name -> text into `directory`; with `prune`, remove generated files not named.

    Unchanged files are left alone, so their modification times keep meaning something.
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
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                path.write_text(text, encoding="utf-8")
            paths[name] = path
        return paths
    except OSError as err:
        raise WalbctrError(f"cannot write compose files to {directory}: {err}", fix) from None


def _generated(path: Path) -> bool:
    with path.open(encoding="utf-8", errors="replace") as f:
        return f.readline().startswith(GENERATED)
