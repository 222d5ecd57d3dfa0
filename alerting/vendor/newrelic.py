"""The alert rules as New Relic NRQL static conditions in one alert policy, and the standard dashboard,
through NerdGraph (``POST /graphql``: ``alertsPolicyCreate``, ``alertsNrqlConditionStaticCreate`` /
``...Update``, ``dashboardCreate`` / ``dashboardUpdate``; existing objects found with ``policiesSearch``,
``nrqlConditionsSearch`` and ``entitySearch``).

A rule ``apm.request.duration.p95 > 500 by route over 5 min`` becomes
``SELECT average(`apm.request.duration.p95`) FROM Metric FACET route`` aggregated over a window of the
rule's span, with a CRITICAL term ``ABOVE 500``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from alerting.vendor.common import ApplyReport, Panel, VendorError, standard_panels, subset_equal

OPERATORS = {">": "ABOVE", ">=": "ABOVE_OR_EQUALS", "<": "BELOW", "<=": "BELOW_OR_EQUALS"}
GRAPHQL = {"us": "https://api.newrelic.com/graphql", "eu": "https://api.eu.newrelic.com/graphql"}
POLICY_NAME = "logging-apm"

_CONDITION_FIELDS = ("id name enabled description nrql { query } signal { aggregationWindow aggregationMethod "
                     "aggregationDelay } terms { threshold thresholdDuration thresholdOccurrences operator "
                     "priority } violationTimeLimitSeconds")


def _where(config: Any, match: Sequence[tuple[str, str]] = ()) -> str:
    conds = [f"`{k}` = '{_quote(v)}'" for k, v in match]
    env = config.get("sinks.newrelic.environment")
    if env and not any(k == "environment" for k, _ in match):
        conds.append(f"`environment` = '{_quote(env)}'")
    return f" WHERE {' AND '.join(conds)}" if conds else ""


def _quote(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("'", "\\'")


def _facet(by: Sequence[str]) -> str:
    return f" FACET {', '.join(f'`{b}`' for b in by)}" if by else ""


def condition(rule: Any, config: Any) -> dict[str, Any]:
    """The ``condition`` input of ``alertsNrqlConditionStaticCreate`` for one rule."""
    window = min(7200, max(60, int(rule.span_seconds) // 60 * 60))
    duration = window * max(1, math.ceil(int(rule.for_seconds) / window))
    query = f"SELECT average(`{rule.metric}`) FROM Metric{_where(config, rule.match)}{_facet(rule.group_by)}"
    return {
        "name": f"[logapm] {rule.name}",
        "enabled": True,
        "description": f"{rule.description} (severity {rule.severity})".strip(),
        "nrql": {"query": query},
        "signal": {"aggregationWindow": window, "aggregationMethod": "EVENT_FLOW", "aggregationDelay": 120},
        "terms": [{
            "threshold": float(rule.threshold),
            "thresholdDuration": min(86400, duration),
            "thresholdOccurrences": "ALL",
            "operator": OPERATORS[rule.op],
            "priority": "CRITICAL",
        }],
        "violationTimeLimitSeconds": 86400,
    }


def monitors(rules: Sequence[Any], config: Any) -> dict[str, Any]:
    """The policy and its conditions, as ``logapm export monitors --vendor newrelic`` writes them."""
    return {"policy": {"name": POLICY_NAME, "incidentPreference": "PER_CONDITION"},
            "conditions": [condition(r, config) for r in rules]}


def _widget(panel: Panel, prefix: str, config: Any, account: int) -> dict[str, Any]:
    selects = []
    facets: list[str] = []
    for s in panel.series:
        fn = {"avg": "average", "max": "max", "sum": "sum"}[s.aggregation]
        selects.append(f"{fn}(`{prefix}.{s.metric}`)")
        facets = facets or list(s.by)
    query = f"SELECT {', '.join(selects)} FROM Metric{_where(config)}{_facet(facets)} TIMESERIES"
    return {"title": panel.title, "visualization": {"id": "viz.line"},
            "rawConfiguration": {"nrqlQueries": [{"accountIds": [account], "query": query}]}}


def _account(config: Any) -> int:
    raw = config.get("sinks.newrelic.account_id")
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise VendorError("New Relic needs NEW_RELIC_ACCOUNT_ID (a number) for monitors and dashboards") from None


def dashboard(config: Any, account: int | None = None) -> dict[str, Any]:
    """The ``dashboard`` input of ``dashboardCreate``."""
    prefix = str(config.get("run.metric_prefix", "apm") or "apm")
    if account is None:
        account = _account(config)
    service = config.get("sinks.newrelic.app_name") or "all services"
    return {
        "name": f"logging-apm: {service}",
        "description": "Managed by logapm (logging-apm): `logapm apply dashboard --vendor newrelic`.",
        "permissions": "PUBLIC_READ_WRITE",
        "pages": [{"name": "logging-apm", "widgets": [_widget(p, prefix, config, account)
                                                        for p in standard_panels()]}],
    }


# --- NerdGraph --------------------------------------------------------------------------------------------


class NerdGraph:
    def __init__(self, config: Any) -> None:
        self.key = config.get("sinks.newrelic.api_key")
        if not self.key:
            raise VendorError("applying to New Relic needs NEW_RELIC_API_KEY (a user key)")
        region = str(config.get("sinks.newrelic.region") or "us").lower()
        self.url = config.get("sinks.newrelic.graphql_url") or GRAPHQL.get(region, GRAPHQL["us"])
        self.verify: Any = config.get("sinks.newrelic.ca_certs") or True
        self.timeout = float(config.get("sinks.timeout_seconds", 10.0))
        self.secrets = list(config.secrets())
        self.account = _account(config)

    def __call__(self, document: str, **variables: Any) -> Any:
        import requests

        from aggregator.sinks.base import scrub

        try:
            resp = requests.post(self.url, json={"query": document, "variables": variables},
                                 headers={"API-Key": self.key, "Content-Type": "application/json"},
                                 timeout=self.timeout, verify=self.verify)
        except requests.RequestException as exc:
            raise VendorError(scrub(f"NerdGraph {self.url}: {exc}", self.secrets)) from None
        try:
            body = resp.json()
        except ValueError:
            body = {}
        errors = body.get("errors") if isinstance(body, dict) else None
        if resp.status_code != 200 or errors:
            detail = "; ".join(str(e.get("message", e)) for e in errors or []) or resp.text[:200]
            raise VendorError(scrub(f"NerdGraph: HTTP {resp.status_code}: {detail}", self.secrets))
        return body["data"]


def _find_policy(ng: NerdGraph) -> dict[str, Any] | None:
    data = ng("query($accountId: Int!, $name: String!) { actor { account(id: $accountId) { alerts { "
              "policiesSearch(searchCriteria: {name: $name}) { policies { id name } } } } } }",
              accountId=ng.account, name=POLICY_NAME)
    policies = data["actor"]["account"]["alerts"]["policiesSearch"]["policies"]
    return next((p for p in policies if p["name"] == POLICY_NAME), None)


def apply_monitors(rules: Sequence[Any], config: Any, ng: NerdGraph | None = None) -> ApplyReport:
    ng = ng or NerdGraph(config)
    report = ApplyReport("newrelic", "monitors")
    spec = monitors(rules, config)
    policy = _find_policy(ng)
    if policy is None:
        data = ng("mutation($accountId: Int!, $policy: AlertsPolicyInput!) { "
                  "alertsPolicyCreate(accountId: $accountId, policy: $policy) { id name } }",
                  accountId=ng.account, policy=spec["policy"])
        policy = data["alertsPolicyCreate"]
        report.created.append(f"policy {POLICY_NAME}")
    data = ng("query($accountId: Int!, $policyId: ID!) { actor { account(id: $accountId) { alerts { "
              "nrqlConditionsSearch(searchCriteria: {policyId: $policyId}) { nrqlConditions { "
              + _CONDITION_FIELDS + " } } } } } }", accountId=ng.account, policyId=policy["id"])
    existing = {c["name"]: c for c in data["actor"]["account"]["alerts"]["nrqlConditionsSearch"]["nrqlConditions"]}
    for cond in spec["conditions"]:
        current = existing.get(cond["name"])
        if current is None:
            ng("mutation($accountId: Int!, $policyId: ID!, $condition: AlertsNrqlConditionStaticInput!) { "
               "alertsNrqlConditionStaticCreate(accountId: $accountId, policyId: $policyId, condition: $condition)"
               " { id name } }", accountId=ng.account, policyId=policy["id"], condition=cond)
            report.created.append(cond["name"])
        elif subset_equal(cond, current):
            report.unchanged.append(cond["name"])
        else:
            ng("mutation($accountId: Int!, $id: ID!, $condition: AlertsNrqlConditionUpdateStaticInput!) { "
               "alertsNrqlConditionStaticUpdate(accountId: $accountId, id: $id, condition: $condition) { id name } }",
               accountId=ng.account, id=current["id"], condition=cond)
            report.updated.append(cond["name"])
    return report


def apply_dashboard(config: Any, ng: NerdGraph | None = None) -> ApplyReport:
    ng = ng or NerdGraph(config)
    report = ApplyReport("newrelic", "dashboard")
    desired = dashboard(config, ng.account)
    search = f"name = '{_quote(desired['name'])}' AND type = 'DASHBOARD'"
    data = ng("query($query: String!) { actor { entitySearch(query: $query) { results { entities { guid name } } } } }",
              query=search)
    entities = [e for e in data["actor"]["entitySearch"]["results"]["entities"] if e["name"] == desired["name"]]
    if not entities:
        out = ng("mutation($accountId: Int!, $dashboard: DashboardInput!) { dashboardCreate(accountId: $accountId, "
                 "dashboard: $dashboard) { entityResult { guid name } errors { description type } } }",
                 accountId=ng.account, dashboard=desired)
        _check_errors(out["dashboardCreate"])
        report.created.append(desired["name"])
        return report
    guid = entities[0]["guid"]
    current = ng("query($guid: EntityGuid!) { actor { entity(guid: $guid) { ... on DashboardEntity { name "
                 "description permissions pages { name widgets { title visualization { id } rawConfiguration } } "
                 "} } } }", guid=guid)["actor"]["entity"]
    if subset_equal(desired, current):
        report.unchanged.append(desired["name"])
        return report
    out = ng("mutation($guid: EntityGuid!, $dashboard: DashboardInput!) { dashboardUpdate(guid: $guid, "
             "dashboard: $dashboard) { entityResult { guid name } errors { description type } } }",
             guid=guid, dashboard=desired)
    _check_errors(out["dashboardUpdate"])
    report.updated.append(desired["name"])
    return report


def _check_errors(result: dict[str, Any]) -> None:
    if result.get("errors"):
        raise VendorError(f"NerdGraph: {result['errors']}")
