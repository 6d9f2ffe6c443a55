"""The one walbc argv: `walbc -a ADDRESS -p PORT -to SEC [-retry 0] COMMAND ARGS...`.

Every caller (readiness, health checks, the keeper's kicks, upgrade's gates, the graceful
stop, `walbctr walbc`) builds its command line here, so a change of walbc's form lands
once.
"""

from __future__ import annotations

from collections.abc import Sequence

# Enough for a graceful shutdown or a kick to be sent and answered on a loaded host.
DEFAULT_TIMEOUT_S = 10
# Upstream's walbc takes -retry for `status` and `get` only, and refuses it elsewhere
# (kick, shutdown, ...) without sending anything; those make one attempt anyway.
_RETRYABLE = ("status", "get")


def walbc_argv(port: int, args: Sequence[str], *, address: str = "127.0.0.1",
               timeout_s: int | None = DEFAULT_TIMEOUT_S) -> list[str]:
    """walbc asking the server at ADDRESS:PORT once (no retries: callers poll or report).

    `timeout_s=None` leaves walbc's own defaults, timeout and retries both, for the
    commands an operator types (`walbctr walbc`).
    """
    head = ["walbc", "-a", address, "-p", str(port)]
    if timeout_s is not None:
        head += ["-to", str(timeout_s)]
    if args and args[0] in _RETRYABLE and timeout_s is not None:
        head += ["-retry", "0"]
    return [*head, *args]
