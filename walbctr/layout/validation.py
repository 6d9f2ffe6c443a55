"""Rules that span servers and hosts; field-level rules live on the models themselves."""

from __future__ import annotations

import difflib
import ipaddress
import posixpath
import re
from collections.abc import Generator, Iterator, Mapping
from typing import TYPE_CHECKING

from walbctr.errors import Problem
from walbctr.layout.host import Host, TlsSpec, address_problem, engine_problem
from walbctr.layout.hostpaths import SYSTEM_DIRS, system_tree
from walbctr.layout.monitor import KEEPER_SERVICE, MonitorSpec, url_problem
from walbctr.layout.server import Role, Server
from walbctr.layout.values import first_outside, host_name, show
from walbctr.layout.yamlsource import format_loc

if TYPE_CHECKING:
    from walbctr.layout.spec import Layout


class Advisory(Problem):
    """Worth telling the operator; not a reason to refuse the layout."""


# Docker's reference grammar (distribution/reference): an optional registry, path
# components joined by '.', '_', '__' or dashes, an optional tag and digest.
_REF_DOMAIN = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_REF_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE_RE = re.compile(
    rf"^(?:{_REF_DOMAIN}(?:\.{_REF_DOMAIN})*(?::[0-9]+)?/)?{_REF_COMPONENT}(?:/{_REF_COMPONENT})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$")


def check(layout: Layout) -> list[Problem]:
    return [
        *_roles(layout),
        *_ids(layout),
        *_hosts(layout),
        *_paths(layout),
        *_ports(layout),
        *_network(layout),
        *_publish(layout),
        *_image(layout),
        *_tunables(layout),
        *_lab_vgs(layout),
        *_policy(layout),
    ]


def _where(s: Server, key: str = "") -> str:
    """Where the operator wrote `key` for `s`: the server entry, or the default it took."""
    if key and key in s.origins:
        return s.origins[key]
    return format_loc((*s.loc, key) if key else s.loc)


def _roles(layout: Layout) -> Iterator[Problem]:
    archives = layout.of_role(Role.ARCHIVE)
    if not archives:
        yield Problem("archives", "a backup group needs at least one archive",
                      fix="add an 'archives:' list with id, host and vg; the first is the "
                          "primary archive")
    if layout.of_role(Role.STORAGE) and not layout.of_role(Role.PROXY):
        yield Problem("proxies", "storages send their logs through proxies, but none is listed",
                      fix="add a 'proxies:' list with at least one proxy")
    for a in archives:
        if "vg" not in a.options:
            yield Problem(_where(a, "vg"),
                          f"archive {a.id!r} needs the LVM volume group it keeps backups in",
                          fix="add 'vg: NAME' (an existing VG on its host), or set "
                              "defaults.archive.vg")
        elif "thinpool" in a.options and not a.options["thinpool"]:
            yield Problem(_where(a, "thinpool"), "thinpool is empty")


def _ids(layout: Layout) -> Iterator[Problem]:
    first: dict[str, Server] = {}
    for s in layout.servers:
        # Ids are DNS names in bridge mode and compared case-insensitively there.
        key = s.id.lower()
        if key in first:
            other = first[key]
            yield Problem(_where(s, "id"),
                          f"duplicate id {s.id!r} (also {_where(other)}, the {other.role} on "
                          f"{other.host})",
                          fix="every server in a group needs its own id")
        else:
            first[key] = s


def _hosts(layout: Layout) -> Iterator[Problem]:
    declared = layout.spec.hosts
    used = set(layout.used_hosts)
    if declared is not None:
        yield from _declared_hosts(layout, declared, used)
    slugs: dict[str, str] = {}
    for name, host in layout.hosts.items():
        where = (format_loc(("hosts", name)) if declared and name in declared
                 else _first_on(layout, name))
        bad_name = host_name(name)
        if bad_name is not None:
            # Servers' own host fields are checked with the model; these are hosts' keys.
            if declared and name in declared:
                yield Problem(where, bad_name[0], fix=bad_name[1])
            continue
        slug = host_slug(name)
        if slug in slugs:
            yield Problem(where, f"host {name!r} and {slugs[slug]!r} differ only "
                          "in case", fix="rename one of them")
        slugs[slug] = name
        if layout.network_mode == "host" and name in used:
            why = address_problem(host.address)
            if why:
                yield Problem(f"{where}.address" if declared and name in declared else where,
                              f"address {show(host.address)} {why}",
                              fix="give the host name or IPv4 address peers reach it by")
        yield from _engine_problems(name, host, where)


def _declared_hosts(layout: Layout, declared: Mapping[str, object],
                    used: set[str]) -> Iterator[Problem]:
    """With a `hosts` block: every server's host is in it, and every host in it is used."""
    for s in layout.servers:
        if s.host not in declared:
            close = difflib.get_close_matches(s.host, list(declared), n=1)
            yield Problem(_where(s, "host"), f"host {s.host!r} is not defined in 'hosts'",
                          fix=f"did you mean {close[0]!r}?" if close
                          else f"add '{s.host}:' under hosts")
    for name in declared:
        if name not in used:
            yield Advisory(format_loc(("hosts", name)), f"host {name!r} runs no server")


def _engine_problems(name: str, host: Host, where: str) -> Iterator[Problem]:
    """How the controller reaches the host's engine: a valid reference, never plain TCP
    unless the layout says so, TLS files by absolute path."""
    if host.engine is not None:
        why = engine_problem(host.engine)
        if why:
            yield Problem(f"{where}.engine", f"engine {show(host.engine)} {why}",
                          fix="e.g. ssh://user@host, tcp://host:2376, "
                              "unix:///var/run/docker.sock or a docker context name")
    tcp = (host.engine or "").startswith("tcp://")
    if tcp and host.tls is None and not host.insecure:
        yield Problem(f"{where}.engine",
                      f"engine {host.engine} is plain TCP: anyone on the path can read "
                      "and drive a root-equivalent Docker API",
                      fix="add tls: {ca, cert, key} (dockerd --tlsverify, port 2376), use "
                          "ssh://, or for a lab on a private network say insecure: true")
    elif tcp and host.tls is None:
        yield Advisory(f"{where}.insecure",
                       f"host {name}: engine {host.engine} is spoken to over plain TCP",
                       fix="add tls: {ca, cert, key} or use ssh:// once it leaves the lab")
    if host.insecure and not tcp:
        yield Problem(f"{where}.insecure", "insecure applies to tcp:// engines only",
                      fix="remove it: ssh:// and unix:// engines are not plain TCP")
    if host.tls is not None and not host.tls.verify and tcp:
        yield Advisory(f"{where}.tls.verify",
                       f"host {name}: the engine's certificate is not verified, so any "
                       "machine on the path can pose as it",
                       fix="remove verify: false and give the CA that signed it")
    if host.tls is not None:
        yield from _tls_problems(host.tls, where, tcp)


def _tls_problems(tls: TlsSpec, where: str, tcp: bool) -> Iterator[Problem]:
    if not tcp:
        yield Problem(f"{where}.tls", "tls applies to tcp:// engines only",
                      fix="ssh:// and unix:// engines need no TLS settings")
    for key in ("ca", "cert", "key"):
        path = getattr(tls, key)
        if not path.startswith("/"):
            yield Problem(f"{where}.tls.{key}", f"{path!r} is relative",
                          fix="give the absolute path of the PEM file")


def _first_on(layout: Layout, host: str) -> str:
    for s in layout.servers:
        if s.host == host:
            return _where(s, "host")
    return "hosts"


def host_slug(name: str) -> str:
    """A host name as it may appear in a compose project name."""
    return re.sub(r"[^a-z0-9_-]", "-", name.lower())


def _paths(layout: Layout) -> Iterator[Problem]:
    group = layout.spec.group
    for s in layout.servers:
        # The form of both paths is checked on the templates, where they were written.
        if s.base_dir in SYSTEM_DIRS:
            yield Problem(_where(s, "base_dir"),
                          f"base_dir {s.base_dir} is a system directory and would be bound "
                          "into the container", fix="use a directory of its own, e.g. "
                          "/var/walb/{id}")
        elif (why := system_tree(s.base_dir, group)) is not None:
            yield Problem(_where(s, "base_dir"),
                          f"base_dir {s.base_dir} {why}; it would be bound read-write "
                          f"into {s.id}'s container",
                          fix="use a directory of its own, e.g. /var/walb/{id}")
        if not (s.logs_to_file and s.log_path.startswith("/")):
            continue
        log_dir = posixpath.dirname(s.log_path)
        if log_dir == "/var/log":
            yield Advisory(_where(s, "log_path"),
                           f"the log's directory {log_dir} is bound into {s.id}'s container",
                           fix="a directory of its own, e.g. /var/log/walb/, keeps other "
                               "files out of reach")
        elif log_dir in SYSTEM_DIRS:
            yield Problem(_where(s, "log_path"),
                          f"the log's directory {log_dir} would be bound into the container",
                          fix="put logs in a directory of their own, e.g. /var/walb/")
        elif (why := system_tree(s.log_path, group) or system_tree(log_dir, group)):
            yield Problem(_where(s, "log_path"),
                          f"log_path {s.log_path} {why}; its directory would be bound "
                          f"read-write into {s.id}'s container",
                          fix="put logs in a directory of their own, e.g. "
                              "/var/log/walb/{id}.log")
    by_host: dict[str, list[Server]] = {}
    for s in layout.servers:
        by_host.setdefault(s.host, []).append(s)
    for host, servers in by_host.items():
        yield from _path_clashes(host, servers)


def path_form(path: str, where: str, key: str) -> list[Problem]:
    """Problems with the form of a path template: relative, or not normalized."""
    if not path.startswith("/"):
        return [Problem(where, f"{key} {path!r} is relative",
                        fix="give an absolute path, e.g. /var/walb/{id}")]
    norm = posixpath.normpath(path)
    if norm.startswith("//"):
        norm = norm[1:]
    if norm != path:
        return [Problem(where, f"{key} {path!r} is not in normal form", fix=f"write {norm!r}")]
    return []


def _ancestors(path: str) -> Iterator[str]:
    """The directories above `path`, nearest first ('/a/b/c' -> '/a/b', '/a')."""
    while True:
        parent = posixpath.dirname(path)
        # dirname('//') is '//' (POSIX keeps a leading double slash): stop when it stops
        # shrinking, or a layout with `base_dir: //etc` hangs every command.
        if parent in ("/", "") or parent == path:
            return
        path = parent
        yield path


def _path_clashes(host: str, servers: list[Server]) -> Iterator[Problem]:
    """Servers of one host sharing or nesting base dirs or sharing a log file. Lookups by
    path, not pairs of servers, so that thousands of servers on a host stay quick."""
    on = f"on host {host!r}"
    by_base = yield from _shared_base_dirs(servers, on)
    below = yield from _nested_base_dirs(servers, by_base, on)
    yield from _log_clashes(servers, by_base, below, on)


def _shared_base_dirs(servers: list[Server],
                      on: str) -> Generator[Problem, None, dict[str, Server]]:
    """Problems of servers sharing a base dir; returns the first server of each base dir."""
    by_base: dict[str, Server] = {}
    for b in servers:
        a = by_base.setdefault(b.base_dir, b)
        if a is not b:
            yield Problem(_where(b, "base_dir"),
                          f"{b.id} and {a.id} share base dir {b.base_dir} {on}",
                          fix="give each server its own, e.g. base_dir: /var/walb/{id}")
    return by_base


def _nested_base_dirs(servers: list[Server], by_base: Mapping[str, Server],
                      on: str) -> Generator[Problem, None, dict[str, list[Server]]]:
    """Problems of a base dir inside another; returns, for each directory above a base
    dir, up to two servers whose base dirs are inside it: one that is not the server
    whose log path is being checked is enough."""
    order = {id(s): i for i, s in enumerate(servers)}
    below: dict[str, list[Server]] = {}
    for s in servers:
        for parent in _ancestors(s.base_dir):
            inside = below.setdefault(parent, [])
            if len(inside) < 2:
                inside.append(s)
            outer = by_base.get(parent)
            if outer is not None:
                a, b = sorted((outer, s), key=lambda x: order[id(x)])
                yield Problem(_where(b, "base_dir"),
                              f"base dirs of {a.id} ({a.base_dir}) and {b.id} ({b.base_dir}) "
                              f"are nested {on}; walb reads every directory in a base dir as a "
                              "volume", fix="use sibling directories, e.g. /var/walb/{id}")
    return below


def _log_clashes(servers: list[Server], by_base: Mapping[str, Server],
                 below: Mapping[str, list[Server]], on: str) -> Iterator[Problem]:
    """A log path that is another server's base dir or a directory above one, and log files
    shared by two servers."""
    by_log: dict[str, Server] = {}
    for x in servers:
        if not x.logs_to_file:
            continue
        candidates = [by_base[x.log_path]] if x.log_path in by_base else []
        y = next((c for c in candidates + below.get(x.log_path, []) if c is not x), None)
        if y is not None:
            yield Problem(_where(x, "log_path"),
                          f"{x.id}'s log {x.log_path} is {y.id}'s base dir {on}")
        a = by_log.setdefault(x.log_path, x)
        if a is not x:
            yield Problem(_where(x, "log_path"),
                          f"{x.id} and {a.id} would write one log file {x.log_path} {on}",
                          fix="give each server its own, e.g. log_path: /var/walb/{id}.log")


def _ports(layout: Layout) -> Iterator[Problem]:
    seen: dict[tuple[str, int], Server] = {}
    for s in layout.servers:
        if layout.network_mode == "host":
            # Two hosts may share one address (all on one machine); ports then must differ.
            keys = [(f"host {s.host}", s.port), (f"address {s.address}", s.port)]
        elif s.publish is not None:
            keys = [(f"{s.publish} on engine {layout.hosts[s.host].engine_key}", s.port)]
        else:
            keys = []
        for key in keys:
            if key in seen and seen[key] is not s:
                other = seen[key]
                yield Problem(_where(s, "port"),
                              f"{s.id} and {other.id} both listen on port {s.port} of "
                              f"{key[0]}", fix="give one of them another port")
                break
            seen[key] = s
        if s.publish is not None and _is_wildcard(s.publish):
            yield Advisory(_where(s, "publish"),
                           f"{s.id}'s port is published on every interface; walb-tools has "
                           "no authentication", fix="publish on 127.0.0.1 or a private address")


def _publish(layout: Layout) -> Iterator[Problem]:
    for s in layout.servers:
        if s.publish is not None:
            yield from _publish_address(s.publish, _where(s, "publish"))
    monitor = layout.spec.monitor
    if monitor is not None and isinstance(monitor.publish, str):
        yield from _publish_address(monitor.publish, "monitor.publish")


def _publish_address(address: str, where: str) -> Iterator[Problem]:
    try:
        ipaddress.IPv4Address(address)
    except ValueError:
        ch = first_outside(address, re.compile(r"[0-9.]"))
        why = f" (it has the character {ch!r})" if ch is not None else ""
        yield Problem(where, f"publish {show(address)} is not an IPv4 address{why}",
                      fix="true for 127.0.0.1, or an address of the host such as 192.0.2.10")


def _is_wildcard(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_unspecified
    except ValueError:
        return False


def _network(layout: Layout) -> Iterator[Problem]:
    engines = {layout.hosts[h].engine_key for h in layout.used_hosts}
    if layout.network_mode == "bridge" and len(engines) > 1:
        yield Problem("network.mode",
                      f"bridge mode puts every server on one private network, but the hosts "
                      f"use {len(engines)} Docker engines ({', '.join(sorted(engines))})",
                      fix="use 'mode: host' across engines, or one engine for a lab")
    if layout.network_mode == "host" and len(engines) > 1:
        for name in layout.used_hosts:
            host = layout.hosts[name]
            if _is_loopback(host.address):
                yield Problem(format_loc(("hosts", name, "address")),
                              f"{name}'s address {host.address} is a loopback address, but "
                              "servers on other engines must reach it",
                              fix="give the address other hosts reach it by")


def _is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _image(layout: Layout) -> Iterator[Problem]:
    monitor = layout.spec.monitor
    for where, image in (("image", layout.spec.image),
                         ("monitor.image", monitor.image if monitor is not None else None)):
        if image is not None and not _IMAGE_RE.match(image):
            ch = first_outside(image, re.compile(r"[A-Za-z0-9._/:@-]"))
            why = f": it has the character {ch!r}" if ch is not None else ""
            yield Problem(where, f"{show(image)} is not an image reference{why}",
                          fix="e.g. walbctr/walb-tools:1.0.19-d7295d2 (see 'walbctr build')")


# walb's own defaults for the settings compared below (src/constant.hpp:28-29).
_WALB_DELAY_S = 1
_WALB_MAXDELAY_S = 300
_LOGICAL_BLOCK = 512


def _tunables(layout: Layout) -> Iterator[Problem]:
    """Settings walb takes but changes or reads otherwise than written: worth a word."""
    for s in layout.servers:
        if s.role is Role.ARCHIVE:
            continue
        delay = s.options.get("delay", _WALB_DELAY_S)
        maxdelay = s.options.get("maxdelay", _WALB_MAXDELAY_S)
        if delay > maxdelay:
            # binsrc/walb-proxy.cpp:74-78 and binsrc/walb-storage.cpp:88-92.
            key = "maxdelay" if "maxdelay" in s.options else "delay"
            said = "" if "maxdelay" in s.options else " (walb's default)"
            yield Advisory(_where(s, key),
                           f"{s.id}: maxdelay {maxdelay}{said} is below delay {delay}; walb "
                           "raises it to delay and logs a warning",
                           fix="set maxdelay to at least delay")
        fst = s.options.get("fst")
        if fst is not None and 0 < fst < _LOGICAL_BLOCK:
            # fst is turned into 512-byte blocks per second (src/storage.cpp:485), where 0
            # means unlimited (src/storage.hpp:244).
            yield Advisory(_where(s, "fst"),
                           f"{s.id}: fst {fst} rounds down to 0 blocks/s, which walb takes as "
                           "unlimited", fix="use 0 for unlimited, or at least 512")


def _lab_vgs(layout: Layout) -> Iterator[Problem]:
    """A lab VG is a loop file under this machine's state directory, plain LVM."""
    for s, entry in zip(layout.of_role(Role.ARCHIVE), layout.spec.archives, strict=True):
        if entry.lab_vg_size is None:
            continue
        where = format_loc((*s.loc, "lab_vg_size"))
        engine = layout.hosts[s.host].engine
        if engine is not None:
            yield Problem(where, f"{s.id}: a lab VG is made on this machine's engine, but "
                          f"host {s.host} uses the engine {engine}",
                          fix=f"create volume group {s.options.get('vg')} on {s.host} "
                          "yourself with vgcreate, and remove lab_vg_size")
        if "thinpool" in s.options:
            yield Problem(where, f"{s.id}: a lab VG has no thin pool, so thinpool "
                          f"{s.options['thinpool']} would be missing",
                          fix="remove thinpool; or remove lab_vg_size and make the VG and "
                          "its thin pool yourself")


def _policy(layout: Layout) -> Iterator[Problem]:
    """The archives a policy names must be archives of the layout, and a keeper must run it."""
    p = layout.spec.policy
    if p is None:
        return
    if layout.spec.monitor is None:
        yield Problem("policy", "a policy is carried out by the keeper, and the layout has none",
                      fix="add a monitor block (monitor: {host: HOST})")
    archives = [s.id for s in layout.of_role(Role.ARCHIVE)]
    primary = archives[0] if archives else None
    scopes = [("policy", p.replicate, p.verify)] + [
        (f"policy.volumes.{name}", v.replicate, v.verify) for name, v in p.volumes.items()]
    for where, repl, verify in scopes:
        for i, target in enumerate(repl.to or [] if repl is not None else []):
            if target not in archives:
                yield Problem(f"{where}.replicate.to[{i}]", f"{target!r} is not an archive",
                              fix="the archives are: " + ", ".join(archives))
            elif target == primary:
                yield Problem(f"{where}.replicate.to[{i}]",
                              f"{target} is the primary archive, where the copies come from",
                              fix="name the other archives")
        if repl is not None and repl.to is None and len(archives) < 2:
            yield Problem(f"{where}.replicate", "there is no archive to replicate to",
                          fix="add a second archive, or remove replicate")
        if verify is not None and verify.archive is not None and verify.archive not in archives:
            yield Problem(f"{where}.verify.archive", f"{verify.archive!r} is not an archive",
                          fix="the archives are: " + ", ".join(archives))


def _monitor_exposure(layout: Layout, m: MonitorSpec) -> Iterator[Problem]:
    """Where the keeper's /metrics can be reached from, and its web config."""
    if m.listen is not None:
        if layout.network_mode == "bridge":
            yield Problem("monitor.listen", "listen applies to host mode only",
                          fix="in bridge mode 'publish' chooses the host address; remove it")
        elif (why := address_problem(m.listen)) is not None:
            yield Problem("monitor.listen", f"listen {show(m.listen)} {why}",
                          fix="an IPv4 address or name of the keeper's host, or 127.0.0.1")
        elif _is_wildcard(m.listen):
            yield Advisory("monitor.listen", "the keeper's /metrics listens on every interface "
                           "of its host", fix="listen on the address Prometheus scrapes, or "
                           "protect it with web_config (TLS and basic auth)")
    if layout.network_mode == "bridge" and isinstance(m.publish, str) and \
            _is_wildcard(m.publish):
        yield Advisory("monitor.publish", "the keeper's /metrics is published on every "
                       "interface", fix="publish on 127.0.0.1 or a private address, or "
                       "protect it with web_config (TLS and basic auth)")
    if m.web_config is not None:
        yield from path_form(m.web_config, "monitor.web_config", "web_config")
        if posixpath.dirname(m.web_config) in SYSTEM_DIRS:
            yield Problem("monitor.web_config", f"its directory {posixpath.dirname(m.web_config)}"
                          " would be bound into the keeper",
                          fix="keep the web config, certificate and key in a directory of "
                              "their own, e.g. /etc/walbctr/keeper-web/web.yml")


def monitor_problems(layout: Layout) -> Iterator[Problem]:
    """What is wrong with the monitor block, given the servers it watches."""
    m = layout.spec.monitor
    if m is None:
        return
    if m.host not in layout.used_hosts:
        yield Problem("monitor.host", f"host {m.host!r} runs no server",
                      fix="put the keeper on one of the hosts that run servers: "
                      + ", ".join(layout.used_hosts))
    for s in layout.servers:
        if s.id == KEEPER_SERVICE:
            yield Problem(f"{s.role.section}[{s.index}].id",
                          f"the id {KEEPER_SERVICE!r} is the keeper's service name",
                          fix="give the server another id")
        if (layout.network_mode == "host" and s.host == m.host and s.port == m.port):
            yield Problem("monitor.port", f"port {m.port} is {s.id}'s port on {m.host}",
                          fix="give the keeper's metrics another port")
    if layout.network_mode == "host" and m.publish is not True and "publish" in \
            m.model_fields_set:
        yield Problem("monitor.publish", "publish applies to bridge mode only",
                      fix="in host mode the keeper listens on the host network already; "
                      "remove it")
    yield from _monitor_exposure(layout, m)
    if m.alertmanager_url is not None and (why := url_problem(m.alertmanager_url)):
        yield Problem("monitor.alertmanager_url", f"alertmanager_url "
                      f"{show(m.alertmanager_url)} {why}",
                      fix="give the Alertmanager's base URL, e.g. http://alertmanager:9093")
    if m.probe_interval > m.interval:
        yield Problem("monitor.probe_interval",
                      f"probe_interval {m.probe_interval:g} s is longer than interval "
                      f"{m.interval:g} s", fix="probe at least as often as the volume scan")
