"""`walbctr collect`: a support bundle, one tarball with what a support case needs to know
about a group, host by host (like `linstor sos-report` or `velero debug`).

In it: the layout file as given and where it was collected from; per host the compose
file rendered from the layout and the one `up` last applied, the engine's version,
`docker inspect` of the group's containers, each server's log (its last lines), `status`
and `status --volumes` as JSON, check-host's results, and on the keeper's host the
keeper's log and a snapshot of its /metrics; and MANIFEST.txt (and manifest.json) with
what was collected and what was not, and why. A host whose engine cannot be reached is
recorded there, after one bounded attempt, and the rest is collected.

Left out by construction: no file the layout names is ever read (TLS keys and
certificates, the keeper's web config with its bcrypt hashes); in `docker inspect` every
environment value, and every log-driver option but a few harmless ones, is replaced by
REDACTED; of the engine's `info` only ENGINE_FACTS are kept (its proxy settings may hold
credentials).

What goes in and under which name (naming, redaction, bounds, the manifest) is decided by
pure functions; `collect` and the helpers below it are the I/O around them.
"""

from __future__ import annotations

import io
import json
import os
import platform
import re
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from docker.errors import NotFound

from walbctr import __version__
from walbctr.commands import volume_table
from walbctr.commands.checkhost import check_hosts, checks_json
from walbctr.commands.keeper_container import keeper_containers, read_metrics
from walbctr.commands.status import rows_json, status_rows
from walbctr.display import StepLines
from walbctr.docker.containers import list_group
from walbctr.docker.fleet import Fleet
from walbctr.docker.logs import log_tail
from walbctr.docker.state import read_private, state_dir
from walbctr.errors import WalbctrError, explain, last_line
from walbctr.layout.yamlsource import MAX_BYTES
from walbctr.render.compose import LABEL, compose_project, dump, file_name
from walbctr.render.keeper_service import metrics_url, monitor_of

if TYPE_CHECKING:
    from walbctr.display import ProgressMode
    from walbctr.docker.engine import Engine
    from walbctr.layout.server import Server
    from walbctr.layout.spec import Layout

REDACTED = "<redacted by walbctr collect>"
DEFAULT_LOG_LINES = 2000
MIB = 1024 * 1024
MAX_LOG_BYTES = 4 * MIB  # per log and per metrics snapshot, after the line bound
# Log-driver options that say how a log is kept, not where it is sent with which token
# (splunk-token, awslogs credentials, gelf and syslog TLS files are everything else).
KEPT_LOG_OPTIONS = frozenset({"max-size", "max-file", "compress", "mode", "max-buffer-size",
                              "tag", "labels", "labels-regex", "env", "env-regex"})
# What of `docker info` a support case needs; the rest (HttpProxy, HttpsProxy and NoProxy,
# which may carry a password, RegistryConfig, the engine's labels) stays out.
ENGINE_FACTS = ("Name", "ServerVersion", "OperatingSystem", "OSType", "OSVersion",
                "KernelVersion", "Architecture", "NCPU", "MemTotal", "Driver", "DriverStatus",
                "LoggingDriver", "CgroupDriver", "CgroupVersion", "SecurityOptions",
                "DefaultRuntime", "LiveRestoreEnabled", "Containers", "ContainersRunning",
                "ContainersPaused", "ContainersStopped", "Images", "Warnings")
LEFT_OUT = ("environment values and log-driver options (but max-size, max-file and the "
            "like) in docker inspect, replaced by " + REDACTED,
            "every file the layout names: TLS keys and certificates, the keeper's web "
            "config with its bcrypt hashes (never read)",
            "docker info beyond the engine facts in engine.json (its proxy settings may "
            "hold credentials)")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


# --- pure: names, redaction, bounds, the manifest -----------------------------------------


def bundle_name(group: str, now: datetime) -> str:
    """The default file name: walbctr-collect-GROUP-YYYYMMDDTHHMMSSZ.tar.gz (UTC)."""
    return f"walbctr-collect-{group}-{now.astimezone(UTC):%Y%m%dT%H%M%SZ}.tar.gz"


def member_name(name: str) -> str:
    """`name` as one path component in the tarball: no separator, no leading dot."""
    clean = _UNSAFE.sub("_", name)
    return clean if clean[:1].isalnum() else "_" + clean


def redact_env(items: Sequence[Any]) -> list[str]:
    """NAME=VALUE items with the values replaced: the names say enough."""
    out = []
    for item in items:
        name, sep, _value = str(item).partition("=")
        out.append(f"{name}={REDACTED}" if sep else name)
    return out


def redact_inspect(attrs: Any) -> Any:
    """`docker inspect` output without environment values or log-driver secrets, wherever
    in it they are (Config.Env; ContainerConfig.Env of older engines; HostConfig.LogConfig)."""
    if isinstance(attrs, list):
        return [redact_inspect(v) for v in attrs]
    if not isinstance(attrs, dict):
        return attrs
    return {key: _redact_field(key, value) for key, value in attrs.items()}


def _redact_field(key: str, value: Any) -> Any:
    if key == "Env" and isinstance(value, list):
        return redact_env(value)
    if key == "LogConfig" and isinstance(value, dict) and isinstance(value.get("Config"), dict):
        options = {k: v if k in KEPT_LOG_OPTIONS else REDACTED
                   for k, v in value["Config"].items()}
        return {**redact_inspect(value), "Config": options}
    return redact_inspect(value)


def engine_facts(version: Mapping[str, Any], info: Mapping[str, Any]) -> dict[str, Any]:
    """engine.json: `docker version` whole, and the listed facts of `docker info`."""
    return {"version": dict(version), "info": {k: info[k] for k in ENGINE_FACTS if k in info}}


def bounded(lines: Sequence[str], max_bytes: int) -> tuple[bytes, bool]:
    """The lines as a file of at most `max_bytes`, keeping the last whole lines; and
    whether it was cut."""
    data = "".join(line + "\n" for line in lines).encode()
    if len(data) <= max_bytes:
        return data, False
    kept = data[-max_bytes:]
    newline = kept.find(b"\n")
    return (kept[newline + 1:] if 0 <= newline < len(kept) - 1 else kept), True


def on_host(host_label: str | None, host: str, sharing: Sequence[str]) -> bool:
    """Whether a container whose io.walbctr.host label is `host_label` goes under `host`,
    one of the hosts `sharing` its engine: its own host's, or, when the label names none of
    them (a container not in the layout), the first host's."""
    return host_label == host or (host_label not in sharing and host == sharing[0])


def human_bytes(size: int) -> str:
    if size < 1000:
        return f"{size} B"
    if size < 1000 * 1000:
        return f"{size / 1000:.1f} kB"
    return f"{size / 1e6:.1f} MB"


@dataclass(frozen=True)
class Entry:
    """One thing the bundle holds, or was to hold and does not."""

    path: str  # in the bundle, under its top directory; ending in / for a part of it
    what: str
    host: str = ""  # "" for the group as a whole
    error: str = ""  # why it was not collected; "" when it was
    note: str = ""  # how it was bounded or where it came from
    size: int = 0

    @property
    def ok(self) -> bool:
        return not self.error


def manifest_text(header: Mapping[str, str], entries: Sequence[Entry]) -> str:
    """MANIFEST.txt: what was not collected and why first, then what was, then what is
    left out on purpose."""
    failed = [e for e in entries if not e.ok]
    got = [e for e in entries if e.ok]
    lines = [f"walbctr collect of group {header['group']!r} from {header['layout']}, "
             f"{header['collected_at']} (walbctr {header['walbctr']})",
             f"{len(got)} collected, {len(failed)} not collected.", ""]
    if failed:
        lines.append("Not collected:")
        lines += [f"  {e.path}  {e.what}: {e.error}" for e in failed]
        lines.append("")
    lines.append("Collected:")
    width = max((len(e.path) for e in got), default=0)
    lines += [f"  {e.path.ljust(width)}  {human_bytes(e.size):>9}  {e.what}"
              + (f" ({e.note})" if e.note else "") for e in got]
    lines += ["", "Left out on purpose:", *(f"  {what}" for what in LEFT_OUT)]
    return "\n".join(lines) + "\n"


def manifest_json(header: Mapping[str, str], entries: Sequence[Entry]) -> str:
    return json.dumps({**header, "left_out": list(LEFT_OUT),
                       "entries": [{**asdict(e), "ok": e.ok} for e in entries]},
                      indent=2) + "\n"


# --- the I/O ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Collected:
    path: Path
    size: int
    entries: list[Entry]


Made = str | bytes | tuple[str | bytes, str]  # what an item's producer returns (, a note)


class _Bundle:
    """The tarball being written, one member at a time, from any host's thread."""

    def __init__(self, tar: tarfile.TarFile, top: str, mtime: float) -> None:
        self.tar = tar
        self.top = top
        self.mtime = mtime
        self.entries: list[Entry] = []
        self.lock = threading.Lock()
        top_dir = tarfile.TarInfo(top)
        top_dir.type, top_dir.mode, top_dir.mtime = tarfile.DIRTYPE, 0o700, mtime
        tar.addfile(top_dir)

    def add(self, path: str, what: str, host: str, data: str | bytes, note: str = "") -> None:
        raw = data.encode() if isinstance(data, str) else data
        with self.lock:
            self._member(path, raw)
            self.entries.append(Entry(path, what, host, note=note, size=len(raw)))

    def fail(self, path: str, what: str, host: str, why: str) -> None:
        with self.lock:
            self.entries.append(Entry(path, what, host, error=why))

    def attempt(self, path: str, what: str, host: str, produce: Callable[[], Made]) -> None:
        """Collect one item; whatever goes wrong is recorded and the rest goes on."""
        try:
            made = produce()
        except Exception as err:  # any failure of one item: the manifest says which and why
            self.fail(path, what, host, _why(err))
            return
        data, note = made if isinstance(made, tuple) else (made, "")
        self.add(path, what, host, data, note)

    def counts(self, host: str) -> tuple[int, int]:
        with self.lock:
            mine = [e for e in self.entries if e.host == host]
        return sum(e.ok for e in mine), sum(not e.ok for e in mine)

    def finish(self, header: Mapping[str, str]) -> None:
        with self.lock:
            entries = list(self.entries)
            self._member("MANIFEST.txt", manifest_text(header, entries).encode())
            self._member("manifest.json", manifest_json(header, entries).encode())

    def _member(self, path: str, raw: bytes) -> None:
        info = tarfile.TarInfo(f"{self.top}/{path}")
        info.size, info.mode, info.mtime = len(raw), 0o600, self.mtime
        self.tar.addfile(info, io.BytesIO(raw))


def _why(err: BaseException) -> str:
    if isinstance(err, WalbctrError):
        return f"{err.message}; {err.fix}" if err.fix else err.message
    return explain(err)


def collect(layout: Layout, output: str | None, log_lines: int = DEFAULT_LOG_LINES,
            mode: ProgressMode = "plain") -> Collected:
    """Write the bundle (mode 0600) to `output`, or to the default name in the current
    directory; refuse a file that exists. Only a complete bundle ever gets that name."""
    now = datetime.now(UTC)
    target = _target(output, layout.group, now)
    progress = StepLines(mode)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as f:
            with tarfile.open(fileobj=f, mode="w:gz") as tar:
                bundle = _Bundle(tar, bundle_name(layout.group, now).removesuffix(".tar.gz"),
                                 now.timestamp())
                _gather(bundle, layout, log_lines, progress, now)
            f.flush()
            os.fsync(f.fileno())
        _publish(Path(tmp), target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)  # our own partial file, never the target
        raise
    return Collected(target, target.stat().st_size, bundle.entries)


def _target(output: str | None, group: str, now: datetime) -> Path:
    path = Path(output) if output else Path.cwd() / bundle_name(group, now)
    if path.exists() or path.is_symlink():
        raise WalbctrError(f"{path} already exists, and collect never overwrites a file",
                           "give another name with -o, or move that file away")
    if not path.parent.is_dir():
        raise WalbctrError(f"cannot write {path}: {path.parent} is not a directory",
                           "create it, or give another file with -o")
    return path


def _publish(tmp: Path, target: Path) -> None:
    """Give the finished bundle its name, unless a file took that name meanwhile."""
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise WalbctrError(f"{target} appeared while collecting; the bundle was not kept",
                           "run collect again with another -o") from None
    except OSError:  # a file system without hard links: the check at the start stands
        os.rename(tmp, target)
        return
    tmp.unlink()


def _gather(bundle: _Bundle, layout: Layout, log_lines: int, progress: StepLines,
            now: datetime) -> None:
    fleet = Fleet(layout)
    header = {"group": layout.group, "layout": layout.source, "walbctr": __version__,
              "collected_at": now.strftime("%Y-%m-%dT%H:%M:%SZ")}
    bundle.attempt(f"layout/{member_name(Path(layout.source).name)}",
                   "the layout file as given", "", partial(_layout_file, layout.source))
    down = fleet.unreachable(_why)
    bundle.add("controller.json", "where and how this bundle was collected", "",
               _controller(layout, header, down))
    results = fleet.each(fleet.hosts, lambda h: _host(bundle, layout, fleet, h, down,
                                                      log_lines, progress))
    for host, outcome in results.items():
        if isinstance(outcome, Exception):
            bundle.fail(f"hosts/{member_name(host)}/", "the rest of this host", host,
                        _why(outcome))
    bundle.finish(header)


def _layout_file(source: str) -> bytes:
    with open(source, "rb") as f:
        return f.read(MAX_BYTES + 1)  # loading it already refused a larger one


def _controller(layout: Layout, header: Mapping[str, str], down: Mapping[str, str]) -> str:
    hosts = {h: {"engine": layout.hosts[h].engine or "local",
                 "servers": [s.id for s in layout.servers_on(h)],
                 "reachable": h not in down} for h in layout.used_hosts}
    monitor = monitor_of(layout)
    return json.dumps({**header, "python": platform.python_version(),
                       "platform": platform.platform(), "argv": sys.argv[1:],
                       "network_mode": layout.network_mode, "image": layout.image,
                       "keeper_host": monitor.host if monitor else None, "hosts": hosts},
                      indent=2) + "\n"


def _host(bundle: _Bundle, layout: Layout, fleet: Fleet, host: str, down: Mapping[str, str],
          log_lines: int, progress: StepLines) -> None:
    started = time.monotonic()
    base = f"hosts/{member_name(host)}"
    engine = fleet.engines[host]
    _compose_files(bundle, layout, engine if host not in down else None, host, base)
    if host in down:
        bundle.fail(f"{base}/", "everything from its engine (version, inspect, logs, status, "
                    "volumes, check-host, keeper)", host, down[host])
        progress.line(f"{host}: not reached, recorded in MANIFEST.txt: "
                      f"{last_line(down[host], '?')}")
        return
    progress.line(f"{host}: collecting ({len(layout.servers_on(host))} servers, engine "
                  f"{engine.engine or 'local'})")
    bundle.attempt(f"{base}/engine.json", "the engine's version and facts", host,
                   lambda: json.dumps(engine_facts(engine.api.version(), engine.api.info()),
                                      indent=2) + "\n")
    _inspect(bundle, layout, fleet, host, base)
    for s in layout.servers_on(host):
        bundle.attempt(f"{base}/logs/{s.id}.log", f"the log of {s.id}", host,
                       partial(_server_log, engine, layout, s, log_lines))
    _reports(bundle, layout, host, base)
    _keeper(bundle, layout, engine, host, base, log_lines)
    ok, failed = bundle.counts(host)
    progress.line(f"{host}: {ok} collected, {failed} not collected, in "
                  f"{time.monotonic() - started:.1f} s")


def _compose_files(bundle: _Bundle, layout: Layout, engine: Engine | None, host: str,
                   base: str) -> None:
    """The file rendered from the layout now, and the one `up` last applied, if any."""
    def rendered() -> Made:
        # As `up` writes it for this engine; a host not reached gets the newer form.
        new = engine is None or engine.has_start_interval
        return dump(layout, compose_project(layout, host, new)), \
            "as 'walbctr render' writes it, start_interval " + ("on" if new else "off")

    bundle.attempt(f"{base}/compose.yaml", "the compose file the layout renders", host,
                   rendered)
    applied = state_dir() / layout.group / file_name(host)

    def last_applied() -> Made:
        text = read_private(applied)  # never creates the state dir
        if text is None:
            raise WalbctrError(f"no {applied}: 'walbctr up' has not run for this group from "
                               "this controller (or with another WALBCTR_STATE_DIR)")
        return text, f"from {applied}"

    bundle.attempt(f"{base}/compose-applied.yaml", "the compose file 'walbctr up' last "
                   "applied", host, last_applied)


def _inspect(bundle: _Bundle, layout: Layout, fleet: Fleet, host: str, base: str) -> None:
    """`docker inspect` of the group's containers (servers and keeper) of this host."""
    engine = fleet.engines[host]
    sharing = fleet.engine_groups()[layout.hosts[host].engine_key]
    try:
        ids = [c.container_id for c in list_group(engine, layout.group).values()]
        ids += [c.id for c in keeper_containers(engine, layout.group)]
    except Exception as err:  # the engine failing now: recorded, the rest goes on
        bundle.fail(f"{base}/inspect/", "docker inspect of the group's containers", host,
                    _why(err))
        return
    for cid in ids:
        try:
            attrs = engine.api.api.inspect_container(cid)
        except NotFound:
            continue  # removed since the list: nothing to inspect
        except Exception as err:  # recorded, the other containers are still inspected
            bundle.fail(f"{base}/inspect/{cid[:12]}.json", f"docker inspect of {cid[:12]}",
                        host, _why(err))
            continue
        labels = (attrs.get("Config") or {}).get("Labels") or {}
        if not on_host(labels.get(f"{LABEL}.host"), host, sharing):
            continue
        name = str(attrs.get("Name", "")).lstrip("/") or cid[:12]
        bundle.add(f"{base}/inspect/{member_name(name)}.json", f"docker inspect of {name}",
                   host, json.dumps(redact_inspect(attrs), indent=2) + "\n",
                   "environment values redacted")


def _server_log(engine: Engine, layout: Layout, server: Server, lines: int) -> Made:
    try:
        got = log_tail(engine, layout, server, lines, timestamps=True)
    except NotFound:
        raise WalbctrError(f"{server.id} has no container on {server.host}",
                           "'walbctr up' starts it") from None
    data, cut = bounded(got, MAX_LOG_BYTES)
    where = f"its log file {server.log_path}" if server.logs_to_file else \
        "its container log, with the engine's timestamps"
    return data, f"the last {len(got)} lines of {where}" + (
        f", cut to the last {MAX_LOG_BYTES // MIB} MiB" if cut else "")


def _reports(bundle: _Bundle, layout: Layout, host: str, base: str) -> None:
    """What `status --json`, `status --volumes --json` and `check-host --json` print."""
    threshold = volume_table.lag_threshold(layout, None)
    bundle.attempt(f"{base}/status.json", "walbctr status --json", host,
                   lambda: rows_json(status_rows(layout, host)))
    bundle.attempt(f"{base}/volumes.json", "walbctr status --volumes --json", host,
                   lambda: volume_table.rows_json(volume_table.volume_rows(layout, host,
                                                                           threshold)))
    bundle.attempt(f"{base}/check-host.json", "walbctr check-host --json", host,
                   lambda: checks_json(check_hosts(layout, host)))


def _keeper(bundle: _Bundle, layout: Layout, engine: Engine, host: str, base: str,
            lines: int) -> None:
    monitor = monitor_of(layout)
    if monitor is None or monitor.host != host:
        return
    try:
        found = [c for c in keeper_containers(engine, layout.group)
                 if c.labels.get(f"{LABEL}.host") == host]
    except Exception as err:  # recorded, the rest goes on
        found, why = [], _why(err)
    else:
        why = "no keeper container here ('walbctr up' starts it: the layout has a monitor " \
            "block)"
    if not found:
        bundle.fail(f"{base}/keeper/", "the keeper's log and /metrics", host, why)
        return
    keeper = found[0]
    bundle.attempt(f"{base}/keeper/keeper.log", "the keeper's log", host,
                   partial(_keeper_log, keeper, lines))
    bundle.attempt(f"{base}/keeper/metrics.txt", "a snapshot of the keeper's /metrics", host,
                   partial(_metrics, engine, layout, keeper))


def _keeper_log(keeper: Any, lines: int) -> Made:
    raw: bytes = keeper.logs(tail=lines, stdout=True, stderr=True, timestamps=True)
    got = raw.decode(errors="replace").splitlines()
    data, cut = bounded(got, MAX_LOG_BYTES)
    return data, f"the last {len(got)} lines of its container log" + (
        f", cut to the last {MAX_LOG_BYTES // MIB} MiB" if cut else "")


def _metrics(engine: Engine, layout: Layout, keeper: Any) -> Made:
    keeper.reload()
    if keeper.status != "running":
        raise WalbctrError(f"the keeper is not running (its container is {keeper.status})")
    url = metrics_url(layout)
    out = read_metrics(layout, engine, keeper)
    data, cut = bounded(out.splitlines(), MAX_LOG_BYTES)
    return data, f"{url} from inside the keeper's container" + (
        f", cut to the last {MAX_LOG_BYTES // MIB} MiB" if cut else "")
