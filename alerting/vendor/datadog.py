"""The alert rules as Datadog monitors and the standard dashboard as a Datadog dashboard, through the
``datadog`` package (``api.Monitor``, ``api.Dashboard``).

A rule ``apm.request.duration.p95 > 500 by route over 5 min`` becomes the query alert
``avg(last_5m):avg:apm.request.duration.p95{env:prod} by {route} > 500`` with ``thresholds.critical = 500``
(Datadog requires the two to agree). Monitors carry the tags ``managed-by:logapm`` and
``logapm-rule:<name>``; an apply lists the monitors with the first tag and matches on the second, so renaming
a rule's description never duplicates a monitor.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from alerting.vendor.common import (
    MANAGED_TAG,
    ApplyReport,
    Panel,
    VendorError,
    minutes,
    sorted_tags,
    standard_panels,
    subset_equal,
)

SEVERITY_PRIORITY = {"critical": 1, "warning": 3, "info": 5}
DASHBOARD_MARKER = "Managed by logapm (logging-apm): `logapm apply dashboard --vendor datadog`."
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def _scope(config: Any, match: Sequence[tuple[str, str]] = ()) -> str:
    parts = [f"{k}:{v}" for k, v in match]
    env = config.get("sinks.datadog.env")
    if env and not any(k == "env" for k, _ in match):
        parts.append(f"env:{env}")
    return "{" + (",".join(parts) if parts else "*") + "}"


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _message(rule: Any, config: Any) -> str:
    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name in rule.group_by:
            return "{{" + name + ".name}}"
        return {"value": "{{value}}", "threshold": "{{threshold}}", "op": rule.op, "rule": rule.name,
                "metric": rule.metric, "severity": rule.severity}.get(name, m.group(0))

    text = _PLACEHOLDER.sub(sub, rule.message)
    extra = [text, "", rule.description] if rule.description else [text]
    url = config.get("alerting.dashboard_url")
    if url:
        extra.append(f"Dashboard: {url}")
    return "\n".join(extra).strip()


def monitor(rule: Any, config: Any) -> dict[str, Any]:
    """The Datadog monitor of one rule (the body of ``api.Monitor.create``)."""
    by = f" by {{{','.join(rule.group_by)}}}" if rule.group_by else ""
    query = (f"avg(last_{minutes(rule.span_seconds)}m):avg:{rule.metric}{_scope(config, rule.match)}{by} "
             f"{rule.op} {_number(rule.threshold)}")
    tags = [MANAGED_TAG, f"logapm-rule:{rule.name}", f"severity:{rule.severity}"]
    if config.get("sinks.datadog.service"):
        tags.append(f"service:{config['sinks.datadog.service']}")
    if config.get("sinks.datadog.env"):
        tags.append(f"env:{config['sinks.datadog.env']}")
    options: dict[str, Any] = {
        "thresholds": {"critical": float(rule.threshold)},
        "notify_no_data": rule.no_data == "alert",
        "require_full_window": False,
        # Windows arrive with the next run (a minute or so): judge them once they are in.
        "evaluation_delay": 120,
        "renotify_interval": minutes(rule.repeat_seconds),
        "include_tags": True,
    }
    return {
        "type": "query alert",
        "name": f"[logapm] {rule.name}",
        "query": query,
        "message": _message(rule, config),
        "tags": sorted_tags(tags),
        "priority": SEVERITY_PRIORITY.get(rule.severity, 3),
        "options": options,
    }


def monitors(rules: Sequence[Any], config: Any) -> list[dict[str, Any]]:
    return [monitor(r, config) for r in rules]


def _widget(panel: Panel, prefix: str, config: Any) -> dict[str, Any]:
    requests = []
    for s in panel.series:
        metric = f"{prefix}.{s.metric}"
        by = f" by {{{','.join(s.by)}}}" if s.by else ""
        q = f"{s.aggregation}:{metric}{_scope(config)}{by}"
        if s.aggregation == "sum":
            q += ".as_count()"
        requests.append({"q": q, "display_type": "bars" if s.aggregation == "sum" else "line"})
    return {"definition": {"type": "timeseries", "title": panel.title, "requests": requests}}


def dashboard(config: Any) -> dict[str, Any]:
    """The standard dashboard (the body of ``api.Dashboard.create``)."""
    prefix = str(config.get("run.metric_prefix", "apm") or "apm")
    service = config.get("sinks.datadog.service") or "all services"
    return {
        "title": f"logging-apm: {service}",
        "description": DASHBOARD_MARKER,
        "layout_type": "ordered",
        "widgets": [_widget(p, prefix, config) for p in standard_panels()],
    }


# --- apply ---------------------------------------------------------------------------------------------


class DatadogAPI:
    """The SDK's ``api.Monitor`` and ``api.Dashboard``, with errors raised and secrets scrubbed."""

    def __init__(self, config: Any) -> None:
        import datadog

        from aggregator.sinks.datadog import api_host_for

        api_key, app_key = config.get("sinks.datadog.api_key"), config.get("sinks.datadog.app_key")
        if not api_key or not app_key:
            raise VendorError("applying to Datadog needs DATADOG_API_KEY and DATADOG_APP_KEY")
        self.secrets = list(config.secrets())
        host_name = config.get("sinks.datadog.host_name") or "logapm"
        datadog.initialize(api_key=api_key, app_key=app_key, host_name=host_name,
                           api_host=api_host_for(config.get("sinks.datadog.site"), config.get("sinks.datadog.host")),
                           mute=False, timeout=float(config.get("sinks.timeout_seconds", 10.0)), max_retries=0)
        from datadog import api

        api._api_key, api._application_key, api._mute = api_key, app_key, False
        self.api = api

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from datadog.api.exceptions import DatadogException

        from aggregator.sinks.base import scrub
        from aggregator.sinks.datadog import reset_sdk_backoff

        reset_sdk_backoff()
        try:
            result = fn(*args, **kwargs)
        except (DatadogException, ValueError) as exc:
            raise VendorError(scrub(f"Datadog API: {exc}", self.secrets)) from None
        if isinstance(result, dict) and result.get("errors"):
            raise VendorError(scrub(f"Datadog API: {result['errors']}", self.secrets))
        return result


def apply_monitors(rules: Sequence[Any], config: Any, api: DatadogAPI | None = None) -> ApplyReport:
    api = api or DatadogAPI(config)
    report = ApplyReport("datadog", "monitors")
    existing = api.call(api.api.Monitor.get_all, monitor_tags=MANAGED_TAG) or []
    by_rule: dict[str, dict[str, Any]] = {}
    for m in existing:
        for tag in m.get("tags") or []:
            if tag.startswith("logapm-rule:"):
                by_rule.setdefault(tag.split(":", 1)[1], m)
    for rule in rules:
        desired = monitor(rule, config)
        current = by_rule.get(rule.name)
        if current is None:
            api.call(api.api.Monitor.create, **desired)
            report.created.append(desired["name"])
        elif subset_equal(desired, current):
            report.unchanged.append(desired["name"])
        else:
            api.call(api.api.Monitor.update, current["id"], **desired)
            report.updated.append(desired["name"])
    return report


def apply_dashboard(config: Any, api: DatadogAPI | None = None) -> ApplyReport:
    api = api or DatadogAPI(config)
    report = ApplyReport("datadog", "dashboard")
    desired = dashboard(config)
    listing = api.call(api.api.Dashboard.get_all) or {}
    match = next((d for d in listing.get("dashboards", []) if d.get("title") == desired["title"]), None)
    if match is None:
        api.call(api.api.Dashboard.create, **desired)
        report.created.append(desired["title"])
        return report
    current = api.call(api.api.Dashboard.get, match["id"])
    if subset_equal(desired, current):
        report.unchanged.append(desired["title"])
    else:
        api.call(api.api.Dashboard.update, match["id"], **desired)
        report.updated.append(desired["title"])
    return report
