from __future__ import annotations

import json

import pytest

from tests.conftest import EXAMPLES, MINIMAL
from walbctr.errors import WalbctrError
from walbctr.layout.imagetag import DEFAULT_IMAGE
from walbctr.layout.loader import load_layout, read_layout
from walbctr.layout.schema import layout_schema
from walbctr.layout.server import Role
from walbctr.layout.spec import Layout


def test_builtin_defaults(minimal: Layout) -> None:
    a0 = minimal.server("a0")
    assert (a0.port, a0.base_dir, a0.log_path) == (10000, "/var/walb/a0", "-")
    assert a0.address == "h1"  # host mode: the host's address, by default its name
    assert minimal.image == DEFAULT_IMAGE
    assert minimal.network_mode == "host"


def test_servers_are_in_start_order() -> None:
    text = MINIMAL.replace("storages:", "storages:\n  - {id: s1, host: h3, port: 10001}")
    layout = load_layout(text)
    assert [s.id for s in layout.servers] == ["a0", "p0", "s1", "s0"]
    assert [s.role for s in layout.servers] == [Role.ARCHIVE, Role.PROXY, Role.STORAGE,
                                                Role.STORAGE]


def test_defaults_layer_common_then_role_then_server() -> None:
    text = """
group: g
defaults:
  fg: 2
  base_dir: /srv/walb/{group}/{role}/{id}
  storage: {fg: 3, bg: 4}
archives: [{id: a0, host: h1, vg: v}]
proxies: [{id: p0, host: h2}]
storages:
  - {id: s0, host: h3}
  - {id: s1, host: h3, port: 10001, fg: 5}
"""
    layout = load_layout(text)
    assert layout.server("a0").options["fg"] == 2
    assert layout.server("s0").options == {"fg": 3, "bg": 4}
    assert layout.server("s1").options["fg"] == 5
    assert layout.server("s1").base_dir == "/srv/walb/g/storage/s1"


def test_primary_archive_and_proxy_priority() -> None:
    text = """
group: g
archives: [{id: a1, host: h1, vg: v}, {id: a0, host: h2, vg: v}]
proxies: [{id: p9, host: h3}, {id: p0, host: h4}]
"""
    layout = load_layout(text)
    assert layout.primary_archive.id == "a1"
    assert [p.id for p in layout.proxies_by_priority] == ["p9", "p0"]


def test_hosts_give_addresses_and_engines() -> None:
    text = "hosts:\n  h1: {address: 10.1.0.1, engine: ssh://root@h1}\n  h2:\n  h3: {}\n" + MINIMAL
    layout = load_layout(text)
    assert layout.server("a0").endpoint == "10.1.0.1:10000"
    assert layout.hosts["h1"].engine == "ssh://root@h1"
    assert layout.hosts["h2"].engine is None
    assert layout.hosts["h2"].address == "h2"


def test_bridge_mode_uses_ids_as_addresses() -> None:
    layout = load_layout("network: {mode: bridge}\n" + MINIMAL)
    assert layout.server("a0").endpoint == "a0:10000"
    assert layout.server("a0").publish is None


def test_network_publish_applies_to_every_server() -> None:
    text = "network: {mode: bridge, publish: true}\n" + MINIMAL
    text = text.replace("host: h2}", "host: h2, port: 10001}").replace("h3}", "h3, port: 10002}")
    layout = load_layout(text)
    assert {s.publish for s in layout.servers} == {"127.0.0.1"}


def test_publish_per_server_overrides_network() -> None:
    layout = load_layout("network: {mode: bridge}\n" + MINIMAL.replace(
        "host: h2}", "host: h2, publish: 192.0.2.1}"))
    assert layout.server("p0").publish == "192.0.2.1"
    assert layout.server("a0").publish is None


def test_unknown_id_names_the_known_ones(minimal: Layout) -> None:
    with pytest.raises(WalbctrError, match="a0, p0, s0"):
        minimal.server("x9")


def test_read_layout_missing_file(tmp_path: object) -> None:
    with pytest.raises(WalbctrError, match="not found"):
        read_layout("/nonexistent/layout.yaml")


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.stem)
def test_examples_are_valid(path: object) -> None:
    layout = read_layout(str(path))
    assert layout.servers
    assert not layout.warnings


def test_schema_is_json_and_describes_roles() -> None:
    schema = json.loads(layout_schema())
    assert schema["title"] == "walbctr layout"
    assert set(schema["properties"]) >= {"group", "archives", "proxies", "storages", "hosts"}
    archive = schema["$defs"]["ArchiveSpec"]
    assert archive["additionalProperties"] is False
    assert "vg" in archive["properties"] and "bg" not in archive["properties"]


def test_committed_schema_is_current() -> None:
    committed = (EXAMPLES.parent / "docs" / "layout.schema.json").read_text()
    assert committed == layout_schema(), "run: walbctr schema -o docs/layout.schema.json"
