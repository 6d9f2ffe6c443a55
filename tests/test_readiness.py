"""The readiness probe's batch form: many servers asked from one exec."""

from __future__ import annotations

import subprocess
from pathlib import Path

from walbctr.layout.server import Role
from walbctr.walb.readiness import batch_answers, batch_argv, host_type_argv


def test_each_server_is_judged_by_its_own_line() -> None:
    roles = {"s0": Role.STORAGE, "s1": Role.STORAGE, "p0": Role.PROXY, "s2": Role.STORAGE,
             "s3": Role.STORAGE}
    output = ("s1 0 storage\n"
              "p0 0 storage\n"  # answers, but is not the role it should be
              "s0 1\n"  # walbc failed: refused, or timed out
              "garbage line\n"
              "s2 0 storage\n")  # s3 has no line: its probe never finished
    assert batch_answers(output, roles) == {"s0": False, "s1": True, "p0": False,
                                            "s2": True, "s3": False}


def test_a_server_not_asked_is_not_reported() -> None:
    assert batch_answers("x9 0 storage\n", {"s0": Role.STORAGE}) == {"s0": False}


def test_the_batch_asks_each_server_as_the_single_probe_would(tmp_path: Path) -> None:
    # A stand-in walbc on PATH that prints its arguments: the shell script must pass each
    # server's own probe through unchanged and report its exit status on its own line.
    fake = tmp_path / "walbc"
    fake.write_text('#!/bin/sh\necho "$*"\ncase "$*" in *"-p 2"*) exit 3;; esac\n')
    fake.chmod(0o755)
    argv = batch_argv([("s0", "s0", 1), ("s1", "10.0.0.2", 2)])
    run = subprocess.run(argv, capture_output=True, text=True, check=False,
                         env={"PATH": f"{tmp_path}:/usr/bin:/bin"})
    lines = sorted(run.stdout.splitlines())
    assert lines == [f"s0 0 {' '.join(host_type_argv(1, 's0', timeout_s=1)[1:])}",
                     f"s1 3 {' '.join(host_type_argv(2, '10.0.0.2', timeout_s=1)[1:])}"]
    # One server silent: the exec fails, so the engine's exec_die does not claim them all.
    assert run.returncode == 1
    every = subprocess.run(batch_argv([("s0", "s0", 1), ("s2", "s2", 5)]), check=False,
                           capture_output=True, env={"PATH": f"{tmp_path}:/usr/bin:/bin"})
    assert every.returncode == 0
