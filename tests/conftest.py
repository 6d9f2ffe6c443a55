from __future__ import annotations

from pathlib import Path

import pytest

from walbctr.layout import Layout, load_layout

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

MINIMAL = """\
group: g
archives:
  - {id: a0, host: h1, vg: vg0}
proxies:
  - {id: p0, host: h2}
storages:
  - {id: s0, host: h3}
"""


@pytest.fixture
def minimal() -> Layout:
    return load_layout(MINIMAL, "t.yaml")
