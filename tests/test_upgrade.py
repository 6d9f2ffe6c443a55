"""`walbctr upgrade` (with --resume, --rollback) and the rolling `restart`, on the real
engine, between two builds of the test double that differ in their VERSION file.

Every group is the lab layout (one archive, one proxy, one storage) in bridge mode, with
its servers' logs in files under the test's tmp dir: a container replaced by the upgrade
takes its container log with it, and the kicks it received are what some tests look for.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.conftest import (
    DOUBLE_SOURCE,
    ROOT,
    docker_time,
    exec_log,
    first_ready,
    run_walbctr,
)
from tests.test_deploy import Group, free_ports
from walbctr.layout.imagetag import keeper_image

NEW_VERSION = "1.0.20-double-upgrade"


def build_variant(tmp: Path, version: str, fail_at_start: str | None = None) -> str:
    """A copy of the double with another VERSION (and FAIL_AT_START), built as CI does."""
    src = tmp / "src"
    shutil.copytree(DOUBLE_SOURCE, src, ignore=shutil.ignore_patterns("*.o", "binsrc"))
    (src / "VERSION").write_text(version + "\n")
    if fail_at_start:
        (src / "FAIL_AT_START").write_text(fail_at_start + "\n")
    run = run_walbctr("build", "--source", str(src), "--plain")
    assert run.returncode == 0, run.stderr[-4000:]
    return run.stdout.split()[0]


@pytest.fixture(scope="module")
def new_image(engine: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_variant(tmp_path_factory.mktemp("new"), NEW_VERSION)


@pytest.fixture(scope="module")
def failing_image(engine: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_variant(tmp_path_factory.mktemp("failing"), NEW_VERSION + "-failing", "all")


class Lab(Group):
    """The lab group with log files, volumes in every server, and the layout's image
    changeable."""

    def __init__(self, tmp: Path, engine: Any, image: str, vg: str, extra: str = "") -> None:
        super().__init__(tmp, engine, image, vg, "bridge", extra)
        self.logs = self.data / "logs"
        self.path.write_text(self.path.read_text().replace(
            "  privileged: false\n", f"  privileged: false\n  log_path: {self.logs}/{{id}}.log\n"))

    def set_image(self, image: str) -> None:
        self.path.write_text(self.path.read_text().replace(f"image: {self.image}\n",
                                                           f"image: {image}\n"))
        self.image = image

    def walbc(self, server: str, *args: str) -> str:
        run = self.walbctr("walbc", str(self.path), server, *args)
        assert run.returncode == 0, f"walbc {server} {args}: {run.stdout}{run.stderr}"
        return run.stdout

    def make_volumes(self) -> None:
        """Volumes in several states on every server (init-vol and archive-info as an
        operator runs them, the double's hook where a walb driver would be needed)."""
        a0 = f"a0:{self.ports['a0']}"
        self.walbc("a0", "init-vol", "vol0")  # SyncReady
        self.walbc("a0", "double-set-state", "vol1", "Archived")
        self.walbc("p0", "archive-info", "add", "vol0", "a0", a0)
        self.walbc("p0", "start", "vol0")  # Started
        self.walbc("p0", "archive-info", "add", "vol1", "a0", a0)  # stays Stopped
        self.walbc("s0", "double-set-state", "vol0", "Target")
        self.walbc("s0", "double-set-state", "vol1", "Standby")

    def states(self) -> dict[tuple[str, str], str]:
        out = {}
        for server in ("a0", "p0", "s0"):
            for vol in self.walbc(server, "get", "vol").split():
                out[(server, vol)] = self.state(server, vol)
        return out

    def state(self, server: str, vol: str) -> str:
        """The volume's state on the server. An empty answer with exit status 0 is asked
        again, twice at most: walb never answers `get state` with nothing, yet a loaded CI
        run once read '' for a0 just after maintenance exit restarted it (cause not found;
        most likely the exec's output was lost)."""
        for _ in range(3):
            state = self.walbc(server, "get", "state", vol).strip()
            if state:
                return state
            time.sleep(0.5)
        return state

    def version(self, server: str) -> str:
        return self.walbc(server, "version").strip()

    def log(self, server: str) -> str:
        return (self.logs / f"{server}.log").read_text(errors="replace")

    def image_ids(self) -> dict[str, str]:
        return {sid: c.image.id for sid, c in self.containers().items()}

    def plan(self) -> dict[str, Any]:
        state = Path(self.env["WALBCTR_STATE_DIR"]) / self.name / "upgrade.json"
        return dict(json.loads(state.read_text()))

    def upgrade(self, *args: str) -> Any:
        return self.walbctr("upgrade", str(self.path), "--plain", *args)


LabT = TypeVar("LabT", bound=Lab)


def lab_up(g: LabT) -> Iterator[LabT]:
    """The lab up with its volumes made, for a fixture to yield from; cleaned up after."""
    try:
        up = g.up()
        assert up.returncode == 0, up.stderr
        g.make_volumes()
        yield g
    finally:
        g.cleanup()


@pytest.fixture
def lab(tmp_path: Path, engine: Any, double_image: str, loop_vg: str) -> Iterator[Lab]:
    yield from lab_up(Lab(tmp_path / "lab", engine, double_image, loop_vg))


def board_order(output: str, state: str) -> list[str]:
    """Servers in the order the --plain board reported them reaching `state`."""
    return re.findall(rf"^\[[ \d.]+s\] (\S+) \([^)]*\): {state}(?: after|$)", output,
                      re.MULTILINE)


def assert_all_answer(g: Lab) -> None:
    for sid in ("a0", "p0", "s0"):
        g.wait_healthy(sid, timeout=30)


# --- the upgrade ----------------------------------------------------------------------------


def test_upgrade_replaces_every_server_in_tier_order_one_at_a_time_and_keeps_volume_states(
        lab: Lab, new_image: str, engine: Any) -> None:
    old_ids = lab.image_ids()
    before = lab.states()
    assert before[("p0", "vol1")] == "Stopped"
    started = time.time()
    lab.set_image(new_image)
    run = lab.upgrade()
    assert run.returncode == 0, run.stdout + run.stderr
    containers = lab.containers()
    new_id = engine.images.get(new_image).id
    assert {sid: c.image.id for sid, c in containers.items()} == dict.fromkeys(
        ("a0", "p0", "s0"), new_id)
    assert new_id not in old_ids.values()
    assert {sid: lab.version(sid) for sid in containers} == dict.fromkeys(
        ("a0", "p0", "s0"), NEW_VERSION)
    # One at a time, archives first: each container was created only after the one before
    # it answered walbc.
    a0, p0, s0 = containers["a0"], containers["p0"], containers["s0"]
    assert started < docker_time(a0.attrs["Created"])
    assert docker_time(p0.attrs["Created"]) >= first_ready(engine, a0), (
        p0.attrs["Created"], exec_log(engine, a0))
    assert docker_time(s0.attrs["Created"]) >= first_ready(engine, p0), (
        s0.attrs["Created"], exec_log(engine, p0))
    # walb-proxy starts every volume it finds: the upgrade stopped vol1 again.
    assert lab.states() == before
    assert "p0: vol1 was Stopped before; walb-proxy starts every volume at start" in run.stderr
    # walb's follow-ups, seen by the servers themselves; and every stop was graceful.
    assert "kick requested: all volumes" in lab.log("p0")
    assert "kick requested: all volumes" in lab.log("s0")
    assert "a0: kicked p0" in run.stderr and "p0: kicked s0" in run.stderr
    for sid in ("a0", "p0", "s0"):
        log = lab.log(sid)
        assert "shutdown (graceful: walbc shutdown graceful)" in log, log[-2000:]
        assert "forced shutdown" not in log, log[-2000:]
    plan = lab.plan()
    assert [(s["server"], s["status"]) for s in plan["steps"]] == [
        ("a0", "done"), ("p0", "done"), ("s0", "done")]
    assert "nothing to upgrade" in lab.upgrade().stderr


def test_upgrade_dry_run_prints_the_plan_and_changes_nothing(lab: Lab, new_image: str) -> None:
    ids = lab.image_ids()
    lab.set_image(new_image)
    run = lab.upgrade("--dry-run")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    order = [line.split(".")[1].split()[0] for line in lines if line.strip()[:2] in
             ("1.", "2.", "3.")]
    assert order == ["a0", "p0", "s0"], run.stdout
    assert "kick the proxies (p0)" in run.stdout
    assert "nothing was changed (--dry-run)" in run.stdout
    assert lab.image_ids() == ids


def test_an_image_change_in_up_points_to_upgrade(lab: Lab, new_image: str) -> None:
    ids = lab.image_ids()
    lab.set_image(new_image)
    run = lab.up()
    assert run.returncode == 1
    assert "only the image changed for a0, p0, s0" in run.stderr
    assert f"walbctr upgrade {lab.path}" in run.stderr
    assert lab.image_ids() == ids


def test_an_image_not_named_in_the_layout_is_refused(lab: Lab, new_image: str) -> None:
    ids = lab.image_ids()
    run = lab.upgrade("--image", new_image)
    assert run.returncode == 1
    assert f"set 'image: {new_image}' in {lab.path} first" in run.stderr
    assert lab.image_ids() == ids


def test_a_running_archive_action_holds_the_upgrade_until_its_gate_times_out_then_force_goes_on(
        lab: Lab, new_image: str) -> None:
    ids = lab.image_ids()
    lab.walbc("a0", "double-action", "vol1", "Merge", "30")
    lab.set_image(new_image)
    t0 = time.monotonic()
    run = lab.upgrade("--gate-timeout", "4")
    took = time.monotonic() - t0
    assert run.returncode == 1, run.stdout + run.stderr
    assert "upgrade stopped at a0 (archive on hostA0), gate 'no running archive action'" \
        in run.stderr
    assert "vol1 runs Merge 1" in run.stderr
    assert "not upgraded: a0, p0, s0" in run.stderr
    assert f"walbctr upgrade {lab.path} --resume" in run.stderr
    assert "waiting: vol1 runs Merge 1" in run.stderr  # the board showed the wait
    assert 4 <= took < 25
    assert lab.image_ids() == ids  # nothing was stopped
    assert lab.walbc("a0", "get", "num-action", "vol1", "Merge").strip() == "1"

    run = lab.upgrade("--force")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "a0: --force: stopping while vol1 runs Merge 1" in run.stderr
    assert set(lab.image_ids().values()) == {lab.engine.images.get(new_image).id}
    # The stop was still walbc shutdown graceful first: it waited for the merge.
    assert "waiting for 1 running action(s) to finish" in lab.log("a0")


def test_an_overflowed_storage_volume_stops_the_upgrade_before_the_storage(
        lab: Lab, new_image: str) -> None:
    lab.walbc("s0", "double-overflow", "vol0", "1")
    s0 = lab.containers()["s0"].id
    lab.set_image(new_image)
    run = lab.upgrade()
    assert run.returncode == 1, run.stdout + run.stderr
    assert "upgrade stopped at s0 (storage on hostS0), gate 'no overflow'" in run.stderr
    assert "vol0: the walb log device overflowed" in run.stderr
    assert "hash-bkp vol0" in run.stderr
    assert lab.containers()["s0"].id == s0  # not stopped
    assert lab.version("a0") == NEW_VERSION and lab.version("p0") == NEW_VERSION
    lab.walbc("s0", "double-overflow", "vol0", "0")
    run = lab.upgrade("--resume")
    assert run.returncode == 0, run.stdout + run.stderr
    assert lab.version("s0") == NEW_VERSION


def test_a_proxy_send_error_stops_the_upgrade_before_the_proxy_and_force_goes_on(
        lab: Lab, new_image: str) -> None:
    # On vol1, which is Stopped: the kick that follows the archive's upgrade covers only
    # Started volumes (as walb-proxy's does), so the flag outlives it.
    lab.walbc("p0", "double-send-error", "vol1", "a0", "1")
    p0 = lab.containers()["p0"].id
    lab.set_image(new_image)
    run = lab.upgrade()
    assert run.returncode == 1, run.stdout + run.stderr
    assert "upgrade stopped at p0 (proxy on hostP0), gate 'no wdiff send error'" in run.stderr
    assert "vol1: the proxy stopped sending wdiffs to archive a0" in run.stderr
    assert "kick the proxy ('walbc ... kick vol1 a0')" in run.stderr
    assert "not upgraded: p0, s0" in run.stderr
    assert lab.containers()["p0"].id == p0
    assert lab.version("a0") == NEW_VERSION and lab.version("s0") != NEW_VERSION
    run = lab.upgrade("--resume", "--force")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "p0: --force: going on despite: vol1: the proxy stopped sending" in run.stderr
    assert lab.version("p0") == NEW_VERSION and lab.version("s0") == NEW_VERSION


def test_a_killed_controller_leaves_a_plan_that_resume_completes(
        lab: Lab, new_image: str) -> None:
    before = lab.states()
    lab.set_image(new_image)
    proc = subprocess.Popen([sys.executable, "-m", "walbctr", "upgrade", str(lab.path),
                             "--plain"], env=lab.env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    killed_at = None
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                steps = {s["server"]: s["status"] for s in lab.plan()["steps"]}
            except (OSError, ValueError):
                steps = {}
            if steps.get("p0") in ("stopping", "starting"):
                os.kill(proc.pid, signal.SIGKILL)
                killed_at = steps
                break
            time.sleep(0.05)
    finally:
        if proc.poll() is None and killed_at is None:
            proc.kill()
        proc.communicate()
    assert killed_at is not None, "the upgrade never reached p0"
    assert proc.returncode == -signal.SIGKILL
    assert killed_at["a0"] == "done" and killed_at["s0"] == "pending"
    assert lab.version("s0") != NEW_VERSION  # not reached

    again = lab.upgrade()
    assert again.returncode == 1
    assert "is unfinished" in again.stderr and "--resume" in again.stderr
    run = lab.upgrade("--resume")
    assert run.returncode == 0, run.stdout + run.stderr
    assert {sid: lab.version(sid) for sid in ("a0", "p0", "s0")} == dict.fromkeys(
        ("a0", "p0", "s0"), NEW_VERSION)
    assert lab.states() == before
    assert [s["status"] for s in lab.plan()["steps"]] == ["done"] * 3


def test_an_image_whose_servers_exit_stops_at_the_first_and_rollback_restores_it(
        lab: Lab, failing_image: str, double_image: str, engine: Any) -> None:
    old_id = engine.images.get(double_image).id
    before = lab.states()
    lab.set_image(failing_image)
    run = lab.upgrade()
    assert run.returncode == 1, run.stdout + run.stderr
    assert "upgrade stopped at a0 (archive on hostA0), gate 'get host-type'" in run.stderr
    assert "exits at start on purpose" in run.stderr
    assert "not upgraded: p0, s0 (still on " in run.stderr
    assert f"walbctr upgrade {lab.path} --rollback" in run.stderr
    ids = lab.image_ids()
    assert ids["p0"] == old_id and ids["s0"] == old_id and ids["a0"] != old_id

    back = lab.upgrade("--rollback")
    assert back.returncode == 0, back.stdout + back.stderr
    assert set(lab.image_ids().values()) == {old_id}
    assert f"put 'image: {double_image}' back in {lab.path}" in back.stdout
    assert_all_answer(lab)
    assert {sid: lab.version(sid) for sid in ("a0", "p0", "s0")} == dict.fromkeys(
        ("a0", "p0", "s0"), lab.version("a0"))
    assert lab.version("a0") != NEW_VERSION
    assert lab.states() == before
    assert "already rolled back" in lab.upgrade("--rollback").stderr


def test_rollback_after_a_finished_upgrade_goes_back_storages_first(
        lab: Lab, new_image: str, double_image: str, engine: Any) -> None:
    old_id = engine.images.get(double_image).id
    before = lab.states()
    lab.set_image(new_image)
    assert lab.upgrade().returncode == 0
    run = lab.upgrade("--rollback")
    assert run.returncode == 0, run.stdout + run.stderr
    c = lab.containers()
    assert {sid: x.image.id for sid, x in c.items()} == dict.fromkeys(("a0", "p0", "s0"),
                                                                        old_id)
    # storages first, then proxies, then archives (s0 restarts once more at the end: its
    # peers moved on the bridge network)
    assert board_order(run.stderr, "rolled back") == ["s0", "p0", "a0"], run.stderr
    assert docker_time(c["p0"].attrs["Created"]) >= first_ready(engine, c["s0"]), (
        c["p0"].attrs["Created"], exec_log(engine, c["s0"]))
    assert docker_time(c["a0"].attrs["Created"]) >= first_ready(engine, c["p0"]), (
        c["a0"].attrs["Created"], exec_log(engine, c["p0"]))
    assert board_order(run.stderr, "restarted") == ["s0"], run.stderr
    assert lab.states() == before


def test_the_keeper_moves_to_the_new_image_after_the_servers(
        tmp_path: Path, engine: Any, double_image: str, loop_vg: str, new_image: str) -> None:
    if not engine.images.list(name=keeper_image(new_image)):
        pytest.skip(f"no keeper image {keeper_image(new_image)} (built without its keeper)")
    port = free_ports(1)[0]
    g = Lab(tmp_path / "k", engine, double_image, loop_vg,
            extra=f"monitor: {{host: hostA0, port: {port}}}\n")
    try:
        assert g.up().returncode == 0
        g.set_image(new_image)
        run = g.upgrade()
        assert run.returncode == 0, run.stdout + run.stderr
        keepers = engine.containers.list(all=True,
                                         filters={"label": f"io.walbctr.keeper={g.name}"})
        assert [k.image.id for k in keepers] == [engine.images.get(keeper_image(new_image)).id]
        servers_ready = max(first_ready(engine, c) for c in g.containers().values())
        assert docker_time(keepers[0].attrs["Created"]) >= servers_ready
        up = g.up()
        assert up.returncode == 0 and "nothing to change" in up.stdout, up.stdout + up.stderr
    finally:
        g.cleanup()


def test_parallel_per_tier_replaces_a_tier_together_but_never_two_tiers_at_once(
        tmp_path: Path, engine: Any, double_image: str, loop_vg: str, new_image: str) -> None:
    g = Lab(tmp_path / "par", engine, double_image, loop_vg)
    a0, p0, p1, s0, s1 = free_ports(5)
    g.ports.update({"a0": a0, "p0": p0, "p1": p1, "s0": s0, "s1": s1})
    text = g.path.read_text()
    g.path.write_text(text[:text.index("archives:")]
                      + f"archives:\n  - {{id: a0, host: hostA0, vg: {loop_vg}, port: {a0}}}\n"
                      f"proxies:\n  - {{id: p0, host: hostP, port: {p0}}}\n"
                      f"  - {{id: p1, host: hostP, port: {p1}}}\n"
                      f"storages:\n  - {{id: s0, host: hostS, port: {s0}}}\n"
                      f"  - {{id: s1, host: hostS, port: {s1}}}\n")
    try:
        assert g.up().returncode == 0
        g.set_image(new_image)
        run = g.upgrade("--parallel-per-tier", "2")
        assert run.returncode == 0, run.stdout + run.stderr
        c = g.containers()
        created = {sid: docker_time(x.attrs["Created"]) for sid, x in c.items()}
        ready = {sid: first_ready(engine, x) for sid, x in c.items()}
        # both servers of a tier began stopping before either was back: together
        for pair in (("p0", "p1"), ("s0", "s1")):
            events = re.findall(r"\] (\S+) \([^)]*\): (stopping|healthy)", run.stderr)
            first_back = events.index(next(e for e in events if e[1] == "healthy"
                                           and e[0] in pair))
            assert all(events.index((sid, "stopping")) < first_back for sid in pair), events
        # tiers never overlap: each waits for the whole tier before it
        assert min(created["p0"], created["p1"]) >= ready["a0"]
        assert min(created["s0"], created["s1"]) >= max(ready["p0"], ready["p1"])
        assert {x.image.id for x in c.values()} == {engine.images.get(new_image).id}
    finally:
        g.cleanup()


def test_rollback_refuses_when_the_old_tag_names_another_image_now(
        tmp_path: Path, engine: Any, double_image: str, loop_vg: str, new_image: str) -> None:
    old = engine.images.get(double_image)
    tag = f"walbctr/walb-tools:upgrade-test-{secrets.token_hex(4)}"
    old.tag(tag)
    g = Lab(tmp_path / "tag", engine, tag, loop_vg)
    try:
        assert g.up().returncode == 0
        g.set_image(new_image)
        assert g.upgrade().returncode == 0
        engine.images.get(new_image).tag(tag)  # the old tag moves: a rebuild, say
        run = g.upgrade("--rollback")
        assert run.returncode == 1
        assert "the old image's tag names another image now" in run.stderr
        assert f"{tag} was {old.id[:19]}" in run.stderr
        assert "docker tag ID TAG" in run.stderr
        old.tag(tag)
        run = g.upgrade("--rollback")
        assert run.returncode == 0, run.stdout + run.stderr
        assert {c.image.id for c in g.containers().values()} == {old.id}
    finally:
        g.cleanup()
        engine.images.remove(tag)


# --- canaries and pauses -------------------------------------------------------------------


def status_line(g: Lab) -> tuple[str, dict[str, str]]:
    """`walbctr status`'s upgrade line ('' when none) and each server's WALB column."""
    run = g.walbctr("status", str(g.path))
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    at = lines[0].index(" WALB ") + 1  # the columns are aligned; empty cells are blanks
    walb = {line.split()[0]: line[at:].split()[0] for line in lines[1:]
            if line.split() and line.split()[0] in ("a0", "p0", "s0")}
    extra = [line for line in lines[1:] if line.split() and line.split()[0] not in walb]
    return "\n".join(extra), walb


def keeper_versions(g: Lab) -> dict[tuple[str, ...], float]:
    """walb_server_version_info after one probe and scan of the keeper's own code, its
    walbc run in a0's container on the group's network (as the keeper's container runs it)."""
    from prometheus_client import CollectorRegistry, generate_latest

    from walbctr.keeper.ask import ask_through
    from walbctr.keeper.duties import Config, Keeper, ServerRef
    from walbctr.keeper.metrics import KeeperMetrics
    from walbctr.layout.loader import read_layout

    layout = read_layout(str(g.path))
    box = g.containers()["a0"]

    def run(argvs: dict[str, list[str]], _timeout: float) -> dict[str, tuple[int, str, str]]:
        out = {}
        for key, argv in argvs.items():
            done = box.exec_run(argv, demux=True)
            stdout, stderr = done.output
            out[key] = (done.exit_code, (stdout or b"").decode(), (stderr or b"").decode())
        return out

    metrics = KeeperMetrics(CollectorRegistry())
    keeper = Keeper(Config(g.name, tuple(ServerRef(s.id, s.role.value, s.address, s.port)
                                         for s in layout.servers)), metrics, run,
                    ask=ask_through(run))
    keeper.probe_once()
    keeper.scan_once()
    assert "walb_server_version_info{" in generate_latest(metrics.registry).decode()
    return metrics.snapshot.values("walb_server_version_info")


def test_limit_1_upgrades_one_server_status_shows_the_mixed_group_and_resume_finishes_it(
        lab: Lab, new_image: str, double_image: str) -> None:
    old = lab.version("a0")
    before = lab.states()
    ids = lab.image_ids()
    lab.set_image(new_image)
    # A pause asked for while nothing runs stops the next upgrade before its first server.
    ask = lab.upgrade("--pause")
    assert ask.returncode == 0, ask.stderr
    assert "no upgrade runs on it now, so the next 'walbctr upgrade" in ask.stdout
    run = lab.upgrade("--limit", "1")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "group " + lab.name + ": upgraded nothing" in run.stdout
    assert "upgrade paused (a pause was requested)" in run.stdout
    assert lab.image_ids() == ids
    assert lab.plan()["paused"] == "--pause"

    run = lab.upgrade("--resume", "--limit", "1")
    assert run.returncode == 0, run.stdout + run.stderr
    assert {sid: lab.version(sid) for sid in ("a0", "p0", "s0")} == {
        "a0": NEW_VERSION, "p0": old, "s0": old}
    assert "upgrade paused (--limit 1)" in run.stdout
    assert "1 of 3 servers on " + new_image + "; not upgraded yet: p0, s0 (still on " \
        + double_image + ")" in run.stdout
    assert f"continue with 'walbctr upgrade {lab.path} --resume'" in run.stdout
    assert "a0: kicked p0" in run.stderr  # walb's follow-up, as in a whole upgrade
    plan = lab.plan()
    assert plan["paused"] == "--limit 1"
    assert [(s["server"], s["status"]) for s in plan["steps"]] == [
        ("a0", "done"), ("p0", "pending"), ("s0", "pending")]

    line, walb = status_line(lab)
    assert walb == {"a0": NEW_VERSION, "p0": old, "s0": old}
    assert line == (f"upgrade paused (--limit 1): 1 of 3 servers on {NEW_VERSION}, 2 on {old} "
                    f"(walbctr upgrade {lab.path} --resume to continue)")
    assert keeper_versions(lab) == {("a0", "archive", NEW_VERSION): 1.0,
                                    ("p0", "proxy", old): 1.0, ("s0", "storage", old): 1.0}
    again = lab.upgrade()
    assert again.returncode == 1
    assert "is paused (--limit 1) (done: a0; left: p0, s0)" in again.stderr

    run = lab.upgrade("--resume")
    assert run.returncode == 0, run.stdout + run.stderr
    assert {sid: lab.version(sid) for sid in ("a0", "p0", "s0")} == dict.fromkeys(
        ("a0", "p0", "s0"), NEW_VERSION)
    assert f"every server runs {new_image}" in run.stdout
    assert lab.plan()["paused"] == ""
    assert lab.states() == before
    assert status_line(lab)[0] == ""


def test_hosts_upgrade_only_the_servers_there_in_tier_order_and_refuse_an_unknown_host(
        lab: Lab, new_image: str, engine: Any) -> None:
    ids = lab.image_ids()
    lab.set_image(new_image)
    run = lab.upgrade("--hosts", "hostA0,hostQ")
    assert run.returncode == 2, run.stdout + run.stderr
    assert run.stderr.startswith("walbctr: --hosts hostA0,hostQ: no server of group "
                                 f"{lab.name} runs on 'hostQ'")
    assert "(its hosts with servers: hostA0, hostP0, hostS0); nothing was changed" in run.stderr
    assert "Traceback" not in run.stderr
    run = lab.upgrade("--hosts", "hostS0")
    assert run.returncode == 2, run.stdout + run.stderr
    assert "would upgrade storage s0 while archive a0 (on hostA0), proxy p0 (on hostP0) " \
        "still run the old image" in run.stderr
    assert "--hosts hostS0,hostA0,hostP0" in run.stderr
    assert lab.image_ids() == ids
    assert not (Path(lab.env["WALBCTR_STATE_DIR"]) / lab.name / "upgrade.json").exists()

    run = lab.upgrade("--hosts", "hostP0,hostA0")
    assert run.returncode == 0, run.stdout + run.stderr
    assert board_order(run.stderr, "upgraded") == ["a0", "p0"], run.stderr
    new_id = engine.images.get(new_image).id
    now = lab.image_ids()
    assert (now["a0"], now["p0"], now["s0"]) == (new_id, new_id, ids["s0"])
    assert lab.plan()["paused"] == "--hosts hostP0,hostA0"
    assert "2 of 3 servers on" in run.stdout

    run = lab.upgrade("--resume", "--hosts", "hostS0")
    assert run.returncode == 0, run.stdout + run.stderr
    assert set(lab.image_ids().values()) == {new_id}
    assert lab.plan()["paused"] == ""


def test_pause_from_another_terminal_stops_the_running_upgrade_after_its_current_server(
        lab: Lab, new_image: str) -> None:
    old = lab.version("a0")
    # a0 waits at its gate for this merge: the upgrade is on a0 when the pause comes.
    lab.walbc("a0", "double-action", "vol1", "Merge", "15")  # long enough on a loaded host
    lab.set_image(new_image)
    proc = subprocess.Popen([sys.executable, "-m", "walbctr", "upgrade", str(lab.path),
                             "--plain"], env=lab.env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        plan: dict[str, Any] = {}
        while time.monotonic() < deadline and proc.poll() is None and not plan:
            try:
                plan = lab.plan()
            except (OSError, ValueError):
                time.sleep(0.05)
        assert plan, "the upgrade never wrote its plan"
        asked = lab.upgrade("--pause")
        assert lab.plan()["steps"][0]["status"] == "pending", "a0 passed its gate too soon"
        assert asked.returncode == 0, asked.stderr
        assert f"running now (pid {proc.pid}) stops after the server it is on" in asked.stdout
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out + err
    assert "upgrade paused (a pause was requested)" in out
    assert "not upgraded yet: p0, s0" in out
    assert "stopping before p0, s0" in err
    assert board_order(err, "upgraded") == ["a0"], err
    plan = lab.plan()
    assert plan["paused"] == "--pause"
    assert [(s["server"], s["status"]) for s in plan["steps"]] == [
        ("a0", "done"), ("p0", "pending"), ("s0", "pending")]
    assert {sid: lab.version(sid) for sid in ("a0", "p0", "s0")} == {
        "a0": NEW_VERSION, "p0": old, "s0": old}
    assert not (Path(lab.env["WALBCTR_STATE_DIR"]) / lab.name / "upgrade.pause").exists()
    assert "shutdown (graceful: walbc shutdown graceful)" in lab.log("a0")

    run = lab.upgrade("--resume")
    assert run.returncode == 0, run.stdout + run.stderr
    assert {sid: lab.version(sid) for sid in ("a0", "p0", "s0")} == dict.fromkeys(
        ("a0", "p0", "s0"), NEW_VERSION)


# --- the rolling restart ----------------------------------------------------------------------


def test_restart_is_rolling_with_the_gates_and_kicks(lab: Lab, engine: Any) -> None:
    before = lab.states()
    ids = {sid: c.id for sid, c in lab.containers().items()}
    lab.walbc("a0", "double-action", "vol1", "Merge", "30")
    run = lab.walbctr("restart", str(lab.path), "--plain", "--gate-timeout", "2")
    assert run.returncode == 1
    assert "restart stopped at a0 (archive on hostA0), gate 'no running archive action'" \
        in run.stderr
    assert f"walbctr restart {lab.path}' again" in run.stderr
    run = lab.walbctr("restart", str(lab.path), "--plain", "--force")
    assert run.returncode == 0, run.stdout + run.stderr
    c = lab.containers()
    assert {sid: x.id for sid, x in c.items()} == ids  # the same containers, restarted
    assert board_order(run.stderr, "restarted") == ["a0", "p0", "s0"], run.stderr
    started = {sid: docker_time(x.attrs["State"]["StartedAt"]) for sid, x in c.items()}
    assert started["p0"] >= first_ready(engine, c["a0"], started["a0"]), (
        started, exec_log(engine, c["a0"], started["a0"]))
    assert started["s0"] >= first_ready(engine, c["p0"], started["p0"]), (
        started, exec_log(engine, c["p0"], started["p0"]))
    assert "a0: kicked p0" in run.stderr and "p0: kicked s0" in run.stderr
    assert lab.states() == before


# --- the plan, without an engine --------------------------------------------------------------


def _steps(*ids_roles: str) -> list[Any]:
    from walbctr.commands.upgrade import Step

    return [Step(sid, role, f"h{sid}", "old:1", "sha256:1", "new:2")
            for sid, role in (x.split(":") for x in ids_roles)]


def test_the_plan_survives_a_round_trip_through_its_file_written_by_rename(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from walbctr.commands.upgrade import Plan, load_plan, plan_path, save_plan
    from walbctr.errors import WalbctrError

    monkeypatch.setenv("WALBCTR_STATE_DIR", str(tmp_path))
    plan = Plan("g1", "l.yaml", "new:2", "2026-01-01T00:00:00Z",
                _steps("a0:archive", "p0:proxy", "s0:storage"))
    plan.steps[0].status, plan.steps[0].touched = "done", True
    plan.steps[0].volumes = {"vol0": "Archived"}
    save_plan(plan)
    again = load_plan("g1")
    assert again == plan
    assert [p.name for p in plan_path("g1").parent.iterdir()] == ["upgrade.json"]
    plan_path("g1").write_text("{not json")
    with pytest.raises(WalbctrError, match="cannot be read"):
        load_plan("g1")


def test_a_rollback_goes_back_in_reverse_order_over_the_touched_servers_only() -> None:
    from walbctr.commands.upgrade import Plan, _rollback_steps
    from walbctr.layout.loader import load_layout

    steps = _steps("a0:archive", "a1:archive", "p0:proxy", "s0:storage")
    for s in steps[:3]:
        s.touched, s.status = True, "done"
    steps[2].status = "failed"
    plan = Plan("g", "l.yaml", "new:2", "t", steps)
    layout = load_layout("group: g\narchives: [{id: a0, host: h, vg: vg0}]\n", "l.yaml")
    _, back = _rollback_steps(layout, plan)
    assert [(s.server, s.from_image, s.to_image) for s in back] == [
        ("p0", "new:2", "old:1"), ("a1", "new:2", "old:1"), ("a0", "new:2", "old:1")]


def test_batches_never_mix_tiers_and_hold_at_most_n_servers() -> None:
    from walbctr.commands.upgrade import _batches

    steps = _steps("a0:archive", "a1:archive", "a2:archive", "p0:proxy", "s0:storage",
                   "s1:storage")
    assert [[s.server for s in b] for b in _batches(steps, 2)] == [
        ["a0", "a1"], ["a2"], ["p0"], ["s0", "s1"]]
    assert [len(b) for b in _batches(steps, 1)] == [1] * 6


def test_a_gate_fact_walbc_could_not_read_counts_as_a_problem_not_as_all_clear() -> None:
    from walbctr.commands.upgrade import _unread
    from walbctr.layout.server import Role
    from walbctr.walb.volumes import VolumeRecord

    storage = [VolumeRecord("vol0", "storage", state="Target", overflow=False),
               VolumeRecord("vol1", "storage", state="Target"),
               VolumeRecord("vol2", "storage", state="Target",
                            errors=(("get is-overflow vol2", "timeout"),)),
               VolumeRecord("vol3", "storage", state="Clear")]
    assert _unread(Role.STORAGE, storage) == [
        "vol1: its overflow flag was not in walbc's answer",
        "vol2: 'get is-overflow vol2' failed: timeout"]
    proxy = [VolumeRecord("vol0", "proxy", state="Started", archives=("a0", "a1"),
                          send_error={"a0": False})]
    assert _unread(Role.PROXY, proxy) == [
        "vol0: its send-error flag for a1 was not in walbc's answer"]
    archive = [VolumeRecord("vol0", "archive", state="Archived",
                            errors=(("all-actions", "bad state"),))]
    assert _unread(Role.ARCHIVE, archive) == ["vol0: 'all-actions' failed: bad state"]


def _lab_layout() -> Any:
    from walbctr.layout.loader import load_layout

    return load_layout("group: g\narchives: [{id: a0, host: hostA0, vg: vg0}]\n"
                       "proxies: [{id: p0, host: hostP0}, {id: p1, host: hostP1}]\n"
                       "storages: [{id: s0, host: hostS0}]\n", "l.yaml")


def test_a_limit_takes_the_first_servers_left_in_tier_order() -> None:
    from walbctr.commands.upgrade import Selection, select_steps

    steps = _steps("a0:archive", "p0:proxy", "p1:proxy", "s0:storage")
    steps[0].status = "done"
    chosen = select_steps(_lab_layout(), steps, Selection(limit=2))
    assert [s.server for s in chosen] == ["p0", "p1"]
    assert Selection(("hostA0", "hostP0"), 2).describe() == "--hosts hostA0,hostP0 --limit 2"


def test_hosts_choose_their_servers_but_never_a_storage_before_the_proxies_it_sends_to() -> None:
    from walbctr.commands.upgrade import Selection, SelectionError, select_steps
    from walbctr.errors import EXIT_BAD_INPUT

    layout = _lab_layout()
    steps = [replace_host(s) for s in _steps("a0:archive", "p0:proxy", "p1:proxy",
                                             "s0:storage")]
    chosen = select_steps(layout, steps, Selection(("hostP1", "hostA0")))
    assert [s.server for s in chosen] == ["a0", "p1"]  # the plan's order, not the option's
    with pytest.raises(SelectionError) as err:
        select_steps(layout, steps, Selection(("hostA0", "hostS0")))
    assert err.value.exit_code == EXIT_BAD_INPUT
    assert "would upgrade storage s0 while proxy p0 (on hostP0), proxy p1 (on hostP1) " \
        "still run the old image" in err.value.message
    assert err.value.fix.startswith("add their hosts (--hosts hostA0,hostS0,hostP0,hostP1)")
    steps[1].status = steps[2].status = steps[0].status = "done"
    assert [s.server for s in select_steps(layout, steps, Selection(("hostS0",)))] == ["s0"]
    with pytest.raises(SelectionError, match="no server there is left to upgrade"):
        select_steps(layout, steps, Selection(("hostA0",)))


def replace_host(step: Any) -> Any:
    """_steps' host is 'h' + id; the lab layout's is 'host' + ID."""
    step.host = "host" + step.server.upper()
    return step


def test_an_unknown_host_is_named_with_the_layouts_hosts_before_anything_runs() -> None:
    from walbctr.commands.upgrade import SelectionError, check_hosts

    layout = _lab_layout()
    check_hosts(layout, ("hostA0", "hostS0"))
    with pytest.raises(SelectionError) as err:
        check_hosts(layout, ("hostA0", "hostQ"))
    assert err.value.message == (
        "--hosts hostA0,hostQ: no server of group g runs on 'hostQ' in l.yaml (its hosts "
        "with servers: hostA0, hostP0, hostP1, hostS0); nothing was changed")


def test_pause_and_rollback_take_no_selection_and_nothing_is_written(tmp_path: Path) -> None:
    layout = tmp_path / "l.yaml"
    layout.write_text("group: g\narchives: [{id: a0, host: hostA0, vg: vg0}]\n")
    env = {**os.environ, "WALBCTR_STATE_DIR": str(tmp_path / "state")}

    def walbctr(*args: str) -> Any:
        return subprocess.run([sys.executable, "-m", "walbctr", "upgrade", str(layout), *args],
                              capture_output=True, text=True, env=env, cwd=ROOT, check=False)

    run = walbctr("--pause", "--limit", "1")
    assert run.returncode == 2 and "--pause only asks the running upgrade to stop" in run.stderr
    run = walbctr("--rollback", "--hosts", "hostA0")
    assert run.returncode == 2, run.stderr
    assert "--rollback returns every server the upgrade touched" in run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "state").exists()
