"""What the new server of a `replace` needs on its host, checked before anything is
touched: check-host's checks of that one server (image, privileges, its VG, directories,
port), a base dir that holds no walb volume yet (a server started on another's leftovers
takes them for its own: a proxy would send old wdiffs, a storage open old devices), and
for a storage every volume's walb device, as the new storage's container will see it.

The probes are check-host's throwaway containers: read-only mounts of existing paths
only, layout values as arguments, removed whatever happens.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from walbctr.commands.checkhost import FAIL, PROBE_GROUP_LABEL, WARN, check_server
from walbctr.docker.fleet import Fleet
from walbctr.docker.throwaway import MissingHostPathError, probe, sh
from walbctr.errors import WalbctrError, last_line
from walbctr.layout.server import Role, Server

if TYPE_CHECKING:
    from walbctr.docker.engine import Engine
    from walbctr.layout.spec import Layout

# walb keeps one directory per volume in a server's base dir, whatever the role.
_VOLUME_DIRS = ('for d in /base/* /base/.[!.]* /base/..?*; do '
                '[ -d "$d" ] && printf "%s\\n" "${d##*/}"; done; exit 0')
_MISSING = 'for p in "$@"; do [ -e "$p" ] || printf "%s\\n" "$p"; done; exit 0'


def new_server_problems(layout: Layout, server: Server, devices: Mapping[str, str],
                        fresh: bool) -> tuple[list[str], list[str]]:
    """(what refuses the replace, what only warns), each in the operator's words.
    `fresh`: the new server does not run yet, so its base dir must hold nothing of walb's
    and the devices must be there before it starts."""
    checks = check_server(layout, server)
    failures = [f"host {c.host}: {c.name}: {c.detail}" for c in checks if c.result == FAIL]
    warnings = [f"host {c.host}: {c.name}: {c.detail}" for c in checks if c.result == WARN]
    if failures or not fresh:
        return failures, warnings
    engine = Fleet(layout, server.host).engines[server.host]
    left = _volume_dirs(engine, layout, server)
    if left:
        failures.append(
            f"host {server.host}: {server.id}'s base dir {server.base_dir} holds "
            f"{', '.join(left)} already, which walb would take for {server.id}'s own volumes: "
            "move them away, or give the new server another --id (its base dir follows it)")
    if server.role is Role.STORAGE:
        failures += [
            f"host {server.host}: the walb device {path} of {vol} does not exist there as "
            f"{server.id}'s container would see it: make it first (wdevc create-wdev LDEV DDEV "
            f"-n NAME, on a replica of the volume as doc/replace.md says), or give its path "
            f"with --device {vol}=PATH"
            for vol, path in _missing_devices(engine, layout, server, devices).items()]
    return failures, warnings


def _run(engine: Engine, layout: Layout, script: str, args: list[str],
         volumes: dict[str, Any]) -> str:
    result = probe(engine, layout.image, sh(script, *args), purpose="replace",
                   volumes=volumes, labels={PROBE_GROUP_LABEL: layout.group})
    if result.status != 0:
        raise WalbctrError(f"host {engine.label}: a replace probe failed: "
                           f"{last_line(result.stderr)}", "run 'walbctr check-host' there")
    return result.stdout


def _volume_dirs(engine: Engine, layout: Layout, server: Server) -> list[str]:
    try:
        out = _run(engine, layout, _VOLUME_DIRS, [],
                   {server.base_dir: {"bind": "/base", "mode": "ro"}})
    except MissingHostPathError:
        return []  # no base dir yet: the server makes it, empty
    return [line for line in out.splitlines() if line]


def _missing_devices(engine: Engine, layout: Layout, server: Server,
                     devices: Mapping[str, str]) -> dict[str, str]:
    """The devices the storage's container would not find: it binds the host's /dev and
    its base dir at the same paths (render.compose), so the probe does too."""
    if not devices:
        return {}
    volumes: dict[str, Any] = {"/dev": {"bind": "/dev", "mode": "ro"},
                               server.base_dir: {"bind": server.base_dir, "mode": "ro"}}
    paths = list(dict.fromkeys(devices.values()))
    try:
        out = _run(engine, layout, _MISSING, paths, volumes)
    except MissingHostPathError:
        del volumes[server.base_dir]
        out = _run(engine, layout, _MISSING, paths, volumes)
    missing = set(out.splitlines())
    return {vol: path for vol, path in devices.items() if path in missing}
