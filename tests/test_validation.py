"""Every malformed layout in tests/layouts/invalid is refused with located, named problems."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from walbctr.errors import LayoutError
from walbctr.layout import load_layout

INVALID = Path(__file__).parent / "layouts" / "invalid"
CASES = sorted(INVALID.glob("*.yaml"))
NO_LINE = {"empty", "comments-only"}  # nothing to point at


def expectations(path: Path) -> list[str]:
    found = re.findall(r"^# expect: (.+)$", path.read_text(), flags=re.M)
    return found or ["the file is empty"]


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_invalid_layout_is_refused(path: Path) -> None:
    with pytest.raises(LayoutError) as err:
        load_layout(path.read_text(), str(path))
    text = str(err.value)
    for expected in expectations(path):
        assert expected in text
    assert text.startswith(f"{path}: ")
    if path.stem not in NO_LINE:
        assert all(p.line is not None for p in err.value.problems), text


@pytest.mark.parametrize("path", CASES[:6] + CASES[-6:], ids=lambda p: p.stem)
def test_cli_exits_2_without_traceback(path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "walbctr", "validate", str(path)],
                         capture_output=True, text=True, check=False)
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    assert expectations(path)[0] in run.stderr


def test_all_problems_are_reported_at_once() -> None:
    path = INVALID / "two-problems-at-once.yaml"
    with pytest.raises(LayoutError) as err:
        load_layout(path.read_text(), str(path))
    assert len(err.value.problems) >= 2


def test_a_bad_default_is_reported_once_at_the_default() -> None:
    path = INVALID / "relative-log-path.yaml"
    with pytest.raises(LayoutError) as err:
        load_layout(path.read_text(), str(path))
    (p,) = err.value.problems
    assert p.path == "defaults.log_path"
    assert p.line == 3  # line 1 is the "# expect:" comment


def test_unused_host_is_a_warning_not_an_error() -> None:
    text = "hosts:\n  h1: {}\n  h2: {}\n  spare: {}\n" + (
        "group: g\narchives: [{id: a0, host: h1, vg: v}]\nproxies: [{id: p0, host: h2}]\n")
    layout = load_layout(text, "t.yaml")
    assert [w.path for w in layout.warnings] == ["hosts.spare"]


def test_published_on_every_interface_is_a_warning() -> None:
    text = ("group: g\nnetwork: {mode: bridge, publish: 0.0.0.0}\n"
            "archives: [{id: a0, host: h, vg: v}]\n")
    layout = load_layout(text, "t.yaml")
    assert "no authentication" in layout.warnings[0].message


def test_same_port_in_bridge_mode_is_fine_unless_published() -> None:
    text = ("group: g\nnetwork: {mode: bridge}\n"
            "archives: [{id: a0, host: h, vg: v}]\nproxies: [{id: p0, host: h}]\n")
    load_layout(text, "t.yaml")
    with pytest.raises(LayoutError, match="both listen on port 10000"):
        load_layout(text.replace("mode: bridge", "mode: bridge, publish: true"), "t.yaml")


def test_hosts_sharing_an_address_may_use_distinct_ports() -> None:
    text = ("group: g\nhosts: {h1: {address: 127.0.0.1}, h2: {address: 127.0.0.1}}\n"
            "archives: [{id: a0, host: h1, vg: v}]\nproxies: [{id: p0, host: h2, port: 10001}]\n")
    layout = load_layout(text, "t.yaml")
    assert layout.server("p0").endpoint == "127.0.0.1:10001"
