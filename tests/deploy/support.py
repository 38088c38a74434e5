"""The shipped Prometheus files, and copies of them for a test: paths of this machine,
a token of the test's secret, and intervals short enough to watch an alert happen."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.api.support import token

ROOT = Path(__file__).resolve().parent.parent.parent
DEPLOY = ROOT / "deploy"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
RULES = DEPLOY / "prometheus" / "rules" / "matchops.yml"
RULE_TESTS = DEPLOY / "prometheus" / "tests" / "matchops.yml"
DASHBOARDS = DEPLOY / "grafana" / "dashboards"
GRAFANA_PROVISIONING = DEPLOY / "grafana" / "provisioning"
MINUTES = re.compile(r"\b(\d+)m\b")


def binary(name: str) -> str:
    """The path of `name` (promtool, prometheus); the test is skipped, saying why, when
    it is not installed."""
    found = shutil.which(name)
    if found is None:
        pytest.skip(
            f"{name} is not installed: Debian's `prometheus` package brings it "
            "(`apt-get install prometheus`; .ci/run installs it when missing)"
        )
    return found


def load(path: Path) -> Any:
    """A YAML file of deploy/."""
    return yaml.safe_load(path.read_text())


def alert_rules() -> list[dict[str, Any]]:
    """Every alerting rule of the shipped rule file."""
    return [rule for group in load(RULES)["groups"] for rule in group["rules"] if "alert" in rule]


def seconds_for_minutes(rules: dict[str, Any]) -> dict[str, Any]:
    """The rule file with every minute of its ranges and `for` durations made a second,
    so an alert that takes minutes in production takes seconds in a test."""
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule["expr"] = MINUTES.sub(r"\1s", rule["expr"])
            if "for" in rule:
                rule["for"] = MINUTES.sub(r"\1s", rule["for"])
    return rules


def derived_config(directory: Path, target: str, interval: str = "15s") -> Path:
    """The shipped Prometheus config, written into `directory` to scrape `target` with a
    metrics:read token of the test secret, its rules sped up (`seconds_for_minutes`)
    when `interval` is shorter than the shipped one."""
    config = load(PROMETHEUS_CONFIG)
    config["global"].update(scrape_interval=interval, evaluation_interval=interval)
    rules = load(RULES)
    if interval != "15s":
        rules = seconds_for_minutes(rules)
    rules_path = directory / "rules.yml"
    rules_path.write_text(yaml.safe_dump(rules))
    config["rule_files"] = [str(rules_path)]
    (job,) = config["scrape_configs"]
    token_path = directory / "metrics-token"
    token_path.write_text(token(["metrics:read"], sub="prometheus"))
    job["authorization"]["credentials_file"] = str(token_path)
    job["static_configs"] = [{"targets": [target]}]
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path
