#!/usr/bin/env python3
"""Many hosts (issue 5): image push per host, and `up` across engines versus one engine.

    python3 bench/many_hosts.py --image walbctr/walb-tools:TAG [--runs 3]
    python3 bench/many_hosts.py --image walbctr/walb-tools:TAG --ssh [--runs 3]

Starts three engines with tests/harness (reported: set-up time), pushes the image to
them (reported: seconds and MB per host, and the time to skip hosts that have it), then
brings the minimal layout up cold, alternately on the three engines and with all three
hosts on the local engine, and reports the medians and their ratio.

--ssh (issue 14) reaches the same three engines over SSH instead (tests/harness/ssh.py:
sshd on every host, `engine: ssh://root@hostX`) and compares cold `up` and `status`
with the engines' unix sockets, over SSH with one reused connection per host
(ControlMaster/ControlPersist, as README advises) and over SSH without it. It also
counts the ssh processes each command starts.

--seed-large (issue 12) brings the seed's larger layout (examples/seed-large.yaml: two
archives, two proxies, two storages on six engines, without its monitor) up cold with
`walbctr up`, and compares it with what a user without walbctr would do on the files
`walbctr render` writes: `docker compose up -d --wait` against each host's engine, the
hosts of a tier in parallel, tier after tier. Compose is also timed on the same files
with the old 2 s health interval: these engines (Docker 20.10, API 1.41) get a 10 s
interval without start_interval, which would flatter the first ratio.

    python3 bench/many_hosts.py --image walbctr/walb-tools:TAG --seed-large [--runs 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import docker
import yaml

from tests.harness import hosts as harness
from tests.harness.loopvg import loop_vg
from tests.harness.ssh import SshSetup

NAMES = ["hostA0", "hostP0", "hostS0"]
SEED_LARGE = Path(__file__).resolve().parent.parent / "examples" / "seed-large.yaml"
TIERS = [["hostA0", "hostA1"], ["hostP0", "hostP1"], ["hostS0", "hostS1"]]


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    took = time.perf_counter() - start
    if out.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{out.stdout[-2000:]}{out.stderr[-3000:]}")
    return took, out.stdout


def layout(group: str, image: str, vg: str, engines: Mapping[str, str | None],
           base: str = "/var/walb-bench") -> str:
    lines = [f"group: {group}", f"image: {image}", "hosts:"]
    for h, url in engines.items():
        lines.append(f"  {h}: {{address: {h}" + (f", engine: '{url}'}}" if url else "}"))
    lines += [f"defaults: {{base_dir: '{base}/{{group}}/{{id}}', privileged: false, "
              "nofile: 16384, stop_grace_period: 10}",
              f"archives: [{{id: a0, host: hostA0, vg: {vg}}}]",
              "proxies: [{id: p0, host: hostP0, port: 10001}]",
              "storages: [{id: s0, host: hostS0, port: 10002}]"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--image", required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--ssh", action="store_true",
                        help="compare SSH engines with unix sockets instead")
    parser.add_argument("--seed-large", action="store_true",
                        help="time cold up of the seed's larger layout on six engines "
                             "against compose by hand")
    args = parser.parse_args()
    if args.ssh:
        ssh_bench(args.image, args.runs)
        return
    if args.seed_large:
        seed_large_bench(args.image, args.runs)
        return
    walbctr = [sys.executable, "-m", "walbctr"]
    engine = docker.from_env()
    with tempfile.TemporaryDirectory() as tmp_name, \
            loop_vg(engine, args.image, Path(tmp_name), "walbctr_bench") as vg:
        tmp = Path(tmp_name)
        started = time.monotonic()
        hosts = harness.start_hosts(NAMES, Path("/var/tmp/walbctr-bench") / secrets.token_hex(3))
        print(f"harness: {len(hosts)} engines up in {time.monotonic() - started:.1f} s")
        env = {**os.environ, "WALBCTR_STATE_DIR": str(tmp / "state")}
        try:
            many = tmp / "many.yaml"
            many.write_text(layout("benchmany", args.image, vg,
                                   {h: hosts[h].url for h in NAMES}))
            one = tmp / "one.yaml"
            one.write_text(layout("benchone", args.image, vg, {h: None for h in NAMES},
                                  base=str(tmp / "data"))
                           .replace("address: hostA0", "address: 127.0.0.1")
                           .replace("address: hostP0", "address: 127.0.0.1")
                           .replace("address: hostS0", "address: 127.0.0.1"))
            took, out = run([*walbctr, "push", str(many)], env)
            for line in out.splitlines():
                m = re.match(r"(\S+): loaded .*, ([\d.]+) MB in ([\d.]+) s", line)
                if m:
                    print(f"push to {m.group(1)}: {m.group(2)} MB in {m.group(3)} s")
            print(f"push to all three at once: {took:.1f} s")
            took, _ = run([*walbctr, "push", str(many)], env)
            print(f"push again, every host already has it (skip): {took:.2f} s")
            t_many: list[float] = []
            t_one: list[float] = []
            for _ in range(args.runs):
                for path, times in ((many, t_many), (one, t_one)):
                    took, _ = run([*walbctr, "up", str(path), "--quiet"], env)
                    times.append(took)
                    run([*walbctr, "down", str(path), "--quiet"], env)
            m_many, m_one = statistics.median(t_many), statistics.median(t_one)
            print(f"cold up, median of {args.runs}: three engines {m_many:.2f} s, one engine "
                  f"{m_one:.2f} s: ratio {m_many / m_one:.2f}")
        finally:
            for path in (tmp / "many.yaml", tmp / "one.yaml"):
                subprocess.run([*walbctr, "down", str(path), "--quiet"], env=env, check=False,
                               capture_output=True)
            harness.stop_hosts(hosts)


def one_ssh_times(ssh: SshSetup, env: dict[str, str]) -> tuple[float, float]:
    """The median of five cold `ssh hostA0 docker version`, and one `ssh true` after them."""
    times = []
    warm = 0.0
    for _ in range(5):
        ssh.close_masters()
        took, _ = run(["ssh", "root@hostA0", "docker", "version", "--format",
                       "{{.Server.Version}}"], env)
        times.append(took)
        warm, _ = run(["ssh", "root@hostA0", "true"], env)
    return statistics.median(times), warm


def cold_up_status(ssh: SshSetup, envs: dict[str, dict[str, str]], paths: dict[str, Path],
                   logs: dict[str, Path], runs: int
                   ) -> tuple[dict[str, tuple[float, float]], dict[str, dict[str, int]]]:
    """Median cold `up` and `status` per way of reaching the engines, and the ssh processes
    each started (counted from the wrapper's log)."""
    walbctr = [sys.executable, "-m", "walbctr"]
    ups: dict[str, list[float]] = {n: [] for n in envs}
    statuses: dict[str, list[float]] = {n: [] for n in envs}
    spawned: dict[str, dict[str, int]] = {n: {} for n in logs}
    for _ in range(runs):
        for name, env in envs.items():
            ssh.close_masters()  # cold: no connection left from the last command
            for log in logs.values():
                log.write_text("")
            took, _ = run([*walbctr, "up", str(paths[name]), "--quiet"], env)
            ups[name].append(took)
            if name in logs:
                spawned[name]["up"] = len(logs[name].read_text().splitlines())
                logs[name].write_text("")
            took, _ = run([*walbctr, "status", str(paths[name])], env)
            statuses[name].append(took)
            if name in logs:
                spawned[name]["status"] = len(logs[name].read_text().splitlines())
            run([*walbctr, "down", str(paths[name]), "--quiet"], env)
    med = {n: (statistics.median(ups[n]), statistics.median(statuses[n])) for n in envs}
    return med, spawned


def ssh_bench(image: str, runs: int) -> None:
    walbctr = [sys.executable, "-m", "walbctr"]
    engine = docker.from_env()
    ssh = SshSetup.create()
    with tempfile.TemporaryDirectory() as tmp_name, \
            loop_vg(engine, image, Path(tmp_name), "walbctr_bench") as vg:
        tmp = Path(tmp_name)
        started = time.monotonic()
        hosts = harness.start_hosts(NAMES, Path("/var/tmp/walbctr-bench") / secrets.token_hex(3),
                                    prepare=ssh.prepare)
        print(f"harness: {len(hosts)} engines with sshd up in {time.monotonic() - started:.1f} s")
        base = {**os.environ, "WALBCTR_STATE_DIR": str(tmp / "state")}
        logs = {"mux": tmp / "mux.log", "nomux": tmp / "nomux.log"}
        envs = {
            "unix": base,
            "mux": {**ssh.write("mux", log=logs["mux"]), **{"WALBCTR_STATE_DIR":
                                                            base["WALBCTR_STATE_DIR"]}},
            "nomux": {**ssh.write("nomux", mux=False, log=logs["nomux"]),
                      **{"WALBCTR_STATE_DIR": base["WALBCTR_STATE_DIR"]}},
        }
        paths = {}
        for name in envs:
            urls = {h: hosts[h].url if name == "unix" else f"ssh://root@{h}" for h in NAMES}
            paths[name] = tmp / f"{name}.yaml"
            paths[name].write_text(layout(f"bench{name}", image, vg, urls))
        try:
            run([*walbctr, "push", str(paths["unix"])], base)
            one_ssh = {name: one_ssh_times(ssh, envs[name]) for name in ("mux", "nomux")}
            print(f"one `ssh hostA0 docker version`, no master: "
                  f"{one_ssh['nomux'][0]:.3f} s; `ssh hostA0 true` through a warm master: "
                  f"{one_ssh['mux'][1]:.3f} s, without one: {one_ssh['nomux'][1]:.3f} s")
            med, spawned = cold_up_status(ssh, envs, paths, logs, runs)
            for name, label in (("unix", "unix sockets"), ("mux", "SSH, ControlMaster"),
                                ("nomux", "SSH, no ControlMaster")):
                ssh_count = (f"; ssh started: up {spawned[name]['up']}, status "
                             f"{spawned[name]['status']}" if name in spawned else "")
                print(f"{label}: cold up {med[name][0]:.2f} s, status right after "
                      f"{med[name][1]:.2f} s (median of {runs}){ssh_count}")
            for name in ("mux", "nomux"):
                print(f"ratio {name} / unix: up {med[name][0] / med['unix'][0]:.2f}, "
                      f"status {med[name][1] / med['unix'][1]:.2f}")
        finally:
            for name, path in paths.items():
                subprocess.run([*walbctr, "down", str(path), "--quiet"], env=envs[name],
                               check=False, capture_output=True)
            ssh.remove()
            harness.stop_hosts(hosts)


def seed_large_layout(group: str, image: str, vg: str, engines: dict[str, str]) -> str:
    """examples/seed-large.yaml on the harness's engines, less its monitor block."""
    doc = yaml.safe_load(SEED_LARGE.read_text())
    doc.pop("monitor")
    doc["group"], doc["image"] = group, image
    doc["hosts"] = {h: {"address": h, "engine": url} for h, url in engines.items()}
    # What the harness's engines need (tests/test_many_hosts.py): no privileged
    # containers inside them, their open-files limit; a short grace keeps `down` quick.
    doc["defaults"].update(base_dir=f"/var/walb-{group}/{{id}}",
                           log_path=f"/var/walb-{group}/{{id}}.log", privileged=False,
                           nofile=16384, stop_grace_period=10)
    for archive in doc["archives"]:
        archive["vg"] = vg
    return yaml.safe_dump(doc, sort_keys=False)


def compose_tiers(files: dict[str, Path], engines: dict[str, str], *args: str) -> None:
    """`docker compose ARGS` on each host's file against its engine, the hosts of a tier
    in parallel, tier after tier (reverse order for down)."""
    tiers = TIERS if args[0] == "up" else TIERS[::-1]
    for tier in tiers:
        procs = {h: subprocess.Popen(["docker", "compose", "-f", str(files[h]), *args],
                                     env={**os.environ, "DOCKER_HOST": engines[h]},
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True) for h in tier}
        outs = {h: p.communicate()[0] for h, p in procs.items()}
        failed = [f"{h}: {outs[h][-2000:]}" for h, p in procs.items() if p.returncode != 0]
        if failed:
            sys.exit(f"failed: docker compose {' '.join(args)}\n" + "\n".join(failed))


def seed_large_bench(image: str, runs: int) -> None:
    walbctr = [sys.executable, "-m", "walbctr"]
    engine = docker.from_env()
    names = [h for tier in TIERS for h in tier]
    with tempfile.TemporaryDirectory() as tmp_name, \
            loop_vg(engine, image, Path(tmp_name), "walbctr_bench") as vg:
        tmp = Path(tmp_name)
        started = time.monotonic()
        workdir = Path("/var/tmp/walbctr-bench") / secrets.token_hex(3)
        hosts = harness.start_hosts(names, workdir)
        print(f"harness: {len(hosts)} engines up in {time.monotonic() - started:.1f} s")
        env = {**os.environ, "WALBCTR_STATE_DIR": str(tmp / "state")}
        engines = {h: hosts[h].url for h in names}
        group = f"large{secrets.token_hex(3)}"
        path = tmp / "seed-large.yaml"
        path.write_text(seed_large_layout(group, image, vg, engines))
        # The engines are Docker 20.10 (API 1.41): their Compose refuses start_interval,
        # render's default leaves it out, and so does `walbctr up` there: the same services.
        run([*walbctr, "render", str(path), "-o", str(tmp / "compose")], env)
        rendered = {h: tmp / "compose" / group / f"{h}.yaml" for h in names}
        legacy = {}
        for h, file in rendered.items():
            legacy[h] = tmp / "legacy" / f"{h}.yaml"
            legacy[h].parent.mkdir(exist_ok=True)
            legacy[h].write_text(re.sub(r"interval: \d+s", "interval: 2s", file.read_text()))
        times: dict[str, list[float]] = {k: [] for k in ("walbctr", "compose", "legacy")}
        try:
            took, _ = run([*walbctr, "push", str(path)], env)
            print(f"push to six engines: {took:.1f} s")
            for _ in range(runs):
                took, _ = run([*walbctr, "up", str(path), "--quiet"], env)
                times["walbctr"].append(took)
                run([*walbctr, "down", str(path), "--quiet"], env)
                for key, files in (("compose", rendered), ("legacy", legacy)):
                    start = time.perf_counter()
                    compose_tiers(files, engines, "up", "-d", "--wait")
                    times[key].append(time.perf_counter() - start)
                    compose_tiers(files, engines, "down", "-t", "10")
            med = {k: statistics.median(v) for k, v in times.items()}
            print(f"seed's larger layout, six engines, cold up, median of {runs}: walbctr up "
                  f"{med['walbctr']:.2f} s; compose up -d --wait by hand, tier by tier, on the "
                  f"same files {med['compose']:.2f} s (ratio "
                  f"{med['walbctr'] / med['compose']:.2f}); on the same files with the old 2 s "
                  f"interval {med['legacy']:.2f} s (ratio {med['walbctr'] / med['legacy']:.2f})")
            for key, label in (("walbctr", "walbctr up"), ("compose", "compose, rendered"),
                               ("legacy", "compose, 2 s interval")):
                print(f"  {label} runs: {', '.join(f'{t:.2f}' for t in times[key])}")
        finally:
            subprocess.run([*walbctr, "down", str(path), "--quiet"], env=env, check=False,
                           capture_output=True)
            for files in (rendered, legacy):
                for h, file in files.items():
                    subprocess.run(["docker", "compose", "-f", str(file), "down", "-t", "10"],
                                   env={**os.environ, "DOCKER_HOST": engines[h]},
                                   check=False, capture_output=True)
            harness.stop_hosts(hosts)
            with contextlib.suppress(OSError):  # stop_hosts empties it, leaves it
                workdir.rmdir()


if __name__ == "__main__":
    main()
