"""Errors and warnings that walbctr reports to an operator as a paragraph, never as a
traceback."""

from __future__ import annotations

import sys
from dataclasses import dataclass

# Exit statuses: 2 is what click uses for usage errors; a bad layout is the same kind of
# mistake (the input is wrong, nothing was attempted), so it shares the code.
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input, located as precisely as we can."""

    path: str  # field path such as "archives[0].vg", or "" for the whole file
    message: str
    line: int | None = None
    fix: str = ""

    def render(self, source: str) -> str:
        where = source if self.line is None else f"{source}:{self.line}"
        field = f" {self.path}:" if self.path else ""
        text = f"{where}:{field} {self.message}"
        return f"{text} ({self.fix})" if self.fix else text


class WalbctrError(Exception):
    """An error the operator can act on; the CLI prints it and exits without a traceback."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, fix: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.message}\n{self.fix}" if self.fix else self.message


class LayoutError(WalbctrError):
    """A layout file that cannot be used; carries every problem found, not just the first."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = sorted(problems, key=lambda p: (p.line or 0, p.path, p.message))
        count = len(self.problems)
        head = f"{source}: {count} problem{'s' if count != 1 else ''} found"
        lines = [head, *("  " + p.render(source) for p in self.problems)]
        super().__init__("\n".join(lines))


def warn(text: str) -> None:
    """A line for the operator on standard error, outside any live display."""
    print(text, file=sys.stderr, flush=True)


def last_line(text: str, default: str = "(no output)") -> str:
    """The last non-blank line of a tool's output: usually the one that says what failed."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else default


def explain(err: BaseException) -> str:
    """An exception in the operator's words: walbctr's own message, or its last line."""
    if isinstance(err, WalbctrError):
        return err.message
    return last_line(str(err), type(err).__name__)
