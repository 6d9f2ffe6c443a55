"""SSH into the harness's hosts, the way an operator reaches real ones.

Every host runs Debian's sshd next to its dockerd: key-only, root may log in with a key,
host keys made fresh per run. The controller (this machine) gets, in a short tmp dir:

* ``id_ed25519``: the client key, authorized for root, ``walbd`` (in the docker group)
  and ``walbu`` (not in it) on every host; ``stranger``: a key no host accepts;
* ``known_hosts``: every host's key under its name and address;
* ``config``: what an operator puts in ~/.ssh/config (see ``CLIENT_OPTIONS``), plus a
  ``Host NAME / HostName ADDRESS`` entry per host, since this machine's resolver does not
  know the hosts' names;
* ``bin/ssh``: runs ``/usr/bin/ssh -F config``. OpenSSH reads ~/.ssh of the user's
  passwd entry and ignores $HOME, so putting ``bin`` first on PATH is the one way to
  aim docker-py (``use_ssh_client``) and the docker CLI, which both run plain ``ssh``,
  at this config without touching the machine's ~/.ssh.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness.hosts import BOOT_SCRIPT, HostEngine

# Users on every host besides root: one in the docker group, one not.
DOCKER_USER = "walbd"
PLAIN_USER = "walbu"
INNER_DIR = Path(BOOT_SCRIPT).parent / "ssh"  # the host's view of STATE_DIR/ssh

# The options README.md tells operators to put in ~/.ssh/config for their hosts: never
# prompt (a prompt would hang walbctr), give up on a dead host after ConnectTimeout, on
# a silent one after ServerAliveInterval * ServerAliveCountMax, and keep one connection
# per host open for a minute so that every further ssh (docker-py opens one per HTTP
# connection, the docker CLI one per command) rides on it.
CLIENT_OPTIONS = {
    "BatchMode": "yes",
    "StrictHostKeyChecking": "yes",
    "ConnectTimeout": "5",
    "ServerAliveInterval": "5",
    "ServerAliveCountMax": "3",
    "ControlMaster": "auto",
    "ControlPath": "{dir}/cm-%C",
    "ControlPersist": "60",
}
NO_MUX = {"ControlMaster": "no", "ControlPath": "none"}

SSHD_CONFIG = f"""\
Port 22
HostKey {INNER_DIR}/ssh_host_ed25519_key
AuthorizedKeysFile {INNER_DIR}/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
PidFile /run/sshd.pid
"""

# Runs on every boot of the host (its root filesystem survives stop/start, /run not).
BOOT = f"""#!/bin/sh
id {PLAIN_USER} >/dev/null 2>&1 || useradd -m -s /bin/bash {PLAIN_USER}
id {DOCKER_USER} >/dev/null 2>&1 || useradd -m -s /bin/bash -G docker {DOCKER_USER}
# '*' instead of useradd's '!': sshd without PAM refuses keys for a locked account.
usermod -p '*' {PLAIN_USER}; usermod -p '*' {DOCKER_USER}
mkdir -p /run/sshd
/usr/sbin/sshd -f {INNER_DIR}/sshd_config -E /run/sshd.log
"""


def _keygen(path: Path, comment: str) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment,
                    "-f", str(path)], check=True, capture_output=True)
    return Path(f"{path}.pub").read_text().strip()


@dataclass
class SshSetup:
    """The controller's side of SSH to the harness's hosts for one run."""

    dir: Path
    host_keys: dict[str, str] = field(default_factory=dict)  # host -> "ssh-ed25519 AAAA.."
    addresses: dict[str, str] = field(default_factory=dict)

    @classmethod
    def create(cls) -> SshSetup:
        # Short: ControlPath sockets live here, and unix socket paths allow 108 bytes.
        setup = cls(Path(tempfile.mkdtemp(prefix="wssh", dir="/tmp")))
        _keygen(setup.key, "walbctr-harness")
        _keygen(setup.stranger, "walbctr-harness-stranger")
        (setup.dir / "bin").mkdir()
        return setup

    @property
    def key(self) -> Path:
        return self.dir / "id_ed25519"

    @property
    def stranger(self) -> Path:
        return self.dir / "stranger"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    def prepare(self, host: HostEngine, state_dir: Path) -> list[str]:
        """start_hosts hook: sshd's config, host key and authorized keys, and the boot
        script that starts sshd before dockerd."""
        d = state_dir / "ssh"
        d.mkdir(mode=0o755, exist_ok=True)
        self.host_keys[host.name] = " ".join(
            _keygen(d / "ssh_host_ed25519_key", host.name).split()[:2])
        self.addresses[host.name] = host.address
        (d / "authorized_keys").write_text(Path(f"{self.key}.pub").read_text())
        (d / "sshd_config").write_text(SSHD_CONFIG)
        boot = state_dir / Path(BOOT_SCRIPT).name
        boot.write_text(BOOT)
        boot.chmod(0o755)
        return []

    def write(self, name: str = "config", *, known: Mapping[str, str] | None = None,
              identity: Path | None = None, mux: bool = True, agent_only: bool = False,
              options: Mapping[str, str] | None = None,
              log: Path | None = None) -> dict[str, str]:
        """Write an ssh config (and its known_hosts and bin/ssh) under dir/name-*;
        return the environment that makes `ssh`, docker-py and the docker CLI use it.

        known: host -> key to trust (default: every host's real key). identity: the key
        to offer (default: the authorized one); agent_only offers only the agent's keys.
        log: append a line per ssh started (to count connections).
        """
        base = self.dir / name
        base.mkdir(exist_ok=True)
        known_hosts = base / "known_hosts"
        keys = self.host_keys if known is None else known
        known_hosts.write_text("".join(f"{h},{self.addresses[h]} {k}\n" for h, k in keys.items()))
        opts = {**CLIENT_OPTIONS, **({} if mux else NO_MUX), **(options or {})}
        lines = [f"Host {h}\n  HostName {a}\n" for h, a in self.addresses.items()]
        lines.append("Host *\n")
        lines.append(f"  UserKnownHostsFile {known_hosts}\n  GlobalKnownHostsFile /dev/null\n")
        if agent_only:
            lines.append("  IdentityFile none\n")
        else:
            lines.append(f"  IdentityFile {identity or self.key}\n  IdentitiesOnly yes\n")
        lines += [f"  {k} {v.format(dir=base)}\n" for k, v in opts.items() if v]  # "": unset
        config = base / "config"
        config.write_text("".join(lines))
        bindir = base / "bin"
        bindir.mkdir(exist_ok=True)
        wrapper = bindir / "ssh"
        count = f'echo "$*" >> {log}\n' if log else ""
        wrapper.write_text(f'#!/bin/sh\n{count}exec /usr/bin/ssh -F {config} "$@"\n')
        wrapper.chmod(0o755)
        env = dict(os.environ)
        env.pop("DOCKER_HOST", None)
        env.pop("DOCKER_CONTEXT", None)
        env["PATH"] = f"{bindir}:{env.get('PATH', '/usr/bin:/bin')}"
        return env

    def close_masters(self) -> None:
        """End every ControlPersist master of this run (each would linger up to 60 s)."""
        for config in self.dir.glob("*/config"):
            for h in self.addresses:
                subprocess.run(["/usr/bin/ssh", "-F", str(config), "-O", "exit", h],
                               capture_output=True, check=False, timeout=10)

    def remove(self) -> None:
        self.close_masters()
        shutil.rmtree(self.dir, ignore_errors=True)


def ssh_problem() -> str | None:
    """Why the controller cannot run the SSH tests, or None."""
    for tool in ("ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"the `{tool}` command (openssh-client) is not installed on this machine"
    return None
