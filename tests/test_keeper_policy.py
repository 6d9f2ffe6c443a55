"""The keeper carries out the layout's policy on the real engine (walb-worker's duties):
a volume written over time gets its old diffs applied, its small diffs merged, a copy on
the second archive kept within the interval, and its latest snapshot verified by a
restore; each task is logged with its reason. The test double keeps real diffs.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.test_deploy import free_ports
from tests.test_keeper import wait_for
from tests.test_volume_ops import MIB, Lab, overwrite, running, sha
from walbctr.group import Group
from walbctr.layout.imagetag import keeper_image

POLICY = """monitor: {{host: lab, port: {port}, interval: 1, probe_interval: 0.5}}
policy:
  keep_period: 6s
  apply_interval: 2s
  merge: {{max_diffs: 3, threshold: 4, interval: 2s}}
  replicate: {{interval: 2s}}
  verify: {{interval: 1h}}
"""


def make_lab(tmp_path: Path, engine: Any, image: str, vg: str, policy: str) -> Lab:
    if engine.images.list(name=keeper_image(image)) == []:
        pytest.skip(f"no keeper image {keeper_image(image)} next to {image}")
    port = free_ports(1)[0]
    g = Lab(tmp_path, engine, image, vg, extra=policy.format(port=port))
    g.metrics_port = port  # type: ignore[attr-defined]  # as run_prometheus reads it
    return g


@pytest.fixture
def kept_lab(tmp_path: Path, engine: Any, double_image: str, loop_vg: str) -> Iterator[Lab]:
    yield from running(make_lab(tmp_path, engine, double_image, loop_vg, POLICY))


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
    print("\n".join(line for line in log.splitlines() if "policy" in line))  # for -s
    assert re.search(r"policy a0: replicate vol0: a1's copy of vol0 is behind", log), log
    assert re.search(r"policy a0: (merge|apply) vol0: .*done", log) or \
        re.search(r"policy a0: (merge|apply) vol0 done", log), log
    assert re.search(r"policy a0: verify vol0 done in [\d.]+ s: gid \d+ restored, hash", log), log
    assert group.restored("vol0") == []  # the verification's restore was deleted again

    # status --volumes shows the verification and the replica's lag on the primary's row
    rows = json.loads(lab.walbctr("status", str(lab.path), "--volumes", "--json").stdout)
    a0 = next(r for r in rows if r["server"] == "a0" and r["volume"] == "vol0")
    assert (a0["verified"] or "").startswith("ok at "), a0
    assert a0["lag_dest"] == "a1" and a0["lag_s"] is not None, a0

    # the newest snapshot still restores to the device's bytes after all of it
    latest = group.snapshot("vol0")
    group.restore("vol0", latest)
    assert lab.restored_sha("a0", "vol0", latest) == sha(dev)


FAILING_VERIFY = """monitor: {{host: lab, port: {port}, interval: 1, probe_interval: 0.5}}
policy:
  verify: {{interval: 1h, archive: a1}}
"""


def test_a_verification_that_fails_is_exported_and_fires_its_alert_in_prometheus(
        tmp_path: Path, engine: Any, double_image: str, loop_vg: str) -> None:
    from tests.test_alerting import quick_rules
    from tests.test_keeper import run_prometheus

    lab_gen = running(make_lab(tmp_path, engine, double_image, loop_vg, FAILING_VERIFY))
    lab = next(lab_gen)
    try:
        group = Group.load(lab.path)
        dev = lab.device("vol0", 1 * MIB)
        group.add("vol0", storage="s0", device=str(dev), timeout_s=120)
        # a1 never got vol0 (no replicate policy): restoring it there fails
        proms = run_prometheus(lab, tmp_path, double_image, {}, quick_rules())  # type: ignore[arg-type]
        prom = next(proms)
        try:
            wait_for(lambda: prom.value('walb_volume_verify_ok{archive="a1",volume="vol0"}')
                     == 0, "the failed verification in Prometheus", timeout=60, pause=0.5)
            firing = wait_for(lambda: prom.query('ALERTS{alertname="WalbVerifyFailed",'
                                                 'alertstate="firing"}'),
                              "WalbVerifyFailed to fire", timeout=60, pause=0.5)
            assert any(("volume", "vol0") in labels for labels in firing), firing
        finally:
            next(proms, None)
        assert re.search(r"policy a0: verify vol0 FAILED in [\d.]+ s: restore of gid \d+ on a1",
                         keeper_log(lab)), keeper_log(lab)
    finally:
        next(lab_gen, None)
