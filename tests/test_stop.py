"""Stopping a server's container, whoever stops it: the image's entrypoint
(images/walb-tools/walb-entrypoint.c) turns the stop signal into `walbc shutdown
graceful`, forces the server before the grace period ends, and passes its exit status on.

Real engine, the image built from the test double, whose archive simulates running work
(a Merge) that a graceful shutdown waits for and a forced one aborts. A server deaf to
SIGTERM and one still starting are stub scripts named like a walb server (the
entrypoint recognises servers by name) in the same image.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_deploy import Group, free_ports
from walbctr.layout.loader import load_layout
from walbctr.render.compose import render

# A server that does not stop on SIGTERM at all (hung in the kernel, say).
DEAF = """#!/bin/bash
trap 'echo "stub: ignoring SIGTERM"' TERM
walb-proxy "$@" &
wait $!
echo "stub: graceful shutdown accepted; work still running"
while :; do sleep 0.2 & wait $!; done
"""

# A server still starting: it does not listen yet.
STARTING = """#!/bin/bash
echo "stub: recovering volumes"
exec sleep 1000
"""


def docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=False,
                          timeout=timeout)


class Box:
    """One container of the image, started the way compose starts a service."""

    def __init__(self, engine: Any, name: str) -> None:
        self.engine = engine
        self.name = name

    @property
    def container(self) -> Any:
        return self.engine.containers.get(self.name)

    def logs(self) -> str:
        return str(self.container.logs().decode())

    def final_log(self, last: str) -> str:
        """The log once `last` is in it: the engine may still be copying the last lines
        when `docker stop` returns."""
        self.wait_for(last, timeout=10)
        return self.logs()

    def state(self) -> dict[str, Any]:
        return dict(self.container.attrs["State"])

    def wait_for(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.logs():
                return
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not in the log of {self.name}:\n{self.logs()}")

    def wait_exited(self, timeout: float = 60) -> float:
        """Seconds until the container has exited."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.state()["Status"] == "exited":
                return time.monotonic() - start
            time.sleep(0.05)
        raise AssertionError(f"{self.name} still runs after {timeout} s:\n{self.logs()}")


@pytest.fixture
def box(engine: Any, double_image: str, tmp_path: Path) -> Iterator[Callable[..., Box]]:
    made: list[str] = []

    def start(command: list[str], *, grace: int = 10, stub: str | None = None,
              restart: str = "no") -> Box:
        name = f"walbctr-stoptest-{secrets.token_hex(4)}"
        args = ["run", "-d", "--name", name, "--init", "--restart", restart,
                "--stop-timeout", str(grace), "-e", f"WALBCTR_STOP_GRACE_S={grace}"]
        if stub is not None:
            script = tmp_path / "stub" / command[0].rsplit("/", 1)[-1]
            script.parent.mkdir(exist_ok=True)
            script.write_text(stub)
            script.chmod(0o755)
            args += ["-v", f"{script.parent}:/stub:ro"]
        run = docker(*args, double_image, *command)
        assert run.returncode == 0, run.stderr
        made.append(name)
        return Box(engine, name)

    yield start
    for name in made:
        docker("rm", "-f", name)


def docker_stop(engine: Any, name: str) -> float:
    """`docker stop NAME` (not through walbctr): seconds from the request to the moment
    the engine saw the container exit (its own FinishedAt, so that a slow CLI does not
    count)."""
    requested = datetime.now(UTC)
    stop = docker("stop", name)
    assert stop.returncode == 0, stop.stderr
    finished = engine.containers.get(name).attrs["State"]["FinishedAt"]
    ended = datetime.fromisoformat(finished[:26].rstrip("Z")).replace(tzinfo=UTC)
    return (ended - requested).total_seconds()


def server_argv(exe: str, port: int) -> list[str]:
    return [exe, "-p", str(port), "-b", "/tmp/base", "-id", "x0", "-l", "-"]


def server_lines(log: str) -> list[str]:
    """The server's own log lines, without the entrypoint's."""
    return [line for line in log.splitlines() if not line.startswith("walb-entrypoint:")]


# --- no engine ------------------------------------------------------------------------------


def test_compose_tells_the_entrypoint_the_grace_period() -> None:
    layout = load_layout("group: g\ndefaults: {stop_grace_period: 45}\n"
                         "archives:\n  - {id: a0, host: h1, vg: vg0}\n"
                         "proxies:\n  - {id: p0, host: h1, port: 10001, "
                         "stop_grace_period: 300}\n", "t.yaml")
    services = yaml.safe_load(render(layout)["h1"])["services"]
    assert services["a0"]["environment"] == {"WALBCTR_STOP_GRACE_S": "45"}
    assert services["a0"]["stop_grace_period"] == "45s"
    assert services["p0"]["environment"] == {"WALBCTR_STOP_GRACE_S": "300"}


# --- through a deployed group -----------------------------------------------------------------


@pytest.fixture
def group(tmp_path: Path, engine: Any, double_image: str, loop_vg: str) -> Iterator[Group]:
    g = Group(tmp_path / "g", engine, double_image, loop_vg, "bridge")  # grace period 10 s
    try:
        run = g.up()
        assert run.returncode == 0, run.stderr
        yield g
    finally:
        g.cleanup()


def needs_double(engine: Any, image: str) -> None:
    if engine.images.get(image).labels.get("io.walbctr.test-double") != "true":
        pytest.skip(f"{image} is not the test double: its test hooks simulate running work")


def start_action(g: Group, seconds: int) -> None:
    """A running Merge on the archive (the double's test hook), as real work would be."""
    needs_double(g.engine, g.image)
    for argv in (["double-set-state", "vol0", "SyncReady"],
                 ["double-action", "vol0", "Merge", str(seconds)]):
        run = g.walbctr("walbc", str(g.path), "a0", *argv)
        assert run.returncode == 0, run.stderr




def test_docker_stop_of_an_archive_is_a_graceful_shutdown(group: Group) -> None:
    took = docker_stop(group.engine, f"walbctr-{group.name}-a0")
    a0 = group.containers()["a0"]
    log = Box(group.engine, a0.name).final_log("walb-archive exited with status 0")
    assert "walb-entrypoint: [+0.0 s] SIGTERM: graceful shutdown of walb-archive" in log, log
    assert any(re.search(r"shutdown\W+graceful", line) for line in server_lines(log)), log
    assert "forced shutdown" not in log
    assert "forcing" not in log and "grace period: SIGKILL" not in log
    assert "walb-archive exited with status 0" in log
    assert a0.attrs["State"]["ExitCode"] == 0
    assert a0.attrs["State"]["Status"] == "exited"  # a manual stop: no restart
    assert took < 8, f"docker stop took {took:.1f} s of the 10 s grace period"


def test_docker_stop_lets_running_work_finish(group: Group) -> None:
    start_action(group, 3)
    took = docker_stop(group.engine, f"walbctr-{group.name}-a0")
    log = Box(group.engine, f"walbctr-{group.name}-a0").final_log("exited with status 0")
    assert "waiting for 1 running action(s) to finish" in log, log
    assert "shutdown (graceful: walbc shutdown graceful)" in log, log
    assert "aborted" not in log
    assert group.containers()["a0"].attrs["State"]["ExitCode"] == 0
    assert 2 < took < 8, f"docker stop took {took:.1f} s"


def test_work_that_outlasts_the_grace_period_is_forced_before_it_ends(group: Group) -> None:
    start_action(group, 600)
    took = docker_stop(group.engine, f"walbctr-{group.name}-a0")  # grace 10 s: force at 8 s
    a0 = group.containers()["a0"]
    log = Box(group.engine, a0.name).final_log("walb-archive exited with status 0")
    assert "waiting for 1 running action(s) to finish" in log, log
    assert "still running 8 s into its 10 s stop grace period: forcing it" in log, log
    assert "action Merge on vol0 aborted by the forced shutdown" in log, log
    assert "walb-archive exited with status 0" in log, log
    assert "grace period: SIGKILL" not in log
    assert a0.attrs["State"]["ExitCode"] == 0  # not 137: nobody had to SIGKILL
    assert 7.5 < took < 10, f"docker stop took {took:.1f} s"


def test_a_second_stop_signal_forces_at_once(group: Group) -> None:
    start_action(group, 600)
    a0 = group.containers()["a0"]
    a0.kill(signal="SIGTERM")
    box = Box(group.engine, a0.name)
    box.wait_for("waiting for 1 running action(s) to finish")
    a0.kill(signal="SIGTERM")
    took = box.wait_exited()
    log = box.final_log("walb-archive exited with status 0")
    assert "second stop signal (SIGTERM): forcing walb-archive now" in log, log
    assert "action Merge on vol0 aborted by the forced shutdown" in log, log
    assert box.state()["ExitCode"] == 0
    assert took < 3, f"exited {took:.1f} s after the second signal"


def test_a_stop_during_a_shutdown_under_way_waits_for_it(group: Group) -> None:
    start_action(group, 3)
    run = group.walbctr("walbc", str(group.path), "a0", "shutdown", "graceful")
    assert run.returncode == 0, run.stderr
    a0 = Box(group.engine, f"walbctr-{group.name}-a0")
    a0.wait_for("waiting for 1 running action(s) to finish")  # its port is closed now
    took = docker_stop(group.engine, a0.name)
    log = a0.final_log("walb-archive exited with status 0")
    assert "no longer listens: a shutdown is under way already; waiting for it" in log, log
    assert "shutdown (graceful: walbc shutdown graceful)" in log, log
    assert "aborted" not in log and "forcing" not in log
    assert took < 8, f"docker stop took {took:.1f} s"


def test_walbctr_forces_work_that_outlasts_the_grace_period_at_its_end(group: Group) -> None:
    """walbctr's own stop (down, restart, upgrade) asks for graceful itself, waits the
    grace period, then forces: the entrypoint must not start a grace period of its own."""
    start_action(group, 600)
    started = time.monotonic()
    run = group.walbctr("restart", str(group.path), "a0", "--plain")
    took = time.monotonic() - started
    assert run.returncode == 0, run.stderr
    log = Box(group.engine, f"walbctr-{group.name}-a0").final_log(
        "walb-archive exited with status 0")
    assert "a shutdown is under way already" in log, log
    assert re.search(r"second stop signal \(SIG[A-Z]+\): forcing walb-archive now", log), log
    assert "action Merge on vol0 aborted by the forced shutdown" in log, log
    assert "grace period: SIGKILL" not in log
    # 10 s of grace, then the forced stop and a start; Docker's SIGKILL would add 10 s.
    assert took < 18, f"restart took {took:.1f} s"


def test_walbctr_restart_and_down_still_stop_gracefully(group: Group) -> None:
    run = group.walbctr("restart", str(group.path), "p0", "--plain")
    assert run.returncode == 0, run.stderr
    p0 = group.wait_healthy("p0")
    log = Box(group.engine, p0.name).final_log("walb-proxy exited with status 0")
    # walbctr asked the server itself; the entrypoint saw it exit and passed the 0 on.
    assert any(re.search(r"shutdown\W+graceful", line) for line in server_lines(log)), log
    assert "walb-proxy exited with status 0" in log
    assert "SIGTERM" not in log
    down = group.walbctr("down", str(group.path), "--plain")
    assert down.returncode == 0, down.stderr
    assert group.containers() == {}


# --- single containers ------------------------------------------------------------------------


def test_a_server_deaf_to_sigterm_is_killed_by_the_entrypoint_not_by_docker(
        box: Callable[..., Box]) -> None:
    grace = 8  # force at 6 s, SIGKILL at 7 s, Docker's SIGKILL at 8 s
    b = box(server_argv("/stub/walb-proxy", free_ports(1)[0]), grace=grace, stub=DEAF)
    b.wait_for("listening on")
    took = docker_stop(b.engine, b.name)
    log = b.final_log("walb-proxy was ended by signal 9 (SIGKILL)")
    assert "stub: ignoring SIGTERM" in log, log
    assert "into its 8 s stop grace period: SIGKILL" in log, log
    # Only a living entrypoint can report its child's end: Docker did not kill it.
    assert "walb-proxy was ended by signal 9 (SIGKILL)" in log, log
    assert b.state()["ExitCode"] == 137
    assert took < grace, f"stopped after {took:.1f} s"


def test_a_server_still_starting_is_ended_at_once(box: Callable[..., Box]) -> None:
    b = box(server_argv("/stub/walb-archive", free_ports(1)[0]), grace=60, stub=STARTING)
    b.wait_for("stub: recovering volumes")
    took = docker_stop(b.engine, b.name)
    log = b.final_log("walb-archive was ended by signal 15 (SIGTERM)")
    assert "does not listen on port" in log and "(still starting): SIGTERM" in log, log
    assert "walb-archive was ended by signal 15 (SIGTERM)" in log, log
    assert b.state()["ExitCode"] == 143
    assert took < 5, f"stopped after {took:.1f} s"


def test_a_crashed_servers_status_passes_through(box: Callable[..., Box]) -> None:
    port = free_ports(1)[0]
    b = box(server_argv("walb-proxy", port), grace=10)
    b.wait_for("listening on")
    pid = b.container.exec_run(["walbc", "-a", "127.0.0.1", "-p", str(port), "get", "pid"])
    assert pid.exit_code == 0, pid.output
    b.container.exec_run(["sh", "-c", f"kill -9 {pid.output.decode().strip()}"])
    b.wait_exited()
    assert b.state()["ExitCode"] == 137
    b.final_log("walb-proxy was ended by signal 9 (SIGKILL)")
    bad = box(["walb-archive", "-bg", "1"])  # a usage error: walb exits 1
    bad.wait_exited()
    assert bad.state()["ExitCode"] == 1


def test_a_crashed_server_is_restarted_by_its_policy(box: Callable[..., Box]) -> None:
    port = free_ports(1)[0]
    b = box(server_argv("walb-proxy", port), grace=10, restart="unless-stopped")
    b.wait_for("listening on")
    pid = b.container.exec_run(["walbc", "-a", "127.0.0.1", "-p", str(port), "get", "pid"])
    b.container.exec_run(["sh", "-c", f"kill -9 {pid.output.decode().strip()}"])
    deadline = time.monotonic() + 30
    while b.container.attrs["RestartCount"] < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert b.container.attrs["RestartCount"] >= 1
    b.final_log("walb-proxy was ended by signal 9 (SIGKILL)")


def test_other_commands_run_unchanged(engine: Any, double_image: str) -> None:
    """Probes and check-host run sh and walbc in the image: exec'd, not wrapped."""
    c = engine.containers.run(double_image, ["sh", "-c", "echo pid $$; exit 7"], detach=True,
                              environment={"WALBCTR_STOP_GRACE_S": "5"})
    try:
        assert c.wait(timeout=60)["StatusCode"] == 7
        assert c.logs().decode() == "pid 1\n"  # sh itself is the container's process
    finally:
        c.remove(force=True)
    usage = engine.containers.run(double_image, remove=True).decode()  # the image's CMD
    assert usage.startswith("usage: walbc")
