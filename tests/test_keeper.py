"""The keeper on the real engine: a group with a monitor block, servers killed with
SIGKILL, walb's recovery kicks seen in the servers' logs, and the keeper's metrics read
back through a real Prometheus server (Debian's package) that scrapes it.

Prometheus runs through pytest-docker's fixture machinery, like every helper service of
the suite: a compose project whose one service is Debian's /usr/bin/prometheus (bound
read-only from this machine's `prometheus` package) in the test image, on the host
network, listening on loopback, with its configuration and storage in the test's tmp dir.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import walbc_command
from tests.harness.compose import HttpService, compose_up
from tests.test_deploy import Group, free_ports
from walbctr.layout.imagetag import keeper_image

INTERVAL = 2.0  # the keeper's volume scan
PROBE = 0.25  # its reachability probe
KEEPER_LABEL = "io.walbctr.keeper"
RULES = Path(__file__).resolve().parent.parent / "monitoring" / "walb-alerts.yml"


def wait_for(check: Callable[[], Any], what: str, timeout: float = 30,
             pause: float = 0.1, seen: Callable[[], str] | None = None) -> Any:
    """check() once it is true; else an AssertionError naming `what` and, when given, what
    `seen()` says then (a log tail)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}"
                                 + (f"; seen:\n{seen()}" if seen is not None else ""))
        time.sleep(pause)


class KeptGroup(Group):
    """A bridge-mode lab group (a0, p0, s0) with a keeper on hostA0."""

    def __init__(self, tmp: Path, engine: Any, image: str, vg: str) -> None:
        self.metrics_port = free_ports(1)[0]
        super().__init__(tmp, engine, image, vg, "bridge", extra=(
            f"monitor: {{host: hostA0, port: {self.metrics_port}, interval: {INTERVAL}, "
            f"probe_interval: {PROBE}, lag_threshold: 300}}\n"))

    def container(self, sid: str) -> Any:
        return self.engine.containers.get(f"walbctr-{self.name}-{sid}")

    def keeper(self) -> Any:
        found = self.engine.containers.list(all=True,
                                            filters={"label": f"{KEEPER_LABEL}={self.name}"})
        assert len(found) == 1, [c.name for c in found]
        return found[0]

    def walbc(self, sid: str, *args: str) -> str:
        # walbc's own default timeout (-to 10), as before.
        result = self.container(sid).exec_run(walbc_command(self.ports[sid], *args,
                                                            timeout=10))
        assert result.exit_code == 0, (sid, args, result.output.decode())
        return str(result.output.decode())

    def kill9(self, sid: str, program: str) -> float:
        """SIGKILL the server process inside its container (no graceful anything)."""
        script = ('for p in /proc/[0-9]*; do [ "$(cat $p/comm 2>/dev/null)" = "$1" ] && '
                  'kill -9 "${p#/proc/}" && echo killed; done; true')
        when = time.time()
        out = self.container(sid).exec_run(["sh", "-c", script, "sh", program])
        assert b"killed" in out.output, out.output
        return when

    def log_since(self, sid: str, since: float) -> str:
        raw: bytes = self.container(sid).logs(since=int(since) - 1, timestamps=True)
        lines = []
        for line in raw.decode(errors="replace").splitlines():
            stamp, _, text = line.partition(" ")
            if datetime.fromisoformat(stamp[:26] + "+00:00").timestamp() >= since:
                lines.append(text)
        return "\n".join(lines)

    def cleanup(self) -> None:
        super().cleanup()
        for c in self.engine.containers.list(all=True,
                                             filters={"label": f"{KEEPER_LABEL}={self.name}"}):
            c.remove(force=True)


@pytest.fixture
def kept(tmp_path: Path, engine: Any, double_image: str, loop_vg: str) -> Iterator[KeptGroup]:
    if engine.images.list(name=keeper_image(double_image)) == []:
        pytest.skip(f"no keeper image {keeper_image(double_image)} next to {double_image} "
                    "(an image built elsewhere, WALBCTR_TEST_IMAGE, without its keeper)")
    group = KeptGroup(tmp_path / "g", engine, double_image, loop_vg)
    try:
        run = group.up()
        assert run.returncode == 0, run.stderr[-3000:]
        yield group
    finally:
        group.cleanup()


# --- a real Prometheus, through pytest-docker -------------------------------------------


class Prometheus(HttpService):
    def query(self, expr: str) -> dict[tuple[tuple[str, str], ...], float]:
        """Instant query through the HTTP API: labels (without __name__) -> value."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return {tuple(sorted((k, v) for k, v in r["metric"].items() if k != "__name__")):
                float(r["value"][1]) for r in body["data"]["result"]}

    def value(self, expr: str) -> float | None:
        found = self.query(expr)
        return next(iter(found.values())) if found else None


@pytest.fixture
def prometheus(kept: KeptGroup, tmp_path: Path, double_image: str) -> Iterator[Prometheus]:
    yield from run_prometheus(kept, tmp_path, double_image, {})


def run_prometheus(kept: KeptGroup, tmp_path: Path, double_image: str,
                   scrape: dict[str, Any], rules: str | None = None,
                   more: dict[str, Any] | None = None) -> Iterator[Prometheus]:
    """A real Prometheus scraping the keeper; `scrape` adds to its scrape config (TLS),
    `rules` replaces monitoring/walb-alerts.yml's text, `more` adds to its configuration
    (alerting)."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("Debian's prometheus package is not installed (apt-get install "
                    "prometheus; .ci/install-host-tools does it)")
    port = free_ports(1)[0]
    home = tmp_path / "prometheus"
    (home / "data").mkdir(parents=True, exist_ok=True)
    (home / "walb-alerts.yml").write_text(rules or RULES.read_text())
    (home / "prometheus.yml").write_text(yaml.safe_dump({
        **(more or {}),
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["/etc/prometheus-test/walb-alerts.yml"],
        "scrape_configs": [{"job_name": "walb-keeper", **scrape, "static_configs": [
            {"targets": [f"127.0.0.1:{kept.metrics_port}"]}]}]}))
    project = f"{kept.name}-prometheus"
    compose_file = home / "compose.yaml"
    compose_file.write_text(yaml.safe_dump({"services": {"prometheus": {
        "image": double_image,
        "pull_policy": "never",
        "entrypoint": ["/usr/bin/prometheus"],
        "command": ["--config.file=/etc/prometheus-test/prometheus.yml",
                    "--storage.tsdb.path=/prometheus",
                    "--storage.tsdb.retention.time=1h",
                    f"--web.listen-address=127.0.0.1:{port}"],
        "network_mode": "host",
        "read_only": True,
        "volumes": [f"{Path(binary).resolve()}:/usr/bin/prometheus:ro",
                    f"{home}:/etc/prometheus-test:ro", f"{home / 'data'}:/prometheus"],
        "mem_limit": "512m",
    }}}))
    prom = Prometheus(port)
    with compose_up(compose_file, project, prom):
        yield prom


# --- the tests ----------------------------------------------------------------------------


def test_the_keeper_runs_unprivileged_read_only_without_the_docker_socket(
        kept: KeptGroup) -> None:
    keeper = kept.keeper()
    host = keeper.attrs["HostConfig"]
    assert keeper.status == "running"
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"] and not host.get("CapAdd")
    assert host["Privileged"] is False
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert not any("docker.sock" in m["Source"] for m in keeper.attrs["Mounts"])
    assert keeper.attrs["Config"]["User"] == "65534:65534"


def test_up_leaves_a_current_keeper_alone_and_down_removes_it(kept: KeptGroup) -> None:
    before = kept.keeper().id
    again = kept.up()
    assert again.returncode == 0, again.stderr
    assert "nothing to change" in again.stdout
    assert kept.keeper().id == before
    keeper = kept.keeper()
    started = time.monotonic()
    keeper.stop(timeout=10)  # SIGTERM, as docker stop and compose down send it
    took = time.monotonic() - started
    keeper.reload()
    logs = keeper.logs().decode()
    assert keeper.attrs["State"]["ExitCode"] == 0, logs[-2000:]
    assert took < 5, f"the keeper took {took:.1f} s to stop"
    assert "SIGTERM received, stopping" in logs and "keeper: stopped" in logs
    down = kept.walbctr("down", str(kept.path), "--quiet")
    assert down.returncode == 0, down.stderr
    assert kept.engine.containers.list(
        all=True, filters={"label": f"{KEEPER_LABEL}={kept.name}"}) == []


def test_killed_archive_gets_the_proxies_kicked_and_prometheus_sees_it(
        kept: KeptGroup, prometheus: Prometheus) -> None:
    wait_for(lambda: prometheus.value('sum(walb_server_up{job="walb-keeper"})') == 3,
             "Prometheus to see the three servers up through the keeper")
    killed = kept.kill9("a0", "walb-archive")
    kicked = wait_for(lambda: "kick requested" in kept.log_since("p0", killed) and time.time(),
                      "the keeper to kick p0", timeout=30,
                      seen=lambda: kept.keeper().logs(timestamps=True).decode()[-3000:])
    assert kicked - killed <= 2 * INTERVAL + 2, f"kick {kicked - killed:.1f} s after the kill"
    keeper_log = kept.keeper().logs().decode()
    assert "kick p0: done. Why: archive a0 answers again" in keeper_log
    wait_for(lambda: (prometheus.value(
        'walb_keeper_kicks_total{target="p0",reason="archive_restart"}') or 0) >= 1,
        "Prometheus to count the keeper's kick of p0")
    assert (prometheus.value('walb_server_restarts_total{server="a0"}') or 0) >= 1
    assert prometheus.value('walb_server_restarts_total{server="p0"}') == 0


def test_killed_proxy_gets_the_storages_kicked(kept: KeptGroup) -> None:
    wait_for(lambda: "watching group" in kept.keeper().logs().decode(), "the keeper")
    time.sleep(3 * PROBE)
    killed = kept.kill9("p0", "walb-proxy")
    kicked = wait_for(lambda: "kick requested" in kept.log_since("s0", killed) and time.time(),
                      "the keeper to kick s0", timeout=30)
    assert kicked - killed <= 2 * INTERVAL + 2, f"kick {kicked - killed:.1f} s after the kill"
    assert "kick s0: done. Why: proxy p0 answers again" in kept.keeper().logs().decode()
    # a proxy's restart is no reason to kick the other proxies
    assert "kick requested" not in kept.log_since("p0", killed + 0.01)


def test_a_send_error_is_kicked_and_its_metrics_reach_prometheus(
        kept: KeptGroup, prometheus: Prometheus) -> None:
    a0 = f"a0:{kept.ports['a0']}"
    kept.walbc("a0", "init-vol", "vol0")
    kept.walbc("p0", "archive-info", "add", "vol0", "a0", a0)
    kept.walbc("p0", "start", "vol0")
    kept.walbc("s0", "double-set-state", "vol0", "Target")
    kept.walbc("s0", "double-overflow", "vol0", "1")
    kept.walbc("s0", "double-ts-delta", "vol0", "900")
    wait_for(lambda: prometheus.value('walb_volume_overflow{server="s0",volume="vol0"}') == 1,
             "Prometheus to see s0's overflow", timeout=30)
    assert prometheus.value('walb_volume_ts_delta_seconds{server="s0",volume="vol0"}') == 900
    assert prometheus.value('walb_volume_lagging{server="s0",volume="vol0"}') == 1
    assert prometheus.value('walb_volume_state{server="p0",volume="vol0",state="Started"}') == 1
    assert prometheus.value('walb_volume_wdiff_send_error{server="p0",volume="vol0"}') == 0

    set_at = time.time()
    kept.walbc("p0", "double-send-error", "vol0", "a0", "1")
    kicked = wait_for(lambda: "kick requested: vol0 a0" in kept.log_since("p0", set_at)
                      and time.time(), "the keeper to kick p0's vol0 transfer", timeout=30)
    assert kicked - set_at <= 2 * INTERVAL + 1
    assert kept.walbc("p0", "get", "is-wdiff-send-error", "vol0", "a0").strip() == "0"
    wait_for(lambda: (prometheus.value(
        'walb_keeper_kicks_total{target="p0",reason="send_error"}') or 0) >= 1,
        "Prometheus to count the send-error kick")
    # the alert rules are loaded and the overflow fires
    wait_for(lambda: prometheus.query('ALERTS{alertname="WalbVolumeOverflow"}'),
             "the WalbVolumeOverflow alert", timeout=20)


def test_two_keepers_at_once_are_harmless(kept: KeptGroup) -> None:
    """Kicks are idempotent: a second keeper (a copy left running, a keeper restarted)
    only sends kicks that find nothing to do."""
    kept.walbc("a0", "init-vol", "vol0")
    kept.walbc("p0", "archive-info", "add", "vol0", "a0", f"a0:{kept.ports['a0']}")
    kept.walbc("p0", "start", "vol0")
    first = kept.keeper()
    env = [e for e in first.attrs["Config"]["Env"] if e.startswith("WALBCTR_KEEPER_CONFIG=")]
    second = kept.engine.containers.run(
        first.attrs["Config"]["Image"], ["python3", "-m", "walbctr.keeper"], detach=True,
        environment=env, network=f"walbctr-{kept.name}", user="65534:65534",
        read_only=True, cap_drop=["ALL"], security_opt=["no-new-privileges:true"],
        tmpfs={"/tmp": ""}, labels={KEEPER_LABEL: kept.name}, name=f"{kept.name}-keeper2")
    try:
        wait_for(lambda: "kick p0: done" in second.logs().decode(),
                 "the second keeper's first kicks")
        # A crash that stays down until both keepers have seen it: Docker restarts a
        # SIGKILLed server within a second, and a keeper may miss a restart shorter than
        # its probe (the send-error flag is then the net, see the module's docstring).
        # This test is about two keepers kicking at once, not about the probe's speed.
        crashed = time.time()
        kept.container("a0").stop(timeout=0)  # SIGKILL, and no restart by Docker
        for keeper in (first, second):
            wait_for(lambda k=keeper: "archive a0 stopped answering" in k.logs(
                since=int(crashed) - 1).decode(), f"{keeper.name} to see a0 stop answering")
        restarted = time.time()
        kept.container("a0").start()
        wait_for(lambda: kept.log_since("p0", restarted).count("kick requested") >= 2,
                 "both keepers to kick p0 after the archive came back")
        # p0 logs the request before the keeper's walbc returns and the keeper logs it done
        for keeper in (first, second):
            wait_for(lambda k=keeper: "kick p0: done. Why: archive a0 answers again" in k.logs(
                since=int(restarted) - 1).decode(), f"{keeper.name} to log its kick done")
        assert "FAILED" not in first.logs().decode() + second.logs().decode()
        assert kept.walbc("p0", "get", "state", "vol0").strip() == "Started"
        assert kept.walbc("a0", "get", "state", "vol0").strip() == "SyncReady"
    finally:
        second.remove(force=True)


@pytest.fixture
def kept_tls(tmp_path: Path, engine: Any, double_image: str,
             loop_vg: str) -> Iterator[tuple[KeptGroup, Path]]:
    """A kept group whose keeper serves /metrics with TLS and basic auth (web config)."""
    import os
    import subprocess

    import bcrypt

    if engine.images.list(name=keeper_image(double_image)) == []:
        pytest.skip(f"no keeper image {keeper_image(double_image)} next to {double_image}")
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed here: it makes the test's certificate")
    web = tmp_path / "keeper-web"
    web.mkdir(mode=0o755)
    web.chmod(0o755)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj", "/CN=keeper",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(web / "key.pem"),
                    "-out", str(web / "cert.pem")], check=True, capture_output=True)
    os.chown(web / "key.pem", 65534, 65534)  # the keeper runs as nobody
    (web / "key.pem").chmod(0o400)
    (web / "cert.pem").chmod(0o644)
    hashed = bcrypt.hashpw(b"scrape-me", bcrypt.gensalt(rounds=6)).decode()
    (web / "web.yml").write_text("tls_server_config:\n  cert_file: cert.pem\n"
                                 f"  key_file: key.pem\nbasic_auth_users:\n  prom: '{hashed}'\n")
    (web / "web.yml").chmod(0o644)
    group = KeptGroup(tmp_path / "g", engine, double_image, loop_vg)
    group.path.write_text(group.path.read_text().replace(
        "lag_threshold: 300}", f"lag_threshold: 300, web_config: {web / 'web.yml'}}}"))
    try:
        run = group.up()
        assert run.returncode == 0, run.stderr[-3000:]
        yield group, web
    finally:
        group.cleanup()


def test_a_keeper_with_a_web_config_serves_tls_and_basic_auth_to_prometheus(
        kept_tls: tuple[KeptGroup, Path], tmp_path: Path, double_image: str) -> None:
    from tests.test_keeper_web import fetch

    kept, web = kept_tls
    url = f"https://127.0.0.1:{kept.metrics_port}/metrics"

    def status(password: str | None) -> int:
        return fetch(url, web / "cert.pem", "prom", password)[0]

    wait_for(lambda: status("scrape-me") == 200, "the keeper to serve /metrics over TLS")
    assert status(None) == 401 and status("wrong") == 401
    wait_for(lambda: kept.engine.containers.get(kept.keeper().id).attrs["State"]["Health"][
        "Status"] == "healthy", "the keeper's health check (a connect) to pass", timeout=60)
    home = tmp_path / "prometheus"
    home.mkdir()
    shutil.copy(web / "cert.pem", home / "keeper-ca.pem")
    (home / "keeper.pass").write_text("scrape-me")
    prom = run_prometheus(kept, tmp_path, double_image, {
        "scheme": "https", "tls_config": {"ca_file": "/etc/prometheus-test/keeper-ca.pem"},
        "basic_auth": {"username": "prom",
                       "password_file": "/etc/prometheus-test/keeper.pass"}})
    prometheus = next(prom)
    try:
        wait_for(lambda: prometheus.value('sum(walb_server_up{job="walb-keeper"})') == 3,
                 "Prometheus to scrape the three servers up over TLS with basic auth")
    finally:
        prom.close()
