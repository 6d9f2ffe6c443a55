"""monitoring/: the alert rules, their unit tests and the Grafana dashboard agree with the
metrics the keeper exports, and Prometheus' own promtool accepts them."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from walbctr.commands.space import METRICS as SPACE_METRICS
from walbctr.keeper.metrics import FAMILIES

MONITORING = Path(__file__).resolve().parent.parent / "monitoring"
README = Path(__file__).resolve().parent.parent / "README.md"


def _registered() -> set[str]:
    """The counters (prometheus-client adds _total) and gauges outside the snapshot, as a
    real KeeperMetrics registers them."""
    from prometheus_client import CollectorRegistry

    from walbctr.keeper.metrics import KeeperMetrics

    registry = CollectorRegistry()
    KeeperMetrics(registry)
    return {m.name + ("_total" if m.type == "counter" else "") for m in registry.collect()
            if m.name.startswith("walb_")} - set(FAMILIES)


OTHER_METRICS = _registered()
# the keeper's, and `walbctr space --textfile`'s (walbc cannot tell an archive's free space)
EXPORTED = set(FAMILIES) | OTHER_METRICS | set(SPACE_METRICS)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("promtool") is None:
        pytest.skip("promtool is not installed (Debian's prometheus package; "
                    ".ci/install-host-tools installs it)")
    return subprocess.run(["promtool", *args], capture_output=True, text=True, check=False,
                          cwd=MONITORING)


def test_promtool_accepts_the_alert_rules() -> None:
    run = promtool("check", "rules", "walb-alerts.yml")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS: 18 rules found" in run.stdout


def test_the_alerts_fire_as_their_unit_tests_say() -> None:
    run = promtool("test", "rules", "walb-alerts.test.yml")
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_example_prometheus_configuration_is_valid() -> None:
    run = promtool("check", "config", "prometheus.yml")
    assert run.returncode == 0, run.stdout + run.stderr


def walb_names(expr: str) -> set[str]:
    return set(re.findall(r"\bwalb_[a-z_]+\b", expr))


def all_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((MONITORING / "walb-alerts.yml").read_text())["groups"]
    return [r for g in groups for r in g["rules"]]


def test_every_rule_uses_metrics_the_keeper_exports_and_names_a_remedy() -> None:
    rules = all_rules()
    alerts = {r["alert"] for r in rules}
    assert {"WalbVolumeOverflow", "WalbWdiffSendError", "WalbBackupLag",
            "WalbServerCrashLoop", "WalbServerDown", "WalbSnapshotTooOld", "WalbKeeperAbsent",
            "WalbKeeperScanStalled", "WalbKeeperKickFailing", "WalbArchiveVgFillingUp",
            "WalbArchiveThinPoolFillingUp"} <= alerts
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


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings: lower case, spaces to '-', punctuation out."""
    return {re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            for m in re.finditer(r"^#{1,6} (.+)$", markdown, re.M)}


def test_every_alert_links_a_runbook_section_of_the_readme() -> None:
    anchors = github_anchors(README.read_text())
    for rule in all_rules():
        url = rule["annotations"].get("runbook_url", "")
        assert url == f"README.md#runbook-{rule['alert'].lower()}", rule["alert"]
        assert url.partition("#")[2] in anchors, f"{rule['alert']}: no README heading {url}"


def test_the_alertmanager_configuration_is_valid_and_inhibits_real_alerts() -> None:
    if shutil.which("amtool") is None:
        pytest.skip("amtool is not installed (Debian's prometheus-alertmanager package; "
                    ".ci/install-host-tools installs it)")
    run = subprocess.run(["amtool", "check-config", "alertmanager.yml"], capture_output=True,
                         text=True, check=False, cwd=MONITORING)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "3 inhibit rules" in run.stdout
    alerts = {r["alert"] for r in all_rules()}
    config = yaml.safe_load((MONITORING / "alertmanager.yml").read_text())
    for rule in config["inhibit_rules"]:
        named = set()
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            if matcher.startswith("alertname"):
                named |= set(re.findall(r"Walb\w+", matcher))
        assert named and named <= alerts, named - alerts
        assert {"job", "instance"} <= set(rule["equal"])  # one Prometheus, many groups
