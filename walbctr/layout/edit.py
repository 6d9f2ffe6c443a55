"""A server moved to another host, written as an edit of the layout's own text.

`walbctr replace` gives a server a new host and id. The operator's file keeps its
comments, order and quoting: only the two scalars change (and, for an archive, where the
policy names it by id), in place, at the positions
the YAML parser reports for them. Where they cannot be changed alone (the entry takes its
id or host through an alias or a merge key, so the same text stands for other values
too), the edit says in words what to change instead, and no text is produced.

Pure: text in, text and words out.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml

from walbctr.errors import WalbctrError
from walbctr.layout.server import Role
from walbctr.layout.spec import Layout

_TRAILING_NUMBER = re.compile(r"^(.*?)(\d+)$")


@dataclass(frozen=True)
class ServerEdit:
    """The layout before and after one server is moved."""

    name: str  # the layout's path, for the diff's header
    old_text: str
    new_text: str | None  # None: the edit cannot be made in place (see `changes`)
    changes: tuple[str, ...]  # every change, in words, with its line
    section: str
    index: int

    @property
    def diff(self) -> str:
        if self.new_text is None:
            return ""
        return "".join(difflib.unified_diff(
            self.old_text.splitlines(keepends=True), self.new_text.splitlines(keepends=True),
            fromfile=f"{self.name} (now)", tofile=f"{self.name} (after the replace)"))


def default_new_id(layout: Layout, server_id: str) -> str:
    """The id a replacement gets unless told: the next free number after the old id's
    (p0 -> p1, or p2 when p1 is taken; proxy -> proxy2), as upstream's doc/replace.md
    names them. Ids are compared as the loader compares them, case-insensitively."""
    taken = {s.id.lower() for s in layout.servers}
    found = _TRAILING_NUMBER.match(server_id)
    prefix, number = (found.group(1), int(found.group(2))) if found else (server_id, 1)
    width = len(found.group(2)) if found else 1
    candidate = number + 1
    while f"{prefix}{candidate:0{width}d}".lower() in taken:
        candidate += 1
    return f"{prefix}{candidate:0{width}d}"


def move_server(text: str, name: str, layout: Layout, server_id: str, host: str,
                new_id: str) -> ServerEdit:
    """The layout text with `server_id`'s entry saying `host: HOST` and `id: NEW_ID`."""
    server = layout.server(server_id)
    section, index = server.role.section, server.index
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    entry = _entry(node, section, index)
    where = f"{section}[{index}]"
    if entry is None:
        raise WalbctrError(f"{name}: {where} is not a mapping in the file",
                           "write the server as 'id: ..., host: ...' keys")
    scalars = {key: _own_scalar(entry, key) for key in ("id", "host")}
    changes = []
    for key, new in (("id", new_id), ("host", host)):
        scalar = scalars[key]
        line = f" (line {scalar.start_mark.line + 1})" if scalar is not None else ""
        old = server.id if key == "id" else server.host
        changes.append(f"{where}.{key}{line}: {old} -> {new}")
    refs = _references(node, server.id) if server.role is Role.ARCHIVE else []
    changes += [f"{path} (line {n.start_mark.line + 1}): {server.id} -> {new_id}"
                for path, n in refs]
    edited = None
    spans = [(scalars["id"], new_id), (scalars["host"], host), *((n, new_id) for _, n in refs)]
    if all(n is not None and _count(node, n) == 1 for n, _ in spans):
        edited = _replace(text, spans)
        if not _only_moved(text, edited, section, index, host, new_id, server.id):
            edited = None
    return ServerEdit(name, text, edited, tuple(changes), section, index)


def moved_data(text: str, section: str, index: int, host: str, new_id: str,
               old_id: str = "") -> Any:
    """The layout's data with the server moved (and, for an archive, named by its new id
    where the policy names it): what an edit must read back as."""
    data = yaml.safe_load(text)
    data[section][index] = {**data[section][index], "id": new_id, "host": host}
    if section == Role.ARCHIVE.section and old_id:
        _rename_references(data, old_id, new_id)
    return data


# Where a layout names an archive by id: the keeper's policy (walbctr.layout.policy).
_ARCHIVE_REFERENCES: tuple[tuple[str, ...], ...] = (
    ("policy", "replicate", "to", "*"), ("policy", "verify", "archive"),
    ("policy", "volumes", "*", "replicate", "to", "*"),
    ("policy", "volumes", "*", "verify", "archive"))


def _references(tree: Any, old_id: str) -> list[tuple[str, Any]]:
    """(path, scalar node) of every place the policy names the archive `old_id`."""
    found: list[tuple[str, Any]] = []
    for pattern in _ARCHIVE_REFERENCES:
        found += [(path, n) for path, n in _match(tree, pattern, "")
                  if isinstance(n, yaml.ScalarNode) and n.value == old_id]
    return found


def _match(node: Any, pattern: tuple[str, ...], path: str) -> Iterator[tuple[str, Any]]:
    if not pattern:
        yield path, node
        return
    head, rest = pattern[0], pattern[1:]
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if head in ("*", k.value):
                yield from _match(v, rest, f"{path}.{k.value}" if path else str(k.value))
    elif isinstance(node, yaml.SequenceNode) and head == "*":
        for i, v in enumerate(node.value):
            yield from _match(v, rest, f"{path}[{i}]")


def _rename_references(data: Any, old_id: str, new_id: str) -> None:
    for pattern in _ARCHIVE_REFERENCES:
        _rename(data, pattern, old_id, new_id)


def _rename(node: Any, pattern: tuple[str, ...], old_id: str, new_id: str) -> None:
    head, rest = pattern[0], pattern[1:]
    if isinstance(node, dict):
        keys = list(node) if head == "*" else [head] if head in node else []
    elif isinstance(node, list) and head == "*":
        keys = list(range(len(node)))
    else:
        return
    for k in keys:
        if not rest:
            if node[k] == old_id:
                node[k] = new_id
        else:
            _rename(node[k], rest, old_id, new_id)


def _entry(node: Any, section: str, index: int) -> Any:
    if not isinstance(node, yaml.MappingNode):
        return None
    for key, value in node.value:
        if key.value == section and isinstance(value, yaml.SequenceNode) \
                and index < len(value.value):
            item = value.value[index]
            return item if isinstance(item, yaml.MappingNode) else None
    return None


def _own_scalar(entry: Any, key: str) -> Any:
    """The scalar of `key` written in the entry itself (not through a merge key)."""
    for k, v in entry.value:
        if k.value == key and isinstance(v, yaml.ScalarNode):
            return v
    return None


def _walk(node: Any) -> Iterator[Any]:
    """Every node of the tree, an aliased one as often as it is used."""
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        if isinstance(n, yaml.MappingNode):
            stack += [x for pair in n.value for x in pair]
        elif isinstance(n, yaml.SequenceNode):
            stack += n.value


def _count(tree: Any, node: Any) -> int:
    return sum(1 for n in _walk(tree) if n is node)


def _scalar_text(value: str, style: str | None) -> str:
    if style in ("'", '"'):
        return f"{style}{value}{style}"
    # A plain scalar that YAML reads as something else (yes, null, 0x1f, 1e3, ...) is quoted.
    return value if yaml.safe_load(value) == value else f"'{value}'"


def _replace(text: str, spans: list[tuple[Any, str]]) -> str:
    out = text
    for node, value in sorted(spans, key=lambda s: s[0].start_mark.index, reverse=True):
        start, end = node.start_mark.index, node.end_mark.index
        out = out[:start] + _scalar_text(value, node.style) + out[end:]
    return out


def _only_moved(old: str, new: str, section: str, index: int, host: str, new_id: str,
                old_id: str) -> bool:
    """Whether `new` reads as `old` with exactly that server moved and nothing else."""
    try:
        return bool(yaml.safe_load(new) == moved_data(old, section, index, host, new_id,
                                                      old_id))
    except yaml.YAMLError:
        return False
