"""Alert rules: the shipped defaults (from the original environment variables) and custom rules from the
config file's ``[[alerting.rules]]`` tables, validated up front with errors that name the line.

A rule is judged over a *span* of windows ending at an evaluation point (a window end, in event time):
per group (``group_by`` tag values), the span's windows are merged by ``aggregator.catalog.merge`` and the
rule's metric is read by ``aggregator.catalog.value`` - the one place that knows what a metric means.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Op = Literal[">", ">=", "<", "<="]
NoData = Literal["ok", "keep", "alert"]
Severity = Literal["critical", "warning", "info"]

OPS: dict[str, Callable[[float, float], bool]] = {
    ">": lambda v, t: v > t,
    ">=": lambda v, t: v >= t,
    "<": lambda v, t: v < t,
    "<=": lambda v, t: v <= t,
}
SEVERITIES: tuple[str, ...] = ("critical", "warning", "info")
NO_DATA: tuple[str, ...] = ("ok", "keep", "alert")
UNITS: tuple[str, ...] = ("ms", "ratio", "")

# Placeholders a message template may use, besides any tag name of the group (``{route}``, ``{queue}``).
TEMPLATE_FIELDS: tuple[str, ...] = (
    "rule", "metric", "value", "threshold", "op", "severity", "series", "since", "span", "unit", "samples",
)
DEFAULT_MESSAGE = "{metric} is {value} ({op} {threshold}) for {series}"


class RuleError(ValueError):
    """A rule that cannot be right; the message names the file, the line and the problem."""


@dataclass(frozen=True, slots=True)
class Rule:
    """One alert rule. Field names are a contract: ``alerting.vendor`` renders them as vendor monitors."""

    name: str
    metric: str  # a catalog metric name, e.g. "apm.request.duration.p95"
    op: Op
    threshold: float
    span_seconds: int = 300
    for_seconds: int = 120
    keep_firing_for_seconds: int = 0
    group_by: tuple[str, ...] = ()  # () = one overall group
    match: tuple[tuple[str, str], ...] = ()  # only series whose tags include these
    severity: Severity = "warning"
    min_samples: int = 20  # fewer events in the span: the group does not breach
    no_data: NoData = "ok"
    message: str = DEFAULT_MESSAGE
    description: str = ""
    repeat_seconds: int = 4 * 3600
    unit: str = ""  # how values are shown: "ms", "ratio" (as a percentage) or plain
    source: str = "default"  # "default" or "FILE line N": where the rule came from

    def breaches(self, value: float) -> bool:
        return OPS[self.op](value, self.threshold)



def format_value(value: float | None, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "no data"
    if unit == "ms":
        return f"{value:,.0f} ms" if abs(value) >= 100 else f"{value:,.1f} ms"
    if unit == "ratio":
        return f"{value * 100:.1f}%"
    if float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:,.3g}"


def format_duration(seconds: int) -> str:
    if seconds <= 0:
        return "0s"
    parts = []
    for size, suffix in ((86400, "d"), (3600, "h"), (60, "m"), (1, "s")):
        n, seconds = divmod(seconds, size)
        if n:
            parts.append(f"{n}{suffix}")
    return "".join(parts)


# --- The shipped defaults --------------------------------------------------------------------------------


def default_rules(config: Any) -> list[Rule]:
    """The rules of ``design.md``, thresholds from the original environment variables (via ``config``)."""
    p = str(config.get("run.metric_prefix", "apm") or "apm")
    common: dict[str, Any] = {
        "span_seconds": int(config.get("alerting.span_seconds", 300)),
        "for_seconds": int(config.get("alerting.for_seconds", 120)),
        "keep_firing_for_seconds": int(config.get("alerting.keep_firing_for_seconds", 0)),
        "repeat_seconds": int(config.get("alerting.repeat_seconds", 4 * 3600)),
        "min_samples": int(config.get("alerting.min_samples", 20)),
    }
    # Sampled gauges (pool utilization, queue depth) have a handful of samples per span, not traffic:
    # one sample is enough to judge them.
    gauge = {**common, "min_samples": 1}
    return [
        Rule(
            name="api_latency_p95", metric=f"{p}.request.duration.p95", op=">",
            threshold=float(config["alerting.api_p95_ms"]), group_by=("route",), severity="warning", unit="ms",
            message="p95 latency of {route} is {value} (threshold {threshold})",
            description="API p95 latency per route over the span (API_P95_THRESHOLD_MS).", **common,
        ),
        Rule(
            name="api_latency_p99", metric=f"{p}.request.duration.p99", op=">",
            threshold=float(config["alerting.api_p99_ms"]), group_by=("route",), severity="critical", unit="ms",
            message="p99 latency of {route} is {value} (threshold {threshold})",
            description="API p99 latency per route over the span (API_P99_THRESHOLD_MS).", **common,
        ),
        Rule(
            name="api_error_rate", metric=f"{p}.request.error_rate", op=">",
            threshold=float(config["alerting.error_rate"]), group_by=("route",), severity="critical",
            unit="ratio", message="error rate of {route} is {value} (threshold {threshold})",
            description="Share of requests answered 5xx or failed, per route (API_ERROR_RATE_THRESHOLD).",
            **common,
        ),
        Rule(
            name="slow_queries", metric=f"{p}.db.query.duration.p95", op=">",
            threshold=float(config["alerting.slow_query_ms"]), group_by=("db", "operation", "table"),
            severity="warning", unit="ms",
            message="p95 of {operation} on {table} ({db}) is {value} (threshold {threshold})",
            description="Query p95 latency per database, operation and table (SLOW_QUERY_THRESHOLD_MS).",
            **common,
        ),
        Rule(
            name="db_pool_utilization", metric=f"{p}.db.pool.utilization.max", op=">",
            threshold=float(config["alerting.db_pool_utilization"]), group_by=("db",), severity="critical",
            unit="ratio", message="connection pool of {db} is {value} used (threshold {threshold})",
            description="Peak DB connection pool utilization (DB_POOL_UTILIZATION_THRESHOLD).", **gauge,
        ),
        Rule(
            name="external_latency_p95", metric=f"{p}.external.duration.p95", op=">",
            threshold=float(config["alerting.external_p95_ms"]), group_by=("peer_service",),
            severity="warning", unit="ms",
            message="p95 latency of {peer_service} is {value} (threshold {threshold})",
            description="External service p95 latency per service (EXTERNAL_P95_THRESHOLD_MS).", **common,
        ),
        Rule(
            # The catalog has the hit rate; a miss rate above M is a hit rate below 1 - M.
            name="cache_miss_rate", metric=f"{p}.cache.hit_rate", op="<",
            threshold=round(1.0 - float(config["alerting.cache_miss_rate"]), 12), group_by=("cache",),
            severity="warning", unit="ratio",
            message="hit rate of cache {cache} is {value} (miss rate above "
            + f"{float(config['alerting.cache_miss_rate']) * 100:.0f}%)",
            description="Cache miss rate per cache alias (CACHE_MISS_RATE_THRESHOLD).", **common,
        ),
        Rule(
            name="celery_queue_depth", metric=f"{p}.task.queue.depth.max", op=">",
            threshold=float(config["alerting.queue_depth"]), group_by=("queue",), severity="warning",
            message="queue {queue} holds {value} messages (threshold {threshold})",
            description="Peak Celery queue depth per queue (CELERY_QUEUE_DEPTH_THRESHOLD).", **gauge,
        ),
    ]


# --- Custom rules from the config file ---------------------------------------------------------------------

_DURATION = re.compile(r"^\s*(?:(\d+)d)?\s*(?:(\d+)h)?\s*(?:(\d+)m)?\s*(?:(\d+)s)?\s*$")
_KEYS = {
    "name", "metric", "op", "threshold", "span", "for", "keep_firing_for", "group_by", "match", "severity",
    "min_samples", "no_data", "message", "description", "repeat", "unit", "enabled",
}
_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")


def parse_duration(value: Any) -> int:
    """Seconds from an integer or a string such as ``"90s"``, ``"5m"``, ``"1h30m"``, ``"2d"``."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 300, \"5m\" or \"1h\", got a boolean")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return value
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m and any(m.groups()):
            d, h, mi, s = (int(g or 0) for g in m.groups())
            return ((d * 24 + h) * 60 + mi) * 60 + s
    raise ValueError(f"{value!r} is not a duration (use seconds, or a string such as \"5m\", \"1h30m\")")


@dataclass
class _Located:
    """Line numbers of one ``[[alerting.rules]]`` entry in the config file: the header and each key."""

    line: int
    keys: dict[str, int] = field(default_factory=dict)


_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")
_KEYLINE = re.compile(r"^\s*(\"[^\"]+\"|'[^']+'|[A-Za-z0-9_-]+)\s*=")


def locate_rules(text: str) -> list[_Located]:
    """Find each ``[[alerting.rules]]`` table and the lines of its keys, without a TOML library (which
    keeps no positions). Rules written inline (``rules = [{...}]``) are located at their ``rules`` line."""
    found: list[_Located] = []
    current: _Located | None = None
    section = ""
    in_string: str | None = None  # inside a multi-line string: its lines are text, not keys
    for number, raw in enumerate(text.splitlines(), start=1):
        starts_inside = in_string is not None
        for quote in ('"""', "'''"):
            if (in_string in (None, quote)) and raw.count(quote) % 2:
                in_string = None if in_string == quote else quote
        if starts_inside:
            continue
        header = _HEADER.match(raw)
        if header:
            name = header.group(2).replace(" ", "")
            if header.group(1) == "[[" and name == "alerting.rules":
                current = _Located(number)
                found.append(current)
            elif current is not None and name.startswith("alerting.rules."):
                # [alerting.rules.match] belongs to the last rule: its keys count as that key's line.
                current.keys.setdefault(name.split(".", 2)[2].split(".")[0], number)
            else:
                current = None
            section = name
            continue
        key = _KEYLINE.match(raw)
        if not key:
            continue
        k = key.group(1).strip("\"'")
        if current is not None:
            current.keys.setdefault(k, number)
        elif (section == "alerting" and k == "rules") or (section == "" and k == "alerting.rules"):
            found.append(_Located(number))
    return found


def load_rules(config: Any, *, known_metric: Callable[[str], bool] | None = None) -> list[Rule]:
    """The defaults, then the config file's custom rules (a custom rule with a default's name replaces it;
    ``enabled = false`` removes it). Raises ``RuleError`` naming the line and the problem."""
    rules = {r.name: r for r in default_rules(config)}
    raw = config.extra.get("alerting.rules") if hasattr(config, "extra") else None
    if raw is None:
        return list(rules.values())
    path: Path | None = getattr(config, "config_file", None)
    where = str(path) if path is not None else "config"
    if not isinstance(raw, list):
        raise RuleError(f"{where}: alerting.rules must be a list of [[alerting.rules]] tables")
    located: list[_Located] = []
    if path is not None:
        try:
            located = locate_rules(Path(path).read_text(encoding="utf-8"))
        except OSError:
            located = []
    if known_metric is None:
        known_metric = catalog_knows
    seen: dict[str, str] = {}
    for index, entry in enumerate(raw):
        loc = located[index] if index < len(located) else None
        rule = parse_rule(entry, config, where=where, loc=loc, index=index, known_metric=known_metric)
        if rule is None:
            name = str(entry.get("name")) if isinstance(entry, dict) else ""
            rules.pop(name, None)
            continue
        if rule.name in seen:
            raise RuleError(f"{rule.source}: rule {rule.name!r} is defined twice (first at {seen[rule.name]})")
        seen[rule.name] = rule.source
        rules[rule.name] = rule
    return list(rules.values())


def catalog_knows(metric: str) -> bool:
    """Whether the catalog can compute ``metric`` (which family it is read from)."""
    from aggregator import catalog

    try:
        return bool(catalog.family_of(metric))
    except (KeyError, ValueError):
        return False


def parse_rule(
    entry: Any,
    config: Any,
    *,
    where: str = "config",
    loc: _Located | None = None,
    index: int = 0,
    known_metric: Callable[[str], bool] = catalog_knows,
) -> Rule | None:
    """One ``[[alerting.rules]]`` table -> a ``Rule`` (None when ``enabled = false``)."""

    def at(key: str | None = None) -> str:
        if loc is None:
            return f"{where}: rule #{index + 1}"
        line = loc.keys.get(key, loc.line) if key else loc.line
        return f"{where} line {line}"

    def fail(key: str | None, problem: str) -> RuleError:
        label = f"rule {entry.get('name')!r}" if isinstance(entry, dict) and "name" in entry else "rule"
        return RuleError(f"{at(key)}: {label}: {problem}")

    if not isinstance(entry, dict):
        raise RuleError(f"{at()}: each alerting.rules entry must be a table, got {type(entry).__name__}")
    unknown = sorted(set(entry) - _KEYS)
    if unknown:
        raise fail(unknown[0], f"unknown key {unknown[0]!r} (known: {', '.join(sorted(_KEYS))})")
    enabled = entry.get("enabled", True)
    if not isinstance(enabled, bool):
        raise fail("enabled", "enabled must be true or false")
    for key in ("name", "metric", "op", "threshold") if enabled else ("name",):
        if key not in entry:
            raise fail(None, f"missing required key {key!r}")
    name = entry["name"]
    if not isinstance(name, str) or not _NAME.match(name):
        raise fail("name", "name must be 1-100 letters, digits, '_', '.', ':' or '-'")
    if not enabled:
        return None

    metric = entry["metric"]
    if not isinstance(metric, str) or not metric:
        raise fail("metric", "metric must be a metric name such as \"apm.request.duration.p95\"")
    if not known_metric(metric):
        raise fail("metric", f"unknown metric {metric!r}{_suggest(metric, config)}")
    op = entry["op"]
    if op not in OPS:
        raise fail("op", f"op {op!r} is not one of {', '.join(OPS)}")
    threshold = entry["threshold"]
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not math.isfinite(threshold):
        raise fail("threshold", f"threshold must be a finite number, got {threshold!r}")

    width = int(config.get("run.window_seconds", 60) or 60)
    durations: dict[str, int] = {}
    for key, default in (
        ("span", config.get("alerting.span_seconds", 300)),
        ("for", config.get("alerting.for_seconds", 120)),
        ("keep_firing_for", config.get("alerting.keep_firing_for_seconds", 0)),
        ("repeat", config.get("alerting.repeat_seconds", 4 * 3600)),
    ):
        try:
            durations[key] = parse_duration(entry.get(key, default))
        except ValueError as exc:
            raise fail(key, f"{key}: {exc}") from None
    if durations["span"] < width or durations["span"] % width:
        raise fail("span", f"span must be a whole number of windows ({width}s each), got {durations['span']}s")
    if durations["for"] % width or durations["keep_firing_for"] % width:
        bad = "for" if durations["for"] % width else "keep_firing_for"
        raise fail(bad, f"{bad} must be a multiple of the window width ({width}s)")
    if durations["repeat"] <= 0:
        raise fail("repeat", "repeat must be positive")

    group_by = entry.get("group_by", [])
    if isinstance(group_by, str):
        group_by = [g.strip() for g in group_by.split(",") if g.strip()]
    if not isinstance(group_by, list) or not all(isinstance(g, str) and g for g in group_by):
        raise fail("group_by", "group_by must be a list of tag names, e.g. [\"route\"]")
    if len(set(group_by)) != len(group_by):
        raise fail("group_by", "group_by names a tag twice")
    match = entry.get("match", {})
    if not isinstance(match, dict) or not all(isinstance(v, str | int) for v in match.values()):
        raise fail("match", "match must be a table of tag = \"value\"")
    severity = entry.get("severity", "warning")
    if severity not in SEVERITIES:
        raise fail("severity", f"severity {severity!r} is not one of {', '.join(SEVERITIES)}")
    no_data = entry.get("no_data", "ok")
    if no_data not in NO_DATA:
        raise fail("no_data", f"no_data {no_data!r} is not one of {', '.join(NO_DATA)}")
    min_samples = entry.get("min_samples", config.get("alerting.min_samples", 20))
    if isinstance(min_samples, bool) or not isinstance(min_samples, int) or min_samples < 0:
        raise fail("min_samples", f"min_samples must be a whole number >= 0, got {min_samples!r}")
    unit = entry.get("unit", _guess_unit(metric))
    if unit not in UNITS:
        raise fail("unit", f"unit {unit!r} is not one of \"ms\", \"ratio\" or \"\"")
    for key in ("message", "description"):
        if key in entry and not isinstance(entry[key], str):
            raise fail(key, f"{key} must be a string")
    message = entry.get("message", DEFAULT_MESSAGE)
    problem = check_template(message)
    if problem:
        raise fail("message", problem)
    return Rule(
        name=name, metric=metric, op=op, threshold=float(threshold), span_seconds=durations["span"],
        for_seconds=durations["for"], keep_firing_for_seconds=durations["keep_firing_for"],
        repeat_seconds=durations["repeat"], group_by=tuple(group_by),
        match=tuple(sorted((str(k), str(v)) for k, v in match.items())), severity=severity,
        min_samples=min_samples, no_data=no_data, message=message, description=entry.get("description", ""),
        unit=unit, source=at(),
    )


def _suggest(metric: str, config: Any) -> str:
    import difflib

    try:
        from aggregator import catalog

        names = catalog.metric_names(str(config.get("run.metric_prefix", "apm") or "apm"))
    except Exception:  # the catalog is the aggregator's: a suggestion is a nicety, never a second error
        return ""
    close = difflib.get_close_matches(metric, names, n=3, cutoff=0.6)
    return f" (did you mean {', '.join(close)}?)" if close else " (the catalog's names: `logapm metrics`)"


def _guess_unit(metric: str) -> str:
    if ".duration." in metric or metric.endswith((".queue_wait.p95",)):
        return "ms"
    if metric.endswith(("_rate", ".utilization.avg", ".utilization.max", ".apdex")) or ".time_share." in metric:
        return "ratio"
    return ""


# --- Message templates -------------------------------------------------------------------------------------


def check_template(template: str) -> str | None:
    """The problem with a message template, or None. Only ``{name}`` and ``{name:spec}`` are allowed
    (no attribute or index access: a template is configuration, not code)."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        return f"message template is malformed: {exc}"
    for _, field_name, spec, conversion in parsed:
        if field_name is None:
            continue
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", field_name):
            return f"message placeholder {{{field_name}}} must be a plain name such as {{value}} or {{route}}"
        if conversion:
            return f"message placeholder {{{field_name}!{conversion}}}: conversions are not allowed"
        if spec and "{" in spec:
            return f"message placeholder {{{field_name}}}: nested placeholders are not allowed"
    try:
        render_message(template, {f: "x" for f in TEMPLATE_FIELDS} | {"value": Shown(1.0), "threshold": Shown(1.0)})
    except (ValueError, TypeError) as exc:
        return f"message template cannot be rendered: {exc}"
    return None


class Shown:
    """A number in a message: ``{value}`` shows it with its unit, ``{value:.1f}`` formats the raw number."""

    __slots__ = ("number", "unit")

    def __init__(self, number: float | None, unit: str = "") -> None:
        self.number = number
        self.unit = unit

    def __format__(self, spec: str) -> str:
        if not spec or self.number is None:
            return format_value(self.number, self.unit)
        return format(self.number, spec)

    def __str__(self) -> str:
        return format_value(self.number, self.unit)


class _Fields(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return ""  # a tag the series does not carry


def render_message(template: str, fields: Mapping[str, Any]) -> str:
    """Render a checked template; unknown names (tags the group lacks) render empty."""
    return string.Formatter().vformat(template, (), _Fields(fields))


def describe(rules: Sequence[Rule]) -> list[str]:
    """One line per rule, for ``logapm alerts``."""
    out = []
    for r in rules:
        by = f" by {','.join(r.group_by)}" if r.group_by else " overall"
        out.append(
            f"{r.name}: {r.metric} {r.op} {format_value(r.threshold, r.unit)} over {format_duration(r.span_seconds)}"
            f"{by}, for {format_duration(r.for_seconds)} [{r.severity}] ({r.source})"
        )
    return out
