from __future__ import annotations

from tests.conftest import EXAMPLES
from walbctr.layout.loader import load_layout, read_layout
from walbctr.render.cmdline import command_line, server_args


def test_seed_minimal_command_lines() -> None:
    layout = read_layout(EXAMPLES / "minimal.yaml")
    lines = [command_line(s, layout) for s in layout.servers]
    assert lines == [
        "walb-archive -p 10000 -b /var/walb/a0 -id a0 -l /var/walb/a0.log -vg vg0",
        "walb-proxy -p 10000 -b /var/walb/p0 -id p0 -l /var/walb/p0.log",
        # The seed's own example says -archive hostS0:10000; the primary archive is hostA0.
        "walb-storage -p 10000 -b /var/walb/s0 -id s0 -l /var/walb/s0.log "
        "-archive hostA0:10000 -proxy hostP0:10000",
    ]


def test_storage_lists_proxies_in_priority_order() -> None:
    layout = read_layout(EXAMPLES / "seed-large.yaml")
    args = server_args(layout.server("s1"), layout)
    assert args[args.index("-archive") + 1] == "hostA0:10000"
    assert args[args.index("-proxy") + 1] == "hostP0:10000,hostP1:10000"


def test_archive_options() -> None:
    text = """
group: g
archives:
  - id: a0
    host: h
    vg: vg0
    thinpool: tp0
    discard: passdown
    autoresize: true
    keep_one_cold_snap: false
    maxopen_virt: 8
"""
    layout = load_layout(text)
    args = server_args(layout.server("a0"), layout)
    assert args[9:] == ["-vg", "vg0", "-tp", "tp0", "-discard", "passdown", "-autoresize",
                        "-maxopen-virt", "8"]
    assert "-bg" not in args


def test_proxy_and_common_options() -> None:
    text = """
group: g
archives: [{id: a0, host: h, vg: v}]
proxies:
  - {id: p0, host: h, port: 10001, stop: true, rto: 30, timeout: 5, debug: true, bg: 2,
     keepalive: {idle: 10, count: 3}}
"""
    layout = load_layout(text)
    args = server_args(layout.server("p0"), layout)
    assert args[9:] == ["-stop", "-rto", "30", "-to", "5", "-debug", "-ka", "-kaidle", "10",
                        "-kacnt", "3", "-bg", "2"]


def test_storage_tunables() -> None:
    text = """
group: g
archives: [{id: a0, host: h1, vg: v}]
proxies: [{id: p0, host: h2}]
storages: [{id: s0, host: h3, wl: 64, sync_cmpr: 'snappy:0:1', keepalive: true}]
"""
    layout = load_layout(text)
    args = server_args(layout.server("s0"), layout)
    assert args[9:] == ["-archive", "h1:10000", "-proxy", "h2:10000",
                        "-wl", "64", "-sync-cmpr", "snappy:0:1", "-ka"]


def test_bridge_mode_addresses_are_ids() -> None:
    layout = read_layout(EXAMPLES / "lab.yaml")
    args = server_args(layout.server("s0"), layout)
    assert args[args.index("-archive") + 1] == "a0:10000"
    assert args[args.index("-proxy") + 1] == "p0:10000"
    assert args[args.index("-l") + 1] == "-"
