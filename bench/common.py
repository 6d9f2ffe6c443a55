"""Small helpers the bench scripts share (they run as scripts: `python3 bench/NAME.py`)."""

from __future__ import annotations

import socket
import subprocess
import sys


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def walbctr(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`walbctr ARGS` from this checkout, its output captured, never raising."""
    return subprocess.run([sys.executable, "-m", "walbctr", *args], capture_output=True,
                          text=True, env=env, check=False)
