"""The status tables' text layout (walbctr/render/columns.py)."""

from __future__ import annotations

import pytest

from walbctr.render.columns import columns


def test_every_column_is_as_wide_as_its_widest_cell_with_two_blanks_between() -> None:
    text = columns(("ID", "STATE"), [("a0", "running"), ("storage-long", "")])
    assert text.splitlines() == [
        "ID            STATE",
        "a0            running",
        "storage-long",  # an empty last cell leaves no trailing blanks
    ]


def test_a_header_wider_than_its_cells_sets_the_width() -> None:
    assert columns(("RESTARTS", "ID"), [("1", "s0")]).splitlines()[1] == "1         s0"


def test_no_rows_prints_only_the_header() -> None:
    assert columns(("ID", "STATE"), []) == "ID  STATE\n"


def test_a_row_of_the_wrong_length_is_a_bug_not_a_misaligned_table() -> None:
    with pytest.raises(ValueError, match="2 cells under 3 headers"):
        columns(("A", "B", "C"), [("1", "2")])
