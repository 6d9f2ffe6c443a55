from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from walbctr.errors import WalbctrError
from walbctr.image.source import copy_tree, describe, resolve
from walbctr.layout.imagetag import DEFAULT_IMAGE, image_tag


def make_tree(root: Path) -> Path:
    (root / "binsrc").mkdir(parents=True)
    (root / "Makefile").write_text("core:\n\ttrue\n")
    (root / "VERSION").write_text("1.2.3\n")
    (root / "binsrc" / "walbc.cpp").write_text("int main(){}\n")
    (root / "binsrc" / "walbc").write_bytes(b"\x7fELF stale native binary")
    (root / "binsrc" / "walbc.o").write_bytes(b"object")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: x\n")
    return root


def test_copy_leaves_out_git_and_build_products(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "src")
    digest, _ = copy_tree(tree, tmp_path / "ctx")
    copied = sorted(p.relative_to(tmp_path / "ctx").as_posix()
                    for p in (tmp_path / "ctx").rglob("*") if p.is_file())
    assert copied == ["Makefile", "VERSION", "binsrc/walbc.cpp"]
    again, _ = copy_tree(tree, tmp_path / "ctx2")
    assert again == digest
    (tree / "VERSION").write_text("1.2.4\n")
    changed, _ = copy_tree(tree, tmp_path / "ctx3")
    assert changed != digest


def test_describe_a_plain_directory(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "src")
    digest, newest = copy_tree(tree, tmp_path / "ctx")
    src = describe(tree, digest, newest, None)  # .git here is not a repository
    assert src.version == "1.2.3"
    assert src.revision == f"tree-{digest[:12]}"
    assert src.created.endswith("Z")
    assert image_tag(src.version, src.revision) == f"walbctr/walb-tools:1.2.3-tree-{digest[:8]}"


def test_describe_a_clean_git_checkout(tmp_path: Path) -> None:
    tree = tmp_path / "repo"
    tree.mkdir()
    (tree / "Makefile").write_text("x\n")
    (tree / "VERSION").write_text("9.9\n")
    git = ["git", "-C", str(tree), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    digest, newest = copy_tree(tree, tmp_path / "ctx")
    assert describe(tree, digest, newest, None).revision == head
    (tree / "VERSION").write_text("dirty\n")
    assert describe(tree, digest, newest, None).revision.startswith("tree-")


def test_default_image_is_the_pinned_upstream() -> None:
    assert DEFAULT_IMAGE == "walbctr/walb-tools:1.0.19-d7295d2"


def test_resolve_rejects_what_is_not_a_tree(tmp_path: Path) -> None:
    with pytest.raises(WalbctrError, match="no such directory"):
        resolve(str(tmp_path / "none"), None)
    with pytest.raises(WalbctrError, match="no Makefile"):
        resolve(str(tmp_path), None)
    with pytest.raises(WalbctrError, match="--ref goes with a git URL"):
        resolve(str(tmp_path), "v1")


@pytest.mark.parametrize(("url", "ref"), [
    ("--upload-pack=touch /tmp/walbctr-injected;://", "v1.0.19"),
    ("https://github.com/walb-linux/walb-tools", "--upload-pack=touch /tmp/walbctr-injected"),
])
def test_a_source_or_ref_starting_with_a_dash_is_refused_before_git_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str, ref: str) -> None:
    from walbctr.image.source import fetch

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(WalbctrError, match="starts with '-'"):
        fetch(url, ref)
    assert not (tmp_path / "walbctr").exists()  # refused before any checkout dir is made
    assert not Path("/tmp/walbctr-injected").exists()
