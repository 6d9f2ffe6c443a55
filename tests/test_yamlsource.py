import pytest

from walbctr.errors import LayoutError
from walbctr.yamlsource import format_loc, load


def test_lines_are_indexed_by_field_path() -> None:
    src = load("a: 1\nb:\n  - x: 2\n    y: 3\n", "t")
    assert src.data == {"a": 1, "b": [{"x": 2, "y": 3}]}
    assert src.lines[("b", 0, "y")] == 4
    assert src.line_of(("b", 0, "missing")) == 3  # falls back to the nearest parent


def test_duplicate_keys_are_rejected_with_both_lines() -> None:
    with pytest.raises(LayoutError) as err:
        load("a: 1\nb: 2\na: 3\n", "t")
    (p,) = err.value.problems
    assert (p.path, p.line) == ("a", 3)
    assert "first given on line 1" in p.message


def test_syntax_error_has_a_line() -> None:
    with pytest.raises(LayoutError) as err:
        load("a:\n  - b\n c: d\n", "t")
    assert err.value.problems[0].line == 3
    assert "YAML syntax error" in err.value.problems[0].message


def test_format_loc() -> None:
    assert format_loc(("archives", 0, "vg")) == "archives[0].vg"
    assert format_loc(()) == ""
