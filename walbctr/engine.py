"""Docker engines: one connection per layout host, with errors that name the host.

docker-py (the Engine API) serves inspect, health, logs, exec, events and image
transfer; python-on-whales drives the CLI for compose and buildx, which the API lacks.
python-on-whales takes about 0.35 s to import, so only the commands that run Compose or
buildx import it (inside the functions below): `status` and `logs` never pay for it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import docker
from docker.context import ContextAPI
from docker.errors import DockerException, ImageNotFound
from docker.tls import TLSConfig

from walbctr.errors import WalbctrError, last_line
from walbctr.host import TlsSpec

if TYPE_CHECKING:
    from python_on_whales import DockerClient


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
        try:
            if self.engine is None:
                client = docker.from_env(timeout=60)
            elif self.is_context:
                ctx = ContextAPI.get_context(self.engine)
                if ctx is None:
                    raise WalbctrError(f"host {self.label}: no docker context named "
                                       f"{self.engine!r}", "list them with 'docker context ls'")
                client = docker.DockerClient(base_url=ctx.Host, tls=ctx.TLSConfig, timeout=60,
                                             use_ssh_client=True)
            else:
                client = docker.DockerClient(base_url=self.engine, timeout=60,
                                             tls=self._tls_config(),
                                             use_ssh_client=self.engine.startswith("ssh://"))
            client.ping()
        except DockerException as err:
            raise self.unreachable(err) from None
        return client

    def _tls_config(self) -> Any:
        if self.tls is None:
            return False
        return TLSConfig(client_cert=(self.tls.cert, self.tls.key), ca_cert=self.tls.ca,
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

    def compose_run(self, path: Path, project: str, service: str,
                    argv: list[str]) -> tuple[int, str]:
        """A one-off container of `service` (its mounts and privileges): status, output."""
        from python_on_whales.exceptions import DockerException  # noqa: PLC0415 (see above)

        try:
            out = self.compose(path, project).compose.run(service, argv, remove=True,
                                                          tty=False, dependencies=False)
            return 0, str(out or "")
        except DockerException as err:
            return int(err.return_code), (err.stdout or "") + (err.stderr or "")

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

    def image_or_none(self, ref: str) -> Any:
        try:
            return self.api.images.get(ref)
        except ImageNotFound:
            return None


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
