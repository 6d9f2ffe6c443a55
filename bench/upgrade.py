#!/usr/bin/env python3
"""Changing the image of a running group (issue 10): `walbctr upgrade` against `walbctr down`
+ `walbctr up` on the new image.

On one engine, the lab group (bridge mode: a0, p0, s0, each with two volumes) runs OLD;
each way of moving it to NEW is timed end to end, and every server is probed all along
from its own thread (`walbc get host-type` through `docker exec` into the server's
container, by name, every --interval seconds). A server counts as unavailable from its
first failed probe to its next answered one; the figures are per server: total time
unavailable and the longest single outage. Between the two runs the group is rolled back
to OLD (`walbctr upgrade --rollback`, not measured).

    python3 bench/upgrade.py --old walbctr/walb-tools:TAG1 --new walbctr/walb-tools:TAG2

Both images come from `walbctr build` (e.g. two copies of the test double with different
VERSION files). An LVM volume group on a loop device serves the archive; it and the group
are removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import docker

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import free_port, walbctr
from tests.harness.loopvg import loop_vg

SERVERS = ("a0", "p0", "s0")


def must(run: subprocess.CompletedProcess[str], what: str) -> None:
    if run.returncode != 0:
        sys.exit(f"{what} failed:\n{run.stdout}{run.stderr}")


class Prober(threading.Thread):
    """Asks one server `walbc get host-type` in its container every `interval` seconds."""

    def __init__(self, client: Any, container: str, port: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.client, self.container, self.port, self.interval = client, container, port, \
            interval
        self.samples: list[tuple[float, bool]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        argv = ["walbc", "-a", "127.0.0.1", "-p", str(self.port), "-to", "1", "-retry", "0",
                "get", "host-type"]
        api = self.client.api
        while not self.halt.is_set():
            t = time.monotonic()
            try:
                exec_id = api.exec_create(self.container, argv)["Id"]
                api.exec_start(exec_id)
                ok = api.exec_inspect(exec_id).get("ExitCode") == 0
            except Exception:  # no container (being replaced), not running: unavailable
                ok = False
            self.samples.append((t, ok))
            self.halt.wait(max(0.0, self.interval - (time.monotonic() - t)))

    def outages(self, start: float, end: float) -> list[float]:
        """Lengths of the stretches without an answer between start and end."""
        out: list[float] = []
        down_since: float | None = None
        for t, ok in self.samples:
            if t < start or t > end:
                continue
            if not ok and down_since is None:
                down_since = t
            elif ok and down_since is not None:
                out.append(t - down_since)
                down_since = None
        if down_since is not None:
            out.append(end - down_since)
        return out


def measure(client: Any, group: str, ports: dict[str, int], interval: float,
            action: list[tuple[str, list[str]]], env: dict[str, str]) -> dict[str, Any]:
    probers = {sid: Prober(client, f"walbctr-{group}-{sid}", ports[sid], interval)
               for sid in SERVERS}
    for p in probers.values():
        p.start()
    time.sleep(1.0)  # a baseline: every server answers before the change
    start = time.monotonic()
    steps = {}
    for what, argv in action:
        t = time.monotonic()
        must(walbctr(env, *argv), what)
        steps[what] = round(time.monotonic() - t, 2)
    end = time.monotonic()
    time.sleep(1.0)
    for p in probers.values():
        p.halt.set()
    for p in probers.values():
        p.join()
    result: dict[str, Any] = {"total_s": round(end - start, 2), "steps_s": steps}
    for sid, p in probers.items():
        spans = p.outages(start, end + 1.0)
        result[sid] = {"unavailable_s": round(sum(spans), 2),
                       "longest_outage_s": round(max(spans, default=0.0), 2),
                       "outages": len(spans), "probes": len(p.samples)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", required=True, help="the image the group runs first")
    parser.add_argument("--new", required=True, help="the image to move it to")
    parser.add_argument("--interval", type=float, default=0.1,
                        help="seconds between two probes of a server (default 0.1)")
    args = parser.parse_args()
    client = docker.from_env(timeout=120)
    for image in (args.old, args.new):
        client.images.get(image)  # fails early when one is missing

    with tempfile.TemporaryDirectory(prefix="walbctr-bench-upg-") as tmp_name, \
            loop_vg(client, args.old, Path(tmp_name), "walbctr_benchu") as vg:
        tmp = Path(tmp_name)
        group = f"bu{secrets.token_hex(3)}"
        ports = {sid: free_port() for sid in SERVERS}
        env = {**os.environ, "WALBCTR_STATE_DIR": str(tmp / "state")}
        layout = tmp / "layout.yaml"

        def write(image: str) -> None:
            layout.write_text(
                f"group: {group}\nimage: {image}\nnetwork: {{mode: bridge}}\n"
                f"defaults:\n  base_dir: {tmp}/data/{{id}}\n  privileged: false\n"
                "  stop_grace_period: 10\n  nofile: 16384\n"
                f"archives:\n  - {{id: a0, host: hostA0, vg: {vg}, port: {ports['a0']}}}\n"
                f"proxies:\n  - {{id: p0, host: hostP0, port: {ports['p0']}}}\n"
                f"storages:\n  - {{id: s0, host: hostS0, port: {ports['s0']}}}\n")

        try:
            write(args.old)
            must(walbctr(env, "up", str(layout), "--quiet"), "up")
            a0 = f"a0:{ports['a0']}"
            for sid, cmd in (("a0", "init-vol vol0"), ("a0", "double-set-state vol1 Archived"),
                             ("p0", f"archive-info add vol0 a0 {a0}"), ("p0", "start vol0"),
                             ("p0", f"archive-info add vol1 a0 {a0}"),
                             ("s0", "double-set-state vol0 Target"),
                             ("s0", "double-set-state vol1 Standby")):
                must(walbctr(env, "walbc", str(layout), sid, *cmd.split()), f"walbc {cmd}")

            write(args.new)
            upgraded = measure(client, group, ports, args.interval,
                               [("upgrade", ["upgrade", str(layout), "--quiet"])], env)
            must(walbctr(env, "upgrade", str(layout), "--rollback", "--quiet"), "rollback")
            write(args.old)
            must(walbctr(env, "up", str(layout), "--quiet"), "up after the rollback")

            write(args.new)
            recreated = measure(client, group, ports, args.interval,
                                [("down", ["down", str(layout), "--quiet"]),
                                 ("up", ["up", str(layout), "--quiet", "--yes"])], env)
        finally:
            walbctr(env, "down", str(layout), "--quiet")

    report = {"old": args.old, "new": args.new, "probe_interval_s": args.interval,
              "upgrade": upgraded, "down+up": recreated}
    print(json.dumps(report, indent=1))
    print()
    print(f"{'':10} {'total':>8} " + " ".join(f"{sid + ' down':>10} {sid + ' max':>9}"
                                              for sid in SERVERS))
    for name, r in (("upgrade", upgraded), ("down+up", recreated)):
        print(f"{name:10} {r['total_s']:7.1f}s " + " ".join(
            f"{r[sid]['unavailable_s']:9.1f}s {r[sid]['longest_outage_s']:8.1f}s"
            for sid in SERVERS))


if __name__ == "__main__":
    main()
