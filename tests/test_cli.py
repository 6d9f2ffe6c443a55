"""The command as an operator runs it: exit statuses, files written, no tracebacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import EXAMPLES, ROOT
from walbctr.render.compose import HEALTH_INTERVAL_S, OLD_ENGINE_INTERVAL_S, START_INTERVAL_S


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


def rendered_health_checks(tmp_path: Path, *flags: str
                           ) -> tuple[dict[str, dict[str, Any]], str]:
    """service id -> its health check in the files `walbctr render` wrote, and stderr."""
    out = tmp_path / "-".join(("out", *flags))
    run = walbctr("render", str(EXAMPLES / "minimal.yaml"), "-o", str(out), *flags)
    assert run.returncode == 0, run.stderr
    checks = {sid: svc["healthcheck"] for file in sorted((out / "minimal").iterdir())
              for sid, svc in yaml.safe_load(file.read_text())["services"].items()}
    assert sorted(checks) == ["a0", "p0", "s0"]
    return checks, run.stderr


def test_render_by_default_writes_files_every_engine_accepts(tmp_path: Path) -> None:
    # render sees no engine, and Compose before Docker 25 refuses start_interval.
    checks, stderr = rendered_health_checks(tmp_path)
    for sid, check in checks.items():
        assert "start_interval" not in check, sid
        assert check["interval"] == f"{OLD_ENGINE_INTERVAL_S}s", sid
    assert stderr == ""


def test_render_with_start_interval_writes_it_for_docker_25_and_later(tmp_path: Path
                                                                      ) -> None:
    checks, _ = rendered_health_checks(tmp_path, "--start-interval")
    for sid, check in checks.items():
        assert check["start_interval"] == f"{START_INTERVAL_S}s", sid
        assert check["interval"] == f"{HEALTH_INTERVAL_S}s", sid


def test_render_still_takes_no_start_interval_and_says_it_is_the_default_now(
        tmp_path: Path) -> None:
    checks, stderr = rendered_health_checks(tmp_path, "--no-start-interval")
    assert checks == rendered_health_checks(tmp_path)[0]
    assert stderr == ("warning: --no-start-interval is deprecated: it is the default now "
                      "(pass --start-interval to opt in)\n")


def test_render_help_says_when_to_pass_start_interval() -> None:
    run = walbctr("render", "--help")
    text = " ".join(run.stdout.split())
    assert "pass --start-interval when every host runs Docker 25 (API 1.44) or later" in text
    assert "--no-start-interval" not in run.stdout  # hidden: only for old scripts


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
