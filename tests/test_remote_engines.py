"""Remote engines for real (issue 14): hosts reached over SSH and over TCP with TLS.

tests/harness starts one engine per host; here every host also runs Debian's sshd (a
fresh host key per run, key-only, root may log in with a key) and its dockerd also
listens on tcp 2376 with --tlsverify (a CA and certificates made per run with openssl).
walbctr runs as a subprocess, as an operator runs it, with `ssh` aimed at a per-run
config through PATH (tests/harness/ssh.py says why PATH and not HOME). The containers
are checked through each engine's unix socket, which does not depend on what is tested.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, proxy_state
from tests.harness import hosts as harness
from tests.harness.ssh import CLIENT_OPTIONS, DOCKER_USER, PLAIN_USER, SshSetup, ssh_problem
from tests.harness.tls import PORT as TLS_PORT
from tests.harness.tls import TlsSetup, tls_problem
from walbctr.docker.engine import SSH_CHECK_TIMEOUT_S

NAMES = ["hostA0", "hostP0", "hostS0"]
SERVERS = {"a0": "hostA0", "p0": "hostP0", "s0": "hostS0"}
PORT = 10000
# Every failure must be reported within this bound: ssh gives up after ConnectTimeout
# (5 s in the config) and walbctr after its own probe timeout; the rest is start-up.
FAIL_WITHIN_S = 30


@dataclass
class Remote:
    hosts: dict[str, harness.HostEngine]
    ssh: SshSetup
    tls: TlsSetup
    env: dict[str, str]  # ssh aimed at the per-run config (ControlMaster on)


@pytest.fixture(scope="module")
def remote(engine: Any, double_image: str) -> Iterator[Remote]:
    why = harness.harness_problem() or ssh_problem() or tls_problem()
    if why:
        pytest.skip(f"no remote-engine harness here: {why}")
    ssh, tls = SshSetup.create(), TlsSetup.create()
    workdir = Path(os.environ.get("WALBCTR_HARNESS_DIR", "/var/tmp/walbctr-harness"))
    workdir = workdir / secrets.token_hex(3)
    started = time.monotonic()
    try:
        hosts = harness.start_hosts(NAMES, workdir,
                                    prepare=lambda h, d: ssh.prepare(h, d) + tls.prepare(h, d))
    except harness.HarnessUnavailableError as err:
        ssh.remove()
        tls.remove()
        pytest.skip(f"no remote-engine harness here: {err}")
    print(f"\nharness: {len(hosts)} hosts with sshd and TLS up in "
          f"{time.monotonic() - started:.1f} s")
    try:
        yield Remote(hosts, ssh, tls, ssh.write())
    finally:
        ssh.remove()
        tls.remove()
        harness.stop_hosts(hosts)
        with contextlib.suppress(OSError):
            workdir.rmdir()  # stop_hosts removed the hosts' data roots inside it


def group_containers(remote: Remote, group: str) -> dict[str, list[str]]:
    """host -> names of the group's containers there, seen through the unix sockets."""
    out = {}
    for name, host in remote.hosts.items():
        client = host.client()
        try:
            out[name] = sorted(c.name for c in client.containers.list(
                all=True, filters={"name": f"walbctr-{group}-"}))
        finally:
            client.close()
    return out


class Deployment:
    def __init__(self, remote: Remote, tmp: Path, image: str, vg: str,
                 engines: dict[str, str], tls: dict[str, dict[str, str]] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.remote = remote
        self.name = f"r{secrets.token_hex(3)}"
        self.image, self.vg = image, vg
        tmp.mkdir(parents=True, exist_ok=True)
        self.path = tmp / "layout.yaml"
        self.path.write_text(self.layout(engines, tls or {}))
        # The same group through the unix sockets: clean-up works whatever broke SSH.
        self.plain = tmp / "plain.yaml"
        self.plain.write_text(self.layout({h: remote.hosts[h].url for h in NAMES}, {}))
        self.env = {**(env or remote.env), "WALBCTR_STATE_DIR": str(tmp / "state")}

    def layout(self, engines: dict[str, str], tls: dict[str, dict[str, str]]) -> str:
        lines = [f"group: {self.name}", f"image: {self.image}", "hosts:"]
        for h in NAMES:
            extra = f", tls: {json.dumps(tls[h])}" if h in tls else ""
            lines.append(f"  {h}: {{address: {h}, engine: '{engines[h]}'{extra}}}")
        lines += ["defaults:", f"  base_dir: /var/walb-{self.name}/{{id}}", f"  port: {PORT}",
                  "  privileged: false", "  nofile: 16384", "  stop_grace_period: 10",
                  "archives:", f"  - {{id: a0, host: hostA0, vg: {self.vg}}}",
                  "proxies:", "  - {id: p0, host: hostP0}",
                  "storages:", "  - {id: s0, host: hostS0}"]
        return "\n".join(lines) + "\n"

    def walbctr(self, *args: str, env: dict[str, str] | None = None,
                timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "walbctr", *args], capture_output=True,
                              text=True, env=env or self.env, check=False, timeout=timeout)

    def container(self, sid: str) -> Any:
        client = self.remote.hosts[SERVERS[sid]].client()
        return client.containers.get(f"walbctr-{self.name}-{sid}")

    def started(self) -> dict[str, list[str]]:
        return {h: names for h, names in group_containers(self.remote, self.name).items()
                if names}

    def wait_storage_says(self, proxy: str, want: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        said: str | None = ""
        while time.monotonic() < deadline:
            out = self.walbctr("walbc", str(self.path), "s0", "status").stdout
            said = proxy_state(out, f"{proxy}:{PORT}")
            if said == want:
                return
            time.sleep(1)
        raise AssertionError(f"s0 says {proxy} is {said}, not {want}")

    def cleanup(self) -> None:
        self.walbctr("down", str(self.plain), "--quiet", env={**os.environ, **{
            "WALBCTR_STATE_DIR": self.env["WALBCTR_STATE_DIR"]}})


@pytest.fixture
def deploy(tmp_path: Path, remote: Remote, double_image: str, loop_vg: str) -> Iterator[Any]:
    made: list[Deployment] = []

    def make(engines: dict[str, str], **kw: Any) -> Deployment:
        d = Deployment(remote, tmp_path / f"d{len(made)}", double_image, loop_vg, engines,
                       **kw)
        made.append(d)
        return d

    yield make
    for d in made:
        d.cleanup()


def ssh_engines(user: str = "root", **override: str) -> dict[str, str]:
    return {h: override.get(h, f"ssh://{user}@{h}") for h in NAMES}


def tls_files(remote: Remote, **override: str) -> dict[str, str]:
    files = {"ca": str(remote.tls.ca), "cert": str(remote.tls.cert), "key": str(remote.tls.key)}
    return {**files, **override}


def _time(text: str) -> float:
    return datetime.fromisoformat(text[:26].rstrip("Z")).timestamp()


def assert_tier_order(d: Deployment, plain: str) -> None:
    """Archive, then proxy, then storage: by the engines' start times, and each tier
    reported healthy before the next one was created (`up --plain` lines)."""
    started = [_time(d.container(sid).attrs["State"]["StartedAt"]) for sid in ("a0", "p0", "s0")]
    assert started == sorted(started), started
    events = [line.split("] ", 1)[1] for line in plain.splitlines() if "] " in line]

    def at(text: str) -> int:
        return next(i for i, e in enumerate(events) if e.startswith(text))

    assert at("a0 (archive on hostA0): healthy") < at("p0 (proxy on hostP0): created")
    assert at("p0 (proxy on hostP0): healthy") < at("s0 (storage on hostS0): created")


def full_cycle(d: Deployment) -> None:
    """push, up, status, walbc, logs, check-host, down: what an operator runs."""
    push = d.walbctr("push", str(d.path))
    assert push.returncode == 0, push.stderr
    again = d.walbctr("push", str(d.path))
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("already has") == 3, again.stdout
    up = d.walbctr("up", str(d.path), "--plain")
    assert up.returncode == 0, up.stderr
    assert_tier_order(d, up.stdout + up.stderr)
    status = d.walbctr("status", str(d.path), "--json")
    assert status.returncode == 0, status.stderr
    rows = {r["id"]: r for r in json.loads(status.stdout)}
    assert {r["health"] for r in rows.values()} == {"healthy"}
    assert {r["host"] for r in rows.values()} == set(NAMES)
    d.wait_storage_says("hostP0", "available")
    logs = d.walbctr("logs", str(d.path), "s0")
    assert logs.returncode == 0 and logs.stdout.strip(), logs.stderr
    check = d.walbctr("check-host", str(d.path))
    assert check.returncode == 0, check.stdout + check.stderr
    for host in NAMES:
        assert f"{host}  " in check.stdout
    down = d.walbctr("down", str(d.path), "--quiet")
    assert down.returncode == 0, down.stderr
    assert d.started() == {}


def test_minimal_group_over_ssh_as_root(deploy: Any) -> None:
    full_cycle(deploy(ssh_engines()))


def test_minimal_group_over_tcp_with_tls(deploy: Any, remote: Remote) -> None:
    engines = {h: f"tcp://{remote.hosts[h].address}:{TLS_PORT}" for h in NAMES}
    full_cycle(deploy(engines, tls={h: tls_files(remote) for h in NAMES}))


def test_ssh_and_tls_hosts_mixed_in_one_group(deploy: Any, remote: Remote) -> None:
    engines = ssh_engines(hostP0=f"tcp://{remote.hosts['hostP0'].address}:{TLS_PORT}")
    d = deploy(engines, tls={"hostP0": tls_files(remote)})
    assert d.walbctr("push", str(d.path)).returncode == 0
    up = d.walbctr("up", str(d.path), "--plain")
    assert up.returncode == 0, up.stderr
    assert_tier_order(d, up.stdout + up.stderr)
    d.wait_storage_says("hostP0", "available")


def test_a_user_in_the_docker_group_deploys_over_ssh(deploy: Any) -> None:
    d = deploy(ssh_engines(DOCKER_USER))
    assert d.walbctr("push", str(d.path)).returncode == 0
    up = d.walbctr("up", str(d.path), "--quiet")
    assert up.returncode == 0, up.stderr
    status = d.walbctr("status", str(d.path), "--json")
    assert {r["health"] for r in json.loads(status.stdout)} == {"healthy"}


def test_ssh_agent_key_is_used_when_no_identity_file_is_named(
        deploy: Any, remote: Remote, tmp_path: Path) -> None:
    agent = start_agent(tmp_path)
    try:
        env = {**remote.ssh.write("agent", agent_only=True), "SSH_AUTH_SOCK": agent.sock}
        d = deploy(ssh_engines(), env=env)
        err = failed_up(d)
        assert "refused the key" in err and "ssh-add" in err, err
        added = subprocess.run(["ssh-add", str(remote.ssh.key)], env=env, capture_output=True,
                               text=True, check=False)
        assert added.returncode == 0, added.stderr
        status = d.walbctr("status", str(d.path), "--json")
        rows = json.loads(status.stdout)
        assert {r["state"] for r in rows} == {"absent"}, status.stderr
        assert not any(r["note"] for r in rows), rows
    finally:
        agent.stop()


@dataclass
class Agent:
    sock: str
    pid: int

    def stop(self) -> None:
        os.kill(self.pid, signal.SIGTERM)


def start_agent(tmp: Path) -> Agent:
    sock = f"/tmp/wagent-{secrets.token_hex(4)}"
    out = subprocess.run(["ssh-agent", "-s", "-a", sock], capture_output=True, text=True,
                         check=True).stdout
    pid = int(out.split("SSH_AGENT_PID=")[1].split(";")[0])
    return Agent(sock, pid)


# --- failures as users meet them ------------------------------------------------------------


def failed_up(d: Deployment, env: dict[str, str] | None = None) -> str:
    """`up` fails fast, names the host in one paragraph and starts nothing anywhere."""
    started = time.monotonic()
    run = d.walbctr("up", str(d.path), "--quiet", env=env, timeout=FAIL_WITHIN_S + 30)
    took = time.monotonic() - started
    assert run.returncode != 0, run.stdout
    assert took < FAIL_WITHIN_S, f"took {took:.1f} s: {run.stderr}"
    assert "Traceback" not in run.stderr, run.stderr
    assert d.started() == {}
    assert run.stderr.startswith("walbctr: "), run.stderr
    return run.stderr


def test_unknown_host_key_names_host_and_known_hosts(deploy: Any, remote: Remote) -> None:
    keys = {h: k for h, k in remote.ssh.host_keys.items() if h != "hostP0"}
    d = deploy(ssh_engines(), env=remote.ssh.write("unknownkey", known=keys))
    err = failed_up(d)
    assert "host hostP0" in err and "host key" in err and "known_hosts" in err, err


def test_changed_host_key_is_not_accepted(deploy: Any, remote: Remote) -> None:
    keys = {**remote.ssh.host_keys, "hostP0": remote.ssh.host_keys["hostA0"]}
    d = deploy(ssh_engines(), env=remote.ssh.write("changedkey", known=keys))
    err = failed_up(d)
    assert "host hostP0" in err and "host key" in err and "changed" in err, err


def test_key_not_authorized_names_user_and_fix(deploy: Any, remote: Remote) -> None:
    d = deploy(ssh_engines(), env=remote.ssh.write("strangerkey", identity=remote.ssh.stranger))
    err = failed_up(d)
    assert "host hostA0" in err and "refused the key" in err, err
    assert "authorized_keys" in err and "ssh-add" in err, err


def test_user_without_docker_group_is_told_to_join_it(deploy: Any) -> None:
    d = deploy(ssh_engines(hostP0=f"ssh://{PLAIN_USER}@hostP0"))
    err = failed_up(d)
    assert "host hostP0" in err and f"{PLAIN_USER} may not use Docker" in err, err
    assert f"usermod -aG docker {PLAIN_USER}" in err, err


def test_host_that_answers_ssh_but_runs_no_dockerd(deploy: Any, remote: Remote) -> None:
    host = remote.hosts["hostS0"]
    sock = harness.DEFAULT_SOCK
    rc, out = harness.host_exec(host, ["mv", sock, f"{sock}.off"])
    assert rc == 0, out
    try:
        err = failed_up(deploy(ssh_engines()))
    finally:
        harness.host_exec(host, ["mv", f"{sock}.off", sock])
    assert "host hostS0" in err and "Docker is not running" in err, err


def test_host_that_answers_ssh_but_has_no_docker_command(deploy: Any, remote: Remote) -> None:
    host = remote.hosts["hostS0"]
    rc, out = harness.host_exec(host, ["mv", "/usr/bin/docker", "/usr/bin/docker.off"])
    assert rc == 0, out
    try:
        err = failed_up(deploy(ssh_engines()))
    finally:
        harness.host_exec(host, ["mv", "/usr/bin/docker.off", "/usr/bin/docker"])
    assert "host hostS0" in err and "no docker command" in err, err


def test_ssh_port_that_refuses(deploy: Any) -> None:
    err = failed_up(deploy(ssh_engines(hostA0="ssh://root@hostA0:2222")))
    assert "host hostA0" in err and "refused" in err and "2222" in err, err


def test_cut_off_ssh_host_fails_fast_and_status_marks_it(deploy: Any, remote: Remote) -> None:
    d = deploy(ssh_engines())
    harness.cut(remote.hosts["hostP0"])
    try:
        err = failed_up(d)
        started = time.monotonic()
        status = d.walbctr("status", str(d.path), "--json", timeout=FAIL_WITHIN_S + 30)
        took = time.monotonic() - started
    finally:
        harness.restore(remote.hosts["hostP0"])
    assert "host hostP0" in err and "did not answer" in err, err
    assert took < FAIL_WITHIN_S
    rows = {r["id"]: r for r in json.loads(status.stdout)}
    assert rows["p0"]["state"] == "unknown" and "did not answer" in rows["p0"]["note"]
    assert rows["a0"]["state"] == "absent"


def test_host_that_drops_ssh_packets_is_given_up_on_within_bounds(
        deploy: Any, remote: Remote) -> None:
    """A firewall that drops SYNs: ssh's ConnectTimeout (5 s in the config) ends the wait,
    and without one walbctr's own bound (SSH_CHECK_TIMEOUT_S, 15 s) does."""
    host = remote.hosts["hostP0"]
    rule = ["INPUT", "-p", "tcp", "--dport", "22", "-j", "DROP"]
    rc, out = harness.host_exec(host, ["iptables", "-I", *rule])
    assert rc == 0, out
    try:
        # A config of its own: no ControlMaster left by earlier tests rides over the rule.
        d = deploy(ssh_engines(), env=remote.ssh.write("dropped"))
        started = time.monotonic()
        err = failed_up(d)
        assert time.monotonic() - started < SSH_CHECK_TIMEOUT_S
        assert "host hostP0" in err and "did not answer SSH" in err, err
        patient = remote.ssh.write("noconnecttimeout", options={"ConnectTimeout": ""})
        started = time.monotonic()
        status = d.walbctr("status", str(d.path), "--json", env={**d.env, "PATH": patient[
            "PATH"]}, timeout=FAIL_WITHIN_S + 30)
        took = time.monotonic() - started
    finally:
        harness.host_exec(host, ["iptables", "-D", *rule])
    assert SSH_CHECK_TIMEOUT_S <= took < FAIL_WITHIN_S, took
    rows = {r["id"]: r for r in json.loads(status.stdout)}
    assert f"did not answer SSH within {SSH_CHECK_TIMEOUT_S} s" in rows["p0"]["note"], rows


def tls_deploy(deploy: Any, remote: Remote, **files: str) -> Deployment:
    engines = {h: f"tcp://{remote.hosts[h].address}:{TLS_PORT}" for h in NAMES}
    tls = {h: tls_files(remote) for h in NAMES}
    tls["hostP0"] = tls_files(remote, **files)
    return deploy(engines, tls=tls)  # type: ignore[no-any-return]


def test_tls_wrong_ca_fails_before_anything_starts(deploy: Any, remote: Remote) -> None:
    err = failed_up(tls_deploy(deploy, remote, ca=str(remote.tls.other_ca)))
    assert "host hostP0" in err and "hosts.hostP0.tls.ca" in err, err
    assert len(err.strip().split("\n\n")) == 1


def test_tls_missing_key_file_fails_before_anything_starts(deploy: Any, remote: Remote,
                                                          tmp_path: Path) -> None:
    missing = str(tmp_path / "nowhere" / "key.pem")
    err = failed_up(tls_deploy(deploy, remote, key=missing))
    assert "host hostP0" in err and "hosts.hostP0.tls.key" in err and missing in err, err


def test_tls_client_certificate_from_another_ca_is_refused(deploy: Any, remote: Remote) -> None:
    err = failed_up(tls_deploy(deploy, remote, cert=str(remote.tls.other_cert),
                               key=str(remote.tls.other_key)))
    assert "host hostP0" in err and "hosts.hostP0.tls.cert" in err, err


def test_tls_port_that_refuses(deploy: Any, remote: Remote) -> None:
    d = deploy({**{h: f"tcp://{remote.hosts[h].address}:{TLS_PORT}" for h in NAMES},
                "hostP0": f"tcp://{remote.hosts['hostP0'].address}:2377"},
               tls={h: tls_files(remote) for h in NAMES})
    err = failed_up(d)
    assert "host hostP0" in err and "refused" in err and "2377" in err, err


def test_readme_ssh_config_has_the_options_these_tests_use() -> None:
    text = (ROOT / "README.md").read_text()
    block = text.split("   Host hostA0 hostP0 hostS0\n", 1)[1].split("```", 1)[0]
    said = dict(line.split(None, 1) for line in block.strip().splitlines())
    for key, value in CLIENT_OPTIONS.items():
        assert said.get(key) == value.format(dir="~/.ssh"), (key, said.get(key))
