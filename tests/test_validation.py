"""Every malformed layout in tests/layouts/invalid is refused with located, named problems."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from walbctr.errors import LayoutError
from walbctr.layout.loader import load_layout
from walbctr.render.cmdline import command_line

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


ACCEPTED_BY_WALB = """\
group: g
archives:
  - {id: a0, host: h1, vg: vg0, maxopen: 0, maxopen_virt: 0, apply_sleep_pct: 99,
     lock_time_th: 0.25, sync_cmpr: 'zstd:9:255', keepalive: {}}
proxies:
  - {id: p0, host: h2, delay: 0, rto: 0, timeout: 0,
     keepalive: {idle: 86400, interval: 3600, count: 100}}
storages:
  - {id: s0, host: h3, fst: 0, sync_cmpr: 'none:0:1', keepalive: false}
"""


def test_values_walb_v1_0_19_accepts_are_accepted_and_passed_on() -> None:
    layout = load_layout(ACCEPTED_BY_WALB, "t.yaml")
    a0, p0, s0 = (command_line(layout.server(i), layout) for i in ("a0", "p0", "s0"))
    assert "-maxopen 0 -maxopen-virt 0 -apply-sleep-pct 99" in a0
    assert "-sync-cmpr zstd:9:255 -lock-time-th 0.25" in a0
    assert a0.endswith(" -ka")  # {} is keep-alive on with walb's defaults, never nothing
    assert "-delay 0 -rto 0 -to 0 -ka -kaidle 86400 -kaintvl 3600 -kacnt 100" in p0
    assert "-fst 0 -sync-cmpr none:0:1" in s0 and "-ka" not in s0


@pytest.mark.parametrize("kind", ["none", "snappy", "gzip", "lzma", "lz4", "zstd"])
def test_every_compression_type_walb_knows_is_accepted(kind: str) -> None:
    text = f"group: g\narchives: [{{id: a0, host: h, vg: v, sync_cmpr: '{kind}:0:1'}}]\n"
    assert load_layout(text, "t.yaml").server("a0").options["sync_cmpr"] == f"{kind}:0:1"


def test_a_maxdelay_below_delay_is_a_warning_naming_walbs_default() -> None:
    text = ("group: g\narchives: [{id: a0, host: h1, vg: v}]\n"
            "proxies: [{id: p0, host: h2, delay: 600}]\n")
    (w,) = load_layout(text, "t.yaml").warnings
    assert (w.path, w.line) == ("proxies[0].delay", 3)
    assert "maxdelay 300 (walb's default) is below delay 600" in w.message


def test_a_bad_keepalive_setting_is_reported_as_itself_not_as_a_bad_boolean() -> None:
    text = "group: g\narchives: [{id: a0, host: h, vg: v, keepalive: {idle: 0}}]\n"
    with pytest.raises(LayoutError) as err:
        load_layout(text, "t.yaml")
    (p,) = err.value.problems
    assert p.path == "archives[0].keepalive.idle"
    assert "boolean" not in p.message and p.fix == "use 1 to 86400"


def test_a_base_dir_starting_with_a_double_slash_is_refused_at_once(tmp_path: Path) -> None:
    # dirname('//') == '//': the walk up a base dir's parents once never ended.
    layout = tmp_path / "l.yaml"
    layout.write_text("group: g\narchives:\n  - {id: a0, host: h1, vg: vg0, base_dir: "
                      "//etc/walb}\nproxies:\n  - {id: p0, host: h2}\nstorages:\n"
                      "  - {id: s0, host: h3}\n")
    run = subprocess.run([sys.executable, "-m", "walbctr", "validate", str(layout)],
                         capture_output=True, text=True, timeout=20, check=False)
    assert run.returncode == 2
    assert f"{layout}:3: archives[0].base_dir" in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize("base_dir", ["/run/walbctr/g/{id}", "/var/lib/walb/{id}",
                                      "/srv/walb/{id}", "/var/walb/{id}"])
def test_a_base_dir_of_the_groups_own_is_accepted(base_dir: str) -> None:
    layout = load_layout(f"group: g\ndefaults: {{base_dir: '{base_dir}'}}\n"
                         "archives:\n  - {id: a0, host: h1, vg: vg0}\n"
                         "proxies:\n  - {id: p0, host: h2}\nstorages:\n  - {id: s0, host: h3}\n")
    assert [s.base_dir for s in layout.servers] == [base_dir.format(id=i)
                                                    for i in ("a0", "p0", "s0")]


@pytest.mark.parametrize("path", ["/etc/walb", "/proc/1", "/sys/kernel", "/dev/shm/w",
                                  "/boot/w", "/run/w", "/var/run/w", "/var/lib/docker/w",
                                  "/root/.ssh", "/srv/x.sock/w", "/usr/local/w"])
def test_a_base_dir_under_a_system_tree_is_refused_by_prefix(path: str) -> None:
    with pytest.raises(LayoutError) as err:
        load_layout("group: g\narchives:\n  - {id: a0, host: h1, vg: vg0, base_dir: "
                    f"{path}}}\nproxies:\n  - {{id: p0, host: h2}}\nstorages:\n"
                    "  - {id: s0, host: h3}\n", "t.yaml")
    (problem,) = err.value.problems
    assert problem.path == "archives[0].base_dir" and problem.line == 3
    assert f"base_dir {path} " in problem.message
    assert problem.fix and "/var/walb/{id}" in problem.fix


def _with_engine(host: str) -> str:
    return (f"group: g\nhosts:\n  h1: {host}\narchives:\n  - {{id: a0, host: h1, vg: vg0}}\n"
            "proxies:\n  - {id: p0, host: h1, port: 10001}\nstorages:\n"
            "  - {id: s0, host: h1, port: 10002}\n")


def test_a_plain_tcp_engine_is_refused_with_the_ways_to_secure_it() -> None:
    with pytest.raises(LayoutError) as err:
        load_layout(_with_engine("{engine: 'tcp://h1:2375'}"), "t.yaml")
    (problem,) = err.value.problems
    assert problem.path == "hosts.h1.engine" and problem.line == 3
    assert "tcp://h1:2375 is plain TCP" in problem.message
    assert problem.fix and "tls:" in problem.fix and "insecure: true" in problem.fix


def test_a_plain_tcp_engine_said_insecure_is_accepted_with_an_advisory() -> None:
    layout = load_layout(_with_engine("{engine: 'tcp://h1:2375', insecure: true}"), "t.yaml")
    assert layout.hosts["h1"].insecure
    (warning,) = layout.warnings
    assert warning.path == "hosts.h1.insecure" and "plain TCP" in warning.message


def test_insecure_on_an_ssh_engine_is_refused() -> None:
    with pytest.raises(LayoutError) as err:
        load_layout(_with_engine("{engine: 'ssh://root@h1', insecure: true}"), "t.yaml")
    assert "insecure applies to tcp:// engines only" in str(err.value)


def test_tls_without_verification_is_an_advisory() -> None:
    layout = load_layout(_with_engine(
        "{engine: 'tcp://h1:2376', tls: {ca: /c/ca.pem, cert: /c/c.pem, key: /c/k.pem, "
        "verify: false}}"), "t.yaml")
    (warning,) = layout.warnings
    assert warning.path == "hosts.h1.tls.verify"
    assert "not verified" in warning.message


def test_the_cli_prints_the_insecure_advisory_on_every_command(tmp_path: Path) -> None:
    path = tmp_path / "l.yaml"
    path.write_text(_with_engine("{engine: 'tcp://h1:2375', insecure: true}"))
    for command in ("validate", "render", "cmdline"):
        args = [command, str(path)] + (["-o", str(tmp_path / "out")] if command == "render"
                                       else [])
        run = subprocess.run([sys.executable, "-m", "walbctr", *args], capture_output=True,
                             text=True, check=False)
        assert run.returncode == 0, run.stderr
        assert "hosts.h1.insecure" in run.stderr and "plain TCP" in run.stderr, command
