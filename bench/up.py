#!/usr/bin/env python3
"""`walbctr up` against `docker compose up --wait` on the same rendered files (issue 4).

Goals: a cold `walbctr up` of the minimal layout within 1.10x of `docker compose up
--wait` (median of several runs); a no-change `up` under 1.5 s; `status` under 1 s.

    python3 bench/up.py --image walbctr/walb-tools:TAG [--runs 5]

It makes an LVM volume group on a loop device for the archive (removed at the end),
writes a bridge-mode minimal layout whose three hosts map to the local engine, and for
each run starts and stops the group both ways. Compose gets the hosts' files one by one
in tier order (archive host, proxy host, storage host), each with --wait.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import docker

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.harness.loopvg import loop_vg


def timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    took = time.perf_counter() - start
    if run.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{run.stdout[-2000:]}{run.stderr[-3000:]}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--image", required=True)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    engine = docker.from_env()
    group = f"bench{secrets.token_hex(3)}"
    with tempfile.TemporaryDirectory() as tmp_name, \
            loop_vg(engine, args.image, Path(tmp_name), "walbctr_bench") as vg:
        tmp = Path(tmp_name)
        layout = tmp / "layout.yaml"
        layout.write_text(
            f"group: {group}\nimage: {args.image}\nnetwork: {{mode: bridge}}\n"
            f"defaults: {{base_dir: '{tmp}/data/{{id}}', privileged: false, "
            "stop_grace_period: 10, nofile: 16384}\n"
            f"archives: [{{id: a0, host: hostA0, vg: {vg}}}]\n"
            "proxies: [{id: p0, host: hostP0}]\nstorages: [{id: s0, host: hostS0}]\n")
        env = {**os.environ, "WALBCTR_STATE_DIR": str(tmp / "state")}
        walbctr = [sys.executable, "-m", "walbctr"]
        subprocess.run([*walbctr, "render", str(layout), "-o", str(tmp / "compose")],
                       check=True, capture_output=True, env=env)
        files = [tmp / "compose" / group / f"{h}.yaml" for h in ("hostA0", "hostP0", "hostS0")]
        network = engine.networks.create(f"walbctr-{group}", driver="bridge")
        ours, theirs, again, status = [], [], [], []
        try:
            for _ in range(args.runs):
                ours.append(timed([*walbctr, "up", str(layout), "--quiet"], env))
                for _ in range(3):
                    again.append(timed([*walbctr, "up", str(layout), "--quiet"], env))
                    status.append(timed([*walbctr, "status", str(layout)], env))
                timed([*walbctr, "down", str(layout), "--quiet"], env)
                network = engine.networks.create(f"walbctr-{group}", driver="bridge") \
                    if not engine.networks.list(names=[f"walbctr-{group}"]) else network
                start = time.perf_counter()
                for f in files:
                    subprocess.run(["docker", "compose", "-f", str(f), "up", "-d", "--wait"],
                                   check=True, capture_output=True)
                theirs.append(time.perf_counter() - start)
                for f in reversed(files):
                    subprocess.run(["docker", "compose", "-f", str(f), "down", "-t", "10"],
                                   check=True, capture_output=True)
        finally:
            subprocess.run([*walbctr, "down", str(layout), "--quiet"], env=env, check=False,
                           capture_output=True)
            for f in files:
                subprocess.run(["docker", "compose", "-f", str(f), "down"], capture_output=True,
                               check=False)
            for net in engine.networks.list(names=[f"walbctr-{group}"]):
                net.remove()
    m_ours, m_theirs = statistics.median(ours), statistics.median(theirs)
    print(f"cold up, median of {args.runs}: walbctr {m_ours:.2f} s, docker compose up --wait "
          f"{m_theirs:.2f} s: ratio {m_ours / m_theirs:.2f} (goal <= 1.10)")
    print(f"  walbctr runs: {', '.join(f'{t:.2f}' for t in ours)}")
    print(f"  compose runs: {', '.join(f'{t:.2f}' for t in theirs)}")
    print(f"no-change up, median of {len(again)}: {statistics.median(again):.2f} s (goal < 1.5)")
    print(f"status, median of {len(status)}: {statistics.median(status):.2f} s (goal < 1.0)")


if __name__ == "__main__":
    main()
