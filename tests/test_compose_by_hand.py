"""The rendered compose files run by hand: plain Compose v2, through pytest-docker.

The README promises that every rendered file is plain Compose v2 that a user can run
without walbctr (`docker compose -f compose/GROUP/HOST.yaml up -d --wait`). These tests
do exactly that through pytest-docker's fixtures, with the examples rendered for the test
image (a loop-device VG, base dirs under the test's tmp dir, a free port, a fresh group
name), and check what such a user relies on: `depends_on` order inside a host's file, a
storage that sees its proxy, nothing left behind by `down` or by a failed `up`, and what
a host's file does when it runs without its peers.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from pytest_docker.plugin import DockerComposeExecutor, Services, get_docker_services

from tests.conftest import EXAMPLES, ROOT, proxy_state, run_walbctr, walbc_command
from tests.test_deploy import free_ports

ROLES = {"a0": "archive", "p0": "proxy", "s0": "storage"}
# The engine keeps only the last five health-check results of a container.
HEALTH_LOG_KEEPS = 5
DOUBLE = not os.environ.get("WALBCTR_TEST_IMAGE")  # the double's log wording can be checked


@dataclass(frozen=True)
class ByHand:
    """Which example to render, adapted how, and which host's file to run by hand."""

    example: str  # "lab" or "minimal"
    host: str
    vg: str = "loop"  # "loop": the loop-device VG; anything else is written as is
    network: bool = True  # bridge mode: create the group's network first, as a user would
    address: str | None = None  # minimal: every host's address (None: the host names)


@dataclass(frozen=True)
class Rendered:
    group: str
    file: Path
    project: str
    data: Path
    ports: dict[str, int]

    def container(self, sid: str) -> str:
        return f"walbctr-{self.group}-{sid}"


def replace_once(text: str, old: str, new: str) -> str:
    """Adapt an example; if the example changed shape, say so rather than test another."""
    assert text.count(old) == 1, f"the example no longer has {old!r} exactly once"
    return text.replace(old, new)


def lab_layout(group: str, image: str, vg: str, data: Path, port: int) -> str:
    text = (EXAMPLES / "lab.yaml").read_text()
    for kept in ("  privileged: false\n", "    publish: true\n"):
        assert kept in text, f"examples/lab.yaml no longer has {kept.strip()!r}"
    text = replace_once(text, "group: lab\n", f"group: {group}\nimage: {image}\n")
    text = replace_once(text, "    vg: vg0\n", f"    vg: {vg}\n")
    text = replace_once(text, "  base_dir: /var/lib/walb-lab/{id}\n",
                        f"  base_dir: {data}/{{id}}\n")
    # The keeper (monitor:) needs an image of its own and a fixed port; its tests are
    # elsewhere. These are about the walb servers' file.
    text = re.sub(r"^monitor:\n(?:[ \t].*\n)*", "", text, flags=re.MULTILINE)
    # Every server gets the port (each has its own network namespace); the proxy's is
    # published on 127.0.0.1, so a free one keeps parallel runs apart.
    return replace_once(text, "  nofile: 16384\n", f"  nofile: 16384\n  port: {port}\n")


def minimal_layout(group: str, image: str, vg: str, data: Path, ports: dict[str, int],
                   address: str | None) -> str:
    text = (EXAMPLES / "minimal.yaml").read_text()
    hosts = ""
    if address:
        hosts = "hosts:\n" + "".join(f"  host{h}: {{address: {address}}}\n"
                                     for h in ("A0", "P0", "S0"))
    text = replace_once(text, "group: minimal\n", f"group: {group}\nimage: {image}\n{hosts}")
    # This engine cannot grant 65536 open files, nor privileged containers everywhere.
    text = replace_once(text, "  port: 10000\n", "  privileged: false\n  nofile: 16384\n")
    text = replace_once(text, "  base_dir: /var/walb/{id}\n", f"  base_dir: {data}/{{id}}\n")
    text = replace_once(text, "  log_path: /var/walb/{id}.log\n",
                        f"  log_path: {data}/{{id}}.log\n")
    text = replace_once(text, "    vg: vg0\n", f"    vg: {vg}\n")
    # Host networking: the servers share this machine's ports, so each gets a free one.
    for sid, host in (("a0", "hostA0"), ("p0", "hostP0"), ("s0", "hostS0")):
        text = replace_once(text, f"    host: {host}\n",
                            f"    host: {host}\n    port: {ports[sid]}\n")
    return text


@pytest.fixture
def rendered(request: pytest.FixtureRequest, engine: Any, double_image: str,
             tmp_path: Path) -> Iterator[Rendered]:
    """The example rendered with `walbctr render`, and the bridge network made by hand."""
    spec: ByHand = request.param
    vg = request.getfixturevalue("loop_vg") if spec.vg == "loop" else spec.vg
    group = f"h{secrets.token_hex(4)}"
    data = tmp_path / "data"
    if spec.example == "lab":
        port = free_ports(1)[0]
        ports = dict.fromkeys(ROLES, port)
        text = lab_layout(group, double_image, vg, data, port)
    else:
        ports = dict(zip(ROLES, free_ports(3), strict=True))
        text = minimal_layout(group, double_image, vg, data, ports, spec.address)
    layout = tmp_path / f"{spec.example}.yaml"
    layout.write_text(text)
    # Compose refuses the health check's start_interval on engines before API 1.44, so
    # render leaves it out by default; the README tells a user of Docker 25 and later to
    # opt in with --start-interval. Each engine runs the files its user is told to write.
    new_engine = tuple(int(x) for x in engine.api.api_version.split(".")) >= (1, 44)
    run = run_walbctr("render", str(layout), "-o", str(tmp_path / "compose"),
                      *(["--start-interval"] if new_engine else []))
    assert run.returncode == 0, run.stderr
    file = tmp_path / "compose" / group / f"{spec.host}.yaml"
    content = file.read_text()
    project = yaml.safe_load(content)["name"]
    # The file's header tells a user how to make the network; do what it says.
    told = re.search(r"\(by hand: (docker network create [^)]+)\)", content)
    made = None
    if told and spec.network:
        made = shlex.split(told.group(1))
        subprocess.run(made, check=True, capture_output=True)
    try:
        yield Rendered(group, file, project, data, ports)
    finally:
        if made:
            subprocess.run(["docker", "network", "rm", made[-1]], check=True,
                           capture_output=True)


# pytest-docker's fixtures, pointed at the rendered file and run the way the README says.

@pytest.fixture
def docker_compose_file(rendered: Rendered) -> str:
    return str(rendered.file)


@pytest.fixture
def docker_compose_project_name(rendered: Rendered) -> str:
    return rendered.project  # the file's own name, as `docker compose -f FILE` uses


@pytest.fixture
def docker_setup() -> list[str]:
    return ["up -d --wait --wait-timeout 180"]  # nothing to build: pull_policy never


@pytest.fixture
def docker_cleanup() -> list[str]:
    return ["down -v"]


@pytest.fixture
def docker_services(docker_compose_command: str, docker_compose_file: str,
                    docker_compose_project_name: str, docker_setup: list[str],
                    docker_cleanup: list[str]) -> Iterator[Services]:
    """pytest-docker's docker_services, one project per test, clean also when `up` fails.

    pytest-docker runs the setup commands before its try/finally, so an `up --wait` that
    fails (an archive that never turns healthy) would leave its containers behind; here
    the clean-up commands run then too, and the error is passed on.
    """
    bring_up = get_docker_services(docker_compose_command, docker_compose_file,
                                   docker_compose_project_name, docker_setup, docker_cleanup)
    try:
        services = bring_up.__enter__()
    except BaseException:
        compose = DockerComposeExecutor(docker_compose_command, docker_compose_file,
                                        docker_compose_project_name)
        for command in docker_cleanup:
            compose.execute(command)
        raise
    try:
        yield services
    finally:
        bring_up.__exit__(None, None, None)


def leftovers(engine: Any, r: Rendered) -> list[str]:
    """Containers and networks of the project (or named for the group) that still exist."""
    project = {"label": f"com.docker.compose.project={r.project}"}
    names = {c.name for c in engine.containers.list(all=True, filters=project)}
    names |= {c.name for c in engine.containers.list(
        all=True, filters={"label": f"io.walbctr.group={r.group}"})}
    names |= {n.name for n in engine.networks.list(filters=project)}
    return sorted(names)


def walbc(engine: Any, r: Rendered, sid: str, *args: str) -> tuple[int, str]:
    """walbc against a server from inside its container, as the health check runs it."""
    code, out = engine.containers.get(r.container(sid)).exec_run(
        walbc_command(r.ports[sid], *args))
    return code, out.decode(errors="replace")


def wait_for(services: Services, check: Any, what: str, said: list[str] | None = None,
             timeout: float = 30) -> None:
    try:
        services.wait_until_responsive(check=check, timeout=timeout, pause=0.5)
    except Exception as err:
        last = f"; it last said:\n{said[-1]}" if said else ""
        raise AssertionError(f"not within {timeout} s: {what}{last}") from err


def when(text: str) -> float:
    """An engine timestamp (RFC 3339, nanoseconds) as seconds since the epoch."""
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)", text)
    assert m, text
    base = datetime.fromisoformat(m.group(1) + ("+00:00" if m.group(3) == "Z" else m.group(3)))
    return base.timestamp() + float(m.group(2) or 0)


def became_healthy(engine: Any, attrs: dict[str, Any]) -> float:
    """When the container's first health check passed, from its health log; the engine's
    own health event when the log has rotated the first checks out."""
    log = attrs["State"]["Health"]["Log"]
    passed = [when(entry["End"]) for entry in log if entry["ExitCode"] == 0]
    if len(log) < HEALTH_LOG_KEEPS and passed:
        return min(passed)
    since = int(when(attrs["Created"])) - 1
    until = int(datetime.now(UTC).timestamp()) + 1
    for event in engine.events(since=since, until=until, decode=True,
                               filters={"container": attrs["Id"]}):
        if event.get("status") == "health_status: healthy":
            return float(event["timeNano"]) / 1e9
    raise AssertionError(f"{attrs['Name']} has no record of turning healthy")


LAB = ByHand("lab", "lab")


@pytest.mark.parametrize("rendered", [LAB], indirect=True)
def test_lab_file_comes_up_healthy_in_depends_on_order(docker_services: Services,
                                                       rendered: Rendered, engine: Any) -> None:
    attrs = {sid: engine.containers.get(rendered.container(sid)).attrs for sid in ROLES}
    for sid, a in attrs.items():
        assert a["State"]["Health"]["Status"] == "healthy", sid
        assert a["Config"]["Labels"]["com.docker.compose.project"] == rendered.project
    started = {sid: when(a["State"]["StartedAt"]) for sid, a in attrs.items()}
    healthy = {sid: became_healthy(engine, a) for sid, a in attrs.items()}
    assert started["a0"] < healthy["a0"] <= started["p0"] < healthy["p0"] <= started["s0"]
    assert started["s0"] < healthy["s0"]
    for sid, role in ROLES.items():  # the walb-protocol probe the health check runs
        wait_for(docker_services, lambda sid=sid, role=role: walbc(
            engine, rendered, sid, "get", "host-type") == (0, f"{role}\n"), f"{sid} answers")


@pytest.mark.parametrize("rendered", [LAB], indirect=True)
def test_storage_of_the_lab_file_sees_its_proxy(docker_services: Services, rendered: Rendered,
                                                engine: Any) -> None:
    port = rendered.ports["p0"]
    assert docker_services.port_for("p0", port) == port  # published as the layout says
    said: list[str] = []

    def sees_proxy() -> bool:
        said.append(walbc(engine, rendered, "s0", "status")[1])
        return proxy_state(said[-1], f"p0:{port}") == "available"

    wait_for(docker_services, sees_proxy, "s0 sees p0", said)


INNER_CONFTEST = """\
import os

import pytest

from tests.test_compose_by_hand import docker_cleanup, docker_services, docker_setup  # noqa


@pytest.fixture
def docker_compose_file():
    return os.environ["BY_HAND_FILE"]


@pytest.fixture
def docker_compose_project_name():
    return os.environ["BY_HAND_PROJECT"]
"""

INNER_TEST = """\
import os

import docker


def test_the_group_runs(docker_services):
    def all_healthy():
        found = docker.from_env().containers.list(
            filters={"label": "com.docker.compose.project=" + os.environ["BY_HAND_PROJECT"]})
        health = [c.attrs["State"].get("Health", {}).get("Status") for c in found]
        return health == ["healthy"] * 3
    docker_services.wait_until_responsive(check=all_healthy, timeout=30, pause=0.5)
"""


@pytest.mark.parametrize("rendered", [LAB], indirect=True)
def test_pytest_docker_cleanup_leaves_nothing_of_the_project(rendered: Rendered, engine: Any,
                                                             tmp_path: Path) -> None:
    """A whole pytest session with these fixtures: after it, the project is gone."""
    inner = tmp_path / "inner"
    inner.mkdir()
    (inner / "conftest.py").write_text(INNER_CONFTEST)
    (inner / "test_inner.py").write_text(INNER_TEST)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BY_HAND_FILE": str(rendered.file),
           "BY_HAND_PROJECT": rendered.project}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          str(inner)], cwd=inner, env=env, capture_output=True, text=True,
                         check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "1 passed" in run.stdout
    assert leftovers(engine, rendered) == []
    # `down` leaves the external network alone: it was made by hand, and goes by hand.
    assert [n.name for n in engine.networks.list(names=[f"walbctr-{rendered.group}"])] == [
        f"walbctr-{rendered.group}"]


@pytest.mark.parametrize("rendered", [ByHand("lab", "lab", vg="no_such_vg")], indirect=True)
def test_failed_bring_up_inside_the_fixture_leaves_nothing_behind(
        request: pytest.FixtureRequest, rendered: Rendered, engine: Any) -> None:
    with pytest.raises(Exception, match="returned 1") as failed:
        request.getfixturevalue("docker_services")
    # Compose's own words: the archive exits 1 (no such VG) and never turns healthy.
    assert f"container {rendered.container('a0')} is unhealthy" in str(failed.value)
    assert leftovers(engine, rendered) == []


@pytest.mark.parametrize("rendered", [ByHand("lab", "lab", vg="no_such_vg")], indirect=True)
def test_pytest_dockers_own_setup_would_leak_a_failed_up(
        docker_compose_command: str, docker_compose_file: str,
        docker_compose_project_name: str, docker_setup: list[str],
        docker_cleanup: list[str], rendered: Rendered, engine: Any) -> None:
    """Why docker_services above is wrapped; if pytest-docker fixes this, drop the wrapper."""
    try:
        with pytest.raises(Exception, match="is unhealthy"), get_docker_services(
                docker_compose_command, docker_compose_file, docker_compose_project_name,
                docker_setup, docker_cleanup):
            pass
        left = leftovers(engine, rendered)
    finally:
        DockerComposeExecutor(docker_compose_command, docker_compose_file,
                              docker_compose_project_name).execute("down -v")
    assert left == sorted(rendered.container(sid) for sid in ROLES)


@pytest.mark.parametrize("rendered", [ByHand("lab", "lab", vg="vg0", network=False)],
                         indirect=True)
def test_bridge_file_without_its_network_fails_at_once_and_creates_nothing(
        request: pytest.FixtureRequest, rendered: Rendered, engine: Any) -> None:
    assert f"docker network create walbctr-{rendered.group}" in rendered.file.read_text()
    with pytest.raises(Exception, match="returned 1") as failed:
        request.getfixturevalue("docker_services")
    assert f"network walbctr-{rendered.group} not found" in str(failed.value)
    assert leftovers(engine, rendered) == []


def resolves(name: str) -> bool:
    try:
        socket.getaddrinfo(name, None)
    except socket.gaierror:
        return False
    return True


@pytest.mark.parametrize("rendered", [ByHand("minimal", "hostS0", vg="vg0")], indirect=True)
def test_lone_storage_file_whose_peers_do_not_resolve_fails_clearly(
        request: pytest.FixtureRequest, rendered: Rendered, engine: Any) -> None:
    known = [name for name in ("hostA0", "hostP0") if resolves(name)]
    if known:
        pytest.skip(f"{', '.join(known)} resolves on this machine, so the peers are not missing")
    with pytest.raises(Exception, match="returned 1") as failed:
        request.getfixturevalue("docker_services")
    assert f"container {rendered.container('s0')} is unhealthy" in str(failed.value)
    assert leftovers(engine, rendered) == []
    if DOUBLE:  # the log file stays on the host and says why
        log = (rendered.data / "s0.log").read_text()
        assert f"ERROR s0 cannot resolve proxy hostP0:{rendered.ports['p0']}" in log


@pytest.mark.parametrize("rendered", [ByHand("minimal", "hostS0", vg="vg0",
                                             address="127.0.0.1")], indirect=True)
def test_lone_storage_file_whose_peers_resolve_comes_up_healthy_without_them(
        docker_services: Services, rendered: Rendered, engine: Any) -> None:
    """The health check proves the storage answers, not that its peers are there."""
    s0 = engine.containers.get(rendered.container("s0"))
    assert s0.attrs["State"]["Health"]["Status"] == "healthy"
    assert leftovers(engine, rendered) == [rendered.container("s0")]
    said: list[str] = []

    def proxy_missing() -> bool:
        said.append(walbc(engine, rendered, "s0", "status")[1])
        return proxy_state(said[-1], f"127.0.0.1:{rendered.ports['p0']}") == "unavailable"

    wait_for(docker_services, proxy_missing, "s0 reports p0 unavailable", said)
