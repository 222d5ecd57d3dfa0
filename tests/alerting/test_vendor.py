"""Monitors and dashboards as code: export renders the local rules' thresholds for each vendor; apply
creates through the vendor's API (local Datadog intake, local NerdGraph on HTTPS) and is idempotent."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from intakes import DatadogIntake, NerdGraphIntake, make_cert
from intakes.kit import DD_APP, DD_KEY, NR_USER_KEY, unset_proxies

from aggregator import catalog
from aggregator.cli import main
from aggregator.config import load_config
from alerting.rules import default_rules

ACCOUNT = 1234567
ENV_VARS = ("DATADOG_API_KEY", "DATADOG_APP_KEY", "DATADOG_HOST", "DD_SITE", "NEW_RELIC_API_KEY",
            "NEW_RELIC_ACCOUNT_ID", "NEW_RELIC_GRAPHQL_URL", "LOGAPM_NEW_RELIC_CA_CERTS", "LOGAPM_CONFIG",
            "API_P95_THRESHOLD_MS", "DATADOG_ENVIRONMENT", "NEW_RELIC_ENVIRONMENT")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    unset_proxies(monkeypatch)
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)


def _export(capsys: pytest.CaptureFixture[str], *argv: str) -> object:
    assert main(["export", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_export_datadog_monitors_carry_the_local_thresholds(monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """One monitor per default rule; each query's number is the rule's threshold (from the original
    variables) and equals options.thresholds.critical, as Datadog requires; group-by tags become `by`."""
    monkeypatch.setenv("API_P95_THRESHOLD_MS", "450")
    monkeypatch.setenv("DATADOG_ENVIRONMENT", "production")
    monitors = _export(capsys, "monitors", "--vendor", "datadog")
    rules = {r.name: r for r in default_rules(load_config())}
    assert isinstance(monitors, list) and len(monitors) == len(rules)
    for m in monitors:
        name = next(t.split(":", 1)[1] for t in m["tags"] if t.startswith("logapm-rule:"))
        rule = rules[name]
        number = re.search(r"(>=|<=|>|<) (\S+)$", m["query"])
        assert number and number.group(1) == rule.op and float(number.group(2)) == rule.threshold
        assert m["options"]["thresholds"]["critical"] == rule.threshold
        assert f"avg:{rule.metric}{{env:production}}" in m["query"]
        if rule.group_by:
            assert m["query"].split(" by ")[1].startswith("{" + ",".join(rule.group_by) + "}")
    p95 = next(m for m in monitors if "api_latency_p95" in m["name"])
    assert p95["query"] == "avg(last_5m):avg:apm.request.duration.p95{env:production} by {route} > 450"
    assert "{{route.name}}" in p95["message"]


def test_export_newrelic_conditions_and_dashboards_use_catalog_names(capsys: pytest.CaptureFixture[str],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """New Relic conditions mirror the rules (operator, threshold, facet); both vendors' dashboards only
    query catalog metrics and cover latency, throughput, errors, DB, cache, external, tasks and queues."""
    spec = _export(capsys, "monitors", "--vendor", "newrelic")
    rules = default_rules(load_config())
    assert isinstance(spec, dict) and len(spec["conditions"]) == len(rules)
    for cond, rule in zip(spec["conditions"], rules, strict=True):
        (term,) = cond["terms"]
        assert term["threshold"] == rule.threshold and cond["name"].endswith(rule.name)
        assert f"average(`{rule.metric}`)" in cond["nrql"]["query"]
        assert term["thresholdDuration"] % cond["signal"]["aggregationWindow"] == 0
    known = set(catalog.metric_names("apm"))
    dd = _export(capsys, "dashboard", "--vendor", "datadog")
    dd_metrics = {m for w in dd["widgets"] for r in w["definition"]["requests"]  # type: ignore[index]
                  for m in re.findall(r"(apm\.[a-z0-9_.]+)\{", r["q"])}
    monkeypatch.setenv("NEW_RELIC_ACCOUNT_ID", str(ACCOUNT))
    nr = _export(capsys, "dashboard", "--vendor", "newrelic")
    nr_metrics = {m for w in nr["pages"][0]["widgets"]  # type: ignore[index]
                  for m in re.findall(r"`(apm\.[a-z0-9_.]+)`", w["rawConfiguration"]["nrqlQueries"][0]["query"])}
    assert dd_metrics == nr_metrics and dd_metrics <= known
    for family in ("request.duration.p95", "request.count", "request.error_rate", "db.", "cache.", "external.",
                   "task.duration", "task.queue.depth"):
        assert any(m.startswith("apm." + family) for m in dd_metrics), family


def test_apply_datadog_is_idempotent(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """apply creates the monitors and the dashboard through api.Monitor/api.Dashboard; a second apply
    writes nothing; a changed threshold updates exactly that monitor."""
    with DatadogIntake(DD_KEY, DD_APP) as intake:
        assert isinstance(intake, DatadogIntake)
        monkeypatch.setenv("DATADOG_API_KEY", DD_KEY)
        monkeypatch.setenv("DATADOG_APP_KEY", DD_APP)
        monkeypatch.setenv("DATADOG_HOST", intake.url)
        n_rules = len(default_rules(load_config()))
        assert main(["apply", "monitors", "--vendor", "datadog"]) == 0
        assert main(["apply", "dashboard", "--vendor", "datadog"]) == 0
        assert len(intake.monitors) == n_rules and len(intake.dashboards) == 1
        writes = list(intake.writes)
        assert len(writes) == n_rules + 1
        capsys.readouterr()
        assert main(["apply", "monitors", "--vendor", "datadog"]) == 0
        assert main(["apply", "dashboard", "--vendor", "datadog"]) == 0
        assert intake.writes == writes
        assert f"0 created, 0 updated, {n_rules} unchanged" in capsys.readouterr().out
        monkeypatch.setenv("API_P95_THRESHOLD_MS", "650")
        assert main(["apply", "monitors", "--vendor", "datadog"]) == 0
        assert [m for m, _ in intake.writes[len(writes):]] == ["PUT"]
        assert any(m["query"].endswith("by {route} > 650") for m in intake.monitors.values())
        assert len(intake.monitors) == n_rules


def test_apply_newrelic_is_idempotent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """apply creates the policy, one NRQL condition per rule and the dashboard through NerdGraph (HTTPS,
    the test's own CA); a second apply sends no mutation; a changed threshold sends exactly one update."""
    cert = make_cert(tmp_path)
    with NerdGraphIntake(NR_USER_KEY, ACCOUNT, tls=cert) as ng:
        assert isinstance(ng, NerdGraphIntake)
        monkeypatch.setenv("NEW_RELIC_API_KEY", NR_USER_KEY)
        monkeypatch.setenv("NEW_RELIC_ACCOUNT_ID", str(ACCOUNT))
        monkeypatch.setenv("NEW_RELIC_GRAPHQL_URL", f"{ng.url}/graphql")
        monkeypatch.setenv("LOGAPM_NEW_RELIC_CA_CERTS", str(cert.cert_file))
        n_rules = len(default_rules(load_config()))
        assert main(["apply", "monitors", "--vendor", "newrelic"]) == 0
        assert main(["apply", "dashboard", "--vendor", "newrelic"]) == 0
        assert len(ng.policies) == 1 and len(ng.conditions) == n_rules and len(ng.dashboards) == 1
        first = list(ng.mutations)
        assert main(["apply", "monitors", "--vendor", "newrelic"]) == 0
        assert main(["apply", "dashboard", "--vendor", "newrelic"]) == 0
        assert ng.mutations == first
        monkeypatch.setenv("API_P95_THRESHOLD_MS", "650")
        assert main(["apply", "monitors", "--vendor", "newrelic"]) == 0
        assert ng.mutations[len(first):] == ["alertsNrqlConditionStaticUpdate"]


def test_apply_failure_names_the_problem_without_the_key(monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """A key the vendor refuses: exit 1 and a message that says so, with no key in it."""
    with DatadogIntake("the-right-key", DD_APP) as intake:
        monkeypatch.setenv("DATADOG_API_KEY", DD_KEY)
        monkeypatch.setenv("DATADOG_APP_KEY", DD_APP)
        monkeypatch.setenv("DATADOG_HOST", intake.url)  # type: ignore[attr-defined]
        assert main(["apply", "monitors", "--vendor", "datadog"]) == 1
    err = capsys.readouterr().err
    assert "Forbidden" in err and DD_KEY not in err and DD_APP not in err
