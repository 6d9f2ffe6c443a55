"""Several real, independent Docker engines on this one machine, one per test "host".

Each host is a container on the main engine that runs its own dockerd (docker-in-docker
without --privileged; see README.md next to this file). The containers sit on one
user-defined bridge network of the main engine, each with a fixed IPv4 address and a
network alias equal to the host's name, so:

* a container with host networking on engine N listens on host N's address;
* containers on any engine reach another host by its name (the main engine's embedded
  DNS, and the same names in every host's /etc/hosts) or by its address;
* the test process reaches every host's address directly, and each engine through a
  unix socket under /run/walbctrh/RUN/HOST/, which keeps working while the host is cut
  off from the network.

`cut` pulls the host's "network cable" (the root-namespace end of its veth goes down:
packets are dropped, the host keeps its address), `stop_engine` shuts the host down
(or crashes it with kill=True) and `start_engine` boots it again with the same
address, data root and filesystem.

Everything this module creates is named ``walbctrh-RUN-...`` (note: deliberately not
``walbctr-``, the prefix walbctr itself gives its projects and containers) and carries
the label ``walbctrh.run``; `stop_hosts` removes it all, and `start_hosts` first removes
what earlier runs left behind when their process is gone.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import ipaddress
import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, BuildError, DockerException, ImageNotFound, NotFound

PREFIX = "walbctrh"
LABEL_RUN = f"{PREFIX}.run"
LABEL_OWNER = f"{PREFIX}.owner"
LABEL_HOST = f"{PREFIX}.host"
LABEL_DATA = f"{PREFIX}.data"
LABEL_IMAGE = f"{PREFIX}.image"
SOCK_ROOT = Path("/run") / PREFIX
CGROUP_ROOT = Path("/sys/fs/cgroup")
DATA_MARKER = ".walbctrh-data"
DEFAULT_BASE_IMAGE = "walbctr/base:bookworm-runtime"
# /24 networks tried in turn for the hosts' network; the first free one is used.
SUBNET_CANDIDATES = [f"10.231.{k}.0/24" for k in range(64)]
FIRST_HOST_OCTET = 11  # hosts get .11, .12, ... in the order given
# Inside every host (separate network namespaces, so the same ranges on every host).
INNER_BIP = "10.232.0.1/24"
INNER_POOL = "base=10.233.0.0/16,size=24"
INNER_SOCK = "/run/walbctrh/docker.sock"
# Where `docker` on the host itself looks by default: what `ssh HOST docker system
# dial-stdio` (ssh:// engines) reaches, owned by the docker group as on a real host.
DEFAULT_SOCK = "/var/run/docker.sock"
# Run on the host before its dockerd when a `prepare` hook wrote it (e.g. to start sshd).
BOOT_SCRIPT = "/run/walbctrh/boot"

DOCKERFILE = """\
FROM {base}
RUN apt-get update \\
 && apt-get install -y --no-install-recommends docker.io iptables iproute2 procps \\
    fuse-overlayfs openssh-server {packages} \\
 && rm -rf /var/lib/apt/lists/*
"""


Prepare = Callable[["HostEngine", Path], list[str]]


class HarnessUnavailableError(RuntimeError):
    """A prerequisite of the harness is missing; the message says which (tests skip)."""


class HarnessError(RuntimeError):
    """The harness was usable but an operation failed."""


@dataclass
class HostEngine:
    """One test host: its own dockerd in a container of the main engine."""

    name: str
    address: str  # IPv4 on the hosts' network; host-networking containers listen here
    url: str  # DOCKER_HOST for this engine: unix:///run/walbctrh/RUN/HOST/docker.sock
    container: str  # the host's container on the main engine
    network: str  # the hosts' network on the main engine
    run: str
    data_dir: Path  # the engine's data root (bind-mounted as /var/lib/docker)
    is_cut: bool = field(default=False)

    def client(self, timeout: int = 120) -> docker.DockerClient:
        """A docker-py client for this host's engine (close it when done)."""
        return docker.DockerClient(base_url=self.url, timeout=timeout)

    def env(self) -> dict[str, str]:
        """os.environ with DOCKER_HOST aimed at this engine (for docker / compose CLIs)."""
        env = dict(os.environ)
        env.pop("DOCKER_CONTEXT", None)
        env["DOCKER_HOST"] = self.url
        return env


# ---------------------------------------------------------------- main engine, prerequisites


def _main(main: docker.DockerClient | None = None) -> docker.DockerClient:
    if main is not None:
        return main
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except DockerException as err:
        raise HarnessUnavailableError(
            f"host harness: no main Docker engine reachable ({err})") from err
    return client


def main_engine() -> docker.DockerClient:
    """The main engine (DOCKER_HOST or the default socket); HarnessUnavailableError if none."""
    return _main(None)


def harness_problem(main: docker.DockerClient | None = None) -> str | None:
    """Why the harness cannot run on this machine, or None (cheap; builds nothing)."""
    try:
        _check_machine(_main(main))
    except HarnessUnavailableError as err:
        return str(err)
    return None


def _check_machine(main: docker.DockerClient) -> None:
    if os.geteuid() != 0:
        raise HarnessUnavailableError("host harness: needs root (it runs `ip link` on the hosts' "
                                 "veths and removes their cgroups)")
    if shutil.which("ip") is None:
        raise HarnessUnavailableError("host harness: the `ip` command (iproute2) is not installed")
    info = main.info()
    if str(info.get("CgroupVersion", "1")) != "1" or (CGROUP_ROOT / "cgroup.controllers").exists():
        raise HarnessUnavailableError("host harness: only cgroup v1 hosts are supported (the inner "
                                 "engines share the host's cgroup v1 hierarchy)")
    if info.get("OSType") != "linux":
        raise HarnessUnavailableError("host harness: the main engine is not a Linux engine")


# ---------------------------------------------------------------- owners and leftovers


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22: start time in clock ticks


def _owner_token() -> str:
    return f"{os.getpid()}:{_start_time(os.getpid())}"


def _owner_alive(token: str | None) -> bool:
    if not token or ":" not in token:
        return False
    pid, started = token.split(":", 1)
    return pid.isdigit() and _start_time(int(pid)) == started


def cleanup_leftovers(main: docker.DockerClient | None = None) -> list[str]:
    """Remove every harness run whose owning process is gone; return their run ids."""
    main = _main(main)
    owners: dict[str, str | None] = {}
    for c in main.containers.list(all=True, filters={"label": LABEL_RUN}):
        owners[c.labels[LABEL_RUN]] = c.labels.get(LABEL_OWNER)
    for n in main.networks.list(filters={"label": LABEL_RUN}):
        owners.setdefault(n.attrs["Labels"][LABEL_RUN], n.attrs["Labels"].get(LABEL_OWNER))
    if SOCK_ROOT.is_dir():
        for d in SOCK_ROOT.iterdir():
            owners.setdefault(d.name, _read_state(d.name).get("owner"))
    dead = sorted(run for run, owner in owners.items() if not _owner_alive(owner))
    for run in dead:
        _remove_run(main, run)
    live = {run for run in owners if run not in dead}
    _remove_cgroups(lambda run: run not in live)
    return dead


def _read_state(run: str) -> dict[str, Any]:
    try:
        state: dict[str, Any] = json.loads((SOCK_ROOT / run / "run.json").read_text())
    except (OSError, ValueError):
        return {}
    return state


def _remove_run(main: docker.DockerClient, run: str) -> None:
    """Remove all of run `run`: containers, network, data roots, sockets, cgroups."""
    data_dirs = set(_read_state(run).get("data_dirs", []))
    for c in main.containers.list(all=True, filters={"label": f"{LABEL_RUN}={run}"}):
        if c.labels.get(LABEL_DATA):
            data_dirs.add(c.labels[LABEL_DATA])
        with contextlib.suppress(NotFound):
            c.remove(force=True, v=True)
    for n in main.networks.list(filters={"label": f"{LABEL_RUN}={run}"}):
        with contextlib.suppress(NotFound):
            n.remove()
    for d in sorted(data_dirs):
        path = Path(d)
        if (path / DATA_MARKER).exists():  # only ever delete what the harness made
            shutil.rmtree(path, ignore_errors=True)
    shutil.rmtree(SOCK_ROOT / run, ignore_errors=True)
    with contextlib.suppress(OSError):
        SOCK_ROOT.rmdir()  # only when empty
    _remove_cgroups(lambda r: r == run)


def _remove_cgroups(match: Callable[[str], bool]) -> None:
    """rmdir the (empty) cgroups the inner engines made, for runs where match(run)."""
    if not CGROUP_ROOT.is_dir():
        return
    for attempt in range(3):  # tasks of a just-killed host may take a moment to leave
        left = False
        for controller in CGROUP_ROOT.iterdir():
            if not controller.is_dir() or controller.is_symlink():
                continue
            for top in controller.glob(f"{PREFIX}-*-*"):
                if not top.is_dir() or not match(top.name.split("-")[1]):
                    continue
                for sub in sorted(top.rglob("*"), key=lambda p: -len(p.parts)):
                    if sub.is_dir():
                        with contextlib.suppress(OSError):
                            sub.rmdir()
                with contextlib.suppress(OSError):
                    top.rmdir()
                left = left or top.exists()
        if not left:
            return
        time.sleep(0.5 * (attempt + 1))


# ---------------------------------------------------------------- image


def host_image(main: docker.DockerClient | None = None, base: str | None = None,
               packages: Iterable[str] = ()) -> str:
    """The hosts' image (base + docker.io), built on the main engine when missing.

    It is tagged by a hash of its recipe and base image id and kept between runs
    (remove it with `remove_host_images`). Building needs Debian's archive (apt).
    """
    main = _main(main)
    base = base or os.environ.get("WALBCTR_HARNESS_BASE", DEFAULT_BASE_IMAGE)
    try:
        base_id = main.images.get(base).id
    except ImageNotFound as err:
        raise HarnessUnavailableError(
            f"host harness: base image {base} is not in the main engine (build it with "
            "`walbctr build`, or name another Debian image in WALBCTR_HARNESS_BASE)") from err
    recipe = DOCKERFILE.format(base=base, packages=" ".join(sorted(packages)))
    digest = hashlib.sha256(f"{recipe}\n{base_id}".encode()).hexdigest()[:12]
    tag = f"{PREFIX}/host:{digest}"
    with contextlib.suppress(ImageNotFound):
        main.images.get(tag)
        return tag
    try:
        main.images.build(fileobj=io.BytesIO(recipe.encode()), tag=tag, rm=True, forcerm=True,
                          labels={LABEL_IMAGE: "1"}, timeout=900)
    except BuildError as err:
        tail = "".join(str(x.get("stream", x.get("error", ""))) for x in err.build_log)[-1500:]
        raise HarnessUnavailableError(f"host harness: building {tag} (docker.io from Debian's "
                                 f"archive on {base}) failed: {err.msg}\n{tail}") from err
    except APIError as err:
        raise HarnessUnavailableError(f"host harness: building {tag} failed: {err}") from err
    # Older hosts' images (another base or recipe) would pile up, 0.5 GB each, on a
    # machine that runs the tests again and again; a running host keeps its image.
    for old in main.images.list(filters={"label": LABEL_IMAGE}):
        if tag not in old.tags:
            with contextlib.suppress(APIError):
                main.images.remove(old.id)
    return tag


def remove_host_images(main: docker.DockerClient | None = None) -> None:
    """Remove the cached hosts' images from the main engine."""
    main = _main(main)
    for image in main.images.list(filters={"label": LABEL_IMAGE}):
        with contextlib.suppress(APIError):
            main.images.remove(image.id, force=True)


# ---------------------------------------------------------------- network


def _taken_networks(main: docker.DockerClient) -> list[ipaddress.IPv4Network]:
    taken: list[ipaddress.IPv4Network] = []
    for n in main.api.networks():
        for cfg in (n.get("IPAM") or {}).get("Config") or []:
            with contextlib.suppress(ValueError, KeyError):
                net = ipaddress.ip_network(cfg["Subnet"], strict=False)
                if isinstance(net, ipaddress.IPv4Network):
                    taken.append(net)
    out = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True,
                         text=True, check=False).stdout
    for line in out.splitlines():
        word = line.split()[0] if line.split() else ""
        if word in ("broadcast", "local", "unreachable", "blackhole", "prohibit"):
            word = line.split()[1]
        if word and word != "default":
            with contextlib.suppress(ValueError):
                taken.append(ipaddress.IPv4Network(word, strict=False))
    return taken


def _create_network(main: docker.DockerClient, run: str, labels: dict[str, str]) -> Any:
    taken = _taken_networks(main)
    last: Exception | None = None
    for candidate in SUBNET_CANDIDATES:
        subnet = ipaddress.IPv4Network(candidate)
        if any(subnet.overlaps(t) for t in taken):
            continue
        ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(
            subnet=str(subnet), gateway=str(subnet.network_address + 1))])
        try:
            return main.networks.create(
                f"{PREFIX}-{run}", driver="bridge", ipam=ipam, labels=labels,
                options={"com.docker.network.bridge.name": f"{PREFIX}{run}"})
        except APIError as err:  # e.g. another run took this subnet just now
            last = err
    raise HarnessError(f"host harness: no free /24 among {SUBNET_CANDIDATES[0]}.."
                       f"{SUBNET_CANDIDATES[-1]} for the hosts' network ({last})")


# ---------------------------------------------------------------- hosts


def start_hosts(names: list[str], workdir: Path, *, main: docker.DockerClient | None = None,
                base: str | None = None, packages: Iterable[str] = (),
                share_dev: bool = True, timeout: float = 60,
                prepare: Prepare | None = None) -> dict[str, HostEngine]:
    """Start one engine per name; return them by name (ready for API calls).

    workdir holds each engine's data root (workdir/NAME). share_dev gives each host the
    machine's /dev (loop devices etc.) as a real host has its own; inner containers that
    bind /dev then see it. prepare(host, state_dir) runs before each host is created: it
    may write files into state_dir (the host's /run/walbctrh, including BOOT_SCRIPT) and
    returns extra dockerd arguments (tests/harness/ssh.py and tls.py use it). Raises
    HarnessUnavailableError when a prerequisite is missing.
    """
    if not names or len(set(n.lower() for n in names)) != len(names):
        raise ValueError(f"host names must be non-empty and unique (ignoring case): {names}")
    main = _main(main)
    _check_machine(main)
    cleanup_leftovers(main)
    image = host_image(main, base, packages)
    run = secrets.token_hex(3)
    owner = _owner_token()
    labels = {LABEL_RUN: run, LABEL_OWNER: owner}
    workdir = Path(workdir).resolve()
    state_dir = SOCK_ROOT / run
    state_dir.mkdir(parents=True, exist_ok=True)
    data_dirs = [str(workdir / n) for n in names]
    (state_dir / "run.json").write_text(json.dumps({"owner": owner, "data_dirs": data_dirs}))
    hosts: dict[str, HostEngine] = {}
    try:
        net = _create_network(main, run, labels)
        subnet = ipaddress.IPv4Network(net.attrs["IPAM"]["Config"][0]["Subnet"])
        addresses = {n: str(subnet.network_address + FIRST_HOST_OCTET + i)
                     for i, n in enumerate(names)}
        for name in names:
            data = workdir / name
            (data / "docker").mkdir(parents=True, exist_ok=True)
            (data / DATA_MARKER).write_text(run + "\n")
            sock = state_dir / name
            sock.mkdir(exist_ok=True)
            host = HostEngine(name=name, address=addresses[name], url=f"unix://{sock}/docker.sock",
                              container=f"{PREFIX}-{run}-{name.lower()}", network=net.name,
                              run=run, data_dir=data)
            extra = prepare(host, sock) if prepare is not None else []
            _create_host_container(main, host, image, addresses, labels, share_dev, extra)
            hosts[name] = host
        for host in hosts.values():
            main.containers.get(host.container).start()
        for host in hosts.values():
            _wait_ready(main, host, timeout)
    except APIError as err:
        _remove_run(main, run)
        raise HarnessUnavailableError(f"host harness: the main engine refused a host container: "
                                 f"{err.explanation or err}") from err
    except BaseException:
        _remove_run(main, run)
        raise
    return hosts


def _create_host_container(main: docker.DockerClient, host: HostEngine, image: str,
                           addresses: Mapping[str, str], labels: Mapping[str, str],
                           share_dev: bool, extra: list[str]) -> None:
    binds = [
        f"{host.data_dir / 'docker'}:/var/lib/docker",
        f"{Path(host.url.removeprefix('unix://')).parent}:{Path(INNER_SOCK).parent}",
        f"{CGROUP_ROOT}:{CGROUP_ROOT}",
    ]
    devices = ["/dev/fuse:/dev/fuse:rwm"] if Path("/dev/fuse").exists() else []
    rules: list[str] = []
    if share_dev:
        binds.append("/dev:/dev")
        devices = []
        rules = ["b *:* rwm", "c *:* rwm"]
    host_config = main.api.create_host_config(
        binds=binds,
        tmpfs={"/run": "", "/tmp": ""},
        cap_add=["ALL"],
        cap_drop=["SYS_RESOURCE"],  # the main engine lacks it, and --privileged fails
        security_opt=["seccomp=unconfined", "apparmor=unconfined"],
        devices=devices,
        device_cgroup_rules=rules,
        network_mode=host.network,
        extra_hosts={n: a for n, a in addresses.items() if n != host.name},
        init=True,
    )
    networking = main.api.create_networking_config({
        host.network: main.api.create_endpoint_config(
            ipv4_address=host.address, aliases=[host.name]),
    })
    dockerd = [
        "sh", "-c", f'[ -x {BOOT_SCRIPT} ] && {BOOT_SCRIPT}; exec "$@"', "boot",
        "dockerd", "-H", f"unix://{INNER_SOCK}", "-H", f"unix://{DEFAULT_SOCK}",
        "--cgroup-parent", f"/{host.container}",
        "--bip", INNER_BIP, "--default-address-pool", INNER_POOL, *extra,
    ]
    main.api.create_container(
        image, command=dockerd, name=host.container, hostname=host.name,
        labels={**labels, LABEL_HOST: host.name, LABEL_DATA: str(host.data_dir)},
        host_config=host_config, networking_config=networking, stop_signal="SIGTERM")


def _wait_ready(main: docker.DockerClient, host: HostEngine, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    sock = Path(host.url.removeprefix("unix://"))
    while True:
        if sock.exists():
            try:
                api = docker.APIClient(base_url=host.url, timeout=5)
                try:
                    if api.ping():
                        return
                finally:
                    api.close()
            except DockerException:
                pass
        c = main.containers.get(host.container)
        if c.status in ("exited", "dead"):
            raise HarnessError(f"host {host.name}: its dockerd exited "
                               f"({c.attrs['State'].get('ExitCode')}):\n{host_logs(host, main)}")
        if time.monotonic() > deadline:
            raise HarnessError(f"host {host.name}: engine not ready after {timeout:.0f}s:\n"
                               f"{host_logs(host, main)}")
        time.sleep(0.1)


def host_logs(host: HostEngine, main: docker.DockerClient | None = None, tail: int = 40) -> str:
    """The last lines of the host's dockerd log."""
    with contextlib.suppress(DockerException):
        raw = _main(main).containers.get(host.container).logs(tail=tail)
        return str(raw.decode(errors="replace"))
    return ""


def stop_hosts(hosts: Mapping[str, HostEngine] | Iterable[HostEngine],
               main: docker.DockerClient | None = None) -> None:
    """Remove everything of the hosts' run(s): containers (and with them every inner
    container), the network, data roots, sockets and cgroups. Idempotent."""
    items = hosts.values() if isinstance(hosts, Mapping) else hosts
    runs = {h.run for h in items}
    if not runs:
        return
    main = _main(main)
    for run in sorted(runs):
        _remove_run(main, run)


def host_exec(host: HostEngine, argv: list[str],
              main: docker.DockerClient | None = None) -> tuple[int, str]:
    """Run a command on the host itself (its root filesystem, outside its containers)."""
    c = _main(main).containers.get(host.container)
    rc, out = c.exec_run(argv)
    return int(rc), bytes(out).decode(errors="replace")


# ---------------------------------------------------------------- failures


def _veth(main: docker.DockerClient, host: HostEngine) -> str:
    """The root-namespace end of the host's veth on the hosts' network."""
    c = main.containers.get(host.container)
    if c.status != "running":
        raise HarnessError(f"host {host.name}: engine is stopped; start_engine it first")
    mac = c.attrs["NetworkSettings"]["Networks"][host.network]["MacAddress"]
    script = ('for d in /sys/class/net/*; do [ "$(cat "$d/address")" = "$0" ] '
              '&& cat "$d/iflink"; done; true')
    rc, out = c.exec_run(["sh", "-c", script, mac])
    text = bytes(out).decode().strip()
    if rc != 0 or not text.isdigit():
        raise HarnessError(f"host {host.name}: no interface with {mac} ({rc}: {text})")
    return socket.if_indextoname(int(text))


def _link(dev: str, state: str) -> None:
    run = subprocess.run(["ip", "link", "set", "dev", dev, state], capture_output=True,
                         text=True, check=False)
    if run.returncode != 0:
        raise HarnessError(f"ip link set dev {dev} {state}: {run.stderr.strip()}")


def cut(host: HostEngine, main: docker.DockerClient | None = None) -> None:
    """Cut the host off the network, like pulling its cable: packets to and from it are
    dropped (peers time out), it keeps its address, its engine stays reachable through
    its socket. Stays cut across stop_engine/start_engine until `restore`."""
    _link(_veth(_main(main), host), "down")
    host.is_cut = True


def restore(host: HostEngine, main: docker.DockerClient | None = None) -> None:
    """Plug the host's cable back in."""
    _link(_veth(_main(main), host), "up")
    host.is_cut = False


def stop_engine(host: HostEngine, *, kill: bool = False, timeout: int = 30,
                main: docker.DockerClient | None = None) -> None:
    """Shut the host down: its dockerd stops its containers (waiting up to their stop
    timeouts, at most `timeout` s before everything is killed). kill=True is a power
    cut instead: dockerd and every container on the host die at once."""
    c = _main(main).containers.get(host.container)
    if kill:
        with contextlib.suppress(APIError):  # already stopped
            c.kill()
    else:
        c.stop(timeout=timeout)
    c.wait(timeout=timeout + 30)


def start_engine(host: HostEngine, *, timeout: float = 60,
                 main: docker.DockerClient | None = None) -> None:
    """Boot the host again: same address, name, data root and filesystem; its engine
    restarts containers by their restart policies. A cut host comes back cut (there is
    a window of well under a second before the cut is re-applied)."""
    main = _main(main)
    c = main.containers.get(host.container)
    c.start()
    if host.is_cut:
        cut(host, main)
    _wait_ready(main, host, timeout)


def load_image(host: HostEngine, image: str, main: docker.DockerClient | None = None) -> str:
    """Stream `image` from the main engine into the host's engine (docker save | load);
    return its id, which is the same on both."""
    main = _main(main)
    try:
        want = main.images.get(image).id
    except ImageNotFound as err:
        raise HarnessError(f"image {image} is not in the main engine") from err
    client = host.client(timeout=600)
    try:
        stream = main.api.get_image(image, chunk_size=1 << 20)
        for msg in client.api.load_image(stream, quiet=True):
            if isinstance(msg, dict) and msg.get("error"):
                raise HarnessError(f"host {host.name}: loading {image}: {msg['error']}")
        got = client.images.get(image).id
    finally:
        client.close()
    if got != want:
        raise HarnessError(f"host {host.name}: loaded {image} as {got}, expected {want}")
    return str(got)
