"""The layout file read into a `Layout`: YAML, the models, the rules, every problem located.

`load_layout` is pure (text in, `Layout` out) so that every rule can be tested without a
file system; `read_layout` is the thin edge that reads the file.
"""

from __future__ import annotations

import difflib
import functools
import string
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from walbctr.errors import LayoutError, Problem, WalbctrError
from walbctr.layout import validation
from walbctr.layout.host import Host, HostSpec
from walbctr.layout.monitor import MonitorSpec
from walbctr.layout.server import START_ORDER, CommonOptions, KeepAlive, Role, Server
from walbctr.layout.spec import (
    BUILTIN_DEFAULTS,
    DEFAULT_LAYOUT_PATH,
    ROLE_OPTIONS,
    ROLE_SPECS,
    START_PERIOD_S,
    Defaults,
    Layout,
    LayoutSpec,
    NetworkSpec,
)
from walbctr.layout.validation import monitor_problems
from walbctr.layout.values import PLACEHOLDERS, show
from walbctr.layout.yamlsource import MAX_BYTES, Loc, Source, format_loc, load, parse_loc


def read_layout(path: str | Path) -> Layout:
    """Read and validate the layout file at `path`."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            raw = f.read(MAX_BYTES + 1)  # a device or a huge file is not read to its end
    except FileNotFoundError:
        raise WalbctrError(
            f"layout file {str(p)!r} not found",
            "pass the layout's path, or run where a layout.yaml is; examples/ has templates",
        ) from None
    except OSError as err:
        raise WalbctrError(f"cannot read layout file {str(p)!r}: {err}") from None
    if len(raw) > MAX_BYTES:
        raise LayoutError(str(p), [Problem(
            "", f"the file is larger than {MAX_BYTES} bytes, the most a layout may have",
            fix="a layout of thousands of servers fits in far less; is this the layout?")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise LayoutError(str(p), [Problem(
            "", f"the file is not UTF-8 text: byte 0x{raw[err.start]:02x} cannot start or "
            "continue a character", line,
            "save it as UTF-8, e.g. iconv -f latin1 -t utf-8 OLD > NEW")]) from None
    return load_layout(text, str(p))


def load_layout(text: str, name: str = DEFAULT_LAYOUT_PATH) -> Layout:
    """Parse, validate and resolve a layout; raise LayoutError listing every problem."""
    src = load(text, name)
    if not isinstance(src.data, dict):
        kind = type(src.data).__name__
        raise LayoutError(name, [Problem(
            "", f"the file holds a {kind}, not a mapping of layout keys", 1,
            "a layout starts with keys such as 'group:' and 'archives:'; see examples/")])
    try:
        spec = LayoutSpec.model_validate(src.data)
    except ValidationError as err:
        raise LayoutError(name, _pydantic_problems(err, src)) from None
    problems: list[Problem] = []
    hosts = _resolve_hosts(spec)
    servers = tuple(_resolve_servers(spec, hosts, problems))
    layout = Layout(name, spec, servers, hosts)
    problems += validation.check(layout)
    problems += monitor_problems(layout)
    problems = list(dict.fromkeys(problems))  # a bad default is reported once, not per server
    errors = [_locate(p, src) for p in problems if not isinstance(p, validation.Advisory)]
    if errors:
        raise LayoutError(name, errors)
    warnings = tuple(_locate(p, src) for p in problems if isinstance(p, validation.Advisory))
    return Layout(name, spec, servers, hosts, warnings)


def _locate(p: Problem, src: Source) -> Problem:
    if p.line is not None:
        return p
    return type(p)(p.path, p.message, src.line_of(parse_loc(p.path)), p.fix)


def _resolve_hosts(spec: LayoutSpec) -> dict[str, Host]:
    named = spec.hosts or {}
    names = list(named)
    for role in START_ORDER:
        names += [s.host for s in spec.specs(role) if s.host not in named]
    hosts = {}
    for name in dict.fromkeys(names):
        hs = named.get(name) or HostSpec()
        hosts[name] = Host(name, hs.address or name, hs.engine, hs.tls, hs.insecure)
    return hosts


def _resolve_servers(
    spec: LayoutSpec, hosts: Mapping[str, Host], problems: list[Problem]
) -> Iterator[Server]:
    bridge = spec.network.mode == "bridge"
    common = spec.defaults.model_dump(exclude_none=True, exclude={"archive", "proxy", "storage"})
    for role in START_ORDER:
        role_defaults = getattr(spec.defaults, role.value)
        layered: list[tuple[Loc, Mapping[str, Any]]] = [
            ((), BUILTIN_DEFAULTS),
            (("network",), {"publish": spec.network.publish} if spec.network.publish else {}),
            (("defaults",), common),
            (("defaults", role.value),
             role_defaults.model_dump(exclude_none=True) if role_defaults else {}),
        ]
        for index, entry in enumerate(spec.specs(role)):
            own = entry.model_dump(exclude_none=True, exclude={"id", "host"})
            merged: dict[str, Any] = {}
            origin: dict[str, Loc] = {}
            for loc, values in [*layered, ((role.section, index), own)]:
                for key, value in values.items():
                    merged[key] = value
                    origin[key] = (*loc, key)
            fill = {"id": entry.id, "host": entry.host, "role": role.value, "group": spec.group}
            paths = {}
            for key in ("base_dir", "log_path"):
                if merged[key] != "-" or key == "base_dir":
                    problems += validation.path_form(merged[key], format_loc(origin[key]), key)
                paths[key] = _expand(merged[key], fill, origin[key], problems)
            publish = merged.pop("publish", None)
            if publish is not None and publish is not False and not bridge:
                problems.append(Problem(
                    format_loc(origin["publish"]), "publish applies to bridge mode only",
                    fix="in host mode servers listen on the host network already; remove it"))
            # 'privileged' in the common defaults means archives and storages; said of a
            # proxy itself, it is a mistake.
            if role is Role.PROXY and merged.get("privileged") and origin["privileged"][:2] in (
                    ("proxies", index), ("defaults", "proxy")):
                problems.append(Problem(
                    format_loc(origin["privileged"]), "a proxy never runs privileged",
                    fix="it touches no device; remove the setting"))
            host = hosts[entry.host]
            flags = ROLE_OPTIONS[role].FLAGS
            yield Server(
                role=role,
                id=entry.id,
                host=entry.host,
                index=index,
                address=entry.id if bridge else host.address,
                port=merged["port"],
                base_dir=paths["base_dir"],
                log_path=paths["log_path"],
                options={k: merged[k] for k, _ in flags if k in merged},
                flags=flags,
                publish=("127.0.0.1" if publish is True else publish) if bridge and publish
                else None,
                stop_grace_period=merged["stop_grace_period"],
                start_period=merged.get("start_period") or START_PERIOD_S[role],
                privileged=role is not Role.PROXY and merged.get("privileged", True),
                nofile=merged["nofile"],
                origins={k: format_loc(v) for k, v in origin.items() if len(v) > 1},
            )


def _expand(template: str, fill: Mapping[str, str], loc: Loc, problems: list[Problem]) -> str:
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as err:
        problems.append(Problem(format_loc(loc), f"bad template {template!r}: {err}",
                                fix="write literal braces as {{ and }}"))
        return template
    unknown = [f for f in fields if f not in PLACEHOLDERS]
    if unknown:
        problems.append(Problem(
            format_loc(loc), f"unknown placeholder {{{unknown[0]}}} in {template!r}",
            fix="placeholders are " + ", ".join("{" + p + "}" for p in PLACEHOLDERS)))
        return template
    return template.format_map(fill)


# --- turning pydantic's errors into an operator's ---------------------------------------

_SECTION_ROLES = {role.section: role for role in Role}
_OTHER_ROLE_HINT: dict[str, list[Role]] = {}
for _role, _model in ROLE_OPTIONS.items():
    for _name in _model.model_fields:
        if _name not in CommonOptions.model_fields:
            _OTHER_ROLE_HINT.setdefault(_name, []).append(_role)


def _pydantic_problems(err: ValidationError, src: Source) -> list[Problem]:
    merged: dict[Loc, list[str]] = {}
    fixes: dict[Loc, str] = {}
    errors = err.errors(include_url=False)
    for e in errors:
        if _other_branch(e, errors):
            continue
        loc = _data_loc(tuple(e["loc"]), src.data, e["type"] == "missing")
        message, fix = _describe(e, loc, src.data)
        if message not in merged.setdefault(loc, []):
            merged[loc].append(message)
        if fix:
            fixes.setdefault(loc, fix)
    return [
        Problem(format_loc(loc), " or ".join(msgs), src.line_of(loc), fixes.get(loc, ""))
        for loc, msgs in merged.items()
    ]


_SCALAR_TYPES = ("bool_type", "string_type", "int_type", "float_type")


def _other_branch(e: Any, errors: list[Any]) -> bool:
    """A union's scalar branch refusing a mapping or list that its model branch reports
    on in detail ('keepalive: {idle: 0}' is not about booleans)."""
    if e["type"] not in _SCALAR_TYPES or not isinstance(e.get("input"), dict | list):
        return False
    field = tuple(e["loc"])[:-1]
    return any(tuple(o["loc"])[:len(field)] == field and len(o["loc"]) > len(field) + 1
               for o in errors)


def _data_loc(loc: Loc, data: Any, missing: bool = False) -> Loc:
    """Drop the union-member tags pydantic puts in a location, keeping only real keys."""
    out: list[str | int] = []
    node = data
    for i, part in enumerate(loc):
        if isinstance(node, dict) and part in node:  # noqa: SIM114 (mypy narrows per branch)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        elif missing and i == len(loc) - 1 and isinstance(node, dict):
            pass  # a missing key: keep it, it is the field's name
        else:
            continue
        out.append(part)
    return tuple(out)


def _describe(e: Any, loc: Loc, data: Any) -> tuple[str, str]:
    kind = e["type"]
    key = loc[-1] if loc else ""
    value = e.get("input")
    if kind == "extra_forbidden":
        return _unknown_key(str(key), loc, e)
    if kind == "missing":
        if key == "group":
            return "required: the backup group's name", "add e.g. 'group: backup0'"
        return f"required field {key!r} is missing", ""
    if kind == "walbctr_value":  # a rule of walbctr.layout.values: its own words and fix
        return str(e["ctx"]["message"]), str(e["ctx"]["fix"])
    if kind in ("int_type", "int_parsing") and isinstance(value, str):
        return f"must be a whole number, not the string {value!r}", "remove the quotes"
    if kind in ("model_type", "dict_type"):
        return f"must be a mapping of keys, not {_kind(value)}", ""
    if kind == "list_type":
        return f"must be a list (one '- id: ...' entry per server), not {_kind(value)}", ""
    msg = str(e["msg"])
    msg = msg.replace("Input should be", "must be").replace("Value error, ", "")
    if value is not None and not isinstance(value, dict | list):
        msg += ", got " + (show(value) if isinstance(value, str) else repr(value))
    fix = "write a number such as 10 or 0.5" if kind == "finite_number" else ""
    if kind in ("greater_than_equal", "less_than_equal") and str(key) in _number_ranges():
        low, high = _number_ranges()[str(key)]
        fix = f"use {low} to {high}" if high is not None else f"use {low} or more"
    return msg, fix


@functools.cache
def _number_ranges() -> dict[str, tuple[int | float, int | float | None]]:
    """Setting name -> (minimum, maximum or None), as the schema says, for fixes."""
    out: dict[str, tuple[int | float, int | float | None]] = {}
    models: list[type[BaseModel]] = [*ROLE_OPTIONS.values(), KeepAlive]
    for model in models:
        for name, prop in model.model_json_schema()["properties"].items():
            for option in prop.get("anyOf", [prop]):
                if "minimum" in option:
                    out[name] = (option["minimum"], option.get("maximum"))
    return out


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", int: "a number",
            bool: "a boolean", type(None): "empty"}.get(type(value), type(value).__name__)


def _unknown_key(key: str, loc: Loc, e: Any) -> tuple[str, str]:
    parent = loc[:-1]
    role = None
    if len(parent) == 2 and parent[0] in _SECTION_ROLES:
        role = _SECTION_ROLES[str(parent[0])]
    elif len(parent) == 2 and parent[0] == "defaults":
        role = Role(str(parent[1]))
    elif parent == ("defaults",) and key in _OTHER_ROLE_HINT:
        owners = _OTHER_ROLE_HINT[key]
        where = " or ".join(f"defaults.{o.value}" for o in owners)
        return (f"{key!r} is a setting of {' and '.join(o.section for o in owners)} only",
                f"put it under {where}")
    if role is not None and key in _OTHER_ROLE_HINT and key not in ROLE_OPTIONS[role].model_fields:
        have = sorted(r.section for r in _OTHER_ROLE_HINT[key])
        article = "an" if role is Role.ARCHIVE else "a"
        return (f"{key!r} is not {article} {role.value} option: walb-{role.value} has no "
                f"such setting (only {' and '.join(have)} have it)", "remove it")
    allowed = _allowed_keys(loc)
    close = difflib.get_close_matches(key, allowed, n=1)
    fix = f"did you mean {close[0]!r}?" if close else (
        "allowed here: " + ", ".join(allowed) if allowed else "")
    return f"unknown key {key!r}", fix


def _allowed_keys(loc: Loc) -> list[str]:
    parent = loc[:-1]
    model: type[BaseModel] | None = None
    if parent == ():
        model = LayoutSpec
    elif parent == ("defaults",):
        model = Defaults
    elif parent == ("network",):
        model = NetworkSpec
    elif parent == ("monitor",):
        model = MonitorSpec
    elif len(parent) == 2 and parent[0] == "hosts":
        model = HostSpec
    elif len(parent) == 2 and parent[0] == "defaults":
        model = ROLE_OPTIONS[Role(str(parent[1]))]
    elif len(parent) == 2 and parent[0] in ("archives", "proxies", "storages"):
        model = ROLE_SPECS[_SECTION_ROLES[str(parent[0])]]
    elif len(parent) >= 1 and parent[-1] == "keepalive":
        model = KeepAlive
    return sorted(model.model_fields) if model else []
