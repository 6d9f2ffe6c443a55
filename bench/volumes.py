#!/usr/bin/env python3
"""Volume health at scale (issue 9): `status --volumes` and the keeper, 200 volumes a server.

Goals, on one engine (bridge mode lab group: a0, p0, s0, each with N volumes):
- `walbctr status --volumes` with 3 servers x 200 volumes: under 2 s;
- the keeper at idle with those volumes: CPU (its cgroup, walbc children included) and
  memory, over a minute at the layout's default cadence (scan 30 s, probe 0.25 s);
- time from an archive restart (SIGKILL of walb-archive; Docker restarts the container) to
  the keeper's kick of the proxy, from the kill and from the moment the archive answers.

    python3 bench/volumes.py --image walbctr/walb-tools:TAG [--volumes 200] [--idle 60]

The image must come with its keeper image (walbctr build makes both). An LVM volume group
on a loop device serves the archive and is removed at the end, as is the group.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import docker

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import free_port, walbctr
from tests.harness.loopvg import loop_vg


def exec_sh(container: Any, script: str, *args: str) -> str:
    result = container.exec_run(["sh", "-c", script, "sh", *args])
    if result.exit_code != 0:
        sys.exit(f"setup failed in {container.name}: {result.output.decode()[-2000:]}")
    return str(result.output.decode())


def stamp(line: str) -> float:
    return datetime.fromisoformat(line.split(" ", 1)[0][:26] + "+00:00").timestamp()


def first_line_after(container: Any, words: str, since: float, timeout: float) -> float | None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        raw = container.logs(since=int(since) - 1, timestamps=True).decode(errors="replace")
        for line in raw.splitlines():
            if words in line and stamp(line) >= since:
                return stamp(line)
        time.sleep(0.1)
    return None


def make_volumes(engine: Any, group: str, n: int) -> None:
    """n volumes on each server, in one exec per server (a shell loop of walbc calls)."""
    def c(sid: str) -> Any:
        return engine.containers.get(f"walbctr-{group}-{sid}")

    w = "walbc -a 127.0.0.1 -p 10000"  # no -retry: only get and status take it
    loop = f'i=0; while [ $i -lt {n} ]; do v=vol$i; '
    exec_sh(c("a0"), loop + f'{w} double-set-state $v Archived && '
            f'{w} double-snapshot $v 1 && i=$((i+1)); done')
    exec_sh(c("p0"), loop + f'{w} archive-info add $v a0 a0:10000 && {w} start $v && '
            'i=$((i+1)); done')
    exec_sh(c("s0"), loop + f'{w} double-set-state $v Target && '
            f'{w} double-ts-delta $v $((i % 50)) && i=$((i+1)); done')


def keeper_usage(engine: Any, group: str, seconds: float) -> tuple[float, float]:
    """(CPU cores used on average, memory MiB at the end) of the keeper's container."""
    keeper = engine.containers.get(f"walbctr-{group}-keeper")
    first = keeper.stats(stream=False)
    time.sleep(seconds)
    last = keeper.stats(stream=False)
    cpu_ns = last["cpu_stats"]["cpu_usage"]["total_usage"] - \
        first["cpu_stats"]["cpu_usage"]["total_usage"]
    mem = last["memory_stats"]
    used = mem.get("usage", 0) - mem.get("stats", {}).get("inactive_file", 0)
    return cpu_ns / 1e9 / seconds, used / 2**20


def status_runs(engine: Any, env: dict[str, str], layout: Path, group: str,
                volumes: int, runs: int) -> None:
    """Time `status --volumes` and the CPU its batches use inside the servers."""
    p0 = engine.containers.get(f"walbctr-{group}-p0")
    start = time.perf_counter()
    exec_sh(p0, 'i=0; while [ $i -lt 100 ]; do walbc -a 127.0.0.1 -p 10000 -retry 0 '
            'get state vol1 >/dev/null; i=$((i+1)); done')
    print(f"one walbc query inside p0: {(time.perf_counter() - start) * 10:.1f} ms "
          "(100 in a row)")
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run = walbctr(env, "status", str(layout), "--volumes", "--json")
        times.append(time.perf_counter() - start)
        try:
            rows = json.loads(run.stdout)
        except ValueError:
            sys.exit(f"status --volumes failed:\n{run.stderr[-3000:]}")
        if len(rows) != 3 * volumes:
            sys.exit(f"status --volumes gave {len(rows)} rows: {run.stderr[-2000:]}")
    servers = [engine.containers.get(f"walbctr-{group}-{sid}") for sid in ("a0", "p0", "s0")]
    before = [c.stats(stream=False)["cpu_stats"]["cpu_usage"]["total_usage"] for c in servers]
    start = time.perf_counter()
    walbctr(env, "status", str(layout), "--volumes", "--json")
    wall = time.perf_counter() - start
    used = [c.stats(stream=False)["cpu_stats"]["cpu_usage"]["total_usage"] - b
            for c, b in zip(servers, before, strict=True)]
    print("CPU the batches used inside a0, p0, s0 (walbc, sh and the servers): "
          + ", ".join(f"{u / 1e9:.2f}" for u in used)
          + f" s, {sum(used) / 1e9:.2f} s in all, during a {wall:.2f} s run: on an "
          f"idle machine with 2 cores the run takes at least "
          f"{max(*used, sum(used) / 2) / 1e9:.2f} s")
    med = statistics.median(times)
    print(f"status --volumes, 3 servers x {volumes} volumes: median {med:.2f} s "
          f"(runs: {', '.join(f'{t:.2f}' for t in times)}); goal < 2 s: "
          f"{'met' if med < 2 else 'NOT met'}")


def keeper_idle(engine: Any, group: str, volumes: int, idle: float, probe: float,
                metrics_port: int) -> None:
    """The keeper's CPU and memory at idle, and its own scan figures."""
    time.sleep(35)  # let the keeper's first scans of the new volumes pass
    cpu, mem = keeper_usage(engine, group, idle)
    print(f"keeper at idle, {3 * volumes} volume rows, scan 30 s, probe {probe:g} s: "
          f"CPU {cpu * 100:.1f}% of one core (walbc children included), "
          f"memory {mem:.1f} MiB")
    scan = subprocess.run(["curl", "-s", f"http://127.0.0.1:{metrics_port}/metrics"],
                          capture_output=True, text=True, check=False).stdout
    for line in scan.splitlines():
        if line.startswith(("walb_keeper_scan_duration_seconds ", "walb_keeper_volumes ")):
            print(f"  {line}")


def kill_kicks(engine: Any, group: str, probe: float) -> None:
    """Three SIGKILLs of the archive, and how soon the keeper kicks the proxy after each."""
    a0 = engine.containers.get(f"walbctr-{group}-a0")
    p0 = engine.containers.get(f"walbctr-{group}-p0")
    keeper = engine.containers.get(f"walbctr-{group}-keeper")
    gaps, backs = [], []
    for _ in range(3):
        killed = time.time()
        # the exec dies with the container, so its status says nothing
        a0.exec_run(["sh", "-c", 'for p in /proc/[0-9]*; do [ "$(cat $p/comm '
                     '2>/dev/null)" = walb-archive ] && kill -9 "${p#/proc/}"; done'])
        kicked = first_line_after(p0, "kick requested", killed, 30)
        back = first_line_after(keeper, "archive a0 answers again", killed, 1)
        if kicked is None:
            print(f"  no kick of p0 within 30 s of a kill: the restart was shorter "
                  f"than the {probe:g} s probe and went unseen")
            gaps.append(float("inf"))
            continue
        gaps.append(kicked - killed)
        if back is not None:
            backs.append(kicked - back)
        time.sleep(5)
    print("archive SIGKILL -> kick of p0: "
          + ", ".join(f"{g:.2f} s" for g in gaps)
          + (" (archive answering again -> kick: "
             + ", ".join(f"{b:.2f} s" for b in backs) + ")" if backs else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", required=True)
    parser.add_argument("--volumes", type=int, default=200)
    parser.add_argument("--idle", type=float, default=60, help="seconds of idle measuring")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--probe", type=float, default=0.25,
                        help="the keeper's probe_interval (the layout default, 0.25 s)")
    parser.add_argument("--setup-only", action="store_true",
                        help="make the group and its volumes, print its layout, keep it up "
                        "until Enter is pressed (to profile by hand)")
    args = parser.parse_args()
    engine = docker.from_env(timeout=120)
    group = f"bv{secrets.token_hex(3)}"
    with tempfile.TemporaryDirectory(prefix="walbctr-bench-vol-") as tmp_name, \
            loop_vg(engine, args.image, Path(tmp_name), "walbctr_benchv") as vg:
        tmp = Path(tmp_name)
        env = {**os.environ, "WALBCTR_STATE_DIR": str(tmp / "state")}
        metrics_port = free_port()
        layout = tmp / "layout.yaml"
        layout.write_text(
            f"group: {group}\nimage: {args.image}\nnetwork: {{mode: bridge}}\n"
            f"defaults: {{base_dir: '{tmp}/data/{{id}}', privileged: false, "
            "stop_grace_period: 10, nofile: 16384}\n"
            f"archives: [{{id: a0, host: box, vg: {vg}}}]\n"
            "proxies: [{id: p0, host: box}]\nstorages: [{id: s0, host: box}]\n"
            f"monitor: {{host: box, port: {metrics_port}, probe_interval: {args.probe}}}\n")
        try:
            run = walbctr(env, "up", str(layout), "--quiet")
            if run.returncode != 0:
                sys.exit(run.stderr)
            t0 = time.perf_counter()
            make_volumes(engine, group, args.volumes)
            print(f"setup: {args.volumes} volumes on each of a0, p0, s0 in "
                  f"{time.perf_counter() - t0:.1f} s")
            if args.setup_only:
                print(f"WALBCTR_STATE_DIR={env['WALBCTR_STATE_DIR']} layout {layout}",
                      flush=True)
                sys.stdin.readline()
                return
            status_runs(engine, env, layout, group, args.volumes, args.runs)
            keeper_idle(engine, group, args.volumes, args.idle, args.probe, metrics_port)
            kill_kicks(engine, group, args.probe)
        finally:
            walbctr(env, "down", str(layout), "--quiet")


if __name__ == "__main__":
    main()
