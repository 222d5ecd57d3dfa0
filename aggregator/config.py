"""The aggregator's configuration: one place for every setting of a run, its default and its variable.

Sources, strongest first: command-line options, environment variables (the original ``.env`` names keep
their meaning), the TOML config file (``--config``, or ``LOGAPM_CONFIG``), then the defaults below. The
result is checked once, up front; the hot path only reads attributes.

Each setting is declared once in ``SETTINGS`` with its TOML path, its environment variable and its
default; ``docs/configuration.md`` is the human-readable list of the same table (a test keeps them in step).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A setting has a value that cannot be right; the message names the setting and where it came from."""


def _float(v: Any) -> float:
    if isinstance(v, bool):
        raise ValueError("expected a number, got a boolean")
    return float(v)


def _int(v: Any) -> int:
    if isinstance(v, bool) or (isinstance(v, float) and not v.is_integer()):
        raise ValueError("expected a whole number")
    return int(v)


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    # Imported here: a run whose settings give no boolean as text never needs the app's logging_apm.conf,
    # whose import was ~1.6 ms of each run's start.
    from logging_apm.conf import env_bool

    return env_bool("value", False, {"value": str(v)})


def _str(v: Any) -> str:
    return str(v)


def _list(v: Any) -> list[str]:
    if isinstance(v, str):
        return [p.strip() for p in v.replace(";", ",").split(",") if p.strip()]
    if isinstance(v, list):
        return [str(p) for p in v]
    raise ValueError("expected a list or a comma-separated string")


@dataclass(frozen=True, slots=True)
class Setting:
    path: str  # dotted TOML path: section.key
    env: str | None  # environment variable, or None
    default: Any
    parse: Callable[[Any], Any]
    doc: str
    secret: bool = False  # never printed, logged or stored


SETTINGS: tuple[Setting, ...] = (
    # [run]
    Setting("run.state", "LOGAPM_STATE", "logapm-state.db", _str, "Path of the SQLite state store."),
    Setting("run.inputs", "LOGAPM_INPUTS", [], _list, "Log files, globs or directories to read."),
    Setting("run.window_seconds", "LOGAPM_WINDOW_SECONDS", 60, _int, "Width of an aggregation window."),
    Setting("run.lateness_seconds", "LOGAPM_LATENESS_SECONDS", 6 * 3600, _int,
            "How late an event may arrive and still update its window; older ones are counted as late."),
    Setting("run.max_future_seconds", "LOGAPM_MAX_FUTURE_SECONDS", 600, _int,
            "Events timestamped further ahead of the clock than this are invalid."),
    Setting("run.dead_letter", "LOGAPM_DEAD_LETTER", None, lambda v: None if v is None else str(v),
            "Dead-letter file for invalid lines (default: next to the state store)."),
    Setting("run.metric_prefix", "LOGAPM_METRIC_PREFIX", "apm", _str, "Prefix of every metric name."),
    Setting("run.max_series_per_metric", "LOGAPM_MAX_SERIES", 2000, _int,
            "Series cap per metric family; beyond it tag values fold into `other`."),
    Setting("run.apdex_t_ms", "APDEX_T_MS", 500.0, _float,
            "Apdex T: satisfied at or under T, tolerating under 4T."),
    Setting("run.slow_query_ms", "SLOW_QUERY_THRESHOLD_MS", 100.0, _float,
            "A query slower than this counts in apm.db.query.slow (and feeds the slow-query alert)."),
    Setting("run.n_plus_one_threshold", "N_PLUS_ONE_THRESHOLD", 5, _int,
            "Executions of one query fingerprint in one trace that make an N+1 finding."),
    Setting("run.trace_insights", "LOGAPM_TRACE_INSIGHTS", True, _bool,
            "Join events by trace (time shares, queries per request, N+1 findings); off saves about a third "
            "of a run's CPU when the logs carry no trace context."),
    Setting("run.trace_pending_seconds", "LOGAPM_TRACE_PENDING_SECONDS", 1800, _int,
            "How long (event time) the events of a trace wait in the store for their request event."),
    # 50,000: the parent trims back to the cap once over 1.25 times it (TraceAnalyzer.TRIM_AT), about 550 bytes
    # a packed open trace; at 200,000 a 5M-event backlog full of orphans took the run to 324 MB PSS, at 50,000
    # to 216 MB (about 200 MB with the packed traces). Requests in flight at a
    # run's end are far fewer (1,000 requests/s of 100 ms with 10 operations each: about 1,000 events).
    Setting("run.trace_pending_max_events", "LOGAPM_TRACE_PENDING_MAX_EVENTS", 50_000, _int,
            "Cap on events of traces waiting for their request; beyond it the oldest traces are dropped "
            "(counted)."),
    Setting("run.workers", "LOGAPM_WORKERS", 0, _int, "Decoder processes (0: one per core)."),
    Setting("run.engine", "LOGAPM_ENGINE", "local", _str, "`local` or `dask`."),
    Setting("run.dask_scheduler", "LOGAPM_DASK_SCHEDULER", None, lambda v: None if v is None else str(v),
            "Address of an existing Dask scheduler (default: a LocalCluster)."),
    # [sinks]
    Setting("sinks.enabled", "APM_ENABLED", True, _bool, "Deliver metrics to the configured vendors."),
    Setting("sinks.provider", "APM_PROVIDER", "", _str,
            "`datadog`, `newrelic`, or both (`datadog,newrelic`); empty: keep metrics locally."),
    Setting("sinks.datadog.api_key", "DATADOG_API_KEY", None, _str, "Datadog API key.", secret=True),
    Setting("sinks.datadog.app_key", "DATADOG_APP_KEY", None, _str, "Datadog application key.", secret=True),
    Setting("sinks.datadog.site", "DD_SITE", "datadoghq.com", _str, "Datadog site (datadoghq.eu, us3..., ...)."),
    Setting("sinks.datadog.host", "DATADOG_HOST", None, _str, "Full Datadog API URL; overrides the site."),
    Setting("sinks.datadog.service", "DATADOG_SERVICE_NAME", None, _str, "Service tag on Datadog."),
    Setting("sinks.datadog.env", "DATADOG_ENVIRONMENT", None, _str, "env tag on Datadog."),
    Setting("sinks.newrelic.license_key", "NEW_RELIC_LICENSE_KEY", None, _str, "New Relic license key.",
            secret=True),
    Setting("sinks.newrelic.api_key", "NEW_RELIC_API_KEY", None, _str,
            "New Relic user API key (NerdGraph: monitors and dashboards).", secret=True),
    Setting("sinks.newrelic.account_id", "NEW_RELIC_ACCOUNT_ID", None, _str, "New Relic account id."),
    Setting("sinks.newrelic.app_name", "NEW_RELIC_APP_NAME", None, _str, "service.name on New Relic."),
    Setting("sinks.newrelic.environment", "NEW_RELIC_ENVIRONMENT", None, _str, "environment on New Relic."),
    Setting("sinks.newrelic.region", "NEW_RELIC_REGION", "us", _str, "`us` or `eu`."),
    Setting("sinks.newrelic.host", "NEW_RELIC_METRIC_HOST", None, _str, "Metric API host; overrides region."),
    Setting("sinks.newrelic.graphql_url", "NEW_RELIC_GRAPHQL_URL", None, _str,
            "NerdGraph URL (default: https://api.newrelic.com/graphql, or api.eu... for region eu)."),
    Setting("sinks.newrelic.ca_certs", "LOGAPM_NEW_RELIC_CA_CERTS", None, _str,
            "CA bundle for New Relic's TLS (default: the system's)."),
    Setting("sinks.datadog.host_name", "DD_HOSTNAME", None, _str,
            "Host name on Datadog series (default: this machine's name)."),
    Setting("sinks.timeout_seconds", "LOGAPM_SINK_TIMEOUT_SECONDS", 10.0, _float, "Timeout of one vendor request."),
    Setting("sinks.max_points_per_request", "LOGAPM_SINK_MAX_POINTS", 20000, _int,
            "Points per vendor request at most (0: only the vendors' byte limits)."),
    Setting("sinks.retry.max_attempts", "LOGAPM_SINK_MAX_ATTEMPTS", 4, _int,
            "Tries of one request within a run (429, 5xx, timeouts, refused connections)."),
    Setting("sinks.retry.base_seconds", "LOGAPM_SINK_RETRY_BASE_SECONDS", 0.5, _float,
            "First backoff cap within a run (full jitter, doubling)."),
    Setting("sinks.retry.cap_seconds", "LOGAPM_SINK_RETRY_CAP_SECONDS", 30.0, _float,
            "Largest backoff within a run."),
    Setting("sinks.retry.budget_seconds", "LOGAPM_SINK_TIME_BUDGET_SECONDS", 20.0, _float,
            "Time one sink may spend delivering in one run; the rest waits for the next run."),
    Setting("sinks.retry.later_base_seconds", "LOGAPM_SINK_RETRY_LATER_SECONDS", 30.0, _float,
            "First backoff cap across runs for entries that failed (full jitter, doubling)."),
    Setting("sinks.retry.later_cap_seconds", "LOGAPM_SINK_RETRY_LATER_CAP_SECONDS", 3600.0, _float,
            "Largest backoff across runs."),
    Setting("sinks.openmetrics.stale_seconds", "LOGAPM_OPENMETRICS_STALE_SECONDS", 900, _int,
            "A series with no newer window than this leaves the OpenMetrics file."),
    Setting("sinks.openmetrics.path", "LOGAPM_OPENMETRICS_PATH", None, _str,
            "Write an OpenMetrics file for node_exporter's textfile collector here."),
    # [alerting]
    Setting("alerting.api_p95_ms", "API_P95_THRESHOLD_MS", 500.0, _float, "API p95 latency threshold."),
    Setting("alerting.api_p99_ms", "API_P99_THRESHOLD_MS", 1000.0, _float, "API p99 latency threshold."),
    Setting("alerting.slow_query_ms", "SLOW_QUERY_THRESHOLD_MS", 100.0, _float,
            "Slow query threshold (p95 of a query series)."),
    Setting("alerting.db_pool_utilization", "DB_POOL_UTILIZATION_THRESHOLD", 0.8, _float,
            "DB connection pool utilization threshold (0..1)."),
    Setting("alerting.error_rate", "API_ERROR_RATE_THRESHOLD", 0.05, _float, "API error-rate threshold (0..1)."),
    Setting("alerting.external_p95_ms", "EXTERNAL_P95_THRESHOLD_MS", 2000.0, _float,
            "External service p95 latency threshold."),
    Setting("alerting.cache_miss_rate", "CACHE_MISS_RATE_THRESHOLD", 0.5, _float,
            "Cache miss-rate threshold (0..1)."),
    Setting("alerting.queue_depth", "CELERY_QUEUE_DEPTH_THRESHOLD", 1000.0, _float,
            "Celery queue depth threshold (messages)."),
    Setting("alerting.span_seconds", "ALERT_SPAN_SECONDS", 300, _int, "Span a rule evaluates over."),
    Setting("alerting.for_seconds", "ALERT_FOR_SECONDS", 120, _int, "Pending duration before firing."),
    Setting("alerting.repeat_seconds", "ALERT_REPEAT_SECONDS", 4 * 3600, _int, "Repeat interval."),
    Setting("alerting.min_samples", "ALERT_MIN_SAMPLES", 20, _int,
            "Fewer events than this in a span: the group is not judged."),
    Setting("alerting.send_resolved", "ALERT_SEND_RESOLVED", True, _bool, "Notify when an alert resolves."),
    Setting("alerting.keep_firing_for_seconds", "ALERT_KEEP_FIRING_FOR_SECONDS", 0, _int,
            "A firing alert stays firing this long after its condition last held (damps flapping)."),
    Setting("alerting.max_catchup_seconds", "ALERT_MAX_CATCHUP_SECONDS", 6 * 3600, _int,
            "A rule judged for the first time starts at most this far (event time) before the newest window."),
    Setting("alerting.notify_timeout_seconds", "ALERT_NOTIFY_TIMEOUT_SECONDS", 10.0, _float,
            "Timeout of one notifier call (SMTP, Slack); a failing notifier is retried on a later run."),
    Setting("alerting.dashboard_url", "PERFORMANCE_ALERT_DASHBOARD_URL", None, _str,
            "Link put in notifications."),
    Setting("alerting.email.enabled", "PERFORMANCE_ALERT_EMAIL_ENABLED", False, _bool, "Send alerts by email."),
    Setting("alerting.email.recipients", "PERFORMANCE_ALERT_EMAIL_RECIPIENTS", [], _list, "Email recipients."),
    Setting("alerting.email.sender", "PERFORMANCE_ALERT_EMAIL_FROM", "logapm@localhost", _str, "From address."),
    Setting("alerting.email.host", "PERFORMANCE_ALERT_EMAIL_HOST", "localhost", _str, "SMTP host."),
    Setting("alerting.email.port", "PERFORMANCE_ALERT_EMAIL_PORT", 25, _int, "SMTP port."),
    Setting("alerting.email.security", "PERFORMANCE_ALERT_EMAIL_SECURITY", "none", _str,
            "`none`, `starttls` or `tls`."),
    Setting("alerting.email.username", "PERFORMANCE_ALERT_EMAIL_USERNAME", None, _str, "SMTP user."),
    Setting("alerting.email.password", "PERFORMANCE_ALERT_EMAIL_PASSWORD", None, _str, "SMTP password.",
            secret=True),
    Setting("alerting.email.ca_file", "PERFORMANCE_ALERT_EMAIL_CA_FILE", None, _str,
            "CA certificates to verify the SMTP server with (default: the system's)."),
    Setting("alerting.slack.enabled", "PERFORMANCE_ALERT_SLACK_ENABLED", False, _bool, "Send alerts to Slack."),
    Setting("alerting.slack.webhook_url", "PERFORMANCE_ALERT_SLACK_WEBHOOK_URL", None, _str,
            "Slack incoming webhook URL.", secret=True),
)

SETTINGS_BY_PATH: dict[str, Setting] = {s.path: s for s in SETTINGS}

# Config-file entries that are not plain settings but belong to a component, which validates them itself
# (for example the custom alert rules, ``[[alerting.rules]]``). Anything else unknown is an error.
EXTRA_KEYS: frozenset[str] = frozenset({"alerting.rules"})


def _flatten(doc: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in doc.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and path not in SETTINGS_BY_PATH:
            out.update(_flatten(value, path + "."))
        else:
            out[path] = value
    return out


@dataclass(frozen=True)
class Config:
    """Resolved settings, by dotted path. ``extra`` keeps config-file sections owned by components
    (for example ``[[alerting.rules]]``) for them to validate."""

    values: Mapping[str, Any]
    extra: Mapping[str, Any] = field(default_factory=dict)
    origin: Mapping[str, str] = field(default_factory=dict)  # path -> "default" | "env X" | "file F"
    config_file: Path | None = None

    def __getitem__(self, path: str) -> Any:
        return self.values[path]

    def get(self, path: str, default: Any = None) -> Any:
        return self.values.get(path, default)

    def section(self, prefix: str) -> dict[str, Any]:
        """The settings under ``prefix.`` with the prefix removed."""
        p = prefix + "."
        return {k[len(p):]: v for k, v in self.values.items() if k.startswith(p)}

    def public(self) -> dict[str, Any]:
        """The values with secrets masked: the only form fit for printing or storing."""
        return {
            k: ("***" if SETTINGS_BY_PATH[k].secret and v else v) if k in SETTINGS_BY_PATH else v
            for k, v in self.values.items()
        }

    def secrets(self) -> list[str]:
        """The secret values in force, for scrubbing them from anything that is written out."""
        return [str(v) for k, v in self.values.items()
                if k in SETTINGS_BY_PATH and SETTINGS_BY_PATH[k].secret and v]


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Resolve every setting; raise ``ConfigError`` naming the first bad one and where it came from."""
    env = os.environ if environ is None else environ
    file_path = Path(path) if path is not None else (Path(env["LOGAPM_CONFIG"]) if env.get("LOGAPM_CONFIG") else None)
    file_values: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    if file_path is not None:
        import tomllib  # only for a config file: importing its parser cost every run 3-10 ms of CPU

        try:
            doc = tomllib.loads(file_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {file_path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {file_path}: {exc}") from None
        for key, value in _flatten(doc).items():
            if key in SETTINGS_BY_PATH:
                file_values[key] = value
            elif key in EXTRA_KEYS:
                extra[key] = value
            else:
                raise ConfigError(f"config file {file_path}: unknown setting {key!r}")
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for s in SETTINGS:
        raw: Any = s.default
        where = "default"
        if s.path in file_values:
            raw, where = file_values[s.path], f"file {file_path}"
        if s.env and env.get(s.env) not in (None, ""):
            raw, where = env[s.env], f"environment variable {s.env}"
        if overrides and overrides.get(s.path) is not None:
            raw, where = overrides[s.path], "command line"
        try:
            values[s.path] = raw if raw is None else s.parse(raw)
        except (TypeError, ValueError) as exc:
            shown = "***" if s.secret else repr(raw)
            raise ConfigError(f"setting {s.path} = {shown} (from {where}) is invalid: {exc}") from None
        origin[s.path] = where
    return Config(values=values, extra=extra, origin=origin, config_file=file_path)
