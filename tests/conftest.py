from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from walbctr.layout import Layout, load_layout

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
