#!/usr/bin/env python3
"""Core speed: `walbctr --help` start-up and rendering a 1000-server layout.

Goals (issue 2): --help under 0.3 s; validate + render of 1000 servers under 1 s.
Prints the median of several runs; run from the repository root: python3 bench/core.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def median_seconds(func: object, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        func()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def big_layout(servers: int) -> str:
    archives, proxies = 10, 40
    storages = servers - archives - proxies
    lines = ["group: big", "defaults:", "  log_path: /var/walb/{id}.log", "archives:"]
    lines += [f"  - {{id: a{i}, host: ha{i}, vg: vg0}}" for i in range(archives)]
    lines.append("proxies:")
    lines += [f"  - {{id: p{i}, host: hp{i}}}" for i in range(proxies)]
    lines.append("storages:")
    lines += [f"  - {{id: s{i}, host: hs{i}, bg: 2}}" for i in range(storages)]
    return "\n".join(lines) + "\n"


def main() -> None:
    help_s = median_seconds(
        lambda: subprocess.run([sys.executable, "-m", "walbctr", "--help"],
                               check=True, capture_output=True), 7)
    print(f"walbctr --help: {help_s * 1000:.0f} ms (goal < 300 ms)")

    from walbctr.layout.loader import load_layout
    from walbctr.render.compose import render

    text = big_layout(1000)

    def load_and_render() -> None:
        files = render(load_layout(text, "big.yaml"))
        assert len(files) == 1000

    render_s = median_seconds(load_and_render, 5)
    print(f"validate + render 1000 servers: {render_s * 1000:.0f} ms (goal < 1000 ms)")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.yaml"
        path.write_text(text)
        cli_s = median_seconds(
            lambda: subprocess.run([sys.executable, "-m", "walbctr", "render", str(path), "-o",
                                    str(Path(tmp) / "out")], check=True, capture_output=True),
            3)
    print(f"walbctr render (1000 servers, whole command, files written): {cli_s * 1000:.0f} ms")


if __name__ == "__main__":
    main()
