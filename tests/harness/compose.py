"""A test's own HTTP service (Prometheus, Alertmanager) run as one compose project through
pytest-docker, and removed again however the test ends."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pytest_docker.plugin import DockerComposeExecutor, Services, get_docker_services


class HttpService:
    """A Prometheus-style server on 127.0.0.1: ready once `/-/ready` answers 200."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False


@contextmanager
def compose_up(compose_file: Path, project: str, service: HttpService) -> Iterator[None]:
    """`up -d` the project, wait up to 30 s for `service` to be ready, `down -v` after."""
    command = "docker compose"
    bring_up = get_docker_services(command, str(compose_file), project, ["up -d"],
                                   ["down -v"])
    try:
        services: Services = bring_up.__enter__()
    except BaseException:  # pytest-docker's setup is outside its own try/finally
        DockerComposeExecutor(command, str(compose_file), project).execute("down -v")
        raise
    try:
        services.wait_until_responsive(check=service.ready, timeout=30, pause=0.2)
        yield
    finally:
        bring_up.__exit__(None, None, None)
