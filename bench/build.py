#!/usr/bin/env python3
"""Build speed and image size (issue 3).

Goals: a cold containerized build within 1.15x of a native `make -j2 core` on the same
machine; a no-change rebuild under 5 s; the runtime image at most 150 MB.

    python3 bench/build.py --source DIR [--skip-native]

DIR is a walb-tools tree (for the real numbers, a copy of upstream; never commit it). The
native build needs the build packages on this machine (g++ make libaio-dev libsnappy-dev
liblzma-dev zlib1g-dev). The containerized builds reuse the base images if present, as
an operator's second build would; "cold" means no cached layer of the walb-tools image.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from walbctr.image.source import copy_tree


def timed(cmd: list[str], cwd: Path | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    run = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    took = time.perf_counter() - start
    if run.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{run.stderr[-3000:]}")
    return took, run.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", required=True, type=Path)
    parser.add_argument("--skip-native", action="store_true")
    args = parser.parse_args()
    jobs = os.cpu_count() or 2
    walbctr = [sys.executable, "-m", "walbctr"]

    native = None
    if not args.skip_native:
        with tempfile.TemporaryDirectory() as tmp:
            copy_tree(args.source, Path(tmp))
            native, _ = timed(["make", f"-j{jobs}", "core", "DISABLE_COMMIT_ID=1"], Path(tmp))
        print(f"native make -j{jobs} core:          {native:7.1f} s")

    cold, out = timed([*walbctr, "build", "--source", str(args.source), "--no-cache", "-q"])
    tag = out.split()[0]
    ratio = f" ({cold / native:.2f}x native; goal <= 1.15x)" if native else ""
    print(f"walbctr build, cold (--no-cache):   {cold:7.1f} s{ratio}")

    again, _ = timed([*walbctr, "build", "--source", str(args.source), "-q"])
    print(f"walbctr build, no change:           {again:7.1f} s (goal < 5 s)")

    _, size = timed(["docker", "image", "inspect", "-f", "{{.Size}}", tag])
    print(f"image {tag}: {int(size) / 1e6:.1f} MB (goal <= 150 MB)")


if __name__ == "__main__":
    main()
