"""YAML text to plain data, keeping the line of every field so errors can point at it.

PyYAML's C loader builds the node tree (fast enough for layouts of thousands of servers);
we walk that tree once to index lines by field path and to reject duplicate keys, which
PyYAML would otherwise silently overwrite.

A layout file may come from anywhere, so its shape is bounded before any tree is built:
size, nesting and the number of values aliases expand to (an "alias bomb" of nested
anchors is a few lines that stand for billions of values). A layout of thousands of
servers stays far inside these bounds.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from walbctr.errors import LayoutError, Problem

Loc = tuple[str | int, ...]

_Loader: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MAX_BYTES = 1 << 20
MAX_DEPTH = 64
MAX_VALUES = 20_000  # scalars and collections, aliases counted as what they stand for


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


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")
_LOC_PART = re.compile(r"\[(\d+)\]|\[('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")\]|\.?([^.\[]+)")


def format_loc(loc: Loc) -> str:
    """("archives", 0, "vg") -> "archives[0].vg"; a key that is not a plain word is
    quoted, so that a path stays one line and reads back: hosts['db.example'].engine."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not _PLAIN_KEY.fullmatch(part):
            out += f"[{part!a}]"
        else:
            out += f".{part}" if out else part
    return out


def parse_loc(path: str) -> Loc:
    """The inverse of format_loc."""
    out: list[str | int] = []
    for index, quoted, plain in _LOC_PART.findall(path):
        if index:
            out.append(int(index))
        elif quoted:
            out.append(str(ast.literal_eval(quoted)))
        else:
            out.append(plain)
    return tuple(out)


def load(text: str, name: str) -> Source:
    """Parse `text`; raise LayoutError for syntax errors, duplicate keys and files too
    large, deep or (through aliases) too big to be a layout."""
    if len(text) > MAX_BYTES:
        raise LayoutError(name, [Problem(
            "", f"the file has {len(text)} characters; a layout has at most {MAX_BYTES}",
            fix="a layout of thousands of servers fits in far less; is this the layout?")])
    try:
        _check_shape(text, name)
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                raise LayoutError(name, [Problem("", "the file is empty", fix=_EMPTY_FIX)])
            problems: list[Problem] = []
            lines: dict[Loc, int] = {(): node.start_mark.line + 1}
            _index(node, (), lines, problems, [], [MAX_VALUES])
            if problems:
                raise LayoutError(name, problems)
            data = loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark is not None else None
        if "exceeded maximum nesting depth" in (err.problem or ""):
            # libyaml 0.2.6 (PyYAML 6.0.4's wheels) has a nesting limit of its own and
            # scans ahead of the events _check_shape counts, so a file far deeper than
            # MAX_DEPTH can stop there first: the same refusal, in the same words.
            raise LayoutError(name, [_too_deep(line)]) from None
        what = " ".join(s for s in (err.context, err.problem) if s)
        raise LayoutError(
            name, [Problem("", f"YAML syntax error: {what}", line, _SYNTAX_FIX)]
        ) from None
    except yaml.reader.ReaderError as err:
        line = text.count("\n", 0, err.position) + 1
        char = chr(err.character) if isinstance(err.character, int) else str(err.character)
        raise LayoutError(name, [Problem(
            "", f"YAML error: unacceptable character {char!r}: YAML text holds no control "
            "characters", line, "remove it; the file may not be a text file")]) from None
    except yaml.YAMLError as err:
        what = " ".join(str(err).split())
        raise LayoutError(name, [Problem("", f"YAML error: {what}", fix=_SYNTAX_FIX)]) from None
    except ValueError as err:  # e.g. an integer of more digits than Python converts
        what = str(err).split(";")[0]
        raise LayoutError(name, [Problem("", f"a value cannot be read: {what}",
                                         fix="write numbers as walb takes them")]) from None
    return Source(name, data, lines)


def _too_deep(line: int | None) -> Problem:
    return Problem("", f"values are nested more than {MAX_DEPTH} levels deep", line,
                   "a layout needs a handful of levels")


def _check_shape(text: str, name: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH and more than MAX_VALUES values once aliases
    are expanded, from the event stream alone: nothing is built, nothing recurses."""
    loader = _Loader(text)
    try:
        shape = _Shape(name)
        while not isinstance(event := loader.get_event(), yaml.StreamEndEvent):
            shape.count(event)
    finally:
        loader.dispose()


class _Shape:
    """What the events of one file add up to so far: open collections, each anchor's
    size, and the values seen with aliases expanded."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.open_sizes: list[int] = []  # values inside each open collection so far
        self.open_anchors: list[str | None] = []
        self.sizes: dict[str, int] = {}  # anchor -> the values it stands for
        self.total = 0
        self.aliases = 0

    def count(self, event: Any) -> None:
        grown, new = self._values_of(event)
        if grown:
            if self.open_sizes:
                self.open_sizes[-1] += grown
            self.total += new
            if self.total > MAX_VALUES:
                raise self._too_many(event)

    def _values_of(self, event: Any) -> tuple[int, int]:
        """The values the event adds to its collection, and those it adds to the total
        (a collection's own values were counted as they came)."""
        if isinstance(event, yaml.ScalarEvent):
            if event.anchor:
                self.sizes[event.anchor] = 1
            return 1, 1
        if isinstance(event, yaml.AliasEvent):
            # An anchor still open is a recursive alias; _index refuses it.
            size = self.sizes.get(event.anchor or "", 1)
            self.aliases += 1
            return size, size
        if isinstance(event, yaml.CollectionStartEvent):
            self._open(event)
        elif isinstance(event, yaml.CollectionEndEvent):
            return self._close(), 1
        return 0, 0

    def _open(self, event: Any) -> None:
        if len(self.open_sizes) >= MAX_DEPTH:
            raise LayoutError(self.name, [_too_deep(_line(event))])
        self.open_sizes.append(0)
        self.open_anchors.append(event.anchor)

    def _close(self) -> int:
        """The values the closed collection stands for, itself included."""
        size = self.open_sizes.pop() + 1
        anchor = self.open_anchors.pop()
        if anchor:
            self.sizes[anchor] = size
        return size

    def _too_many(self, event: Any) -> LayoutError:
        through = f", {self.aliases} aliases expanded" if self.aliases else ""
        return LayoutError(self.name, [Problem(
            "", f"the file stands for more than {MAX_VALUES} values{through}", _line(event),
            "a layout needs far fewer; an anchor used inside another that is "
            "used many times multiplies (an 'alias bomb')")])


def _line(event: Any) -> int | None:
    mark = event.start_mark
    return None if mark is None else int(mark.line) + 1


_EMPTY_FIX = "start from one of the files in examples/, e.g. examples/minimal.yaml"
_SYNTAX_FIX = "check indentation and quoting on that line and the one before it"


def _index(node: Any, loc: Loc, lines: dict[Loc, int], problems: list[Problem],
           parents: list[Any], budget: list[int]) -> None:
    # _check_shape bounded depth and size, but an alias of an anchor that is still open
    # refers to itself: the tree is then endless. `parents` finds it, `budget` bounds the
    # walk whatever happens.
    if any(node is p for p in parents):
        problems.append(Problem(format_loc(loc), "an alias refers to the value it is in",
                                node.start_mark.line + 1, "layouts have no recursive values"))
        return
    budget[0] -= 1
    if budget[0] < 0 or len(parents) > 2 * MAX_DEPTH:
        if budget[0] == -1 or len(parents) > 2 * MAX_DEPTH:
            problems.append(Problem(format_loc(loc), "the file's values are too many or too "
                                    "deep once aliases are expanded",
                                    node.start_mark.line + 1, "use fewer aliases"))
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
            _index(value_node, (*loc, key), lines, problems, [*parents, node], budget)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[(*loc, i)] = item.start_mark.line + 1
            _index(item, (*loc, i), lines, problems, [*parents, node], budget)
