"""Server command lines: exactly what each container runs (walblib's to_cmd_string)."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from walbctr.layout.server import Role, Server

if TYPE_CHECKING:
    from walbctr.layout.spec import Layout


def server_args(server: Server, layout: Layout) -> list[str]:
    """argv of `server`: identity and place first (as in the seed), then role, then tunables."""
    args = [
        server.role.executable,
        "-p", str(server.port),
        "-b", server.base_dir,
        "-id", server.id,
        "-l", server.log_path,
    ]
    if server.role is Role.STORAGE:
        # Derived, never typed: the primary archive and the proxies in priority order.
        args += ["-archive", layout.primary_archive.endpoint]
        args += ["-proxy", ",".join(p.endpoint for p in layout.proxies_by_priority)]
    for key, flag in server.flags:
        if key == "keepalive":
            args += _keepalive(server.options.get(key))
        elif key in server.options:
            args += _option(flag, server.options[key])
    return args


def _option(flag: str, value: Any) -> list[str]:
    if isinstance(value, bool):
        return [flag] if value else []
    return [flag, str(value)]


def _keepalive(value: Mapping[str, int | None] | bool | None) -> list[str]:
    # A mapping, even an empty one, turns keep-alive on: `{}` is `true` with every setting
    # at walb's default, as `{idle: 60}` leaves interval and count at theirs.
    if value is None or value is False:
        return []
    args = ["-ka"]
    if isinstance(value, Mapping):
        for key, flag in (("idle", "-kaidle"), ("interval", "-kaintvl"), ("count", "-kacnt")):
            if value.get(key) is not None:
                args += [flag, str(value[key])]
    return args


def command_line(server: Server, layout: Layout) -> str:
    """The argv as one shell-quoted line."""
    return shlex.join(server_args(server, layout))
