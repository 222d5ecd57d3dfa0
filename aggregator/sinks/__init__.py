"""Sinks: where a run's metric points go after the commit.

``sink_names(config)`` is the list of delivery lanes (the outbox keeps an entry per lane and changed
window); ``build_sinks(config)`` builds the sink of each lane. A vendor lane exists only when its key is
set: with no keys the metrics stay in the state store (``logapm metrics`` shows them), and
``local_only_note`` is the one line the run's summary says about it.

Vendors: ``datadog`` (``DATADOG_API_KEY``), ``newrelic`` (``NEW_RELIC_LICENSE_KEY``), chosen by
``APM_PROVIDER`` (``datadog``, ``newrelic``, ``both`` or a comma list) and switched off by
``APM_ENABLED=false``. ``openmetrics`` (``LOGAPM_OPENMETRICS_PATH``) is local and needs neither.
"""

from __future__ import annotations

import socket
from typing import Any

from aggregator.model import Sink

VENDORS = ("datadog", "newrelic")
_ALIASES = {"datadog": "datadog", "dd": "datadog", "newrelic": "newrelic", "new_relic": "newrelic",
            "new-relic": "newrelic", "nr": "newrelic"}
_KEY_SETTING = {"datadog": ("sinks.datadog.api_key", "DATADOG_API_KEY"),
                "newrelic": ("sinks.newrelic.license_key", "NEW_RELIC_LICENSE_KEY")}


def providers(config: Any) -> tuple[list[str], list[str]]:
    """(the vendors ``APM_PROVIDER`` names, the words in it that name no vendor)."""
    raw = str(config.get("sinks.provider") or "")
    chosen: list[str] = []
    unknown: list[str] = []
    for word in raw.replace(";", ",").replace("+", ",").replace(" ", ",").split(","):
        word = word.strip().lower()
        if not word:
            continue
        names = list(VENDORS) if word in ("both", "all") else [_ALIASES.get(word, "")]
        for name in names:
            if not name:
                unknown.append(word)
            elif name not in chosen:
                chosen.append(name)
    return chosen, unknown


def vendor_lanes(config: Any) -> list[str]:
    if not config.get("sinks.enabled", True):
        return []
    chosen, _ = providers(config)
    return [v for v in chosen if config.get(_KEY_SETTING[v][0])]


def sink_names(config: Any) -> list[str]:
    """The delivery lanes of this configuration, in delivery order."""
    names = vendor_lanes(config)
    if config.get("sinks.openmetrics.path"):
        names.append("openmetrics")
    return names


def local_only_note(config: Any) -> str | None:
    """What the run summary says when some or all metrics are not going to a vendor, or None."""
    chosen, unknown = providers(config)
    notes: list[str] = []
    if unknown:
        notes.append(f"APM_PROVIDER names no vendor in {', '.join(map(repr, unknown))} (use datadog, newrelic or both)")
    if not config.get("sinks.enabled", True):
        return "metrics stay local (APM_ENABLED is false): see them with `logapm metrics`" + (
            "; " + "; ".join(notes) if notes else "")
    missing = [v for v in chosen if not config.get(_KEY_SETTING[v][0])]
    for v in missing:
        notes.append(f"APM_PROVIDER names {v} but {_KEY_SETTING[v][1]} is not set")
    if not vendor_lanes(config):
        why = "; ".join(notes) if notes else "no vendor configured (APM_PROVIDER and keys unset)"
        return f"metrics stay local ({why}): see them with `logapm metrics`"
    if notes:
        return "; ".join(notes)
    return None


def build_sinks(config: Any, *, names: list[str] | None = None) -> list[Sink]:
    """The sinks of ``sink_names(config)`` (or of ``names``), ready to send."""
    wanted = sink_names(config) if names is None else names
    secrets = list(config.secrets()) if hasattr(config, "secrets") else []
    timeout = float(config.get("sinks.timeout_seconds", 10.0))
    max_items = int(config.get("sinks.max_points_per_request", 0) or 0)
    out: list[Sink] = []
    for name in wanted:
        if name == "datadog":
            from aggregator.sinks.datadog import DatadogSink, api_host_for

            out.append(DatadogSink(
                api_key=config["sinks.datadog.api_key"],
                app_key=config.get("sinks.datadog.app_key"),
                api_host=api_host_for(config.get("sinks.datadog.site"), config.get("sinks.datadog.host")),
                host_name=config.get("sinks.datadog.host_name") or socket.gethostname(),
                service=config.get("sinks.datadog.service"),
                env=config.get("sinks.datadog.env"),
                timeout=timeout, max_items=max_items, secrets=secrets,
            ))
        elif name == "newrelic":
            from aggregator.sinks.newrelic import NewRelicSink, metric_host_for

            host, port = metric_host_for(config.get("sinks.newrelic.region"), config.get("sinks.newrelic.host"))
            common: dict[str, Any] = {"instrumentation.provider": "logging-apm"}
            if config.get("sinks.newrelic.app_name"):
                common["service.name"] = config["sinks.newrelic.app_name"]
            if config.get("sinks.newrelic.environment"):
                common["environment"] = config["sinks.newrelic.environment"]
            out.append(NewRelicSink(
                license_key=config["sinks.newrelic.license_key"], host=host, port=port, common=common,
                ca_certs=config.get("sinks.newrelic.ca_certs"), timeout=timeout, max_items=max_items,
                secrets=secrets,
            ))
        elif name == "openmetrics":
            from aggregator.sinks.openmetrics import OpenMetricsSink

            out.append(OpenMetricsSink(config["sinks.openmetrics.path"],
                                       stale_seconds=float(config.get("sinks.openmetrics.stale_seconds", 900))))
        else:
            raise ValueError(f"unknown sink {name!r}")
    return out
