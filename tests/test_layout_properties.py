"""Property tests: whatever text is handed to `walbctr validate`, it answers at once,
either accepting the layout or refusing it with exit 2 and every problem located.

Two sources of input: layouts generated from the layout's own vocabulary (keys and
values that are almost right), and the example layouts mutated character by character
and line by line, as a careless edit or a hostile file would.
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.conftest import EXAMPLES
from walbctr.cli.main import main

BOUND_S = 1.0
VALUE_RE = re.compile(r"\b(\w+): ((?:\{\w+\}|[^,{}\[\]\n#])+)")
HUNG_S = 1.5
EXAMPLE_TEXTS = [p.read_text() for p in sorted(EXAMPLES.glob("*.yaml"))]
# No shrinking: a slow input would be run again hundreds of times to make it smaller; the
# input that failed is reported as it was generated.
SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    phases=[Phase.explicit, Phase.reuse, Phase.generate],
                    suppress_health_check=[HealthCheck.too_slow])

KEYS = ["id", "host", "port", "vg", "thinpool", "base_dir", "log_path", "publish", "debug",
        "fg", "maxconn", "timeout", "keepalive", "lab_vg_size", "delay", "maxdelay", "fst",
        "sync_cmpr", "privileged", "start_period", "engine", "address", "tls", "insecure"]
TRICKY = ["/var/walb/{id}", "//etc", "//etc/walb", "/etc/cron.d/x", "/run/docker.sock", "a0",
          "hostA0", "tcp://h:2375", "ssh://root@h", "0.0.0.0", "127.0.0.1", "{id}", "$(id)",
          "../x", "snappy:0:1", "vg0", "1G", "", "\u00e9", "\n", "-1", "1e308", "[]", "{}"]
VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(TRICKY),
    st.text(max_size=40))
PATHS = st.one_of(st.sampled_from([t for t in TRICKY if t.startswith("/")]),
                  st.lists(st.sampled_from(["", "etc", "var", "walb", "{id}", "..", ".",
                                            "x.sock", "run"]), max_size=4).map("/".join))
# Most of a generated server is valid, so that the rules across servers (which run only on
# a layout whose fields parse) are reached too; one or two fields are then made odd.
VALID = {"port": st.integers(1024, 65535), "base_dir": st.just("/var/walb/{id}"),
         "debug": st.booleans(), "maxconn": st.integers(1, 100)}


@st.composite
def servers(draw: st.DrawFn, role: str) -> dict[str, object]:
    server: dict[str, object] = {"id": draw(st.sampled_from(["a0", "p0", "s0", "x", "A0"])),
                                 "host": draw(st.sampled_from(["h1", "h2", "hostA0"]))}
    if role == "archives":
        server["vg"] = "vg0"
    for key in draw(st.lists(st.sampled_from(sorted(VALID)), max_size=2, unique=True)):
        server[key] = draw(VALID[key])
    # Paths most often: they are where the rules across servers (nesting, sharing) work.
    odd = st.sampled_from(["base_dir", "log_path"] * 8 + KEYS)
    for key in draw(st.lists(odd, max_size=1)):
        server[key] = draw(PATHS if key in ("base_dir", "log_path") else VALUES)
    return server


SERVER = servers("proxies")
LAYOUT = st.fixed_dictionaries(
    {"group": st.sampled_from(["g"] * 8 + ["lab", "G!", "", "-"]),
     "archives": st.lists(servers("archives"), min_size=1, max_size=3),
     "proxies": st.lists(servers("proxies"), min_size=1, max_size=3),
     "storages": st.lists(servers("storages"), min_size=1, max_size=3)},
    optional={
        "defaults": st.fixed_dictionaries({}, optional={"base_dir": PATHS, "log_path": PATHS,
                                                        "privileged": VALUES}),
        "hosts": st.dictionaries(st.sampled_from(["h1", "h2", "hostA0", "h 1"]),
                                 st.one_of(st.none(), st.fixed_dictionaries({}, optional={
                                     "address": st.sampled_from(TRICKY),
                                     "engine": st.sampled_from(TRICKY),
                                     "insecure": st.booleans()})), max_size=3),
        "network": st.fixed_dictionaries({"mode": st.sampled_from(["host", "bridge", 3])}),
        "monitor": st.fixed_dictionaries({"host": st.sampled_from(["h1", "nosuch"])}, optional={
            k: VALUES for k in ("port", "listen", "interval", "publish", "web_config")}),
    })


@st.composite
def mutated_examples(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(EXAMPLE_TEXTS))
    lines = text.splitlines(keepends=True)
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["char", "delete", "duplicate", "swap", "insert",
                                     "value", "value"]))
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        if kind == "char" and lines[i]:
            j = draw(st.integers(0, len(lines[i]) - 1))
            ch = draw(st.sampled_from(list(":-{}[],'\"&*!|>#%@` \t/.\\0123456789az")))
            lines[i] = lines[i][:j] + ch + lines[i][j + 1:]
        elif kind == "value":  # one `key: value` of the file given a tricky value
            text = "".join(lines)
            spots = list(VALUE_RE.finditer(text))
            if spots:
                paths = [m for m in spots if m.group(1) in ("base_dir", "log_path")]
                m = draw(st.sampled_from(paths if paths and draw(st.booleans()) else spots))
                new = draw(PATHS if m.group(1) in ("base_dir", "log_path")
                           else st.sampled_from(TRICKY))
                text = text[:m.start(2)] + (new if new.strip() else repr(new)) + text[m.end(2):]
                lines = text.splitlines(keepends=True)
        elif kind == "delete":
            del lines[i]
        elif kind == "duplicate":
            lines.insert(i, lines[i])
        elif kind == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        else:
            lines.insert(i, draw(st.sampled_from([
                "  base_dir: //etc\n", "  log_path: /root/.ssh/authorized_keys\n",
                "&a [*a, *a]\n", "  - {id: x, host: h9}\n", "monitor: {host: nosuch}\n",
                "hosts: {h1: {engine: 'tcp://h1:2375'}}\n", "version: 99\n"])))
    return "".join(lines)


def _validate(tmp: Path, text: str) -> None:
    path = tmp / "layout.yaml"
    path.write_text(text, encoding="utf-8")
    def hung(_signum: int, _frame: object) -> None:
        raise TimeoutError(f"validate still running after {HUNG_S} s")

    # A hang (the //etc loop once) would stop the test, not fail it: an alarm turns it
    # into an exception the runner reports with the input.
    previous = signal.signal(signal.SIGALRM, hung)
    signal.setitimer(signal.ITIMER_REAL, HUNG_S)
    try:
        started = time.monotonic()
        result = CliRunner().invoke(main, ["validate", str(path)])
        took = time.monotonic() - started
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert took < BOUND_S, f"validate took {took:.2f} s on:\n{text}"
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{type(result.exception).__name__}: {result.exception}\n{text}")
    assert "Traceback" not in result.output
    if result.exit_code == 0:
        return
    assert result.exit_code == 2, f"exit {result.exit_code}: {result.output}\n{text}"
    said = result.output
    assert f"{path}: " in said, said
    problems = [line.strip() for line in said.splitlines()[1:] if line.startswith("  ")] \
        or [said.strip()]
    for problem in problems:
        # located: a line number, or (for the whole file) the file itself
        assert problem.startswith(f"{path}:"), problem


@SETTINGS
@given(text=mutated_examples())
def test_a_mutated_example_is_accepted_or_refused_at_once_with_located_problems(
        tmp_path_factory: object, text: str) -> None:
    _validate(_tmp(tmp_path_factory), text)


@SETTINGS
@given(layout=LAYOUT)
def test_a_generated_layout_is_accepted_or_refused_at_once_with_located_problems(
        tmp_path_factory: object, layout: dict[str, object]) -> None:
    _validate(_tmp(tmp_path_factory), yaml.safe_dump(layout, allow_unicode=True))


def _tmp(factory: object) -> Path:
    return factory.mktemp("p")  # type: ignore[attr-defined, no-any-return]
