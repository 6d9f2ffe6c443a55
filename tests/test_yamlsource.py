import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from walbctr.errors import LayoutError
from walbctr.layout.loader import load_layout
from walbctr.layout.yamlsource import MAX_BYTES, MAX_VALUES, format_loc, load, parse_loc


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


# --- hostile files (issue 11): refused or accepted within 1 s and 200 MB ------------------

HOSTILE = Path(__file__).parent / "layouts" / "hostile"
HOSTILE_CASES = sorted(HOSTILE.glob("*.yaml"))
TIME_LIMIT_S = 1.0
MEMORY_LIMIT_MB = 200

# Run in a fresh interpreter so that time and peak memory are the layout's alone; the
# limits are asserted outside, where a runaway child is also killed.
MEASURE = """\
import json, resource, sys, time
from walbctr.errors import LayoutError
from walbctr.layout.loader import read_layout
start = time.perf_counter()
try:
    read_layout(sys.argv[1])
    outcome = "accepted"
except LayoutError as err:
    outcome = str(err)
seconds = time.perf_counter() - start
# VmHWM is this process image's own peak: ru_maxrss survives exec and so counts the
# forking pytest worker's memory too (seen: 308 MB after a test that loaded an image).
with open("/proc/self/status") as status:
    hwm = [line.split()[1] for line in status if line.startswith("VmHWM:")]
peak_mb = int(hwm[0]) / 1024 if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"outcome": outcome, "seconds": seconds, "peak_mb": peak_mb}))
"""


def measure(path: Path) -> dict[str, Any]:
    run = subprocess.run([sys.executable, "-c", MEASURE, str(path)], capture_output=True,
                         text=True, check=False, timeout=60)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)  # type: ignore[no-any-return]


def expected_words(path: Path) -> list[str]:
    return [m.decode() for m in re.findall(rb"^# expect: (.+)$", path.read_bytes(), re.M)]


def test_hostile_corpus_has_its_expectations() -> None:
    assert len(HOSTILE_CASES) >= 10
    assert all(expected_words(p) for p in HOSTILE_CASES)


@pytest.mark.parametrize("path", HOSTILE_CASES, ids=[p.stem for p in HOSTILE_CASES])
def test_hostile_file_is_refused_within_1s_and_200mb(path: Path) -> None:
    result = measure(path)
    for words in expected_words(path):
        assert words in result["outcome"], result["outcome"]
    assert result["seconds"] < TIME_LIMIT_S, result
    assert result["peak_mb"] < MEMORY_LIMIT_MB, result


def test_a_billion_laughs_would_be_billions_of_values() -> None:
    # The bomb in the corpus is what it claims: nine levels of nine, 9**10 values.
    text = (HOSTILE / "billion-laughs.yaml").read_text()
    assert text.count("*l") == 9 * 9 + 1 and "group: *l9" in text


def test_a_layout_at_the_size_limit_of_values_is_read_in_bounds(tmp_path: Path) -> None:
    # Just under MAX_VALUES: the most a file can make walbctr do, and a real layout.
    per_server = 7  # {id: sN, host: h, port: N} is a mapping of three pairs
    n = (MAX_VALUES - 100) // per_server
    text = "group: g\narchives:\n  - {id: a0, host: h, vg: v}\nproxies:\n" \
           "  - {id: p0, host: h, port: 9999}\nstorages:\n" + "".join(
               f"  - {{id: s{i}, host: h, port: {10000 + i}}}\n" for i in range(1, n))
    path = tmp_path / "layout.yaml"
    path.write_text(text)
    result = measure(path)
    assert result["outcome"] == "accepted"
    assert result["seconds"] < TIME_LIMIT_S * 2, result  # a real layout: not hostile, but bounded
    assert result["peak_mb"] < MEMORY_LIMIT_MB, result


def test_a_file_larger_than_a_layout_can_be_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("group: g\n" + ("# " + "x" * 1000 + "\n") * 1100)
    result = measure(path)
    assert f"larger than {MAX_BYTES} bytes" in result["outcome"]
    assert result["seconds"] < TIME_LIMIT_S


def test_a_path_longer_than_linux_takes_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "long.yaml"
    path.write_text("group: g\narchives: [{id: a0, host: h, vg: v, base_dir: /"
                    + "/".join(["a" * 200] * 2000) + "}]\n")
    result = measure(path)
    assert "archives[0].base_dir" in result["outcome"]
    assert "Linux takes at most 4095" in result["outcome"]
    assert result["seconds"] < TIME_LIMIT_S


def test_a_file_that_is_not_utf8_exits_2_naming_the_line() -> None:
    path = HOSTILE / "latin1.yaml"
    run = subprocess.run([sys.executable, "-m", "walbctr", "validate", str(path)],
                         capture_output=True, text=True, check=False)
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    assert f"{path}:5: the file is not UTF-8 text" in run.stderr


def test_anchors_and_merge_keys_a_layout_uses_still_work() -> None:
    src = load("base: &b {port: 10001, debug: true}\nx: {<<: *b, port: 2}\ny: *b\n", "t")
    assert src.data["x"] == {"port": 2, "debug": True}
    assert src.data["y"] == {"port": 10001, "debug": True}


@pytest.mark.parametrize("loc", [("archives", 0, "vg"), ("hosts", "db.example", "engine"),
                                 ("a\nb",), ("hosts", "x']y", "tls", "ca"), ()])
def test_a_field_path_is_one_line_and_reads_back(loc: tuple[str | int, ...]) -> None:
    path = format_loc(loc)
    assert "\n" not in path
    assert parse_loc(path) == loc


def test_a_dotted_host_name_is_located_in_its_errors() -> None:
    text = ("group: g\nhosts:\n  db.example:\n    address: 'db example'\n"
            "archives: [{id: a0, host: db.example, vg: v}]\n")
    with pytest.raises(LayoutError) as err:
        load_layout(text, "t.yaml")
    (p,) = err.value.problems
    assert (p.path, p.line) == ("hosts['db.example'].address", 4)
