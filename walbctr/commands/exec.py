"""Commands by server id: walbc and exec (a shell is an exec of bash)."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from walbctr.docker.containers import require_running, server_container
from walbctr.walb.walbc import walbc_argv

if TYPE_CHECKING:
    from walbctr.layout.spec import Layout


def walbc(layout: Layout, server_id: str, args: list[str]) -> int:
    """Run walbc against `server_id` from inside its own container; return walbc's status.

    Inside the container, addresses in the arguments resolve as the servers see them
    (bridge networks included), and the server itself is 127.0.0.1.
    """
    server, _engine, container = server_container(layout, server_id)
    require_running(layout, server, container)
    cmd = walbc_argv(server.port, args, timeout_s=None)
    result = container.exec_run(cmd, demux=True)
    out, err = result.output
    if out:
        sys.stdout.write(out.decode(errors="replace"))
    if err:
        sys.stderr.write(err.decode(errors="replace"))
    return int(result.exit_code)


def exec_argv(layout: Layout, server_id: str, command: list[str],
              interactive: bool) -> tuple[list[str], dict[str, str]]:
    """`docker exec` argv and environment for a command in the server's container."""
    server, engine, container = server_container(layout, server_id)
    require_running(layout, server, container)
    flags = ["-i"] + (["-t"] if interactive and sys.stdin.isatty() else [])
    return ["docker", *engine.cli_flags(), "exec", *flags, container.name, *command], \
        engine.env()


def replace_process(argv: list[str], env: dict[str, str]) -> None:
    """Hand the terminal to `docker exec` (signals, TTY and exit status pass through)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(argv[0], argv, env)
