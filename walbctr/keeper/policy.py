"""The keeper carries out the layout's policy: walb-worker's duties, one task per archive
at a time, with walb's own commands (apply, merge, replicate, restore for verification).

Each archive has its own loop. A round reads the archive (and, for the primary, the
replicas it copies to) in one process each, asks walbctr.walb.worker for the next task,
starts it with walbc, and follows it until walb reports it done (no action of its kind
running, the replica out of ReplSyncAsServer), logging the task with its reason and its
outcome. A stop request (SIGTERM) ends the loops between two rounds and the follow of a
task; walb goes on with what it started, as a shutdown of walb-worker leaves it.
Two keepers running are safe: walb refuses an action on a volume that has one running,
and the loser logs walb's refusal and moves on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from walbctr.walb import worker
from walbctr.walb.volumes import parse_count, parse_names, walbc_error
from walbctr.walb.walbc import walbc_argv

Run = Callable[[Mapping[str, list[str]], float], dict[str, tuple[int, str, str]]]
ACTION_OF = {"apply": "Apply", "merge": "Merge", "replicate": "ReplSyncAsClient",
             "verify": "Restore"}
FOLLOW_S = 1.0
# Present while walbctr upgrades the group (its content: who asks); written through
# `docker exec` into the keeper's /tmp. walbctr.layout.monitor names the same path.
POLICY_PAUSE_FILE = "/tmp/walbctr-policy-paused"


class PolicyRunner:
    def __init__(self, archives: Sequence[Any], policy: worker.Policy, run: Run,
                 log: Callable[[str], None], stop: threading.Event,
                 metrics: Any = None, task_timeout: float = 86400.0) -> None:
        self.archives = list(archives)  # ServerRefs, the primary first
        self.primary = self.archives[0]
        self.policy = policy
        self.run = run
        self.log = log
        self.stop = stop
        self.metrics = metrics
        self.task_timeout = task_timeout
        self.last_done: dict[str, dict[str, dict[str, float]]] = {}  # archive -> vol -> kind
        self.held: Callable[[], Mapping[str, str]] = dict  # servers in maintenance
        self.pause_file = POLICY_PAUSE_FILE  # present while walbctr upgrades the group
        self._was_paused = False

    # --- reading ---------------------------------------------------------------------------

    def _walbc(self, server: Any, *args: str, timeout: int = 30) -> tuple[int, str, str]:
        argv = walbc_argv(server.port, args, address=server.address, timeout_s=timeout)
        return self.run({"x": argv}, timeout + 5)["x"]

    def read(self, archive: Any) -> list[worker.ArchiveVolume]:
        """The archive's volumes as next_task needs them; replicas only for the primary."""
        replicas = self._replicas() if archive.id == self.primary.id else {}
        status, out, err = self.run({"a": worker.facts_argv(archive.address, archive.port,
                                                            True)}, 120)["a"]
        if status != 0:
            raise ValueError(f"reading {archive.id} failed: {walbc_error(err or out)}")
        return worker.parse_source(out, replicas, self.last_done.get(archive.id, {}))

    def _replicas(self) -> dict[str, dict[str, tuple[str, int | None]]]:
        wanted = {a for p in (self.policy.group, *self.policy.volumes.values())
                  if p.replicate is not None for a in p.replicate.to}
        held = self.held()
        refs = [a for a in self.archives[1:] if a.id in wanted and a.id not in held]
        results = self.run({a.id: worker.facts_argv(a.address, a.port, False) for a in refs},
                           120)
        out = {}
        for a in refs:
            status, text, _err = results[a.id]
            if status != 0:
                continue  # away: its volumes look away, no task is aimed at it
            try:
                out[a.id] = worker.parse_replica(text)
            except ValueError as err:
                self.log(f"policy: cannot read replica {a.id}: {err}")
        return out

    def _paused(self) -> bool:
        try:
            with open(self.pause_file, encoding="utf-8") as f:
                by = f.read().strip() or "walbctr"
        except OSError:
            by = ""
        if bool(by) != self._was_paused:
            self.log(f"policy: paused while {by} runs" if by else "policy: resumed")
            self._was_paused = bool(by)
        return bool(by)

    # --- one round --------------------------------------------------------------------------

    def round(self, archive: Any, now: float | None = None) -> worker.Task | None:
        """Choose and carry out one task on `archive`; the task (None: nothing to do)."""
        if self._paused() or archive.id in self.held():
            return None
        vols = self.read(archive)
        task = worker.next_task(vols, self.policy, time.time() if now is None else now)
        if task is None:
            return None
        self.log(f"policy {archive.id}: {task.kind} {task.volume}: {task.reason}")
        started = time.time()
        ok, detail = self._carry_out(archive, task)
        self.log(f"policy {archive.id}: {task.kind} {task.volume} "
                 f"{'done' if ok else 'FAILED'} in {time.time() - started:.1f} s"
                 + (f": {detail}" if detail else ""))
        key = task.kind if task.kind != "replicate" else f"replicate {task.target}"
        self.last_done.setdefault(archive.id, {}).setdefault(task.volume, {})[key] = started
        if self.metrics is not None:
            self.metrics.policy_task(archive.id, task.volume, task.kind, task.target, ok,
                                     time.time())
        return task

    def _carry_out(self, archive: Any, task: worker.Task) -> tuple[bool, str]:
        if task.kind == "verify":
            return self._verify(archive, task)
        args = list(task.args)
        if task.kind == "replicate":
            dst = next(a for a in self.archives if a.id == task.target)
            prepared = self._prepare_replica(dst, task.volume)
            if prepared:
                return False, prepared
            args += [f"{dst.address}:{dst.port}", "0"]
        status, out, err = self._walbc(archive, *args)
        if status != 0:
            return False, walbc_error(err or out)
        return self._follow(archive, task)

    def _prepare_replica(self, dst: Any, vol: str) -> str:
        """A replica without the volume gets it initialized (as walblib's replicate)."""
        status, out, err = self._walbc(dst, "get", "vol", timeout=10)
        if status == 0 and vol in parse_names(out):
            return ""
        status, out, err = self._walbc(dst, "init-vol", vol)
        return "" if status == 0 else f"init-vol on {dst.id}: {walbc_error(err or out)}"

    def _follow(self, archive: Any, task: worker.Task) -> tuple[bool, str]:
        deadline = time.monotonic() + self.task_timeout
        action = ACTION_OF[task.kind]
        while not self.stop.wait(FOLLOW_S):
            status, out, err = self._walbc(archive, "get", "num-action", task.volume, action,
                                           timeout=10)
            if status != 0:
                return False, walbc_error(err or out)
            if parse_count(out) == 0:
                return True, ""
            if time.monotonic() > deadline:
                return False, f"still running after {self.task_timeout:.0f} s"
        return False, "stopped by the keeper's shutdown; walb goes on with it"

    def _verify(self, archive: Any, task: worker.Task) -> tuple[bool, str]:
        where = next((a for a in self.archives if a.id == task.target), archive)
        vol, gid = task.volume, str(task.gid)
        status, out, err = self._walbc(where, "restore", vol, gid)
        if status != 0:
            return False, f"restore of gid {gid} on {where.id}: {walbc_error(err or out)}"
        ok, detail = self._follow(where, task)
        if ok:
            status, out, err = self._walbc(where, "bhash", vol, gid, timeout=3600)
            ok, detail = (True, f"gid {gid} restored, hash {out.strip()}") if status == 0 \
                else (False, f"bhash of gid {gid}: {walbc_error(err or out)}")
        self._walbc(where, "del-restored", vol, gid)
        return ok, detail

    def loop(self, archive: Any, every: float) -> None:
        while not self.stop.is_set():
            try:
                task = self.round(archive)
            except (ValueError, OSError) as err:
                self.log(f"policy {archive.id}: {err}")
                task = None
            if task is None:
                self.stop.wait(every)
