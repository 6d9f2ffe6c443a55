"""Is a walb server ready? Upstream's own readiness probe, `walbc get host-type`.

It answers the server's role once the server listens, touches no device, and is what
Docker's health check, `walbctr up`/`restart`/`upgrade` and the keeper all ask. Pure:
the argv and the verdict; the callers run it where the server can be reached.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence

from walbctr.walb.walbc import walbc_argv

# While walbctr waits for a server it asks this often; a server answers about 0.3 s after
# its container starts, so a tier is seen ready within a poll of being so.
POLL_S = 0.15


def host_type_argv(port: int, address: str = "127.0.0.1", timeout_s: int = 3) -> list[str]:
    """walbc asking one server for its role, once (no retries: the caller polls)."""
    return walbc_argv(port, ["get", "host-type"], address=address, timeout_s=timeout_s)


def answers_as(role: str, exit_code: int, output: str) -> bool:
    """True when the probe's result says the server is up and is the role (`archive`,
    `proxy`, `storage`) it should be."""
    return exit_code == 0 and output.strip() == role


def batch_argv(targets: Sequence[tuple[str, str, int]]) -> list[str]:
    """One exec that asks many servers at once: (id, address, port) each, in parallel.

    A `docker exec` costs far more than the walbc it runs (on a 2-core machine 24 execs
    took 0.8 s, one exec running 24 walbc 0.15 s), and a tier of 24 storages was asked
    that way every poll. Each answer is one line, `ID STATUS OUTPUT`, written at once so
    that parallel answers do not interleave. The exec exits 0 only when every walbc did,
    so the engine's exec_die events still witness when the servers answered.
    """
    parts = []
    for i, (sid, address, port) in enumerate(targets):
        probe = shlex.join(host_type_argv(port, address, timeout_s=1))
        parts.append(f"( out=$({probe} 2>/dev/null); rc=$?; echo {shlex.quote(sid)} $rc $out;"
                     f" exit $rc ) & p{i}=$!;")
    waits = " ".join(f"wait $p{i} || rc=1;" for i in range(len(targets)))
    return ["sh", "-c", " ".join(parts) + f" rc=0; {waits} exit $rc"]


def batch_answers(output: str, roles: Mapping[str, str]) -> dict[str, bool]:
    """Each asked server's verdict from batch_argv's output; one with no line did not
    answer."""
    verdict = dict.fromkeys(roles, False)
    for line in output.splitlines():
        sid, _, rest = line.strip().partition(" ")
        code, _, said = rest.partition(" ")
        if sid in roles and code.isdigit():
            verdict[sid] = answers_as(roles[sid], int(code), said)
    return verdict
