"""monitoring/: the alert rules, their unit tests and the Grafana dashboard agree with the
metrics the keeper exports, and Prometheus' own promtool accepts them."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from walbctr.keeper.metrics import FAMILIES

MONITORING = Path(__file__).resolve().parent.parent / "monitoring"
# The counters (prometheus-client adds _total) and gauges outside the snapshot.
OTHER_METRICS = {"walb_keeper_kicks_total", "walb_keeper_kick_failures_total",
                 "walb_server_restarts_total", "walb_keeper_lag_threshold_seconds",
                 "walb_keeper_scan_duration_seconds", "walb_keeper_volumes"}
EXPORTED = set(FAMILIES) | OTHER_METRICS


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("promtool") is None:
        pytest.skip("promtool is not installed (Debian's prometheus package; "
                    ".ci/install-host-tools installs it)")
    return subprocess.run(["promtool", *args], capture_output=True, text=True, check=False,
                          cwd=MONITORING)


def test_promtool_accepts_the_alert_rules() -> None:
    run = promtool("check", "rules", "walb-alerts.yml")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS: 8 rules found" in run.stdout


def test_the_alerts_fire_as_their_unit_tests_say() -> None:
    run = promtool("test", "rules", "walb-alerts.test.yml")
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_example_prometheus_configuration_is_valid() -> None:
    run = promtool("check", "config", "prometheus.yml")
    assert run.returncode == 0, run.stdout + run.stderr


def walb_names(expr: str) -> set[str]:
    return set(re.findall(r"\bwalb_[a-z_]+\b", expr))


def test_every_rule_uses_metrics_the_keeper_exports_and_names_a_remedy() -> None:
    rules = yaml.safe_load((MONITORING / "walb-alerts.yml").read_text())["groups"][0]["rules"]
    alerts = {r["alert"] for r in rules}
    assert {"WalbVolumeOverflow", "WalbWdiffSendError", "WalbBackupLag",
            "WalbServerCrashLoop", "WalbServerDown"} <= alerts
    for rule in rules:
        assert walb_names(rule["expr"]) <= EXPORTED, rule["alert"]
        assert rule["annotations"]["description"].strip(), rule["alert"]
    overflow = next(r for r in rules if r["alert"] == "WalbVolumeOverflow")
    assert "hash backup" in overflow["annotations"]["description"]


def test_the_dashboard_queries_only_exported_metrics() -> None:
    dashboard = json.loads((MONITORING / "walb-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert exprs
    used = set().union(*(walb_names(e) for e in exprs))
    assert used <= EXPORTED, used - EXPORTED
    for name in ("walb_server_up", "walb_volume_overflow", "walb_volume_ts_delta_seconds",
                 "walb_keeper_kicks_total"):
        assert name in used


def test_the_rules_about_a_server_or_a_transfer_to_it_leave_out_hosts_in_maintenance() -> None:
    rules = yaml.safe_load((MONITORING / "walb-alerts.yml").read_text())["groups"][0]["rules"]
    exprs = {r["alert"]: " ".join(r["expr"].split()) for r in rules}
    for alert in ("WalbServerDown", "WalbServerCrashLoop", "WalbWdiffSendError",
                  "WalbBackupLag"):
        assert "unless on(server) walb_server_maintenance == 1" in exprs[alert], alert
    assert 'unless on(archive) label_replace(walb_server_maintenance == 1, "archive"' in \
        exprs["WalbWdiffSendError"]
    assert 'unless on(dest) label_replace(walb_server_maintenance == 1, "dest"' in \
        exprs["WalbBackupLag"]
