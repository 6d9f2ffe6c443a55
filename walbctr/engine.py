"""Docker engines: one connection per layout host, with errors that name the host.

docker-py (the Engine API) serves inspect, health, logs, exec, events and image
transfer; python-on-whales drives the CLI for compose and buildx, which the API lacks.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from walbctr.errors import WalbctrError
from walbctr.host import TlsSpec

if TYPE_CHECKING:
    import docker
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
        import docker
        from docker.errors import DockerException

        try:
            if self.engine is None:
                client = docker.from_env(timeout=60)
            elif self.is_context:
                from docker.context import ContextAPI

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
        from docker.tls import TLSConfig

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
        from python_on_whales import DockerClient

        return DockerClient(**self.client_options())

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
        from docker.errors import ImageNotFound

        try:
            return self.api.images.get(ref)
        except ImageNotFound:
            return None


def _short(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[-1] if text else type(err).__name__
