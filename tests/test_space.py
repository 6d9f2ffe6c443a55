"""`walbctr space`: the archives' VG (and thin-pool) space as LVM sees it on the archive's
host, for people and for node_exporter's textfile collector, on the real engine."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.test_deploy import Group
from walbctr.commands.space import METRICS, ArchiveSpace, exposition, parse_lvm
from walbctr.render.compose import ARCHIVE_CAPS, DEVICE_RULES

SERIES = re.compile(r'^(\w+)\{([^}]*)\} (\S+)$')


def samples(text: str) -> dict[tuple[str, str], float]:
    """(metric, labels as written) -> value, from Prometheus' text format."""
    out = {}
    for line in text.splitlines():
        m = SERIES.match(line)
        if m:
            out[(m.group(1), m.group(2))] = float(m.group(3))
    return out


def vgs(engine: Any, image: str, vg: str) -> tuple[int, int]:
    """The VG's size and free bytes, asked of LVM directly (not through walbctr)."""
    out = engine.containers.run(
        image, ["vgs", "--readonly", "--nolocking", "--noheadings", "--units", "b",
                "--nosuffix", "-o", "vg_size,vg_free", vg], remove=True, cap_drop=["ALL"],
        cap_add=list(ARCHIVE_CAPS), device_cgroup_rules=list(DEVICE_RULES),
        volumes={"/dev": {"bind": "/dev", "mode": "ro"}})
    size, free = out.decode().split()
    return int(size), int(free)


def test_space_writes_the_archives_vg_space_for_node_exporter(
        tmp_path: Path, engine: Any, double_image: str, loop_vg: str) -> None:
    group = Group(tmp_path / "g", engine, double_image, loop_vg, "bridge")
    prom = tmp_path / "walb-space.prom"
    run = group.walbctr("space", str(group.path), "--textfile", str(prom))
    assert run.returncode == 0, run.stderr
    assert re.search(rf"^a0\s+hostA0\s+{loop_vg}\s+\d+\.\dG\s+\d+\.\dG", run.stdout, re.M), \
        run.stdout
    got = samples(prom.read_text())
    labels = f'group="{group.name}",archive="a0",vg="{loop_vg}"'
    assert (got[("walb_archive_vg_size_bytes", labels)],
            got[("walb_archive_vg_free_bytes", labels)]) == vgs(engine, double_image, loop_vg)
    assert got[("walb_archive_space_ok", f'group="{group.name}",archive="a0"')] == 1
    assert prom.stat().st_mode & 0o777 == 0o644  # node_exporter runs as another user
    assert list(tmp_path.glob(".walb-space.prom.*")) == []  # no temporary file left
    if shutil.which("promtool"):
        lint = subprocess.run(["promtool", "check", "metrics"], input=prom.read_text(),
                              capture_output=True, text=True, check=False)
        assert lint.returncode == 0, lint.stdout + lint.stderr


def test_space_of_a_missing_vg_says_which_and_exits_1(
        tmp_path: Path, engine: Any, double_image: str) -> None:
    group = Group(tmp_path / "g", engine, double_image, "walbctr_nosuch_vg", "bridge")
    prom = tmp_path / "walb-space.prom"
    run = group.walbctr("space", str(group.path), "--textfile", str(prom))
    assert run.returncode == 1, run.stdout + run.stderr
    assert "a0: cannot read its space: LVM cannot read walbctr_nosuch_vg" in run.stderr
    assert "Traceback" not in run.stderr
    got = samples(prom.read_text())
    assert got == {("walb_archive_space_ok", f'group="{group.name}",archive="a0"'): 0}


def test_a_textfile_node_exporter_would_not_read_is_refused_before_anything_runs(
        tmp_path: Path) -> None:
    group = Group(tmp_path / "g", None, "walbctr/walb-tools:none", "vg0", "bridge")
    for bad, words in ((tmp_path / "nosuch" / "x.prom", "the directory"),
                       (tmp_path / "x.txt", "only files ending in .prom")):
        run = group.walbctr("space", str(group.path), "--textfile", str(bad))
        assert run.returncode != 0
        assert f"--textfile {bad}: " in run.stderr and words in run.stderr, run.stderr
        assert "Traceback" not in run.stderr
        assert not bad.exists()


def test_a_thin_pools_free_space_is_its_size_less_the_data_used() -> None:
    """Pure: this kernel may lack device-mapper's thin-pool target, so the real engine
    test cannot make one; lvs' fields as LVM prints them with --units b --nosuffix."""
    out = "  1073741824 536870912\n  104857600 25.00 twi-a-tz--\n"
    assert parse_lvm(out, "tp0") == (1073741824, 536870912, 104857600, 78643200)
    assert parse_lvm("  1073741824 536870912\n", None) == (1073741824, 536870912, None, None)
    with pytest.raises(ValueError, match="lv0 is not a thin pool"):
        parse_lvm("  1073741824 536870912\n  104857600  -wi-a-----\n", "lv0")


def test_the_textfile_escapes_label_values_and_names_every_metric_once() -> None:
    text = exposition('g"1', [ArchiveSpace("a0", "h", "vg\\0", "tp0", 10, 5, 4, 1),
                              ArchiveSpace("a1", "h", "vg1", None, error="gone")])
    assert 'walb_archive_thinpool_free_bytes{group="g\\"1",archive="a0",vg="vg\\\\0",' \
        'thinpool="tp0"} 1' in text
    assert 'walb_archive_space_ok{group="g\\"1",archive="a1"} 0' in text
    assert [line.split()[2] for line in text.splitlines()
            if line.startswith("# TYPE")] == list(METRICS)
