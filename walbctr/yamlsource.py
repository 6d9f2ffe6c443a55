"""YAML text to plain data, keeping the line of every field so errors can point at it.

PyYAML's C loader builds the node tree (fast enough for layouts of thousands of servers);
we walk that tree once to index lines by field path and to reject duplicate keys, which
PyYAML would otherwise silently overwrite.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from walbctr.errors import LayoutError, Problem

Loc = tuple[str | int, ...]

_Loader: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MAX_DEPTH = 64


@dataclass
class Source:
    """Parsed YAML plus where each field stood in the text."""

    name: str
    data: Any
    lines: dict[Loc, int] = field(default_factory=dict)

    def line_of(self, loc: Loc) -> int | None:
        """The line of `loc`, or of its nearest ancestor that has one."""
        for end in range(len(loc), -1, -1):
            line = self.lines.get(loc[:end])
            if line is not None:
                return line
        return None


def format_loc(loc: Loc) -> str:
    """("archives", 0, "vg") -> "archives[0].vg"."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def load(text: str, name: str) -> Source:
    """Parse `text`; raise LayoutError for syntax errors and duplicate keys."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise LayoutError(name, [Problem("", "the file is empty", fix=_EMPTY_FIX)])
        problems: list[Problem] = []
        lines: dict[Loc, int] = {(): node.start_mark.line + 1}
        _index(node, (), lines, problems, 0)
        if problems:
            raise LayoutError(name, problems)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark is not None else None
        what = " ".join(s for s in (err.context, err.problem) if s)
        raise LayoutError(
            name, [Problem("", f"YAML syntax error: {what}", line, _SYNTAX_FIX)]
        ) from None
    except yaml.YAMLError as err:
        raise LayoutError(name, [Problem("", f"YAML error: {err}", fix=_SYNTAX_FIX)]) from None
    finally:
        loader.dispose()
    return Source(name, data, lines)


_EMPTY_FIX = "start from one of the files in examples/, e.g. examples/minimal.yaml"
_SYNTAX_FIX = "check indentation and quoting on that line and the one before it"


def _index(node: Any, loc: Loc, lines: dict[Loc, int], problems: list[Problem], depth: int) -> None:
    if depth > _MAX_DEPTH:
        problems.append(Problem(format_loc(loc), "nesting is too deep (recursive alias?)"))
        return
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen and key != "<<":
                problems.append(
                    Problem(
                        format_loc((*loc, key)),
                        f"duplicate key (first given on line {seen[key]})",
                        line,
                        "keep one of the two",
                    )
                )
                continue
            seen[key] = line
            lines[(*loc, key)] = line
            _index(value_node, (*loc, key), lines, problems, depth + 1)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[(*loc, i)] = item.start_mark.line + 1
            _index(item, (*loc, i), lines, problems, depth + 1)
