"""The walb-tools source to compile: fetched from git, or a local tree; its identity.

A tree is identified by its git commit when it is a clean checkout, otherwise by a hash
of its content, so that two different trees never produce the same image tag.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from walbctr.errors import WalbctrError
from walbctr.layout.imagetag import UPSTREAM_COMMIT, UPSTREAM_URL

# Build products a tree may hold from an earlier native build: copying them would let
# make skip compiling (their mtimes are newer than the sources).
_PRODUCT_SUFFIXES = (".o", ".a", ".d", ".so", ".pyc")


@dataclass(frozen=True)
class SourceTree:
    path: Path
    url: str  # where it came from, for the image's source label
    version: str  # walb-tools' VERSION file
    revision: str  # commit, or "tree-" + content hash
    created: str  # RFC 3339: commit date, or newest file's mtime


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "walbctr"


def fetch(url: str, ref: str) -> Path:
    """A checkout of `ref` from `url`, cached by URL; raises with git's own words.

    Neither value may start with '-': git would take it as an option (`--upload-pack=...`
    runs a command), so it is refused here and `--` separates them from git's options.
    """
    for what, value in (("source URL", url), ("ref", ref)):
        if value.startswith("-"):
            raise WalbctrError(
                f"the {what} {value!r} starts with '-', which git would read as an option",
                "give a URL (https://..., ssh://..., or a path) and a tag, branch or commit "
                "that does not start with '-' (--source / WALBCTR_SOURCE, --ref)")
    dest = cache_dir() / "sources" / hashlib.sha256(url.encode()).hexdigest()[:16]
    dest.mkdir(parents=True, exist_ok=True)
    steps = [
        ["git", "init", "-q"],
        ["git", "fetch", "-q", "--depth", "1", "--", url, ref],
        ["git", "-c", "advice.detachedHead=false", "checkout", "-q", "--force", "FETCH_HEAD"],
        ["git", "clean", "-q", "-f", "-d", "-x"],
    ]
    for cmd in steps:
        try:
            run = subprocess.run(cmd, cwd=dest, capture_output=True, text=True, check=False,
                                 timeout=600)
        except FileNotFoundError:
            raise WalbctrError("git is not installed", "install git, or pass --source DIR "
                               "with an unpacked walb-tools tree") from None
        except subprocess.TimeoutExpired:
            raise WalbctrError(f"fetching {url} took more than 10 minutes") from None
        if run.returncode != 0:
            last = (run.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise WalbctrError(
                f"cannot fetch {ref} from {url}: {last}",
                "on a machine without internet access, copy walb-tools there (a checkout or "
                "an unpacked release tarball) and pass --source DIR",
            )
    return dest


def _git(path: Path, *args: str) -> str | None:
    try:
        run = subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True,
                             check=False, timeout=60)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return None
    return run.stdout.strip() if run.returncode == 0 else None


def _is_product(path: Path) -> bool:
    if path.suffix in _PRODUCT_SUFFIXES:
        return True
    try:
        with path.open("rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def copy_tree(src: Path, dest: Path) -> tuple[str, float]:
    """Copy `src` to `dest` without .git and build products; return (content hash, mtime)."""
    digest = hashlib.sha256()
    newest = 0.0
    for root, dirs, files in os.walk(src):
        dirs[:] = sorted(d for d in dirs if d != ".git")
        rel_root = Path(root).relative_to(src)
        (dest / rel_root).mkdir(parents=True, exist_ok=True)
        for name in sorted(files):
            path = Path(root) / name
            if path.is_symlink() or _is_product(path):
                continue
            rel = (rel_root / name).as_posix()
            data = path.read_bytes()
            st = path.stat()
            digest.update(f"{rel}\0{st.st_mode & 0o111:o}\0{len(data)}\0".encode())
            digest.update(data)
            newest = max(newest, st.st_mtime)
            target = dest / rel_root / name
            target.write_bytes(data)
            shutil.copymode(path, target)
    return digest.hexdigest(), newest


def describe(path: Path, content_hash: str, newest_mtime: float, url: str | None) -> SourceTree:
    """Identity of the tree at `path` (whose filtered copy hashed to `content_hash`)."""
    version_file = path / "VERSION"
    version = version_file.read_text().strip() if version_file.is_file() else "unknown"
    commit = None
    if (path / ".git").exists() and _git(path, "status", "--porcelain") == "":
        commit = _git(path, "rev-parse", "HEAD")
    if commit:
        created = _git(path, "log", "-1", "--format=%cI") or ""
        origin = url or _git(path, "remote", "get-url", "origin") or "local checkout"
        return SourceTree(path, origin, version, commit, created)
    created = datetime.fromtimestamp(newest_mtime, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return SourceTree(path, url or "local directory", version, f"tree-{content_hash[:12]}",
                      created)


def resolve(source: str | None, ref: str | None) -> tuple[Path, str | None]:
    """(local tree, URL it came from) for --source/--ref; fetches when given a URL."""
    if source is None or "://" in source or source.startswith("git@"):
        url = source or UPSTREAM_URL
        return fetch(url, ref or UPSTREAM_COMMIT), url
    path = Path(source).expanduser()
    if ref is not None:
        raise WalbctrError("--ref goes with a git URL, not a directory",
                           f"check out {ref} in {source} yourself, or pass its URL")
    if not path.is_dir():
        raise WalbctrError(f"--source {source}: no such directory")
    if not (path / "Makefile").is_file():
        raise WalbctrError(f"--source {source} has no Makefile: not a walb-tools tree",
                           "pass the top directory of a walb-tools checkout or tarball")
    return path, None
