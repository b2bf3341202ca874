"""The alert rules and the Grafana dashboard under deploy/: Prometheus accepts them, and they ask only for what `maf metrics` exposes."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tools import required_tool
from workspace import Workspace

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERT_TESTS = DEPLOY / "prometheus" / "alerts_test.yml"
DASHBOARD = DEPLOY / "grafana" / "pytest-maf.json"
MAF_METRIC = re.compile(r"\bmaf_[a-z0-9_]+")
RECORDED = re.compile(r"\bmaf:[a-z0-9_:]+")


def promtool() -> str:
    return required_tool("promtool", "prometheus", "check the alert rules")


def test_promtool_accepts_the_rules_and_their_unit_tests_pass() -> None:
    for command in (["check", "rules", ALERTS.name], ["test", "rules", ALERT_TESTS.name]):
        completed = subprocess.run(
            [promtool(), *command], cwd=ALERTS.parent, capture_output=True, text=True, timeout=120
        )
        assert completed.returncode == 0, completed.stdout + completed.stderr
        assert "SUCCESS" in completed.stdout


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard_expressions() -> Iterator[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            yield target["expr"]


def test_the_rules_cover_the_guides_alerts() -> None:
    alerts = {rule["alert"] for rule in rules() if "alert" in rule}

    assert {
        "MafErrorRateHigh", "MafErrorRateCritical", "MafLeaseAcquisitionSlow", "MafAgentAvailabilityLow",
        "MafAgentWentStale", "MafEscalationOpenTooLong", "MafPreflightFailing", "MafStoreUnhealthy",
        "MafStoreUnreachable", "MafReservationConflictSpike",
    } <= alerts
    assert all(rule["labels"]["severity"] in ("info", "warning", "critical") for rule in rules() if "alert" in rule)


def test_every_metric_the_rules_and_the_dashboard_name_is_one_maf_metrics_exposes(workspace: Workspace) -> None:
    completed = workspace.maf(workspace.main, "metrics")
    assert completed.returncode == 0, completed.stderr
    exposed = {sample.name for family in text_string_to_metric_families(completed.stdout) for sample in family.samples}
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    expressions = [rule["expr"] for rule in rules()] + list(dashboard_expressions())

    named = {name for expression in expressions for name in MAF_METRIC.findall(expression)}
    unknown = sorted(named - exposed)
    undefined = sorted({name for expression in expressions for name in RECORDED.findall(expression)} - recorded)

    assert unknown == [], f"named in deploy/ but not exposed by `maf metrics`: {unknown}"
    assert undefined == [], f"recording rules used but not defined in alerts.yml: {undefined}"
    assert {"maf_claim_duration_seconds_bucket", "maf_agent_availability", "maf_preflight_duration_seconds_count",
            "maf_escalation_oldest_open_seconds", "maf_system_health_score"} <= named  # the KPIs are all watched


def test_the_dashboard_panels_each_have_a_place_and_a_query() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    panels = dashboard["panels"]

    assert len({panel["id"] for panel in panels}) == len(panels)
    assert all(panel["targets"] and set(panel["gridPos"]) == {"x", "y", "w", "h"} for panel in panels)
    assert all(target["refId"] and target["expr"].strip() for panel in panels for target in panel["targets"])
