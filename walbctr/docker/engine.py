"""Docker engines: one connection per layout host, with errors that name the host.

docker-py (the Engine API) serves inspect, health, logs, exec, events and image
transfer; python-on-whales drives the CLI for compose and buildx, which the API lacks.
python-on-whales takes about 0.35 s to import, so only the commands that run Compose or
buildx import it (inside the functions below): `status` and `logs` never pay for it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import docker
from docker.context import ContextAPI
from docker.errors import DockerException, ImageNotFound
from docker.tls import TLSConfig

try:
    from docker.transport import sshconn
except ImportError:  # no paramiko: docker-py refuses ssh:// engines itself and says why
    sshconn = None

from walbctr.errors import WalbctrError, last_line
from walbctr.layout.host import TlsSpec

if TYPE_CHECKING:
    from python_on_whales import DockerClient

# Bounds on finding out that a host cannot be used (README, "Remote engines"): an SSH
# login plus `docker version` on the host (ssh's own ConnectTimeout may end it sooner),
# and a TCP connect to a tcp:// engine. Without them a host that drops packets would
# hold walbctr for the kernel's TCP timeout, about two minutes.
SSH_CHECK_TIMEOUT_S = 15
TCP_CONNECT_TIMEOUT_S = 10


@dataclass
class Engine:
    """The engine of one host: `engine` as the layout gives it, None for the local one."""

    engine: str | None = None
    label: str = "local"  # how messages name it: the host's name
    tls: TlsSpec | None = None

    @property
    def is_context(self) -> bool:
        return self.engine is not None and "://" not in self.engine

    def env(self) -> dict[str, str]:
        """Environment for `docker` CLI commands aimed at this engine (with cli_flags)."""
        env = dict(os.environ)
        if self.engine is not None:
            env.pop("DOCKER_HOST", None)
            env.pop("DOCKER_CONTEXT", None)
        return env

    @cached_property
    def api(self) -> docker.DockerClient:
        version = None  # the engine's API version when the SSH check learnt it
        try:
            if self.engine is None:
                client = docker.from_env(timeout=60)
            elif self.is_context:
                ctx = ContextAPI.get_context(self.engine)
                if ctx is None:
                    raise WalbctrError(f"host {self.label}: no docker context named "
                                       f"{self.engine!r}", "list them with 'docker context ls'")
                version = self._check_reachable(str(ctx.Host))
                client = docker.DockerClient(base_url=ctx.Host, tls=ctx.TLSConfig, timeout=60,
                                             use_ssh_client=True, version=version)
            else:
                version = self._check_reachable(self.engine)
                client = docker.DockerClient(base_url=self.engine, timeout=60,
                                             tls=self._tls_config(), version=version,
                                             use_ssh_client=self.engine.startswith("ssh://"))
            if not client.api.base_url.startswith(("http://", "https://")):
                # requests reads proxy variables and ~/.netrc again on every request;
                # neither applies to a unix socket or an ssh pipe, and `status` makes one
                # request per server (about 15% of each inspect on a local engine).
                client.api.trust_env = False
            if version is None:  # over SSH, each request costs an ssh run: skip the ping
                client.ping()
        except DockerException as err:
            raise self.unreachable(err) from None
        return client

    def _check_reachable(self, url: str) -> str | None:
        """Fail within a bounded time, and in the operator's words, when the engine at
        `url` cannot be used; docker-py would wait minutes on a silent host, and over SSH
        it leaves ssh's own complaint on the terminal and says only 'connection aborted'."""
        if url.startswith("ssh://"):
            return self._check_ssh(url)
        if url.startswith("tcp://"):
            self._check_tls_files()
            self._check_tcp(url)
        return None

    def _check_ssh(self, url: str) -> str:
        """`ssh HOST docker version` as docker-py will run ssh; the engine's API version."""
        _patch_ssh_transport()
        user, host, port = ssh_target(url)
        argv = ["ssh", "-o", "BatchMode=yes"]  # a password prompt would hang walbctr
        argv += ["-l", user] if user else []
        argv += ["-p", port] if port else []
        argv += ["--", host, "docker", "version", "--format", "{{.Server.APIVersion}}"]
        try:
            run = subprocess.run(argv, capture_output=True, text=True, check=False,
                                 stdin=subprocess.DEVNULL, timeout=SSH_CHECK_TIMEOUT_S)
        except FileNotFoundError:
            raise WalbctrError(f"host {self.label}: {url} needs the ssh command, which is not "
                               "installed here", "install the OpenSSH client "
                               "(apt-get install openssh-client)") from None
        except subprocess.TimeoutExpired:
            what, fix = ssh_failure(user, host, port, None, "")
            raise WalbctrError(f"host {self.label}: {what}", fix) from None
        if run.returncode != 0:
            what, fix = ssh_failure(user, host, port, run.returncode, run.stderr + run.stdout)
            raise WalbctrError(f"host {self.label}: {what}", fix)
        return run.stdout.strip()

    def _check_tls_files(self) -> None:
        if self.tls is None:
            return
        for key in ("ca", "cert", "key"):
            path = getattr(self.tls, key)
            if not os.path.isfile(path) or not os.access(path, os.R_OK):
                why = "cannot be read" if os.path.isfile(path) else "does not exist"
                raise WalbctrError(
                    f"host {self.label}: hosts.{self.label}.tls.{key}: {path} {why}",
                    f"give the path of the {TLS_FILES[key]} (a PEM file) in "
                    f"hosts.{self.label}.tls.{key}, or copy it there")

    def _check_tcp(self, url: str) -> None:
        hostport = url.removeprefix("tcp://").split("/")[0]
        host, _, port = hostport.rpartition(":")
        if not host:
            host, port = hostport, "2376" if self.tls is not None else "2375"
        try:
            socket.create_connection((host, int(port)), timeout=TCP_CONNECT_TIMEOUT_S).close()
        except ConnectionRefusedError:
            raise WalbctrError(
                f"host {self.label}: {host} refused the connection to port {port} ({url})",
                f"start dockerd there with -H tcp://0.0.0.0:{port} --tlsverify (see README), "
                f"or fix the port in hosts.{self.label}.engine") from None
        except socket.gaierror:
            raise WalbctrError(f"host {self.label}: this machine cannot resolve {host} ({url})",
                               f"put its address in hosts.{self.label}.engine, or add the name "
                               "to DNS or /etc/hosts") from None
        except OSError as err:  # timeout, no route
            raise WalbctrError(
                f"host {self.label}: {host} did not answer on port {port} within "
                f"{TCP_CONNECT_TIMEOUT_S} s ({err.strerror or 'timed out'})",
                "check that the host is up and reachable from here, and that no firewall "
                f"drops port {port}") from None

    def _tls_config(self) -> Any:
        if self.tls is None:
            return False
        return _LayoutTLS(client_cert=(self.tls.cert, self.tls.key), ca_cert=self.tls.ca,
                          verify=self.tls.verify)

    def cli_flags(self) -> list[str]:
        """Global `docker` flags that aim the CLI at this engine."""
        if self.engine is None:
            return []
        if self.is_context:
            return ["--context", self.engine]
        flags = ["--host", self.engine]
        if self.tls is not None:
            flags += ["--tlscacert", self.tls.ca, "--tlscert", self.tls.cert,
                      "--tlskey", self.tls.key]
            flags.append("--tlsverify" if self.tls.verify else "--tls")
        return flags

    def unreachable(self, err: Exception) -> WalbctrError:
        where = self.engine or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        tls = self.tls_failure(str(err))
        if tls is not None:
            return WalbctrError(f"host {self.label}: {where}: {tls[0]}", tls[1])
        return WalbctrError(
            f"host {self.label}: cannot reach its Docker engine at {where}: {_short(err)}",
            "start dockerd there, or fix hosts." + self.label + ".engine in the layout (for "
            "ssh:// engines, check that 'ssh HOST docker version' works without a password)",
        )

    @cached_property
    def cli(self) -> DockerClient:
        from python_on_whales import DockerClient  # noqa: PLC0415 (see the module's note)

        return DockerClient(**self.client_options())

    def compose(self, path: Path, project: str) -> DockerClient:
        """A Compose v2 client for one host's file on this engine."""
        from python_on_whales import DockerClient  # noqa: PLC0415 (see the module's note)

        return DockerClient(compose_files=[path], compose_project_name=project,
                            **self.client_options())

    def compose_up(self, path: Path, project: str, services: list[str]) -> None:
        """`compose up -d --no-deps` of some services: walbctr orders tiers itself."""
        from python_on_whales.exceptions import DockerException  # noqa: PLC0415 (see above)

        try:
            self.compose(path, project).compose.up(services=services, detach=True,
                                                   dependencies=False, quiet=True,
                                                   pull="never")
        except DockerException as err:
            raise compose_error(self.label, err) from None

    def client_options(self) -> dict[str, Any]:
        """python-on-whales DockerClient options for this engine."""
        if self.engine is None:
            return {}
        if self.is_context:
            return {"context": self.engine}
        options: dict[str, Any] = {"host": self.engine}
        if self.tls is not None:
            options.update(tls=True, tlscacert=self.tls.ca, tlscert=self.tls.cert,
                           tlskey=self.tls.key, tlsverify=self.tls.verify)
        return options

    def has_cli_plugin(self, name: str) -> bool:
        if shutil.which("docker") is None:
            return False
        run = subprocess.run(["docker", *self.cli_flags(), name, "version"],
                             capture_output=True, text=True, env=self.env(), check=False)
        return run.returncode == 0

    @property
    def has_start_interval(self) -> bool:
        """Whether health checks may say start_interval (Docker 25, API 1.44, and later)."""
        version = tuple(int(x) for x in str(self.api.api.api_version).split(".")[:2])
        return version >= (1, 44)

    def image_or_none(self, ref: str) -> Any:
        try:
            return self.api.images.get(ref)
        except ImageNotFound:
            return None


    def tls_failure(self, text: str) -> tuple[str, str] | None:
        """What went wrong in a TLS handshake with a tcp:// engine, and the fix; None when
        `text` is no TLS failure."""
        where = f"hosts.{self.label}"
        if "Client sent an HTTP request to an HTTPS server" in text:
            return ("the engine speaks TLS, but the layout gives no certificates for it",
                    f"add tls: {{ca, cert, key}} to {where} (see README, TLS hosts)")
        if self.tls is None:
            return None
        if "CERTIFICATE_VERIFY_FAILED" in text and "mismatch" in text:
            return ("the engine's certificate was not made for the name or address in "
                    f"{where}.engine",
                    f"use the name or address its certificate lists (subjectAltName) in "
                    f"{where}.engine, or make it a certificate that lists this one")
        if "CERTIFICATE_VERIFY_FAILED" in text:
            return (f"the engine's certificate was not signed by the CA in {where}.tls.ca "
                    f"({self.tls.ca})",
                    f"give in {where}.tls.ca the CA certificate that signed the engine's "
                    "certificate (dockerd's --tlscert there)")
        if any(word in text for word in ("CERTIFICATE_REQUIRED", "BAD_CERTIFICATE",
                                         "UNKNOWN_CA", "certificate required",
                                         "bad certificate", "unknown ca")):
            return (f"the engine refused the client certificate in {where}.tls.cert "
                    f"({self.tls.cert})",
                    f"give in {where}.tls.cert and .key a client certificate signed by the "
                    "CA that dockerd's --tlscacert names on that host")
        if "EOF occurred in violation of protocol" in text or "UNEXPECTED_EOF" in text:
            # TLS 1.3: the engine checks the client's certificate after the client thinks
            # the handshake is done, so a refusal often arrives as a bare close.
            return (f"the engine closed the TLS connection, most likely refusing the client "
                    f"certificate in {where}.tls.cert ({self.tls.cert})",
                    f"give in {where}.tls.cert and .key a client certificate signed by the "
                    "CA that dockerd's --tlscacert names on that host")
        return None


class _LayoutTLS(TLSConfig):  # type: ignore[misc]
    """The layout's CA, whatever the environment says: requests lets REQUESTS_CA_BUNDLE or
    CURL_CA_BUNDLE replace a session's CA (psf/requests#3829), and many machines set one
    for the public CAs, which never signed a dockerd certificate."""

    def configure_client(self, client: Any) -> None:
        super().configure_client(client)
        client.trust_env = False


TLS_FILES = {"ca": "CA certificate that signed the engine's certificate",
             "cert": "client certificate", "key": "client certificate's private key"}


def ssh_target(url: str) -> tuple[str, str, str]:
    """user, host and port of ssh://[user@]host[:port], split as docker-py splits them
    (ssh itself then applies ~/.ssh/config: HostName, User, Port)."""
    netloc = url.removeprefix("ssh://").split("/")[0]
    user, _, hostport = netloc.rpartition("@")
    host, _, port = hostport.partition(":")
    return user, host, port


def ssh_failure(user: str, host: str, port: str, code: int | None,
                text: str) -> tuple[str, str]:
    """What failed when `ssh [user@]host docker version` did not work, and the fix.
    code None: no answer within SSH_CHECK_TIMEOUT_S."""
    target = f"{user}@{host}" if user else host
    who = user or "your user"
    last = last_line(text, "no output")
    if code is None or any(w in text for w in ("timed out", "No route to host",
                                                "Network is unreachable")):
        said = f" ({last})" if code is not None else f" within {SSH_CHECK_TIMEOUT_S} s"
        return (f"{host} did not answer SSH{said}",
                "check that the host is up and reachable from here; ssh waits "
                "ConnectTimeout seconds (set it in ~/.ssh/config) before giving up")
    if "Connection refused" in text:
        return (f"{host} refused the SSH connection on port {port or 22}",
                "start sshd there (systemctl start ssh), or give its port in the engine "
                "URL (ssh://user@host:PORT) or in ~/.ssh/config")
    if "Could not resolve hostname" in text:
        return (f"this machine cannot resolve {host}",
                f"add it to DNS or /etc/hosts, or give it a 'Host {host}' entry with its "
                "HostName in ~/.ssh/config")
    if "IDENTIFICATION HAS CHANGED" in text:
        return (f"the SSH host key of {host} has changed since known_hosts recorded it",
                f"if {host} was reinstalled, drop the old key with 'ssh-keygen -R {host}' "
                f"and accept the new one with 'ssh {target} true'; otherwise find out why")
    if "Host key verification failed" in text or "host key is known" in text:
        return (f"ssh does not know the host key of {host} (it is not in known_hosts)",
                f"run 'ssh {target} true' once and accept the key after checking its "
                f"fingerprint, or add it with 'ssh-keyscan {host} >> ~/.ssh/known_hosts'")
    if "docker daemon socket" in text.lower() and "permission denied" in text:
        return (f"user {who} may not use Docker on {host}",
                f"add the user to the docker group there (usermod -aG docker {who}), or "
                f"use root (ssh://root@{host}) in the engine URL")
    if "Permission denied" in text and code == 255:
        return (f"{host} refused the key(s) ssh offered for {who} ({last})",
                "load the key into the agent (ssh-add KEY) or name it with IdentityFile in "
                f"~/.ssh/config, and put its public key in ~{who}/.ssh/authorized_keys on "
                f"{host}; walbctr never asks for a password or passphrase")
    if "Cannot connect to the Docker daemon" in text:
        return (f"Docker is not running on {host} ({last})",
                "start it there (systemctl start docker), and check that 'ssh "
                f"{target} docker version' works")
    if code == 127 or "command not found" in text:
        return (f"{host} answers SSH but has no docker command for {who}",
                "install Docker there (Debian: apt-get install docker.io), on the PATH of "
                "non-interactive SSH sessions")
    return (f"'ssh {target} docker version' failed: {last}",
            "run that command yourself to see why; it must work without a prompt")


def _patch_ssh_transport() -> None:
    """docker-py's ssh transport (use_ssh_client) writes to ssh's stdin when it closes a
    connection; after an exec (walbc) the remote end has already gone, and the write
    raises BrokenPipeError (docker/docker-py#3218, open). Closing a connection that is
    gone is not an error.

    (It also starts one `ssh HOST docker system dial-stdio` per API request,
    docker/docker-py#2966: its connections cannot be reused, since closing a response
    closes ssh's stdout. README therefore advises ControlMaster, which makes each of
    those ssh runs ride on one connection per host.)
    """
    if sshconn is None or getattr(sshconn.SSHSocket.close, "walbctr_patched", False):
        return
    close = sshconn.SSHSocket.close

    def quiet_close(self: Any) -> None:
        try:
            close(self)
        except BrokenPipeError:
            self.proc.terminate()

    quiet_close.walbctr_patched = True  # type: ignore[attr-defined]
    sshconn.SSHSocket.close = quiet_close


def _short(err: Exception) -> str:
    return last_line(str(err), type(err).__name__)


def require_compose() -> None:
    """Compose v2 on this controller, or an error that says how to get it."""
    if not Engine().has_cli_plugin("compose"):
        raise WalbctrError(
            "Docker Compose v2 (the 'docker compose' CLI plugin) is not installed here",
            "install it (Debian 13: apt-get install docker-compose; Docker's packages: "
            "docker-compose-plugin); the old Python docker-compose v1 is not enough",
        )


def compose_error(host: str, err: Exception) -> WalbctrError:
    """A failed `docker compose` run in the operator's words, with the likely fix."""
    text = (getattr(err, "stderr", None) or str(err)).strip()
    fix = "see the message above"
    if "rlimit" in text:
        fix = ("this engine may not raise the open-files limit that far (dockerd's own limit "
               "is lower); raise dockerd's LimitNOFILE, or set a lower 'nofile' in the layout")
    elif "apply caps" in text:
        fix = ("this engine refuses privileged containers; set 'privileged: false' for "
               "archives and storages (defaults.privileged) to run them with only the "
               "capabilities and devices they need, and see 'walbctr check-host'")
    elif "No such image" in text or "no such image" in text:
        fix = "build it with 'walbctr build', or copy it there with 'walbctr push'"
    return WalbctrError(f"host {host}: compose failed: {last_line(text, text)}", fix)
