"""The keeper's choice of policy task (walb-worker's order), pure: no Docker."""

from __future__ import annotations

from datetime import UTC, datetime

from walbctr.walb import worker
from walbctr.walb.history import Diff, GidRange
from walbctr.walb.worker import ArchiveVolume, Merge, Policy, Replicate, Verify, VolumePolicy

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC).timestamp()
DAY = 86400


def diff(b: int, e: int, size: int = 100, mergeable: bool = True,
         compared: bool = False) -> Diff:
    return Diff(GidRange(b, b), GidRange(e, e), mergeable, compared, None, size)


def ago(seconds: float) -> datetime:
    return datetime.fromtimestamp(NOW - seconds, UTC)


def vol(name: str = "vol0", n: int = 4, age_step: float = DAY, **kw: object) -> ArchiveVolume:
    """A volume with snapshots 0..n, gid i taken (n - i) * age_step ago, and a diff each."""
    snaps = tuple((i, ago((n - i) * age_step)) for i in range(n + 1))
    diffs = tuple(diff(i, i + 1) for i in range(n))
    base = {"name": name, "state": "Archived", "applying_to": None, "snapshots": snaps,
            "diffs": diffs}
    return ArchiveVolume(**{**base, **kw})  # type: ignore[arg-type]


def pol(**kw: object) -> Policy:
    return Policy(VolumePolicy(**kw))  # type: ignore[arg-type]


def test_diffs_older_than_the_keep_period_are_applied_up_to_the_newest_such_gid() -> None:
    task = worker.next_task([vol(n=4)], pol(keep_period=int(2.5 * DAY)), NOW)
    assert task is not None and task.kind == "apply"
    assert task.args == ("apply", "vol0", "1")  # gid 1 is 3 days old, gid 2 two days


def test_nothing_is_applied_within_the_keep_period_or_before_the_apply_interval() -> None:
    assert worker.next_task([vol(n=4)], pol(keep_period=10 * DAY), NOW) is None
    done = vol(n=4, last_done={"apply": NOW - 60})
    assert worker.next_task([done], pol(keep_period=DAY), NOW) is None


def test_an_interrupted_apply_is_finished_first() -> None:
    task = worker.next_task([vol(applying_to=3)], pol(), NOW)
    assert task is not None and task.args == ("apply", "vol0", "3")


def test_a_busy_or_paused_volume_gets_no_task() -> None:
    assert worker.next_task([vol(busy=True)], pol(keep_period=DAY), NOW) is None
    assert worker.next_task([vol()], pol(keep_period=DAY, paused=True), NOW) is None


def test_a_volume_past_the_merge_threshold_is_merged_with_walbs_merge_form() -> None:
    task = worker.next_task([vol(n=6)], pol(merge=Merge(max_diffs=3, threshold=5)), NOW)
    assert task is not None and task.kind == "merge"
    assert task.args == ("merge", "vol0", "0", "gid", "3")


def test_a_merge_never_spans_a_gid_a_replica_stands_at() -> None:
    v = vol(n=6, replica_gids={"a1": 2})
    b, e = worker.merge_range(v.diffs, 1 << 30, 10, frozenset({2}))
    assert (b, e) in ((0, 2), (2, 6))
    assert worker.merge_range(v.diffs, 1 << 30, 10) == (0, 6)


def test_merge_picks_the_run_of_smallest_diffs_and_skips_compared_ones() -> None:
    diffs = [diff(0, 1, 500), diff(1, 2, 500), diff(2, 3, 10, compared=True),
             diff(3, 4, 10), diff(4, 5, 10)]
    assert worker.merge_range(diffs, 1 << 30, 10) == (3, 5)
    assert worker.merge_range([diff(0, 1), diff(1, 2, mergeable=False)], 1 << 30, 10) is None


def test_a_replica_behind_is_replicated_and_the_longest_waiting_pair_goes_first() -> None:
    p = pol(replicate=Replicate(to=("a1", "a2"), interval=600))
    v = vol(n=3, replica_gids={"a1": 3, "a2": 1}, replica_states={"a1": "Archived",
                                                                  "a2": "Archived"})
    task = worker.next_task([v], p, NOW)
    assert task is not None and (task.kind, task.target, task.args) == (
        "replicate", "a2", ("replicate", "vol0", "gid", "3"))
    recent = vol(n=3, replica_gids={"a2": 1}, replica_states={"a2": "Archived"},
                 last_done={"replicate a2": NOW - 10})
    assert worker.next_task([recent], p, NOW) is None


def test_a_replica_that_is_away_or_busy_is_left_alone_and_a_clear_one_gets_a_full_copy() -> None:
    p = pol(replicate=Replicate(to=("a1",)))
    away = vol(n=2, replica_states={"a1": "unknown"})
    assert worker.next_task([away], p, NOW) is None
    fresh = vol(n=2, replica_gids={"a1": None}, replica_states={"a1": "Clear"})
    task = worker.next_task([fresh], p, NOW)
    assert task is not None and "a full copy" in task.reason


def test_max_send_size_bounds_how_far_one_replication_goes() -> None:
    diffs = [diff(i, i + 1, 100) for i in range(10)]
    assert worker.gid_to_send(diffs, 250, 2) == 5
    assert worker.gid_to_send(diffs, 0, 2) is None


def test_verification_is_due_after_its_interval() -> None:
    p = pol(verify=Verify(interval=DAY))
    task = worker.next_task([vol(n=2)], p, NOW)
    assert task is not None and task.kind == "verify" and task.args == ("restore", "vol0", "2")
    assert worker.next_task([vol(n=2, last_done={"verify": NOW - 60})], p, NOW) is None


def test_the_policy_reads_as_the_keeper_gets_it_with_volume_overrides() -> None:
    p = worker.parse_policy({"keep_period": 3600, "merge": {"max_diffs": 4, "max_size": 1000,
                                                            "threshold": 8, "interval": 60},
                             "replicate": {"to": None, "interval": 30, "max_send_size": 0},
                             "volumes": {"vol9": {"keep_period": None, "paused": True}}},
                            ["a1"])
    assert p.of("vol0").keep_period == 3600 and p.of("vol0").replicate == Replicate(("a1",), 30, 0)
    assert p.of("vol9").keep_period is None and p.of("vol9").paused
    assert p.of("vol9").merge == Merge(4, 1000, 8, 60)


def test_walbctr_and_the_keeper_name_the_same_policy_pause_file() -> None:
    from walbctr.keeper import policy
    from walbctr.layout import monitor

    assert monitor.POLICY_PAUSE_FILE == policy.POLICY_PAUSE_FILE


class _Ref:
    def __init__(self, sid: str) -> None:
        self.id, self.role, self.address, self.port = sid, "archive", "127.0.0.1", 1


def test_the_keeper_starts_no_policy_task_while_paused_or_in_maintenance(tmp_path: object) -> None:
    import threading
    from pathlib import Path

    from walbctr.keeper.policy import PolicyRunner

    asked: list[object] = []

    def run(argvs: object, _timeout: float) -> dict[str, tuple[int, str, str]]:
        asked.append(argvs)
        return {"a": (1, "", "no server")}

    lines: list[str] = []
    runner = PolicyRunner([_Ref("a0"), _Ref("a1")], pol(keep_period=DAY), run, lines.append,
                          threading.Event())
    pause = Path(str(tmp_path)) / "paused"
    runner.pause_file = str(pause)
    pause.write_text("upgrade")
    assert runner.round(runner.archives[0]) is None and asked == []
    assert lines == ["policy: paused while upgrade runs"]
    pause.unlink()
    runner.held = lambda: {"a0": "hostA"}
    assert runner.round(runner.archives[0]) is None and asked == []
    assert lines[-1] == "policy: resumed"
