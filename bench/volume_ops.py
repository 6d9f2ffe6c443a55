#!/usr/bin/env python3
"""`walbctr volume` at work (issue 24): what walbctr adds over the walbc calls it makes.

Goals, on one engine (bridge-mode group a0, p0, s0 of the image given, the test double's
by default, since a real storage needs walb devices):
- `volume add` of 10 volumes: walbctr's own time over the walbc calls it makes, under 10 %
  (the calls are timed as walbctr runs them, each a `docker exec` of walbc in the server's
  container: what an operator typing `walbctr walbc ...` would pay per call; the time
  walbctr sleeps between polls while walb works is reported apart);
- `volume list` with 3 servers x 200 volumes: under 2 s (the CLI, process start included).

    python3 bench/volume_ops.py --image walbctr/walb-tools:TAG [--adds 10] [--volumes 200]
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

import docker

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import walbctr
from bench.volumes import make_volumes
from tests.harness.loopvg import loop_vg
from walbctr import group as group_api


def busy_seconds(spans: list[tuple[float, float]]) -> float:
    """How long at least one of the spans ran: calls made in parallel count once."""
    total, end = 0.0, float("-inf")
    for b, e in sorted(spans):
        if e <= end:
            continue
        total += e - max(b, end)
        end = e
    return total


def timed_adds(layout: Path, data: Path, n: int) -> None:
    slept = [0.0]
    real_sleep = time.sleep

    def counting_sleep(s: float) -> None:
        slept[0] += s
        real_sleep(s)

    group_api.time.sleep = counting_sleep  # type: ignore[attr-defined]
    g = group_api.Group.load(layout)
    devs = []
    for i in range(n):
        dev = data / "s0" / f"bench{i}.img"
        dev.parent.mkdir(parents=True, exist_ok=True)
        dev.write_bytes(os.urandom(1 << 20))
        devs.append(dev)
    start = time.perf_counter()
    for i, dev in enumerate(devs):
        g.add(f"bench{i}", storage="s0", device=str(dev), timeout_s=120)
    wall = time.perf_counter() - start
    calls = busy_seconds([(c.started, c.started + c.seconds) for c in g.calls.trace])
    own = wall - calls - slept[0]
    print(f"volume add x{n} (API, 1 MiB devices): {wall:.2f} s wall; {len(g.calls.trace)} "
          f"walbc calls (each a docker exec), some at once, kept walbc busy {calls:.2f} s of it; "
          f"{slept[0]:.2f} s of polling sleeps while walb worked; walbctr's own time "
          f"{own:.2f} s = {own / calls:.1%} of the calls' time (goal < 10 %); with the sleeps "
          f"counted as walbctr's: {(own + slept[0]) / calls:.1%}")
    group_api.time.sleep = real_sleep  # type: ignore[attr-defined]


def timed_list(env: dict[str, str], layout: Path, runs: int) -> None:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run = walbctr(env, "volume", "-l", str(layout), "list", "--json")
        times.append(time.perf_counter() - start)
        if run.returncode != 0:
            sys.exit(run.stderr)
    print(f"volume list, 3 servers x 200 volumes (CLI): median {statistics.median(times):.2f} s "
          f"of {runs} runs (min {min(times):.2f}, max {max(times):.2f}; goal < 2 s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", required=True)
    parser.add_argument("--adds", type=int, default=10)
    parser.add_argument("--volumes", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    engine = docker.from_env(timeout=120)
    name = f"bo{secrets.token_hex(3)}"
    with tempfile.TemporaryDirectory(prefix="walbctr-bench-ops-") as tmp_name, \
            loop_vg(engine, args.image, Path(tmp_name), "walbctr_benchops") as vg:
        tmp = Path(tmp_name)
        env = {**os.environ, "WALBCTR_STATE_DIR": str(tmp / "state")}
        layout = tmp / "layout.yaml"
        layout.write_text(
            f"group: {name}\nimage: {args.image}\nnetwork: {{mode: bridge}}\n"
            f"defaults: {{base_dir: '{tmp}/data/{{id}}', privileged: false, "
            "stop_grace_period: 10, nofile: 16384}\n"
            f"archives: [{{id: a0, host: box, vg: {vg}}}]\n"
            "proxies: [{id: p0, host: box}]\nstorages: [{id: s0, host: box}]\n")
        try:
            run = walbctr(env, "up", str(layout), "--quiet")
            if run.returncode != 0:
                sys.exit(run.stderr)
            timed_adds(layout, tmp / "data", args.adds)
            make_volumes(engine, name, args.volumes - args.adds)
            timed_list(env, layout, args.runs)
        finally:
            walbctr(env, "down", str(layout), "--quiet")


if __name__ == "__main__":
    main()
