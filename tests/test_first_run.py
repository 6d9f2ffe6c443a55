"""A newcomer's first run: the README's quick start, as written, on the real engine.

The quick start is the README's set-up block: install walbctr, then `walbctr up` of the
lab layout. It runs here in a fresh virtual environment, on a terminal (a pty) so that
walbctr offers to build the missing image and the test says yes; WALBCTR_SOURCE points
that build at the walb-tools test double, standing in for upstream, which cannot be
fetched here. Then the lab must be healthy, and `down --purge-lab` must leave no
container, loop device or volume group behind.
"""

from __future__ import annotations

import os
import pty
import re
import select
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DOUBLE_SOURCE, ROOT

LABEL = "io.walbctr.group"
LOOP_RULES = ["b *:* rwm", "c 10:* rwm"]
# What pip says when the package index cannot be reached.
NO_INDEX = ("NewConnectionError", "Temporary failure in name resolution",
            "No matching distribution found for hatchling")


def readme_blocks(section: str) -> list[list[str]]:
    """The commands of each ```sh block in a README section, comments stripped."""
    text = (ROOT / "README.md").read_text()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", body, flags=re.S)
    return [[line.split(" #", 1)[0].strip() for line in block.splitlines()
             if line.strip() and not line.lstrip().startswith("#")] for block in blocks]


def test_readme_set_up_is_an_install_then_one_up_of_the_lab() -> None:
    setup, tests = readme_blocks("Set up")[:2]
    assert len(setup) == 2, setup
    install, up = setup
    assert install.startswith("pip install ")
    argv = shlex.split(up)
    assert argv[:2] == ["walbctr", "up"]
    layout = ROOT / argv[2]
    assert layout.is_file()
    assert "lab_vg_size:" in layout.read_text()  # runs on a machine without a spare VG
    assert len(tests) == 1


def test_ci_runs_the_readme_test_command() -> None:
    command = readme_blocks("Set up")[1][0]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert any(line.strip().startswith(command + " ") or line.strip() == command
               for line in ci), command


def test_probe_output_reads_as_what_the_machine_has_of_a_loop_vg() -> None:
    from walbctr.docker.loop_vg import parse_seen

    seen = parse_seen("tags walbctr-lab-lab,x\npv /dev/loop5\nfile\nloop /dev/loop5\n")
    assert seen.exists and seen.tagged("walbctr-lab-lab") and seen.only_on_its_file
    assert seen.file and seen.loops == ("/dev/loop5",)
    other = parse_seen("tags \npv /dev/sdb\npv /dev/loop5\nloop /dev/loop5\n")
    assert other.exists and other.tags == () and not other.only_on_its_file
    assert not other.file
    gone = parse_seen("")
    assert not gone.exists and not gone.file and gone.loops == ()


def test_next_steps_name_the_layout_a_storage_and_purge_lab_only_for_a_lab_vg(
        minimal: Any) -> None:
    from walbctr.commands.bootstrap import build_command, next_steps
    from walbctr.layout.loader import load_layout

    text = next_steps(minimal, "my layout.yaml")
    assert "walbctr status 'my layout.yaml'" in text
    assert "walbctr walbc 'my layout.yaml' s0 status" in text
    assert "walbctr logs 'my layout.yaml' a0" in text
    assert "walbctr down 'my layout.yaml'  " in text and "--purge-lab" not in text
    lab = load_layout((ROOT / "examples" / "lab.yaml").read_text(), "examples/lab.yaml")
    assert "walbctr down examples/lab.yaml --purge-lab" in next_steps(lab, "examples/lab.yaml")
    assert build_command("a b.yaml", "/src/walb tools", None) == \
        "walbctr up --build --source '/src/walb tools' 'a b.yaml'"


# --- on the engine ------------------------------------------------------------------------


def vg_tags(engine: Any, image: str, vg: str) -> str | None:
    """The VG's tags as the image's lvm2 sees them, or None when there is no such VG."""
    import docker

    try:
        out = engine.containers.run(image, ["vgs", "--noheadings", "-o", "vg_tags", vg],
                                    remove=True, cap_add=["SYS_ADMIN"],
                                    device_cgroup_rules=LOOP_RULES,
                                    volumes={"/dev": {"bind": "/dev", "mode": "ro"}},
                                    network_mode="none")
    except docker.errors.ContainerError:
        return None
    return bytes(out).decode().strip()


def loops_on(file: Path) -> str:
    """`losetup -j FILE` on this machine: the loop devices attached to the file."""
    return subprocess.run(["losetup", "-j", str(file)], capture_output=True, text=True,
                          check=False).stdout.strip()


def run_on_terminal(command: str, env: dict[str, str], cwd: Path, timeout: float,
                    answer: bytes = b"y\n") -> tuple[int, str, bool]:
    """Run `command` with a pty as its terminal; answer the first [Y/n] or [y/N] question.

    Returns exit status, everything it printed, and whether it asked.
    """
    master, slave = pty.openpty()
    proc = subprocess.Popen(command, shell=True, stdin=slave, stdout=slave, stderr=slave,
                            env=env, cwd=cwd, start_new_session=True)
    os.close(slave)
    out = b""
    asked = False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the other side closed
                break
            if not chunk:
                break
            out += chunk
            if not asked and (b"[Y/n]" in out or b"[y/N]" in out):
                os.write(master, answer)
                asked = True
        else:
            proc.kill()
            raise AssertionError(f"{command!r} took more than {timeout:.0f} s:\n"
                                 + out.decode(errors="replace")[-4000:])
        return proc.wait(timeout=60), out.decode(errors="replace"), asked
    finally:
        os.close(master)


def wait_docker_healthy(engine: Any, containers: list[Any], timeout: float) -> list[str]:
    """Wait until Docker reports every container healthy; those that are not, by name."""
    deadline = time.monotonic() + timeout
    while True:
        waiting = []
        for c in containers:
            c.reload()
            if (c.attrs["State"].get("Health") or {}).get("Status") != "healthy":
                waiting.append(f"{c.name}: {c.attrs['State'].get('Health', {}).get('Status')}")
        if not waiting or time.monotonic() > deadline:
            return waiting
        time.sleep(1)


def port_busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
def test_quick_start_brings_up_a_healthy_lab_and_purge_lab_leaves_nothing(
        engine: Any, tmp_path: Path) -> None:
    from walbctr.commands.bootstrap import built_images
    from walbctr.layout.imagetag import DEFAULT_IMAGE, keeper_image
    from walbctr.layout.loader import read_layout

    install, up = readme_blocks("Set up")[0]
    layout_arg = shlex.split(up)[2]
    lay = read_layout(ROOT / layout_arg)
    base = Path(lay.servers[0].base_dir).parent
    if engine.containers.list(all=True, filters={"label": f"{LABEL}={lay.group}"}):
        pytest.skip(f"a group named {lay.group!r} already has containers on this engine")
    published = [s.port for s in lay.servers if s.publish]
    if any(port_busy(p) for p in published):
        pytest.skip(f"port {published} that the lab publishes is in use on this machine")
    if not Path("/dev/loop-control").exists() or shutil.which("losetup") is None:
        pytest.skip("no loop devices here (/dev/loop-control, losetup): no lab VG possible")
    images = {tag: _image_id(engine, tag) for tag in (DEFAULT_IMAGE, keeper_image(DEFAULT_IMAGE))}
    needed = built_images(lay, lay.used_hosts)  # what the build makes that the lab runs
    base_existed = base.exists()
    vg = str(lay.servers[0].options["vg"])
    if images[DEFAULT_IMAGE] is not None and vg_tags(engine, DEFAULT_IMAGE, vg) is not None:
        pytest.skip(f"this machine has a volume group {vg}: the lab would use it as it is")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                   check=True)
    state = tmp_path / "state"
    env = {**os.environ, "PATH": f"{venv / 'bin'}:{os.environ['PATH']}",
           "VIRTUAL_ENV": str(venv), "WALBCTR_STATE_DIR": str(state),
           "WALBCTR_SOURCE": str(DOUBLE_SOURCE), "PIP_DISABLE_PIP_VERSION_CHECK": "1",
           "TERM": "dumb", "COLUMNS": "160"}
    env.pop("PYTHONPATH", None)
    loop_file = state / lay.group / f"lab-vg-{vg}.img"

    def walbctr(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(venv / "bin" / "walbctr"), *args], capture_output=True,
                              text=True, env=env, cwd=ROOT, check=False)

    started = time.monotonic()
    try:
        pip = subprocess.run(install, shell=True, capture_output=True, text=True, env=env,
                             cwd=ROOT, check=False)
        said = pip.stdout + pip.stderr
        if pip.returncode != 0 and any(w in said for w in NO_INDEX):
            pytest.skip("pip cannot reach the package index here (it fetches the build "
                        f"backend, hatchling): {said.strip().splitlines()[-1]}")
        assert pip.returncode == 0, said[-4000:]
        assert shutil.which("walbctr", path=env["PATH"]) == str(venv / "bin" / "walbctr")
        installed = time.monotonic()
        code, out, asked = run_on_terminal(up, env, ROOT, timeout=900)
        finished = time.monotonic()
        assert code == 0, out[-6000:]
        assert asked == any(images.get(i) is None for i in needed), out[-3000:]
        assert f"walbctr status {layout_arg}" in out  # the next commands to try
        assert f"walbctr down {layout_arg} --purge-lab" in out
        print(f"\nquick start: pip install {installed - started:.1f} s, "
              f"walbctr up {finished - installed:.1f} s, "
              f"total {finished - started:.1f} s")

        status = walbctr("status", layout_arg)
        assert status.returncode == 0, status.stdout + status.stderr
        found = engine.containers.list(all=True, filters={"label": f"{LABEL}={lay.group}"})
        assert sorted(c.labels["io.walbctr.server"] for c in found) == \
            sorted(s.id for s in lay.servers)
        # up returns once every server answers walbc; the engine's own health check
        # runs on its interval (no start_interval before API 1.44), so wait for it.
        assert wait_docker_healthy(engine, found, timeout=150) == [], "not healthy in Docker"
        assert loop_file.is_file()
        assert loops_on(loop_file), "the lab VG's file is attached to no loop device"
        assert f"walbctr-lab-{lay.group}" in (vg_tags(engine, DEFAULT_IMAGE, vg) or "")

        down = walbctr("down", layout_arg, "--purge-lab", "--quiet")
        assert down.returncode == 0, down.stdout + down.stderr
        assert f"lab volume group {vg}: removed volume group {vg}" in down.stdout
        assert engine.containers.list(all=True, filters={"label": f"{LABEL}={lay.group}"}) == []
        assert engine.networks.list(names=[f"walbctr-{lay.group}"]) == []
        assert loops_on(loop_file) == ""
        assert not loop_file.exists()
        assert vg_tags(engine, DEFAULT_IMAGE, vg) is None
    finally:
        _cleanup(engine, lay.group, walbctr, layout_arg, images, loop_file)
        if not base_existed:
            shutil.rmtree(base, ignore_errors=True)


def _image_id(engine: Any, tag: str) -> str | None:
    import docker

    try:
        return str(engine.images.get(tag).id)
    except docker.errors.ImageNotFound:
        return None


def _cleanup(engine: Any, group: str, walbctr: Any, layout_arg: str,
             images: dict[str, str | None], loop_file: Path) -> None:
    """Leave the engine as it was, even after a failure half-way."""
    import docker

    if loop_file.exists() or engine.containers.list(all=True,
                                                    filters={"label": f"{LABEL}={group}"}):
        walbctr("down", layout_arg, "--purge-lab", "--quiet")
    for c in engine.containers.list(all=True, filters={"label": f"{LABEL}={group}"}):
        c.remove(force=True)
    for c in engine.containers.list(all=True, filters={"label": f"io.walbctr.keeper={group}"}):
        c.remove(force=True)
    for net in engine.networks.list(names=[f"walbctr-{group}"]):
        net.remove()
    for tag, before in images.items():
        now = _image_id(engine, tag)
        if now is None or now == before:
            continue
        try:
            if before is None:
                engine.images.remove(tag, noprune=True)  # the tag the test's build added
            else:
                engine.images.get(before).tag(tag)  # the machine's own image, tagged back
        except docker.errors.APIError:
            pass  # a container of another run uses it now: the engine keeps the tag


def lab_layout(tmp: Path, image: str, vg: str) -> Path:
    group = f"t{os.urandom(4).hex()}"
    path = tmp / "layout.yaml"
    path.write_text(
        f"group: {group}\nimage: {image}\nnetwork: {{mode: bridge}}\n"
        f"defaults:\n  base_dir: {tmp}/data/{{id}}\n  privileged: false\n  nofile: 16384\n"
        f"archives:\n  - {{id: a0, host: lab, vg: {vg}, lab_vg_size: 128M}}\n"
        "proxies:\n  - {id: p0, host: lab}\nstorages:\n  - {id: s0, host: lab}\n")
    return path


def walbctr_in(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """walbctr with its state under `tmp` and no terminal on standard input."""
    return subprocess.run([sys.executable, "-m", "walbctr", *args], capture_output=True,
                          text=True, cwd=ROOT, stdin=subprocess.DEVNULL, check=False,
                          env={**os.environ, "WALBCTR_STATE_DIR": str(tmp / "state")})


def test_up_without_a_terminal_stops_with_the_command_that_builds_the_image(
        engine: Any, tmp_path: Path) -> None:
    path = lab_layout(tmp_path, "walbctr/absent:1.0.19-nothing", "vg_absent")
    run = walbctr_in(tmp_path, "up", str(path))
    assert run.returncode == 1
    assert "image walbctr/absent:1.0.19-nothing is not on the engine of lab" in run.stderr
    assert f"run 'walbctr up --build {path}' to build it from upstream walb-tools" \
        in run.stderr
    assert "Traceback" not in run.stderr
    group = path.read_text().split()[1]
    assert engine.containers.list(all=True, filters={"label": f"{LABEL}={group}"}) == []
    assert list((tmp_path / "state").glob("*/lab-vg-*.img")) == []


def test_purge_lab_refuses_a_volume_group_walbctr_did_not_make(
        engine: Any, double_image: str, loop_vg: str, tmp_path: Path) -> None:
    path = lab_layout(tmp_path, double_image, loop_vg)
    run = walbctr_in(tmp_path, "down", str(path), "--purge-lab")
    assert run.returncode == 1
    assert f"volume group {loop_vg} is not a lab VG: not one walbctr made" in run.stderr
    assert "nothing was stopped" in run.stderr
    assert vg_tags(engine, double_image, loop_vg) == "walbctr-test"  # still there, as it was


def test_a_lab_vg_whose_loop_device_went_away_is_attached_again(
        engine: Any, double_image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a reboot the loop device is gone and LVM no longer sees the VG; the next
    `up` attaches the same file again instead of making a new, empty one."""
    from walbctr.commands import lab as labvg
    from walbctr.layout.loader import read_layout

    monkeypatch.setenv("WALBCTR_STATE_DIR", str(tmp_path / "state"))
    vg = f"walbctr_lab_{os.urandom(3).hex()}"
    lay = read_layout(lab_layout(tmp_path, double_image, vg))
    said: list[str] = []
    (lab,) = labvg.lab_vgs(lay)
    try:
        labvg.ensure(lay, lay.used_hosts, said.append)
        assert said and said[-1].startswith(f"lab volume group {vg}: made on /dev/loop")
        assert (tmp_path / "state" / lay.group).stat().st_mode & 0o777 == 0o700
        assert vg_tags(engine, double_image, vg) == f"walbctr-lab-{lay.group}"
        device = loops_on(lab.vg.file).split(":")[0]
        subprocess.run(["losetup", "-d", device], check=True)
        assert vg_tags(engine, double_image, vg) is None

        labvg.ensure(lay, lay.used_hosts, said.append)
        assert said[-1].startswith(f"lab volume group {vg}: attached {lab.vg.file} again")
        assert vg_tags(engine, double_image, vg) == f"walbctr-lab-{lay.group}"
    finally:
        done = labvg.purge(lay, labvg.plan_purge(lay))
    assert done[0].startswith(f"lab volume group {vg}: removed volume group {vg}, loop device")
    assert loops_on(lab.vg.file) == ""
    assert not lab.vg.file.exists()
    assert vg_tags(engine, double_image, vg) is None


def test_check_host_says_up_will_make_a_missing_lab_vg(
        engine: Any, double_image: str, tmp_path: Path) -> None:
    vg = f"walbctr_absent_{os.urandom(3).hex()}"
    path = lab_layout(tmp_path, double_image, vg)
    run = walbctr_in(tmp_path, "check-host", str(path))
    row = next(line for line in run.stdout.splitlines() if "a0: volume group" in line)
    assert " ok " in row
    assert f"VG {vg} is not there yet: 'walbctr up' makes it on a 128M loop file" in row
    assert list((tmp_path / "state").glob("*/lab-vg-*.img")) == []  # check-host makes nothing


def test_purge_checks_right_before_vgremove_that_the_lab_vg_lies_only_on_its_file(
        engine: Any, double_image: str, tmp_path: Path) -> None:
    """A PV added to the lab VG after `down --purge-lab` planned (its check passed) must
    stop the removal: the VG is left whole, and the error names the other PV."""
    from walbctr.docker import loop_vg as loopvg
    from walbctr.errors import WalbctrError

    name = f"walbctr_lab_{os.urandom(3).hex()}"
    lab = loopvg.LoopVg(name, tmp_path / "lab.img", "64M", "walbctr-lab-t")
    extra = loopvg.LoopVg(name, tmp_path / "extra.img", "64M", "walbctr-lab-t")
    extend = ('f=$1 vg=$2; truncate -s 64M "$f" && dev=$(losetup -f --show "$f") && '
              'pvcreate -q "$dev" >&2 && vgextend -q "$vg" "$dev" >&2 && echo "$dev"')
    shrink = ('f=$1 vg=$2; for d in $(losetup -j "$f" | cut -d: -f1); do '
              'vgreduce -q "$vg" "$d" >&2; pvremove -q "$d" >&2; losetup -d "$d"; done; '
              'rm -f "$f"')
    loopvg.create(engine_of(engine), double_image, lab)
    try:
        added = loopvg._probe(engine_of(engine), double_image, extra, extend).split()[-1]
        with pytest.raises(WalbctrError) as err:
            loopvg.remove(engine_of(engine), double_image, lab)
        assert f"volume group {name} also lies on {added}" in err.value.message
        assert err.value.fix and "vgreduce" in err.value.fix
        assert vg_tags(engine, double_image, name) == "walbctr-lab-t"  # still whole
    finally:
        loopvg._probe(engine_of(engine), double_image, extra, shrink)
        loopvg.remove(engine_of(engine), double_image, lab)
    assert vg_tags(engine, double_image, name) is None


def test_a_symlink_at_the_lab_vg_file_is_refused_and_its_target_untouched(
        engine: Any, double_image: str, tmp_path: Path) -> None:
    from walbctr.docker import loop_vg as loopvg
    from walbctr.errors import WalbctrError

    target = tmp_path / "precious"
    target.write_text("keep me")
    (tmp_path / "lab.img").symlink_to(target)
    lab = loopvg.LoopVg(f"walbctr_lab_{os.urandom(3).hex()}", tmp_path / "lab.img", "64M",
                        "walbctr-lab-t")
    with pytest.raises(WalbctrError) as err:
        loopvg.create(engine_of(engine), double_image, lab)
    assert "is a symbolic link" in err.value.message
    assert target.read_text() == "keep me"


def engine_of(client: Any) -> Any:
    """walbctr's Engine for the local engine the `engine` fixture's client talks to."""
    from walbctr.docker.engine import Engine

    del client
    return Engine()


@pytest.mark.parametrize("extra", ["", " --yes"])
def test_purge_lab_asks_on_a_terminal_and_no_keeps_everything(
        engine: Any, double_image: str, tmp_path: Path, extra: str) -> None:
    vg = f"walbctr_lab_{os.urandom(3).hex()}"
    path = lab_layout(tmp_path, double_image, vg)
    env = {**os.environ, "WALBCTR_STATE_DIR": str(tmp_path / "state"), "TERM": "dumb"}
    code, out, asked = run_on_terminal(
        f"{shlex.quote(sys.executable)} -m walbctr down {path} --purge-lab{extra}", env, ROOT,
        timeout=120, answer=b"n\n")
    if extra:  # --yes: no question; nothing was there, so nothing to remove
        assert (code, asked) == (0, False), out
        assert f"lab volume group {vg}: nothing to remove" in out
    else:
        assert (code, asked) == (1, True), out
        assert f"Remove the lab volume group(s) {vg}" in out
        assert "nothing was stopped or removed" in out and "--yes" in out
        assert "removed 0 containers" not in out  # down itself never ran
