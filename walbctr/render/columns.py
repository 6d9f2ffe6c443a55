"""Aligned text columns, as `docker ps` prints them: the tables of `status`.

rich's Table measures every cell to fit a terminal (about 0.5 ms a row), which made
`status` grow with the number of servers and `status --volumes` with the number of
volumes; these tables need no wrapping, colour or borders, only alignment.
"""

from __future__ import annotations

from collections.abc import Sequence

GAP = "  "


def columns(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """The header and each row, one line each, every column as wide as its widest cell.

    Trailing blanks are left off, so an empty last column leaves no padding behind.
    """
    widths = [len(h) for h in headers]
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"a row of {len(row)} cells under {len(headers)} headers")
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = [GAP.join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
             for line in (headers, *rows)]
    return "\n".join(lines) + "\n"
