#!/usr/bin/env python3
"""The keeper's policy at work (issue 25), on one engine with the test double:

- replica lag between two archives under the default policy (`replicate: {}`: every 10
  minutes at most): a volume that gets a snapshot every minute, the primary's ts-delta to
  the replica (`get ts-delta` on a0, dest a1) sampled every 10 s for `--minutes`;
- the keeper's CPU and memory with 3 servers x 200 volumes and a policy (keep 14 d, merge,
  verify; no task is due once the first round has passed, so it is the policy's reading
  that is measured): goal under 2 % of one core, under 60 MB.

    python3 bench/policy.py --image walbctr/walb-tools:TAG [--minutes 12] [--volumes 200]
        [--skip-lag] [--ask both|wire|walbc]

The cost is measured with the keeper asking on walb's wire protocol and then, on the same
group and volumes, through a walbc process per question (monitor.ask: walbc, the keeper's
first way), with the ratio.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import docker

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import free_port, walbctr
from bench.volumes import keeper_usage, make_volumes
from tests.harness.loopvg import loop_vg
from walbctr.group import Group
from walbctr.walb.volumes import parse_ts_delta


def layout_text(name: str, image: str, tmp: Path, vg: str, policy: str) -> str:
    return (f"group: {name}\nimage: {image}\nnetwork: {{mode: bridge}}\n"
            f"defaults: {{base_dir: '{tmp}/data/{{id}}', privileged: false, "
            "stop_grace_period: 10, nofile: 16384}\n"
            f"archives: [{{id: a0, host: box, vg: {vg}}}, {{id: a1, host: box, vg: {vg}, "
            "port: 10001}]\n"
            "proxies: [{id: p0, host: box}]\nstorages: [{id: s0, host: box}]\n"
            f"monitor: {{host: box, port: {free_port()}}}\npolicy: {policy}\n")


def replica_lag(env: dict[str, str], layout: Path, data: Path, minutes: float) -> None:
    g = Group.load(layout)
    dev = data / "s0" / "lagvol.img"
    dev.parent.mkdir(parents=True, exist_ok=True)
    dev.write_bytes(os.urandom(4 << 20))
    g.add("lagvol", storage="s0", device=str(dev), timeout_s=120)
    stop = threading.Event()

    def writer() -> None:
        while not stop.wait(60):
            with dev.open("r+b") as f:
                f.seek(int.from_bytes(os.urandom(2), "big") * 64)
                f.write(os.urandom(65536))
            g.snapshot("lagvol", timeout_s=60)

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    lags: list[float] = []
    unknown = 0
    end = time.monotonic() + minutes * 60
    while time.monotonic() < end:
        found = [d for d in parse_ts_delta(g.calls.run("a0", "get", "ts-delta"))
                 if d.name == "lagvol" and d.dest == "a1"]
        if found and found[0].delta_s is not None:
            lags.append(found[0].delta_s)
        else:
            unknown += 1
        time.sleep(10)
    stop.set()
    if not lags:
        print(f"replica lag: a1 never reported (unknown in {unknown} samples)")
        return
    print(f"replica lag a0 -> a1, default policy (replicate every 600 s at most), snapshot "
          f"every 60 s, {len(lags)} samples over {minutes:g} min: median "
          f"{statistics.median(lags):.0f} s, max {max(lags):.0f} s ({unknown} samples before "
          "a1 had a copy)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", required=True)
    parser.add_argument("--minutes", type=float, default=12)
    parser.add_argument("--volumes", type=int, default=200)
    parser.add_argument("--idle", type=float, default=60)
    parser.add_argument("--skip-lag", action="store_true", help="only the keeper's cost")
    parser.add_argument("--load-policy", default="{keep_period: 14d, merge: {}, verify: {}}",
                        help="the policy of the cost measurement ('{}': none of its tasks)")
    parser.add_argument("--probe", type=float, default=0.25,
                        help="the keeper's probe_interval (the layout default)")
    parser.add_argument("--ask", choices=("both", "wire", "walbc"), default="both",
                        help="the keeper's monitor.ask; both: wire, then the baseline walbc "
                        "on the same group and volumes")
    args = parser.parse_args()
    engine = docker.from_env(timeout=120)
    with tempfile.TemporaryDirectory(prefix="walbctr-bench-pol-") as tmp_name, \
            loop_vg(engine, args.image, Path(tmp_name), "walbctr_benchpol") as vg:
        tmp = Path(tmp_name)
        env = {**os.environ, "WALBCTR_STATE_DIR": str(tmp / "state")}
        lag = tmp / "lag.yaml"
        name = f"bp{secrets.token_hex(3)}"
        lag.write_text(layout_text(name, args.image, tmp, vg, "{replicate: {}}"))
        if not args.skip_lag:
            try:
                if walbctr(env, "up", str(lag), "--quiet").returncode != 0:
                    sys.exit("up failed")
                replica_lag(env, lag, tmp / "data", args.minutes)
            finally:
                walbctr(env, "down", str(lag), "--quiet")
        load = tmp / "load.yaml"
        name = f"bq{secrets.token_hex(3)}"
        base = layout_text(name, args.image, tmp / "l", vg, args.load_policy)
        try:
            cost: dict[str, float] = {}
            for ask in (["wire", "walbc"] if args.ask == "both" else [args.ask]):
                load.write_text(base.replace("monitor: {", f"monitor: {{probe_interval: "
                                             f"{args.probe}, ask: {ask}, "))
                if walbctr(env, "up", str(load), "--quiet").returncode != 0:
                    sys.exit("up failed")
                if not cost:
                    make_volumes(engine, name, args.volumes)
                time.sleep(70)  # the first policy round of every volume, and two scans
                cpu, mem = keeper_usage(engine, name, args.idle)
                cost[ask] = cpu
                print(f"keeper asking {'on the wire' if ask == 'wire' else 'through walbc'}, "
                      f"policy {args.load_policy}, probe {args.probe:g} s, "
                      f"{3 * args.volumes} volume rows: CPU {cpu * 100:.2f}% of one core "
                      f"(walbc children included), memory {mem:.1f} MiB "
                      "(goals: < 2 %, < 60 MB)", flush=True)
            if len(cost) == 2:
                print(f"ratio wire / walbc (the baseline): {cost['wire'] / cost['walbc']:.3f} "
                      f"({cost['walbc'] / cost['wire']:.1f}x less CPU)")
        finally:
            walbctr(env, "down", str(load), "--quiet")

if __name__ == "__main__":
    main()
