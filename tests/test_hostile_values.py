"""Hostile strings in every string field of a layout (issue 17): each is refused by
validation with the field named, or rendered so that Compose reads back the exact value.
Rendering escapes for Compose even what validation would refuse (defence in depth)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_compose import compose_v2
from walbctr.errors import LayoutError
from walbctr.layout.loader import load_layout
from walbctr.layout.spec import Layout
from walbctr.render.cmdline import server_args
from walbctr.render.compose import render

# What reaches shells, Compose and YAML in surprising ways; each is put inside an
# otherwise good value.
FRAGMENTS = {
    "dollar-var": "$VAR",
    "dollar-brace": "${VAR}",
    "command-substitution": "$(touch /tmp/walbctr-hostile-marker)",
    "backticks": "`id`",
    "single-quote": "'",
    "double-quote": '"',
    "semicolon": ";",
    "ampersand": "&",
    "pipe": "|",
    "space": " ",
    "tab": "\t",
    "newline": "\n",
    "dot-dot": "..",
    "non-ascii-letter": "\u00e9",
    "brace": "{",
}


def base() -> dict[str, Any]:
    return {
        "group": "g",
        "hosts": {"h1": {"address": "h1", "engine": "ssh://root@h1"},
                  "h2": {"address": "h2", "engine": "tcp://h2:2376",
                         "tls": {"ca": "/etc/w/ca.pem", "cert": "/etc/w/c.pem",
                                 "key": "/etc/w/k.pem"}}},
        "defaults": {"base_dir": "/var/walb/{id}"},
        "archives": [{"id": "a0", "host": "h1", "vg": "vg0", "thinpool": "tp0",
                      "sync_cmpr": "snappy:0:1"}],
        "proxies": [{"id": "p0", "host": "h2", "port": 10002}],
        "storages": [{"id": "s0", "host": "h1", "port": 10001, "sync_cmpr": "lz4:1:1"}],
    }


def bridge_base() -> dict[str, Any]:
    data = base()
    del data["hosts"]
    data["network"] = {"mode": "bridge", "publish": "127.0.0.1"}
    return data


Setter = Callable[[dict[str, Any], str], None]


def at(*path: str | int) -> Setter:
    def put(data: dict[str, Any], value: str) -> None:
        node: Any = data
        for part in path[:-1]:
            node = node.setdefault(part, {}) if isinstance(part, str) else node[part]
        node[path[-1]] = value
    return put


def monitor(key: str) -> Setter:
    def put(data: dict[str, Any], value: str) -> None:
        data["monitor"] = {"host": "h1", "port": 9580, key: value}
    return put


def rename_host(data: dict[str, Any], value: str) -> None:
    data["hosts"][value] = data["hosts"].pop("h2")
    data["proxies"][0]["host"] = value


# field as errors name it -> (how to set it, how to wrap a fragment into a value, base)
FIELDS: dict[str, tuple[Setter, Callable[[str], str], Callable[[], dict[str, Any]]]] = {
    "group": (at("group"), lambda f: f"g{f}x", base),
    "image": (at("image"), lambda f: f"walbctr/w{f}x:1", base),
    "network.publish": (at("network", "publish"), lambda f: f"127.0.0.{f}1", bridge_base),
    "proxies[0].publish": (at("proxies", 0, "publish"), lambda f: f"127.0.0.{f}1",
                           bridge_base),
    "hosts.": (rename_host, lambda f: f"h{f}x", base),
    "hosts.h1.address": (at("hosts", "h1", "address"), lambda f: f"h{f}x", base),
    "hosts.h1.engine": (at("hosts", "h1", "engine"), lambda f: f"ssh://root@h{f}x", base),
    "hosts.h2.tls.ca": (at("hosts", "h2", "tls", "ca"), lambda f: f"/etc/w/c{f}a.pem", base),
    "hosts.h2.tls.key": (at("hosts", "h2", "tls", "key"), lambda f: f"/etc/w/k{f}.pem", base),
    "defaults.base_dir": (at("defaults", "base_dir"), lambda f: f"/var/walb/x{f}y/{{id}}",
                          base),
    "storages[0].log_path": (at("storages", 0, "log_path"),
                             lambda f: f"/var/walb/s0{f}/s0.log", base),
    "archives[0].base_dir": (at("archives", 0, "base_dir"), lambda f: f"/srv/walb/a{f}0",
                             base),
    "archives[0].id": (at("archives", 0, "id"), lambda f: f"a{f}0", base),
    "storages[0].host": (at("storages", 0, "host"), lambda f: f"h{f}1", bridge_base),
    "archives[0].vg": (at("archives", 0, "vg"), lambda f: f"vg{f}0", base),
    "archives[0].thinpool": (at("archives", 0, "thinpool"), lambda f: f"tp{f}0", base),
    "archives[0].sync_cmpr": (at("archives", 0, "sync_cmpr"), lambda f: f"snappy:0:1{f}",
                              base),
    "storages[0].sync_cmpr": (at("storages", 0, "sync_cmpr"), lambda f: f"lz4{f}:1:1", base),
    "archives[0].discard": (at("archives", 0, "discard"), lambda f: f"zero{f}", base),
    "monitor.host": (monitor("host"), lambda f: f"h{f}1", base),
    "monitor.image": (monitor("image"), lambda f: f"walbctr/k{f}x:1", base),
    "monitor.publish": (monitor("publish"), lambda f: f"127.0.0.{f}1", bridge_base),
}

# A host renamed in `hosts` is also the proxy's host, whose field is checked first.
ALSO_NAMED = {"hosts.": ("proxies[0].host",)}

CASES = [(field, name) for field in FIELDS for name in FRAGMENTS]


def layout_text(field: str, fragment: str) -> tuple[str, str]:
    put, wrap, make = FIELDS[field]
    data = make()
    value = wrap(fragment)
    put(data, value)
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False), value


def compose_config(text: str, tmp_path: Path) -> dict[str, Any]:
    cmd = compose_v2()
    if cmd is None:
        pytest.skip("Docker Compose v2 is not installed (.ci/install-host-tools installs it)")
    path = tmp_path / "host.yaml"
    path.write_text(text)
    # Variables an unescaped '$VAR' or '${VAR}' would pick up, so that a miss shows.
    env = {**os.environ, "VAR": "INTERPOLATED"}
    run = subprocess.run([*cmd, "-f", str(path), "config", "--format", "json"],
                         capture_output=True, text=True, check=False, env=env)
    assert run.returncode == 0, run.stderr
    # `config` prints a file Compose can load again, so it writes each '$' of a value as
    # '$$'; reading that back is what Compose would hold.
    return json.loads(run.stdout, object_hook=unescape)  # type: ignore[no-any-return]


def unescape(node: dict[str, Any]) -> dict[str, Any]:
    def one(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace("$$", "$")
        if isinstance(value, list):
            return [one(v) for v in value]
        return value
    return {k: one(v) for k, v in node.items()}


def assert_compose_reads_back(layout: Layout, tmp_path: Path) -> None:
    """Compose's own reading of every rendered file equals what walbctr meant."""
    for host, text in render(layout).items():
        services = compose_config(text, tmp_path)["services"]
        for s in layout.servers_on(host):
            svc = services[s.id]
            assert svc["command"] == server_args(s, layout)
            assert svc["image"] == layout.image
            assert svc["labels"]["io.walbctr.host"] == s.host
            sources = {v["source"] for v in svc["volumes"]}
            assert s.base_dir in sources
            health = svc["healthcheck"]["test"][1]
            assert health.startswith('test "$(walbc ') and "$$" not in health


@pytest.mark.parametrize(("field", "fragment"), CASES, ids=[f"{f}-{n}" for f, n in CASES])
def test_hostile_value_is_refused_naming_the_field_or_read_back_exactly(
        field: str, fragment: str, tmp_path: Path) -> None:
    text, value = layout_text(field, FRAGMENTS[fragment])
    try:
        layout = load_layout(text, "t.yaml")
    except LayoutError as err:
        paths = [p.path for p in err.problems]
        assert any(p.startswith((field, *ALSO_NAMED.get(field, ()))) for p in paths), str(err)
        assert all(p.line is not None for p in err.problems), str(err)
        assert all("\n" not in p.render("t.yaml") for p in err.problems), str(err)
        return
    # Allowed: only what no shell or Compose reads specially.
    assert not set(FRAGMENTS[fragment]) & set("$`'\";&| \t\n{"), f"{value!r} was accepted"
    assert_compose_reads_back(layout, tmp_path)


@pytest.mark.parametrize("fragment", FRAGMENTS, ids=list(FRAGMENTS))
def test_rendering_escapes_even_values_validation_refuses(fragment: str,
                                                          tmp_path: Path) -> None:
    layout = load_layout(yaml.safe_dump(bridge_base()), "t.yaml")
    frag = FRAGMENTS[fragment]
    servers = []
    for s in layout.servers:
        options = dict(s.options)
        if "vg" in options:
            options.update(vg=f"vg{frag}0", thinpool=f"tp{frag}0")
        servers.append(dataclasses.replace(
            s, base_dir=f"/var/walb/{s.id}{frag}x", log_path=f"/var/log/w{frag}/{s.id}.log",
            address=f"{s.address}{frag}", options=options))
    spec = layout.spec.model_copy(update={"image": f"walbctr/w{frag}x:1"})
    hostile = dataclasses.replace(layout, servers=tuple(servers), spec=spec)
    assert_compose_reads_back(hostile, tmp_path)


@pytest.mark.parametrize("field", ["defaults.base_dir", "hosts.h1.engine", "archives[0].vg",
                                   "image", "group"])
def test_cli_refuses_a_hostile_value_with_exit_2_naming_the_field(field: str,
                                                                 tmp_path: Path) -> None:
    text, _ = layout_text(field, FRAGMENTS["command-substitution"])
    path = tmp_path / "layout.yaml"
    path.write_text(text)
    run = subprocess.run([sys.executable, "-m", "walbctr", "validate", str(path)],
                         capture_output=True, text=True, check=False)
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    assert field in run.stderr and "'$'" in run.stderr


def test_a_layout_file_name_cannot_break_out_of_the_header_comment(tmp_path: Path) -> None:
    name = "evil\nservices: {x: {image: busybox}}\n\u00e9.yaml"
    layout = load_layout(yaml.safe_dump(base()), name)
    for text in render(layout).values():
        head = text.splitlines()[0]
        assert head.startswith("# generated from evil\\nservices") and head.isascii()
        assert "x" not in yaml.safe_load(text)["services"]
