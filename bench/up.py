#!/usr/bin/env python3
"""`walbctr up` against `docker compose up --wait` on the same rendered files (issue 12).

Goals (one engine, bridge mode, one host file so that Compose orders by depends_on):
- lab group (1 archive, 1 proxy, 1 storage): cold `walbctr up` at most 0.5x
  `docker compose up --wait`;
- 32 servers (2 archives, 6 proxies, 24 storages): cold `up` at most 0.7x; `status` and
  an unchanged `up` at most 1.2x their time for the lab group.

    python3 bench/up.py --image walbctr/walb-tools:TAG [--runs 3] [--sizes 3,32]

Two Compose baselines are timed on the same layout: the files exactly as walbctr renders
them for this engine, and the same files with the 2 s health interval walbctr rendered
before readiness probing (on engines before API 1.44 the rendered interval is 10 s,
which would flatter the first ratio; the second is the fair one there). An LVM volume
group on a loop device serves the archives and is removed at the end.

`status` and an unchanged `up` are timed twice: each size alone, right after its cold
`up` (so the 32-server figures also carry the load its servers' health checks put on
the machine), and with both groups running, in turn (the same load for both sizes).
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import docker
import docker.errors

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.harness.loopvg import loop_vg

SHAPES = {3: (1, 1, 1), 32: (2, 6, 24)}


def timed(cmd: list[str], env: dict[str, str], ok: bool = True) -> float:
    start = time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    took = time.perf_counter() - start
    if ok and run.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{run.stdout[-2000:]}{run.stderr[-3000:]}")
    return took


def layout_text(group: str, image: str, vg: str, data: Path, size: int) -> str:
    archives, proxies, storages = SHAPES[size]
    lines = [f"group: {group}", f"image: {image}", "network: {mode: bridge}",
             f"defaults: {{base_dir: '{data}/{{id}}', privileged: false, "
             "stop_grace_period: 10, nofile: 16384}", "archives:"]
    lines += [f"  - {{id: a{i}, host: box, vg: {vg}, port: {10000 + i}}}"
              for i in range(archives)]
    lines.append("proxies:")
    lines += [f"  - {{id: p{i}, host: box, port: {11000 + i}}}" for i in range(proxies)]
    lines.append("storages:")
    lines += [f"  - {{id: s{i}, host: box, port: {12000 + i}}}" for i in range(storages)]
    return "\n".join(lines) + "\n"


def wait_docker_healthy(engine: docker.DockerClient, group: str, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        found = engine.containers.list(filters={"label": f"io.walbctr.group={group}"})
        if found and all(c.attrs["State"].get("Health", {}).get("Status") == "healthy"
                         for c in found):
            return
        time.sleep(0.5)
    sys.exit(f"group {group}: Docker's health checks did not all pass within {limit:.0f} s")


def drop_network(net: Any) -> None:
    """Remove a network; one the engine will not let go (moby/moby#42119) is named, not
    fatal: the figures already taken stand."""
    try:
        net.remove()
    except docker.errors.APIError as err:
        print(f"  note: network {net.name} left behind: {err.explanation}", file=sys.stderr)


def compose(file: Path, project: str, *args: str) -> None:
    run = subprocess.run(["docker", "compose", "-p", project, "-f", str(file), *args],
                         capture_output=True, text=True, check=False)
    if run.returncode != 0:
        sys.exit(f"failed: docker compose {' '.join(args)} ({file.name})\n{run.stderr[-3000:]}")


def bench_size(engine: docker.DockerClient, image: str, vg: str, tmp: Path, size: int,
               runs: int) -> dict[str, float]:
    group = f"bench{secrets.token_hex(3)}"
    layout = tmp / f"layout{size}.yaml"
    layout.write_text(layout_text(group, image, vg, tmp / f"data{size}", size))
    env = {**os.environ, "WALBCTR_STATE_DIR": str(tmp / f"state{size}")}
    walbctr = [sys.executable, "-m", "walbctr"]
    old = tuple(int(x) for x in engine.api.api_version.split(".")) < (1, 44)
    subprocess.run([*walbctr, "render", str(layout), "-o", str(tmp / "compose"),
                    *([] if old else ["--start-interval"])],
                   check=True, capture_output=True, env=env)
    rendered = tmp / "compose" / group / "box.yaml"
    legacy = tmp / f"legacy{size}.yaml"
    legacy.write_text(re.sub(r"interval: \d+s", "interval: 2s", rendered.read_text()))
    project = f"walbctr-{group}-box"
    times: dict[str, list[float]] = {k: [] for k in ("ours", "compose", "legacy", "again",
                                                     "status", "again_steady",
                                                     "status_steady")}
    try:
        for _ in range(runs):
            times["ours"].append(timed([*walbctr, "up", str(layout), "--quiet"], env))
            for _ in range(3):
                times["again"].append(timed([*walbctr, "up", str(layout), "--quiet"], env))
                times["status"].append(timed([*walbctr, "status", str(layout)], env))
            # Steady state: once Docker's own health check has run (up to one interval
            # after a start), status and up no longer ask servers themselves.
            wait_docker_healthy(engine, group)
            for _ in range(3):
                times["again_steady"].append(timed([*walbctr, "up", str(layout), "--quiet"],
                                                   env))
                times["status_steady"].append(timed([*walbctr, "status", str(layout)], env))
            timed([*walbctr, "down", str(layout), "--quiet"], env)
            for key, file in (("compose", rendered), ("legacy", legacy)):
                # By hand, the bridge network is made first, as the file's header says;
                # walbctr's down has removed its own.
                network = engine.networks.create(f"walbctr-{group}", driver="bridge")
                start = time.perf_counter()
                compose(file, project, "up", "-d", "--wait")
                times[key].append(time.perf_counter() - start)
                compose(file, project, "down", "-t", "10")
                drop_network(network)
    finally:
        timed([*walbctr, "down", str(layout), "--quiet"], env, ok=False)
        for file in (rendered, legacy):
            subprocess.run(["docker", "compose", "-p", project, "-f", str(file), "down",
                            "-t", "10"], capture_output=True, check=False)
        for net in engine.networks.list(names=[f"walbctr-{group}"]):
            drop_network(net)
    out = {k: statistics.median(v) for k, v in times.items()}
    print(f"{size} servers, median of {runs}: cold walbctr up {out['ours']:.2f} s; "
          f"compose up --wait on the same files {out['compose']:.2f} s "
          f"(ratio {out['ours'] / out['compose']:.2f}); on the same files with the old 2 s "
          f"interval {out['legacy']:.2f} s (ratio {out['ours'] / out['legacy']:.2f})")
    print(f"  walbctr runs: {', '.join(f'{t:.2f}' for t in times['ours'])}")
    print(f"  right after the start: unchanged up {out['again']:.2f} s, status "
          f"{out['status']:.2f} s; steady: unchanged up {out['again_steady']:.2f} s, status "
          f"{out['status_steady']:.2f} s (medians of {len(times['again'])})")
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--image", required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sizes", default="3,32")
    args = parser.parse_args()
    engine = docker.from_env()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp_name, \
            loop_vg(engine, args.image, Path(tmp_name), "walbctr_bench") as vg:
        results = {size: bench_size(engine, args.image, vg, Path(tmp_name), size, args.runs)
                   for size in sizes}
        if 3 in results and 32 in results:
            small, big = results[3], results[32]
            for when, suffix in (("right after a start", ""), ("steady", "_steady")):
                print(f"32 vs 3 servers, {when}: status "
                      f"{big['status' + suffix] / small['status' + suffix]:.2f}x, unchanged "
                      f"up {big['again' + suffix] / small['again' + suffix]:.2f}x "
                      "(goal <= 1.2x each)")
            side_by_side(args.image, vg, Path(tmp_name), args.runs * 3)


def side_by_side(image: str, vg: str, tmp: Path, rounds: int) -> None:
    """Both groups running at once, `status` and unchanged `up` of each in turn.

    Timed one size after the other, the 32-server figures also carry the load of 32
    servers' own health checks (one walbc exec per server per interval) on this machine;
    here both sizes run under the same load, so the ratio is walbctr's own growth.
    """
    walbctr = [sys.executable, "-m", "walbctr"]
    env = {**os.environ, "WALBCTR_STATE_DIR": str(tmp / "side-state")}
    layouts = {}
    for size in (3, 32):
        layouts[size] = tmp / f"side{size}.yaml"
        layouts[size].write_text(layout_text(f"side{secrets.token_hex(3)}", image, vg,
                                             tmp / f"side-data{size}", size))
    times: dict[str, list[float]] = {k: [] for k in ("status3", "status32", "up3", "up32")}
    try:
        for size in (3, 32):
            timed([*walbctr, "up", str(layouts[size]), "--quiet"], env)
        for _ in range(rounds):
            for size in (3, 32):
                times[f"status{size}"].append(timed([*walbctr, "status", str(layouts[size])],
                                                    env))
                times[f"up{size}"].append(timed([*walbctr, "up", str(layouts[size]),
                                                 "--quiet"], env))
    finally:
        for size in (3, 32):
            timed([*walbctr, "down", str(layouts[size]), "--quiet"], env, ok=False)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"both groups running, in turn, medians of {rounds}: status {med['status3']:.2f} s "
          f"(3) and {med['status32']:.2f} s (32): {med['status32'] / med['status3']:.2f}x; "
          f"unchanged up {med['up3']:.2f} s and {med['up32']:.2f} s: "
          f"{med['up32'] / med['up3']:.2f}x (goal <= 1.2x each)")


if __name__ == "__main__":
    main()
