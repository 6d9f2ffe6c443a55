"""`walbc version`: the walb-tools version a running server reports.

walb-tools v1.0.19 answers with one LTSV line, `version:1.0.19<TAB>build_date:...<TAB>
log_version:...<TAB>commit:...` (src/description.cpp:24-34); a build that answers a bare
version string (the test double does) is read as that string. What a server reports is
what it runs, which an image's tag or label only claims: a container left on an old image
by a paused upgrade says so here. Pure, standard library only (the keeper asks it).
"""

from __future__ import annotations

from walbctr.walb.walbc import walbc_argv

# A Prometheus label value and a status cell: long enough for any release string.
MAX_LENGTH = 100


def version_argv(port: int, address: str = "127.0.0.1", timeout_s: int = 3) -> list[str]:
    return walbc_argv(port, ["version"], address=address, timeout_s=timeout_s)


def parse_version(text: str) -> str:
    """The version in `walbc version`'s answer; ValueError when there is none."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise ValueError("walbc version printed nothing")
    first = lines[0]
    if "\t" in first or first.startswith("version:"):
        fields = dict(item.partition(":")[::2] for item in first.split("\t"))
        found = fields.get("version", "").strip()
    else:
        found = first
    if not found or len(found) > MAX_LENGTH or any(c.isspace() for c in found):
        raise ValueError(f"not a walb-tools version: {first[:MAX_LENGTH]!r}")
    return found
