"""The shipped alert rules, Prometheus config and Grafana dashboard, checked by
Prometheus's own tool and against the series `GET /metrics` documents."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from tests.deploy.support import (
    DASHBOARDS,
    GRAFANA_PROVISIONING,
    ROOT,
    RULE_TESTS,
    RULES,
    alert_rules,
    binary,
    derived_config,
    load,
)

SERIES = re.compile(r"\bmatchops_[a-z_]+")
# Histogram and counter samples are documented under their family's name.
SAMPLE_SUFFIXES = re.compile(r"_(bucket|count|sum|total)$")


def _promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary("promtool"), *map(str, args)], capture_output=True, text=True, timeout=60
    )


def test_rules_pass_promtool_check():
    checked = _promtool("check", "rules", RULES)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in checked.stdout


def test_promtool_unit_tests_pass():
    tested = _promtool("test", "rules", RULE_TESTS)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_has_a_runbook_and_a_unit_test_that_fires_it():
    fired = {
        case["alertname"]
        for test in load(RULE_TESTS)["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    for rule in alert_rules():
        assert rule["annotations"]["summary"], rule["alert"]
        assert len(rule["annotations"]["runbook"]) > 80, rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
    assert fired == {rule["alert"] for rule in alert_rules()}


def test_the_config_passes_promtool_with_a_token_file(tmp_path: Path):
    config = derived_config(tmp_path, "127.0.0.1:8000")
    checked = _promtool("check", "config", config)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def _documented_series() -> set[str]:
    manual = (ROOT / "docs" / "operations.md").read_text()
    rows = [line for line in manual.splitlines() if line.lstrip().startswith("| `matchops_")]
    return {SAMPLE_SUFFIXES.sub("", name) for row in rows for name in SERIES.findall(row)}


def _used_series(text: str) -> set[str]:
    return {SAMPLE_SUFFIXES.sub("", name) for name in SERIES.findall(text)}


def test_rules_and_dashboard_use_only_documented_series():
    documented = _documented_series()
    dashboard = (DASHBOARDS / "matchops.json").read_text()
    assert _used_series(RULES.read_text()) <= documented
    assert _used_series(dashboard) <= documented
    # Everything documented is on the dashboard.
    assert documented <= _used_series(dashboard)


def test_the_dashboard_reads_the_provisioned_data_source():
    (source,) = load(GRAFANA_PROVISIONING / "datasources" / "prometheus.yml")["datasources"]
    dashboard = json.loads((DASHBOARDS / "matchops.json").read_text())
    panels = [panel for panel in dashboard["panels"] if panel["type"] == "timeseries"]
    assert panels
    for panel in panels:
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
        assert all(target["expr"] for target in panel["targets"]), panel["title"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
