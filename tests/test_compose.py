from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import EXAMPLES, MINIMAL, ROOT
from walbctr.layout.loader import load_layout, read_layout
from walbctr.layout.spec import Layout
from walbctr.render.compose import compose_project, config_hash, render


def services(layout: Layout) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for host in layout.used_hosts:
        out.update(compose_project(layout, host)["services"])
    return out


def parsed(layout: Layout) -> dict[str, Any]:
    """The rendered text read back, as compose will read it."""
    out: dict[str, Any] = {}
    for text in render(layout).values():
        out.update(yaml.safe_load(text)["services"])
    return out


def test_one_file_per_host_named_after_group_and_host(minimal: Layout) -> None:
    files = render(minimal)
    assert list(files) == ["h1", "h2", "h3"]
    assert yaml.safe_load(files["h1"])["name"] == "walbctr-g-h1"
    assert files["h1"].startswith("# generated from t.yaml by walbctr; do not edit.")


def test_command_is_the_cmdline(minimal: Layout) -> None:
    svc = parsed(minimal)
    assert svc["s0"]["command"] == [
        "walb-storage", "-p", "10000", "-b", "/var/walb/s0", "-id", "s0", "-l", "-",
        "-archive", "h1:10000", "-proxy", "h2:10000"]


def test_common_service_settings(minimal: Layout) -> None:
    for sid, svc in parsed(minimal).items():
        assert svc["init"] is True, sid
        assert svc["restart"] == "unless-stopped"
        assert svc["stop_signal"] == "SIGTERM"
        assert svc["stop_grace_period"] == "120s"
        assert svc["ulimits"]["nofile"] == {"soft": 65536, "hard": 65536}
        assert svc["pull_policy"] == "never"
        assert svc["logging"]["options"]["max-size"] == "20m"
        assert svc["network_mode"] == "host"
        labels = svc["labels"]
        assert labels["io.walbctr.server"] == sid
        assert labels["io.walbctr.group"] == "g"
        assert len(labels["io.walbctr.config-hash"]) == 16


def test_health_check_speaks_walb_protocol(minimal: Layout) -> None:
    svc = parsed(minimal)
    test = svc["p0"]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    assert "walbc -a 127.0.0.1 -p 10000 -to 3 -retry 0 get host-type" in test[1]
    assert test[1].endswith("= proxy")
    assert "$$(" in test[1]  # escaped for compose interpolation
    # An archive recovers every volume before it listens: minutes on a large one.
    assert svc["a0"]["healthcheck"]["start_period"] == "600s"


def test_health_check_is_a_steady_state_check_with_a_quick_start() -> None:
    layout = load_layout(MINIMAL.replace("{id: a0, host: h1, vg: vg0}",
                                         "{id: a0, host: h1, vg: vg0, start_period: 1800}"),
                         "t.yaml")
    check = compose_project(layout, "h1")["services"]["a0"]["healthcheck"]
    assert check["interval"] == "30s"  # walbctr probes readiness itself while it starts
    assert check["start_interval"] == "1s"
    assert check["start_period"] == "1800s"
    assert layout.server("a0").start_period == 1800
    # Engines before API 1.44 refuse start_interval; up renders without it there.
    old = compose_project(layout, "h1", start_interval=False)["services"]["a0"]["healthcheck"]
    assert "start_interval" not in old
    assert old["interval"] == "10s"  # how soon Docker sees a start there


def test_up_still_chooses_start_interval_per_engine_not_renders_default(
        minimal: Layout, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `walbctr render` leaves start_interval out unless told; `up` writes its files from
    # the engines it sees (Fleet.old_engines), so a Docker 25 host keeps the quick start.
    from walbctr.docker.compose_files import write_compose_files

    monkeypatch.setenv("WALBCTR_STATE_DIR", str(tmp_path))
    files = write_compose_files(minimal, minimal.used_hosts, old_engines={"h1"})
    checks = {sid: svc["healthcheck"] for path in files.values()
              for sid, svc in yaml.safe_load(path.read_text())["services"].items()}
    assert "start_interval" not in checks["a0"]  # h1: an engine before API 1.44
    assert checks["p0"]["start_interval"] == checks["s0"]["start_interval"] == "1s"


def test_proxy_has_least_privilege(minimal: Layout) -> None:
    p0 = parsed(minimal)["p0"]
    assert "privileged" not in p0
    assert p0["cap_drop"] == ["ALL"]
    assert p0["read_only"] is True
    assert "no-new-privileges:true" in p0["security_opt"]
    assert all(v["target"] != "/dev" for v in p0["volumes"])
    assert "cap_add" not in p0


def test_proxy_on_a_low_port_may_bind_it() -> None:
    layout = load_layout(MINIMAL.replace("host: h2}", "host: h2, port: 900}"))
    assert parsed(layout)["p0"]["cap_add"] == ["NET_BIND_SERVICE"]


def test_storage_is_privileged_with_dev(minimal: Layout) -> None:
    s0 = parsed(minimal)["s0"]
    assert s0["privileged"] is True
    targets = [v["target"] for v in s0["volumes"]]
    assert "/dev" in targets
    assert "/run/lvm" not in targets


def test_archive_gets_lvm_passthrough(minimal: Layout) -> None:
    a0 = parsed(minimal)["a0"]
    assert a0["privileged"] is True
    assert a0["ipc"] == "host"
    vols = {v["target"]: v for v in a0["volumes"]}
    for path in ("/dev", "/run/udev", "/run/lvm", "/run/lock/lvm", "/etc/lvm/backup",
                 "/etc/lvm/archive"):
        assert vols[path]["source"] == path
    assert vols["/run/udev"]["read_only"] is True
    assert vols["/dev"]["bind"]["create_host_path"] is False


def test_base_dir_and_log_dir_bound_at_same_paths() -> None:
    layout = read_layout(EXAMPLES / "minimal.yaml")
    vols = {v["target"]: v for v in parsed(layout)["p0"]["volumes"]}
    assert vols["/var/walb/p0"]["source"] == "/var/walb/p0"
    assert vols["/var/walb/p0"]["bind"]["create_host_path"] is True
    assert vols["/var/walb"]["source"] == "/var/walb"  # the log file's directory


def test_log_inside_base_dir_needs_no_extra_bind() -> None:
    layout = load_layout("defaults: {log_path: '/var/walb/{id}/{id}.log'}\n" + MINIMAL)
    targets = [v["target"] for v in parsed(layout)["p0"]["volumes"]]
    assert targets == ["/var/walb/p0"]


def test_depends_on_within_a_host() -> None:
    text = MINIMAL.replace("h2", "h1").replace("h3", "h1")
    text = text.replace("host: h1}\nstorages", "host: h1, port: 10001}\nstorages")
    text = text.replace("id: s0, host: h1}", "id: s0, host: h1, port: 10002}")
    svc = parsed(load_layout(text))
    assert "depends_on" not in svc["a0"]
    assert svc["p0"]["depends_on"] == {"a0": {"condition": "service_healthy"}}
    assert svc["s0"]["depends_on"] == {"a0": {"condition": "service_healthy"},
                                       "p0": {"condition": "service_healthy"}}


def test_no_cross_host_depends_on(minimal: Layout) -> None:
    assert all("depends_on" not in s for s in parsed(minimal).values())


def test_bridge_mode_network_and_publishing() -> None:
    layout = read_layout(EXAMPLES / "lab.yaml")
    (text,) = render(layout).values()
    project = yaml.safe_load(text)
    assert project["networks"] == {"walb": {"name": "walbctr-lab", "external": True}}
    svc = project["services"]
    assert svc["a0"]["networks"] == {"walb": {"aliases": ["a0"]}}
    assert "network_mode" not in svc["a0"]
    assert "ports" not in svc["a0"]
    assert svc["p0"]["ports"] == [{"target": 10000, "published": "10000",
                                   "host_ip": "127.0.0.1", "protocol": "tcp"}]


def test_rendering_is_deterministic(minimal: Layout) -> None:
    again = load_layout(MINIMAL, "t.yaml")
    assert render(minimal) == render(again)


def test_config_hash_changes_with_the_service(minimal: Layout) -> None:
    changed = load_layout(MINIMAL.replace("host: h2}", "host: h2, fg: 3}"), "t.yaml")
    before, after = services(minimal), services(changed)
    label = "io.walbctr.config-hash"
    assert before["a0"]["labels"][label] == after["a0"]["labels"][label]
    assert before["p0"]["labels"][label] != after["p0"]["labels"][label]
    svc = dict(before["p0"])
    svc["labels"] = {k: v for k, v in svc["labels"].items() if k != label}
    assert config_hash(svc) == before["p0"]["labels"][label]


EXAMPLE_FILES = sorted(EXAMPLES.glob("*.yaml"))


@pytest.mark.parametrize("example", EXAMPLE_FILES, ids=lambda p: p.stem)
def test_golden_files_match(example: Path) -> None:
    layout = read_layout(f"examples/{example.name}")
    golden = ROOT / "compose" / layout.group
    files = render(layout)
    assert sorted(p.name for p in golden.glob("*.yaml")) == sorted(f"{h}.yaml" for h in files)
    for host, text in files.items():
        assert (golden / f"{host}.yaml").read_text() == text, (
            f"compose/{layout.group}/{host}.yaml drifted: run 'walbctr render {example.name}'")


def compose_v2() -> list[str] | None:
    if shutil.which("docker") is None:
        return None
    run = subprocess.run(["docker", "compose", "version", "--short"], capture_output=True,
                         text=True, check=False)
    return ["docker", "compose"] if run.returncode == 0 and run.stdout.startswith(("2", "v2")) \
        else None


GOLDEN = sorted((ROOT / "compose").glob("*/*.yaml"))


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_compose_accepts_rendered_files(path: Path) -> None:
    cmd = compose_v2()
    if cmd is None:
        pytest.skip("Docker Compose v2 is not installed (.ci/install-host-tools installs it)")
    run = subprocess.run([*cmd, "-f", str(path), "config", "-q"], capture_output=True,
                         text=True, check=False)
    assert run.returncode == 0, run.stderr
