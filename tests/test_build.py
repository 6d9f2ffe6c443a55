"""The image, built for real from the test double through `walbctr build`."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DOUBLE_SOURCE, run_walbctr

EXECUTABLES = ("walb-storage", "walb-proxy", "walb-archive", "walbc", "wdevc")


def sh(engine: Any, image: str, script: str) -> tuple[int, str]:
    container = engine.containers.run(image, ["sh", "-c", script], detach=True)
    try:
        status = container.wait(timeout=60)["StatusCode"]
        return status, container.logs().decode()
    finally:
        container.remove(force=True)


def test_executables_run(engine: Any, double_image: str) -> None:
    for exe in EXECUTABLES:
        status, out = sh(engine, double_image, f"{exe} -h")
        assert status == 0, (exe, out)
        assert out.strip(), exe
    status, _ = sh(engine, double_image, "walb-archive -bg 1")
    assert status == 1  # the archive has no -bg: the real contract


def test_runtime_has_no_compiler(engine: Any, double_image: str) -> None:
    status, out = sh(engine, double_image, "for t in gcc g++ cc make; do command -v $t; done; true")
    assert status == 0
    assert out.strip() == ""


def test_tools_at_the_paths_walb_calls(engine: Any, double_image: str) -> None:
    paths = ["/sbin/" + t for t in ("lvm", "vgs", "lvs", "lvcreate", "lvremove", "lvrename",
                                    "lvresize", "lvchange", "dmsetup", "blockdev")]
    paths += ["/bin/lsblk", "/usr/sbin/thin_check"]
    status, out = sh(engine, double_image, " && ".join(f"test -x {p}" for p in paths))
    assert status == 0, out
    status, out = sh(engine, double_image, "lvm dumpconfig activation/monitoring")
    assert "monitoring=0" in out


def test_labels(engine: Any, double_image: str) -> None:
    labels = engine.images.get(double_image).labels
    assert labels["org.opencontainers.image.version"] == "1.0.19-double"
    assert labels["org.opencontainers.image.revision"].startswith("tree-")
    assert labels["io.walbctr.test-double"] == "true"
    assert labels["io.walbctr.version"]
    assert labels["org.opencontainers.image.created"]
    assert double_image.startswith("walbctr/walb-tools:1.0.19-double-tree-")


def test_unchanged_rebuild_hits_the_cache(engine: Any, double_image: str) -> None:
    before = engine.images.get(double_image).id
    run = run_walbctr("build", "--source", str(DOUBLE_SOURCE), "--plain")
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split()[0] == double_image
    assert engine.images.get(double_image).id == before
    make_step = [line for line in run.stderr.splitlines() if "make -j" in line and "RUN" in line]
    assert make_step, run.stderr[-3000:]
    step = make_step[0].split()[0]
    assert f"{step} CACHED" in run.stderr


def test_base_images_come_from_debian_packages(engine: Any, double_image: str) -> None:
    base = engine.images.get(double_image).labels["org.opencontainers.image.base.name"]
    if base == "debian:bookworm-slim":
        pytest.skip("this engine has the stock Debian image, so no base was made")
    for tag in ("walbctr/base:bookworm-runtime", "walbctr/base:bookworm-build"):
        labels = engine.images.get(tag).labels
        assert "mmdebstrap" in labels["org.opencontainers.image.description"]
    status, out = sh(engine, "walbctr/base:bookworm-runtime", "test ! -e /usr/bin/perl; "
                     "ls /var/lib/apt/lists | grep -c _Packages || true")
    assert status == 0
    assert out.strip() == "0"


def test_a_source_that_does_not_build_names_the_step(tmp_path: Path, engine: Any) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(DOUBLE_SOURCE, broken, ignore=shutil.ignore_patterns("binsrc", "obj"))
    wdevc = broken / "src" / "double_wdevc.cpp"
    wdevc.write_text(wdevc.read_text() + "\nthis is not C++;\n")
    run = run_walbctr("build", "--source", str(broken), "--quiet")
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    assert "the build failed at step [builder" in run.stderr
    assert "make -j" in run.stderr
    assert "error" in run.stderr.lower()


def test_a_source_url_that_cannot_be_fetched_says_what_to_do(engine: Any) -> None:
    run = run_walbctr("build", "--source", "http://127.0.0.1:9/walb-tools.git", "--ref",
                      "v1.0.19", "--quiet")
    assert run.returncode == 1
    assert "cannot fetch v1.0.19 from http://127.0.0.1:9/walb-tools.git" in run.stderr
    assert "--source DIR" in run.stderr
    assert "Traceback" not in run.stderr


def test_base_images_are_made_from_debian_packages(engine: Any, double_image: str) -> None:
    """`walbctr base` on its own, as an engine with no image at all would need it.

    The bases are made under a throwaway name, so the ones the other tests build on
    (and their caches) stay as they are.
    """
    import os
    import secrets
    import subprocess
    import sys

    repo = f"walbctr/base-test-{secrets.token_hex(3)}"
    run = subprocess.run([sys.executable, "-m", "walbctr", "base"], capture_output=True,
                         text=True, check=False,
                         env={**os.environ, "WALBCTR_BASE_REPOSITORY": repo})
    tags = (f"{repo}:bookworm-runtime", f"{repo}:bookworm-build")
    try:
        assert run.returncode == 0, run.stderr[-3000:]
        for tag in tags:
            assert tag in run.stdout
            labels = engine.images.get(tag).labels
            assert "mmdebstrap" in labels["org.opencontainers.image.description"]
        status, out = sh(engine, tags[0], "test -x /sbin/vgs && test -x /bin/lsblk && "
                         "! dpkg -s perl >/dev/null 2>&1 && du -sm /usr | cut -f1")
        assert status == 0, out
        assert int(out.split()[-1]) < 120  # MB: docs, locales and perl are left out
        status, out = sh(engine, tags[1], "command -v g++ make")
        assert status == 0 and "g++" in out
    finally:
        for tag in tags:
            with contextlib.suppress(Exception):
                engine.images.remove(tag)


def test_classic_builder_without_buildx(tmp_path: Path, engine: Any) -> None:
    """The same recipe through the Engine API's classic builder (no BuildKit)."""
    import os
    import subprocess
    import sys

    source = tmp_path / "double"
    shutil.copytree(DOUBLE_SOURCE, source, ignore=shutil.ignore_patterns("binsrc", "obj"))
    (source / "CLASSIC").write_text("a different tree, so a different tag\n")
    run = subprocess.run([sys.executable, "-m", "walbctr", "build", "--source", str(source),
                          "--plain", "-t", "walbctr/classic-test:latest"],
                         capture_output=True, text=True, check=False,
                         env={**os.environ, "WALBCTR_BUILDER": "classic"})
    try:
        assert run.returncode == 0, run.stderr[-3000:]
        assert "Step 1/" in run.stderr  # the classic builder's own progress
        tag = run.stdout.split()[0]
        image = engine.images.get(tag)
        assert "walbctr/classic-test:latest" in image.tags
        assert image.labels["org.opencontainers.image.version"] == "1.0.19-double"
        status, out = sh(engine, tag, "walb-proxy -h >/dev/null && ! command -v g++")
        assert status == 0, out
    finally:
        for ref in ("walbctr/classic-test:latest", *(run.stdout.split()[:1])):
            with contextlib.suppress(Exception):
                engine.images.remove(ref)
