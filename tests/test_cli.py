"""The command as an operator runs it: exit statuses, files written, no tracebacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import EXAMPLES, ROOT


def walbctr(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "walbctr", *args], capture_output=True,
                          text=True, cwd=cwd, check=False)


def test_help_lists_commands() -> None:
    run = walbctr("--help")
    assert run.returncode == 0
    for command in ("validate", "cmdline", "render", "walblib-config", "schema"):
        assert command in run.stdout


def test_validate_ok() -> None:
    run = walbctr("validate", "examples/minimal.yaml")
    assert run.returncode == 0
    assert "1 archive, 1 proxy, 1 storage on 3 hosts" in run.stdout


def test_missing_layout_names_the_file(tmp_path: Path) -> None:
    run = walbctr("validate", cwd=tmp_path)
    assert run.returncode == 1
    assert "layout file 'layout.yaml' not found" in run.stderr
    assert "Traceback" not in run.stderr


def test_default_layout_path(tmp_path: Path) -> None:
    (tmp_path / "layout.yaml").write_text((EXAMPLES / "minimal.yaml").read_text())
    run = walbctr("cmdline", cwd=tmp_path)
    assert run.returncode == 0
    assert run.stdout.splitlines()[0].startswith("@hostA0 a0: walb-archive -p 10000")


def test_cmdline_for_one_host() -> None:
    run = walbctr("cmdline", "examples/minimal.yaml", "--host", "hostS0")
    assert run.stdout == ("@hostS0 s0: walb-storage -p 10000 -b /var/walb/s0 -id s0 -l "
                          "/var/walb/s0.log -archive hostA0:10000 -proxy hostP0:10000\n")
    bad = walbctr("cmdline", "examples/minimal.yaml", "--host", "nowhere")
    assert bad.returncode == 1
    assert "hostA0, hostP0, hostS0" in bad.stderr


def test_render_writes_and_prunes_stale_generated_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = walbctr("render", str(EXAMPLES / "minimal.yaml"), "-o", str(out))
    assert run.returncode == 0
    written = sorted(p.name for p in (out / "minimal").iterdir())
    assert written == ["hostA0.yaml", "hostP0.yaml", "hostS0.yaml"]
    (out / "minimal" / "hostOld.yaml").write_text("# generated from x by walbctr\n")
    (out / "minimal" / "mine.yaml").write_text("# an operator's own file\n")
    walbctr("render", str(EXAMPLES / "minimal.yaml"), "-o", str(out))
    remaining = sorted(p.name for p in (out / "minimal").iterdir())
    assert remaining == ["hostA0.yaml", "hostP0.yaml", "hostS0.yaml", "mine.yaml"]


def test_invalid_layout_writes_nothing(tmp_path: Path) -> None:
    bad = ROOT / "tests" / "layouts" / "invalid" / "duplicate-ids.yaml"
    run = walbctr("render", str(bad), "-o", str(tmp_path / "out"))
    assert run.returncode == 2
    assert not (tmp_path / "out").exists()


def test_walblib_config_and_schema() -> None:
    run = walbctr("walblib-config", "examples/minimal.yaml")
    assert "sLayout = ServerLayout([s0], [p0], [a0])" in run.stdout
    schema = walbctr("schema")
    assert '"title": "walbctr layout"' in schema.stdout
