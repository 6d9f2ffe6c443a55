"""The keeper carries out the layout's policy on the real engine (walb-worker's duties):
a volume written over time gets its old diffs applied, its small diffs merged, a copy on
the second archive kept within the interval, and its latest snapshot verified by a
restore; each task is logged with its reason. The test double keeps real diffs.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.test_deploy import free_ports
from tests.test_keeper import wait_for
from tests.test_volume_ops import MIB, Lab, overwrite, sha
from walbctr.group import Group
from walbctr.layout.imagetag import keeper_image
from walbctr.render.compose import LABEL

POLICY = """monitor: {{host: lab, port: {port}, interval: 1, probe_interval: 0.5}}
policy:
  keep_period: 6s
  apply_interval: 2s
  merge: {{max_diffs: 3, threshold: 4, interval: 2s}}
  replicate: {{interval: 2s}}
  verify: {{interval: 1h}}
"""


@pytest.fixture
def kept_lab(tmp_path: Path, engine: Any, double_image: str, loop_vg: str) -> Iterator[Lab]:
    if engine.images.list(name=keeper_image(double_image)) == []:
        pytest.skip(f"no keeper image {keeper_image(double_image)} next to {double_image}")
    g = Lab(tmp_path, engine, double_image, loop_vg,
            extra=POLICY.format(port=free_ports(1)[0]))
    up = g.walbctr("up", str(g.path), "--plain")
    assert up.returncode == 0, up.stdout + up.stderr
    yield g
    g.walbctr("down", str(g.path), "--quiet")
    for c in engine.containers.list(all=True, filters={"label": f"{LABEL}={g.name}"}):
        c.remove(force=True)
    for c in engine.containers.list(all=True, filters={"label": f"io.walbctr.keeper={g.name}"}):
        c.remove(force=True)


def keeper_log(lab: Lab) -> str:
    found = lab.engine.containers.list(filters={"label": f"io.walbctr.keeper={lab.name}"})
    assert len(found) == 1
    return str(found[0].logs().decode(errors="replace"))


def test_the_keeper_applies_merges_replicates_and_verifies_by_policy(kept_lab: Lab) -> None:
    lab = kept_lab
    group = Group.load(lab.path)
    dev = lab.device("vol0", 2 * MIB)
    group.add("vol0", storage="s0", device=str(dev), timeout_s=120)
    gids = []
    for i in range(6):
        overwrite(dev, i * 4096, 4096)
        gids.append(group.snapshot("vol0"))

    # a second archive follows the primary within the interval
    def replicated() -> bool:
        have = [x.gid for x in group.restorable("vol0", "a1")] if \
            group.state("vol0", "a1") == "Archived" else []
        return bool(have) and max(have) >= gids[-1]
    wait_for(replicated, f"a1 to hold gid {gids[-1]}", timeout=60, pause=0.5)

    # diffs past the threshold are merged, diffs older than the keep period applied
    def shaped() -> bool:
        diffs = group.show("vol0").on("a0").diffs
        return len(diffs) < len(gids)
    wait_for(shaped, "a0's diffs of vol0 to be merged or applied", timeout=60, pause=0.5)
    time.sleep(7)  # past the keep period
    wait_for(lambda: min(x.gid for x in group.restorable("vol0")) > gids[0],
             "the oldest snapshots to be applied into the base", timeout=60, pause=0.5)

    log = keeper_log(lab)
    assert re.search(r"policy a0: replicate vol0: a1's copy of vol0 is behind", log), log
    assert re.search(r"policy a0: (merge|apply) vol0: .*done", log) or \
        re.search(r"policy a0: (merge|apply) vol0 done", log), log
    assert re.search(r"policy a0: verify vol0 done in [\d.]+ s: gid \d+ restored, hash", log), log
    assert group.restored("vol0") == []  # the verification's restore was deleted again

    # the newest snapshot still restores to the device's bytes after all of it
    latest = group.snapshot("vol0")
    group.restore("vol0", latest)
    assert lab.restored_sha("a0", "vol0", latest) == sha(dev)
