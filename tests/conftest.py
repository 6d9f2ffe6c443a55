from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import execevents
from walbctr.layout.loader import load_layout
from walbctr.layout.spec import Layout

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

MINIMAL = """\
group: g
archives:
  - {id: a0, host: h1, vg: vg0}
proxies:
  - {id: p0, host: h2}
storages:
  - {id: s0, host: h3}
"""


@pytest.fixture
def minimal() -> Layout:
    return load_layout(MINIMAL, "t.yaml")


DOUBLE_SOURCE = ROOT / "tests" / "fixtures" / "walb-tools-double"


def engine_problem() -> str | None:
    """Why the Docker engine cannot be used, or None."""
    try:
        import docker

        docker.from_env(timeout=10).ping()
    except Exception as err:  # any failure means: no engine for these tests
        return f"no Docker engine reachable ({err})"
    return None


@pytest.fixture(scope="session")
def engine() -> object:
    why = engine_problem()
    if why:
        pytest.skip(why)
    import docker

    return docker.from_env(timeout=120)


def run_walbctr(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    import sys

    return subprocess.run([sys.executable, "-m", "walbctr", *args], capture_output=True,
                          text=True, cwd=cwd, check=False)


@pytest.fixture(scope="session")
def double_image(engine: object) -> str:
    """The walb-tools image built from the test double, as CI builds it.

    WALBCTR_TEST_IMAGE names an image built elsewhere (the real walb-tools, in the
    upstream CI job) to run the same tests against instead.
    """
    import os

    if os.environ.get("WALBCTR_TEST_IMAGE"):
        return os.environ["WALBCTR_TEST_IMAGE"]
    run = run_walbctr("build", "--source", str(DOUBLE_SOURCE), "--plain")
    assert run.returncode == 0, run.stderr[-4000:]
    return run.stdout.split()[0]


@pytest.fixture(scope="session")
def loop_vg(engine: Any, double_image: str,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An LVM volume group on a loop device (see tests/harness/loopvg.py)."""
    from tests.harness.loopvg import loop_vg as make

    made = make(engine, double_image, tmp_path_factory.mktemp("pv"))
    try:
        name = made.__enter__()
    except Exception as err:
        pytest.skip(f"cannot make an LVM volume group on a loop device here: {err}")
    try:
        yield name
    finally:
        made.__exit__(None, None, None)


def proxy_state(status: str, endpoint: str) -> str | None:
    """'available' or 'unavailable' for the proxy at `endpoint` in a storage's `walbc
    status`, in upstream's wording ('isAvailable 1') or the test double's ('is available')."""
    import re

    port = endpoint.rsplit(":", 1)[1]
    for line in status.splitlines():
        # upstream prints the address it resolved at start-up: "host 10.0.0.3:10000:10000"
        if endpoint not in line and f":{port}:{port} " not in line:
            continue
        upstream = re.search(r"isAvailable (\d)", line)
        if upstream:
            return "available" if upstream.group(1) == "1" else "unavailable"
        if "is unavailable" in line:
            return "unavailable"
        if "is available" in line:
            return "available"
    return None


def docker_time(text: str) -> float:
    """Seconds since the epoch from Docker's RFC 3339 times (nanoseconds cut to micro)."""
    from datetime import datetime

    return datetime.fromisoformat(text[:26].rstrip("Z") + "+00:00").timestamp()


@pytest.fixture(scope="session", autouse=True)
def exec_events() -> Iterator[None]:
    """Start recording the local engine's exec events before any test runs."""
    if engine_problem() is None:
        import docker

        execevents.start(docker.from_env(timeout=None))
    yield


def _exec_events(client: Any, group: str, start: float) -> list[dict[str, Any]]:
    """Every exec event of `group` since `start`: the engine's short history joined with
    the session's live record of the same engine (deduplicated), in time order."""
    found = {(e.get("timeNano"), e.get("Action") or e.get("status"),
              ((e.get("Actor") or {}).get("Attributes") or {}).get("execID")): e
             for e in client.api.events(
                 since=start, until=time.time(), decode=True,
                 filters={"label": f"io.walbctr.group={group}",
                          "event": ["exec_start", "exec_die"]})}
    for rec in execevents.RECORDS:
        if rec.url == client.api.base_url:
            for e in rec.of_group(group, start):
                found.setdefault((e.get("timeNano"), e.get("Action") or e.get("status"),
                                  ((e.get("Actor") or {}).get("Attributes") or {}).get(
                                      "execID")), e)
    return sorted(found.values(), key=lambda e: e.get("timeNano", 0))


def first_ready(client: Any, container: Any, since: float | None = None) -> float:
    """When the server in `container` first answered `walbc get host-type` (after `since`,
    or since the container was created).

    Two witnesses, both kept by the engine rather than told by walbctr: Docker's own
    health check log, and the engine's exec events for the readiness probe walbctr runs
    while it starts a tier (an exec_die with exit code 0 ends after the answer came). A
    tier of several servers on one engine is asked from one exec in one of them, which
    exits 0 only when every server it asked answered (readiness.batch_argv).
    """
    container.reload()
    start = docker_time(container.attrs["Created"]) if since is None else since
    health = container.attrs["State"].get("Health") or {}
    times = [docker_time(e["End"]) for e in health.get("Log") or []
             if e["ExitCode"] == 0 and docker_time(e["End"]) >= start]
    labels = container.attrs["Config"]["Labels"]
    batched = f"echo {labels['io.walbctr.server']} $rc "
    probes: set[str] = set()
    for event in _exec_events(client, labels["io.walbctr.group"], start):
        action = event.get("Action") or event.get("status") or ""
        attrs = (event.get("Actor") or {}).get("Attributes") or {}
        single = (event.get("Actor") or {}).get("ID") == container.id \
            and "sh -c (" not in action
        if action.startswith("exec_start") and "get host-type" in action and (
                single or batched in action):
            probes.add(attrs.get("execID", ""))
        elif action == "exec_die" and attrs.get("execID") in probes \
                and attrs.get("exitCode") == "0":
            times.append(event["timeNano"] / 1e9)
    assert times, (f"{container.name} never answered walbc get host-type after {start}; "
                   + execevents.state())
    return min(times)


def exec_log(client: Any, container: Any, since: float | None = None) -> str:
    """The group's exec events since `container` was created (or `since`), one line each,
    with the live record's state: what a failed readiness-order assertion prints."""
    container.reload()
    start = docker_time(container.attrs["Created"]) if since is None else since
    lines = []
    for e in _exec_events(client, container.attrs["Config"]["Labels"]["io.walbctr.group"],
                          start):
        attrs = (e.get("Actor") or {}).get("Attributes") or {}
        lines.append(f"{e.get('timeNano', 0) / 1e9:.6f} {attrs.get('name', '?')} "
                     f"{(e.get('Action') or '')[:90]} exit={attrs.get('exitCode', '-')} "
                     f"exec={attrs.get('execID', '')[:8]}")
    return "\n".join([f"exec events since {start:.6f}:", *lines[-40:], execevents.state()])


def walbc_command(port: int, *args: str, timeout: int = 3) -> list[str]:
    """walbc against the server on `port` of this container, asked once.

    Upstream's walbc takes -retry for `get` and `status` only and refuses it elsewhere
    (binsrc/walbc.cpp, setNrRetry); the double does the same.
    """
    retry = ["-retry", "0"] if args and args[0] in ("get", "status") else []
    return ["walbc", "-a", "127.0.0.1", "-p", str(port), "-to", str(timeout), *retry, *args]


def answers_walbc(container: Any, port: int) -> bool:
    """Whether the server in a running container answers the readiness probe now."""
    container.reload()
    if container.status != "running":
        return False
    result = container.exec_run(walbc_command(port, "get", "host-type", timeout=1))
    return bool(result.exit_code == 0)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that reaches the Docker engine (through the `engine` fixture, or
    any fixture built on it) as `docker`, so that `-m "not docker"` is the pure core
    alone: a marker written by hand drifts, the fixture graph does not."""
    for item in items:
        if "engine" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.docker)
