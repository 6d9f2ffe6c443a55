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
    assert "SUCCESS: 9 rules found" in run.stdout


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


def github_anchor(heading: str) -> str:
    """The id GitHub gives a README heading: lower case, punctuation dropped, '-' for spaces."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_every_runbook_url_names_a_section_of_the_readme() -> None:
    rules = yaml.safe_load((MONITORING / "walb-alerts.yml").read_text())["groups"][0]["rules"]
    readme = (MONITORING.parent / "README.md").read_text()
    anchors = {github_anchor(line.lstrip("#")) for line in readme.splitlines()
               if line.startswith("#")}
    urls = {r["alert"]: r["annotations"]["runbook_url"] for r in rules
            if "runbook_url" in r["annotations"]}
    assert "WalbMixedVersions" in urls
    for alert, url in urls.items():
        page, _, anchor = url.partition("#")
        assert page == "README.md" and anchor in anchors, (alert, url)


def test_mixed_versions_counts_the_versions_of_each_keepers_group() -> None:
    rules = yaml.safe_load((MONITORING / "walb-alerts.yml").read_text())["groups"][0]["rules"]
    mixed = next(r for r in rules if r["alert"] == "WalbMixedVersions")
    assert "walb_server_version_info" in mixed["expr"]
    assert "by (job, instance)" in mixed["expr"]  # two groups never count as one
    assert mixed["for"] == "6h"


def test_the_dashboard_queries_only_exported_metrics() -> None:
    dashboard = json.loads((MONITORING / "walb-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert exprs
    used = set().union(*(walb_names(e) for e in exprs))
    assert used <= EXPORTED, used - EXPORTED
    for name in ("walb_server_up", "walb_volume_overflow", "walb_volume_ts_delta_seconds",
                 "walb_keeper_kicks_total"):
        assert name in used
