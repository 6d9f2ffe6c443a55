"""Is a walb server ready? Upstream's own readiness probe, `walbc get host-type`.

It answers the server's role once the server listens, touches no device, and is what
Docker's health check, `walbctr up`/`restart`/`upgrade` and the keeper all ask. Pure:
the argv and the verdict; the callers run it where the server can be reached.
"""

from __future__ import annotations

from walbctr.server import Role

# While walbctr waits for a server it asks this often; a server answers about 0.3 s after
# its container starts, so a tier is seen ready within a poll of being so.
POLL_S = 0.15


def host_type_argv(port: int, address: str = "127.0.0.1", timeout_s: int = 3) -> list[str]:
    """walbc asking one server for its role, once (no retries: the caller polls)."""
    return ["walbc", "-a", address, "-p", str(port), "-to", str(timeout_s), "-retry", "0",
            "get", "host-type"]


def answers_as(role: Role, exit_code: int, output: str) -> bool:
    """True when the probe's result says the server is up and is the role it should be."""
    return exit_code == 0 and output.strip() == role.value
