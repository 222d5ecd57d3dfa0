"""Gather what the report shows from the state store: window aggregates through the ``WindowReader`` seam,
N+1 findings and alert history through their owners' read functions.

Every figure is computed by the catalog (``aggregator.catalog.value``) from merged aggregates: a point on
a chart is the merge of the windows in its bucket, a number in a table the merge of the whole span. No
percentile is ever averaged.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from aggregator import catalog
from aggregator.catalog import QUEUE_DEPTH_METRIC
from aggregator.model import SeriesKey, WindowAggregate, WindowReader
from aggregator.report.model import (
    BarChart,
    Cell,
    CellKind,
    Chart,
    LineChart,
    Mark,
    ReportData,
    Section,
    Segment,
    Series,
    StackedBarChart,
    Table,
    Tile,
    Timeline,
    TimelineRow,
)
from aggregator.report.svg import fmt

MAX_POINTS = 120  # buckets per chart: beyond it, windows are merged into wider buckets
TOP_ROUTES = 6  # routes that get their own latency chart
TOP_LINES = 8  # lines on a multi-series chart


@dataclass(frozen=True, slots=True)
class Thresholds:
    """The alert thresholds drawn on charts, always taken from the alerting settings (whose table in
    ``aggregator.config`` is the one place for their defaults)."""

    api_p95_ms: float
    api_p99_ms: float
    error_rate: float
    slow_query_ms: float
    external_p95_ms: float
    cache_miss_rate: float
    queue_depth: float

    @classmethod
    def from_config(cls, config: Any) -> Thresholds:
        return cls(
            api_p95_ms=float(config["alerting.api_p95_ms"]),
            api_p99_ms=float(config["alerting.api_p99_ms"]),
            error_rate=float(config["alerting.error_rate"]),
            slow_query_ms=float(config["alerting.slow_query_ms"]),
            external_p95_ms=float(config["alerting.external_p95_ms"]),
            cache_miss_rate=float(config["alerting.cache_miss_rate"]),
            queue_depth=float(config["alerting.queue_depth"]),
        )


@dataclass(frozen=True, slots=True)
class NPlusOne:
    """One N+1 finding over the span (from ``aggregator.insights.findings``)."""

    route: str
    method: str
    fingerprint: str
    query_text: str
    table: str
    requests: int
    executions: int
    max_executions: int
    time_ms: float
    example_trace_id: str


@dataclass(frozen=True, slots=True)
class AlertChange:
    """One state change of one alert (rule + group) in event time, from the alert history."""

    rule: str
    group: str  # the series or route the alert is about ("" for an overall rule)
    state: str  # pending, firing, resolved, inactive
    at: int
    value: float | None = None
    detail: str = ""
    notified: bool = False


@dataclass(slots=True)
class Extras:
    """What the report reads from the store besides windows; each list is empty when its owner is absent."""

    findings: list[NPlusOne] = field(default_factory=list)
    alerts: list[AlertChange] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Span:
    start: int
    end: int
    step: int

    def buckets(self) -> range:
        return range(self.start, self.end, self.step)

    def bucket(self, ts: int) -> int:
        return self.start + (ts - self.start) // self.step * self.step


def choose_span(reader: WindowReader, window: int, hours: float, *, until: int | None = None) -> Span | None:
    """The span a report covers: ``hours`` ending at the newest window (or ``until``), trimmed to the
    first window that holds requests (or anything), bucketed so that a chart has at most ``MAX_POINTS``."""
    latest = reader.latest_window_start()
    if latest is None:
        return None
    end = (until if until is not None else latest + window)
    start = end - int(hours * 3600)
    first = _first_window(reader, "request", start, end, window)
    if first is None:
        found = [f for f in (_first_window(reader, fam, start, end, window)
                             for fam in ("db", "external", "task", "cache")) if f is not None]
        first = min(found) if found else latest
    start = max(start, first)
    windows = max(math.ceil((end - start) / window), 1)
    step = window * max(math.ceil(windows / MAX_POINTS), 1)
    start = end - math.ceil((end - start) / step) * step
    return Span(start, end, step)


def _first_window(reader: WindowReader, family: str, start: int, end: int, window: int) -> int | None:
    """The earliest window start of ``family`` in ``[start, end)``, found by bisection over window-aligned
    bounds (each probe reads at most one aggregate, so a day of windows is not decoded to find it)."""

    def any_before(bound: int) -> bool:
        return next(iter(reader.windows(family, start, bound)), None) is not None

    if not any_before(end):
        return None
    lo, hi = start // window, -(-end // window)  # in windows: any_before(hi) holds, find the least such
    while lo < hi:
        mid = (lo + hi) // 2
        if any_before(mid * window):
            hi = mid
        else:
            lo = mid + 1
    return max((lo - 1) * window, start)


def _fresh(family: str, start: int, width: int) -> WindowAggregate:
    return WindowAggregate(SeriesKey(family), start, width)


@dataclass(slots=True)
class Grouped:
    """Aggregates of one family grouped by a key: merged over the span and per bucket."""

    totals: dict[Any, WindowAggregate] = field(default_factory=dict)
    buckets: dict[Any, dict[int, WindowAggregate]] = field(default_factory=dict)
    overall: WindowAggregate | None = None
    overall_buckets: dict[int, WindowAggregate] = field(default_factory=dict)

    def keys_by(self, score: Callable[[WindowAggregate], float], limit: int | None = None) -> list[Any]:
        keys = sorted(self.totals, key=lambda k: (-score(self.totals[k]), str(k)))
        return keys if limit is None else keys[:limit]


def group(
    aggs: Iterable[WindowAggregate], span: Span, key: Callable[[SeriesKey], Any]
) -> Grouped:
    """Merge windows per key and bucket; then the buckets into the span totals and the all-keys lines.

    Merging the buckets (at most ``MAX_POINTS`` per key), not the windows, into the totals keeps a long span
    cheap: each stored window is merged once."""
    out = Grouped()
    for agg in aggs:
        k = key(agg.series)
        b = span.bucket(agg.start)
        per = out.buckets.setdefault(k, {})
        cell = per.get(b)
        if cell is None:
            cell = per[b] = _fresh(agg.series.family, b, span.step)
        catalog.merge_into(cell, agg)
    for k, per in out.buckets.items():
        for b, cell in per.items():
            total = out.totals.get(k)
            if total is None:
                total = out.totals[k] = _fresh(cell.series.family, span.start, span.end - span.start)
            catalog.merge_into(total, cell)
            ob = out.overall_buckets.get(b)
            if ob is None:
                ob = out.overall_buckets[b] = _fresh(cell.series.family, b, span.step)
            catalog.merge_into(ob, cell)
    for ob in out.overall_buckets.values():
        if out.overall is None:
            out.overall = _fresh(ob.series.family, span.start, span.end - span.start)
        catalog.merge_into(out.overall, ob)
    return out


class CachedReader:
    """A ``WindowReader`` that reads each (family, span, match) once: several sections group one family."""

    def __init__(self, reader: WindowReader) -> None:
        self.reader = reader
        self._cache: dict[tuple[str, int, int, tuple[tuple[str, str], ...]], list[WindowAggregate]] = {}

    def windows(self, family: str, start: int, end: int, *, match: Mapping[str, str] | None = None
                ) -> Iterator[WindowAggregate]:
        key = (family, start, end, tuple(sorted((match or {}).items())))
        rows = self._cache.get(key)
        if rows is None:
            rows = self._cache[key] = list(self.reader.windows(family, start, end, match=match))
        return iter(rows)

    def latest_window_start(self) -> int | None:
        return self.reader.latest_window_start()


def _v(metric: str, agg: WindowAggregate | None) -> float | None:
    return None if agg is None else catalog.value(metric, agg)


def _series(
    name: str,
    per_bucket: Mapping[int, WindowAggregate],
    span: Span,
    compute: Callable[[WindowAggregate], float | None],
    *,
    empty: float | None = None,
) -> Series:
    pts: list[tuple[int, float | None]] = []
    for b in span.buckets():
        agg = per_bucket.get(b)
        pts.append((b, compute(agg) if agg is not None else empty))
    return Series(name, tuple(pts))


def _metric(name: str) -> Callable[[WindowAggregate], float | None]:
    return lambda agg: catalog.value(name, agg)


def _per_min(span: Span) -> Callable[[WindowAggregate], float | None]:
    return lambda agg: agg.count / (span.step / 60.0)


def _route_label(key: tuple[str, str]) -> str:
    method, route = key
    return f"{method} {route}".strip() if method else route


def _num(v: float | int | None, kind: CellKind = "num") -> Cell:
    return Cell(v, kind)


def _tone(value: float | None, threshold: float) -> Literal["neutral", "good", "bad"]:
    if value is None:
        return "neutral"
    return "bad" if value > threshold else "good"


def _fmt_ms(v: float | None) -> str:
    return fmt(v, "ms")


# --- sections ---------------------------------------------------------------------------------------


def _requests(reader: WindowReader, span: Span, th: Thresholds, match: Mapping[str, str] | None) -> tuple[
    Section, Grouped
]:
    g = group(reader.windows("request", span.start, span.end, match=match), span,
              lambda s: (s.tag("method"), s.tag("route")))
    intro = ("Latency percentiles, throughput and errors of each route (the URL pattern Django matched), "
             "from every request the app logged.")
    if g.overall is None:
        return Section("requests", "Requests", intro, empty="No requests in this span."), g
    charts: list[Chart] = []
    pct = (("p50", "request.duration.p50"), ("p95", "request.duration.p95"), ("p99", "request.duration.p99"))
    charts.append(LineChart(
        "chart-latency-all", "Latency, all routes", "ms", span.start, span.end, span.step,
        tuple(_series(label, g.overall_buckets, span, _metric(m)) for label, m in pct),
        threshold=th.api_p95_ms, threshold_label="API p95 threshold",
    ))
    by_time = g.keys_by(lambda a: a.total)
    for i, key in enumerate(by_time[:TOP_ROUTES]):
        charts.append(LineChart(
            f"chart-latency-route-{i}", f"Latency: {_route_label(key)}", "ms", span.start, span.end, span.step,
            tuple(_series(label, g.buckets[key], span, _metric(m)) for label, m in pct),
            threshold=th.api_p95_ms, threshold_label="API p95 threshold",
        ))
    busy = g.keys_by(lambda a: a.count, TOP_LINES)
    charts.append(LineChart(
        "chart-throughput", "Throughput (requests per minute)", "per_min", span.start, span.end, span.step,
        (_series("all routes", g.overall_buckets, span, _per_min(span), empty=0.0),
         *(_series(_route_label(k), g.buckets[k], span, _per_min(span), empty=0.0) for k in busy)),
    ))
    failing = [k for k in g.keys_by(lambda a: a.errors, TOP_LINES) if g.totals[k].errors]
    charts.append(LineChart(
        "chart-error-rate", "Error rate (5xx or failed)", "ratio", span.start, span.end, span.step,
        (_series("all routes", g.overall_buckets, span, _metric("request.error_rate")),
         *(_series(_route_label(k), g.buckets[k], span, _metric("request.error_rate")) for k in failing)),
        threshold=th.error_rate, threshold_label="error-rate threshold",
    ))
    rows = []
    for key in by_time:
        agg = g.totals[key]
        rows.append((
            Cell(key[0]), Cell(key[1], "code"), _num(agg.count, "count"), _num(agg.errors, "count"),
            _num(_v("request.error_rate", agg), "ratio"), _num(_v("request.duration.p50", agg), "ms"),
            _num(_v("request.duration.p95", agg), "ms"), _num(_v("request.duration.p99", agg), "ms"),
            _num(_v("request.duration.max", agg), "ms"), _num(agg.total, "ms"), _num(_v("request.apdex", agg)),
        ))
    table = Table("table-routes", "Routes, by total time spent",
                  ("method", "route", "requests", "errors", "error rate", "p50", "p95", "p99", "max",
                   "total time", "Apdex"), tuple(rows))
    return Section("requests", "Requests", intro, tuple(charts), (table,)), g


def _time_breakdown(reader: WindowReader, span: Span, match: Mapping[str, str] | None) -> Section:
    intro = ("Share of each route's request time spent in database queries, cache calls and outside "
             "services, and queries per request, from the operations that share the request's trace.")
    route_match = {"route": match["route"]} if match and "route" in match else None
    g = group(reader.windows("trace", span.start, span.end, match=route_match), span, lambda s: s.tag("route"))
    if g.overall is None:
        return Section("time", "Where the time goes", intro,
                       empty="No traced requests in this span (events without trace ids cannot be joined).")
    keys = g.keys_by(lambda a: a.counters.get("request_ms", 0.0), 15)
    rows_chart = []
    table_rows = []
    for key in keys:
        agg = g.totals[key]
        shares = [(_v(f"request.time_share.{k}", agg) or 0.0) for k in ("db", "cache", "external")]
        other = max(1.0 - sum(shares), 0.0)
        rows_chart.append((str(key), (*shares, other)))
        table_rows.append((
            Cell(key, "code"), _num(agg.count, "count"), _num(shares[0], "ratio"), _num(shares[1], "ratio"),
            _num(shares[2], "ratio"), _num(_v("db.queries_per_request.avg", agg)),
            _num(_v("db.queries_per_request.p95", agg)), _num(_v("db.n_plus_one", agg), "count"),
        ))
    chart = StackedBarChart("chart-time-share", "Share of request time by kind of work",
                            ("database", "cache", "external", "app code and other"), tuple(rows_chart))
    qpr = LineChart(
        "chart-queries-per-request", "Queries per request (p95)", "count", span.start, span.end, span.step,
        tuple(_series(str(k), g.buckets[k], span, _metric("db.queries_per_request.p95"))
              for k in g.keys_by(lambda a: a.total, TOP_LINES)),
    )
    table = Table("table-time-share", "Time breakdown per route",
                  ("route", "traced requests", "DB share", "cache share", "external share", "queries/request",
                   "queries/request p95", "N+1 findings"), tuple(table_rows))
    return Section("time", "Where the time goes", intro, (chart, qpr), (table,))


def _db_label(s: SeriesKey) -> str:
    op, table, db = s.tag("operation"), s.tag("table"), s.tag("db")
    text = f"{op} {table}".strip() or "query"
    return f"{text} ({db})" if db and db != "default" else text


def _database(reader: WindowReader, span: Span, th: Thresholds) -> Section:
    intro = ("Queries grouped by database alias, operation and main table; slowest first by p95. "
             f"A query slower than {th.slow_query_ms:g} ms counts as slow.")
    g = group(reader.windows("db", span.start, span.end), span, _db_label)
    if g.overall is None:
        return Section("database", "Slowest queries", intro, empty="No database queries in this span.")
    by_p95 = g.keys_by(lambda a: _v("db.query.duration.p95", a) or 0.0)
    bars = tuple(
        (str(k), _v("db.query.duration.p95", g.totals[k]),
         f"{g.totals[k].count:,} queries, max {_fmt_ms(_v('db.query.duration.max', g.totals[k]))}")
        for k in by_p95[:12]
    )
    charts: list[Chart] = [
        BarChart("chart-slowest-queries", "Slowest queries (p95 over the span)", "ms", bars, colour_index=2),
        LineChart("chart-query-p95", "Query p95 over time, slowest groups", "ms", span.start, span.end,
                  span.step, tuple(_series(str(k), g.buckets[k], span, _metric("db.query.duration.p95"))
                                   for k in by_p95[:6]),
                  threshold=th.slow_query_ms, threshold_label="slow-query threshold"),
    ]
    rows = tuple(
        (Cell(k, "code"), _num(a.count, "count"), _num(_v("db.query.slow", a), "count"),
         _num(_v("db.query.duration.p50", a), "ms"), _num(_v("db.query.duration.p95", a), "ms"),
         _num(_v("db.query.duration.p99", a), "ms"), _num(_v("db.query.duration.max", a), "ms"),
         _num(a.total, "ms"))
        for k in by_p95 for a in (g.totals[k],)
    )
    table = Table("table-queries", "Query groups, slowest first",
                  ("query group", "queries", "slow", "p50", "p95", "p99", "max", "total time"), rows)
    return Section("database", "Slowest queries", intro, tuple(charts), (table,))


def _n_plus_one(reader: WindowReader, span: Span, findings: Sequence[NPlusOne]) -> Section:
    intro = ("The same query run again and again inside one request: the classic N+1 pattern of an ORM "
             "loop. Each row is a route and query; the example trace can be shown with `logapm trace`.")
    trace = group(reader.windows("trace", span.start, span.end), span, lambda s: s.tag("route"))
    charts: list[Chart] = []
    if findings:
        charts.append(BarChart(
            "chart-n-plus-one", "N+1 findings: executions per request", "count",
            tuple((f"{_route_label((f.method, f.route))} · {f.table or f.fingerprint[:8]}",
                   f.executions / f.requests if f.requests else 0.0,
                   f"{f.requests:,} requests, up to {f.max_executions} executions, {_fmt_ms(f.time_ms)} total")
                  for f in findings[:12]),
            colour_index=1,
        ))
    routes = [k for k in trace.keys_by(lambda a: a.counters.get("n_plus_one", 0.0), TOP_LINES)
              if trace.totals[k].counters.get("n_plus_one", 0.0) > 0]
    if routes:
        charts.append(LineChart(
            "chart-n-plus-one-over-time", "Requests with an N+1 finding, per bucket", "count",
            span.start, span.end, span.step,
            tuple(_series(str(k), trace.buckets[k], span, _metric("db.n_plus_one"), empty=0.0)
                  for k in routes),
        ))
    if not findings and not routes:
        return Section("n-plus-one", "N+1 queries", intro, empty="No N+1 pattern found in this span.")
    rows = tuple(
        (Cell(f.method), Cell(f.route, "code"), Cell(f.query_text, "code"), _num(f.requests, "count"),
         _num(f.executions / f.requests if f.requests else None), _num(f.max_executions, "count"),
         _num(f.time_ms, "ms"), Cell(f.example_trace_id, "code"))
        for f in findings
    )
    tables = (Table("table-n-plus-one", "N+1 findings, most time first",
                    ("method", "route", "query (obfuscated)", "requests", "executions/request", "max",
                     "time spent", "example trace"), rows),) if rows else ()
    return Section("n-plus-one", "N+1 queries", intro, tuple(charts), tables)


def _cache(reader: WindowReader, span: Span, th: Thresholds) -> Section:
    intro = "Hit rate of cache reads per cache alias, and the time cache calls take."
    g = group(reader.windows("cache", span.start, span.end), span, lambda s: s.tag("cache") or "default")
    if g.overall is None:
        return Section("cache", "Cache", intro, empty="No cache calls in this span.")
    keys = g.keys_by(lambda a: a.count, TOP_LINES)
    charts: tuple[Chart, ...] = (
        LineChart("chart-cache-hit-rate", "Cache hit rate", "ratio", span.start, span.end, span.step,
                  tuple(_series(str(k), g.buckets[k], span, _metric("cache.hit_rate")) for k in keys),
                  threshold=1.0 - th.cache_miss_rate, threshold_label="hit rate under which the miss-rate alert fires",
                  y_max=1.0),
        LineChart("chart-cache-p95", "Cache call p95", "ms", span.start, span.end, span.step,
                  tuple(_series(str(k), g.buckets[k], span, _metric("cache.duration.p95")) for k in keys)),
    )
    ops = group(reader.windows("cache", span.start, span.end), span,
                lambda s: (s.tag("cache") or "default", s.tag("operation")))
    rows = tuple(
        (Cell(k[0]), Cell(k[1]), _num(a.count, "count"), _num(_v("cache.hits", a), "count"),
         _num(_v("cache.misses", a), "count"), _num(_v("cache.hit_rate", a), "ratio"),
         _num(_v("cache.duration.p95", a), "ms"))
        for k in ops.keys_by(lambda a: a.count) for a in (ops.totals[k],)
    )
    table = Table("table-cache", "Cache calls by alias and operation",
                  ("cache", "operation", "calls", "hits", "misses", "hit rate", "p95"), rows)
    return Section("cache", "Cache", intro, charts, (table,))


def _external(reader: WindowReader, span: Span, th: Thresholds) -> Section:
    intro = "Calls to outside services (HTTP APIs, S3, email, ...), per service: latency, volume and errors."
    g = group(reader.windows("external", span.start, span.end), span, lambda s: s.tag("peer_service"))
    if g.overall is None:
        return Section("external", "External services", intro, empty="No external calls in this span.")
    keys = g.keys_by(lambda a: a.count, TOP_LINES)
    charts: tuple[Chart, ...] = (
        LineChart("chart-external-p95", "External call p95 per service", "ms", span.start, span.end, span.step,
                  tuple(_series(str(k), g.buckets[k], span, _metric("external.duration.p95")) for k in keys),
                  threshold=th.external_p95_ms, threshold_label="external p95 threshold"),
        LineChart("chart-external-calls", "External calls per minute", "per_min", span.start, span.end,
                  span.step, tuple(_series(str(k), g.buckets[k], span, _per_min(span), empty=0.0) for k in keys)),
        LineChart("chart-external-errors", "External error rate", "ratio", span.start, span.end, span.step,
                  tuple(_series(str(k), g.buckets[k], span, _metric("external.error_rate")) for k in keys)),
    )
    ops = group(reader.windows("external", span.start, span.end), span,
                lambda s: (s.tag("peer_service"), s.tag("operation")))
    rows = tuple(
        (Cell(k[0]), Cell(k[1], "code"), _num(a.count, "count"), _num(a.errors, "count"),
         _num(_v("external.error_rate", a), "ratio"), _num(_v("external.duration.p50", a), "ms"),
         _num(_v("external.duration.p95", a), "ms"), _num(_v("external.duration.p99", a), "ms"))
        for k in ops.keys_by(lambda a: a.count) for a in (ops.totals[k],)
    )
    table = Table("table-external", "External calls by service and operation",
                  ("service", "operation", "calls", "errors", "error rate", "p50", "p95", "p99"), rows)
    return Section("external", "External services", intro, charts, (table,))


def _tasks(reader: WindowReader, span: Span, th: Thresholds) -> Section:
    intro = "Celery tasks: run time, failures and retries per task, time waiting in the queue, queue depth."
    g = group(reader.windows("task", span.start, span.end), span, lambda s: s.tag("task"))
    depth = group(reader.windows(f"metric:{QUEUE_DEPTH_METRIC}", span.start, span.end), span,
                  lambda s: s.tag("queue") or "default")
    if g.overall is None and depth.overall is None:
        return Section("tasks", "Tasks and queues", intro, empty="No tasks or queue samples in this span.")
    charts: list[Chart] = []
    rows: tuple[tuple[Cell, ...], ...] = ()
    if g.overall is not None:
        keys = g.keys_by(lambda a: a.total, TOP_LINES)
        charts.append(LineChart(
            "chart-task-p95", "Task run time p95", "ms", span.start, span.end, span.step,
            tuple(_series(str(k), g.buckets[k], span, _metric("task.duration.p95")) for k in keys)))
        charts.append(LineChart(
            "chart-task-throughput", "Tasks per minute", "per_min", span.start, span.end, span.step,
            tuple(_series(str(k), g.buckets[k], span, _per_min(span), empty=0.0) for k in keys)))
        wait = group(reader.windows("task.queue_wait", span.start, span.end), span, lambda s: s.tag("task"))
        rows = tuple(
            (Cell(k, "code"), _num(a.count, "count"), _num(_v("task.failures", a), "count"),
             _num(_v("task.failure_rate", a), "ratio"), _num(_v("task.retries", a), "count"),
             _num(_v("task.duration.p50", a), "ms"), _num(_v("task.duration.p95", a), "ms"),
             _num(_v("task.queue_wait.p95", wait.totals[k]) if k in wait.totals else None, "ms"))
            for k in g.keys_by(lambda a: a.count) for a in (g.totals[k],)
        )
    if depth.overall is not None:
        charts.append(LineChart(
            "chart-queue-depth", "Queue depth (highest sample)", "count", span.start, span.end, span.step,
            tuple(_series(str(k), depth.buckets[k], span, _metric("task.queue.depth.max"))
                  for k in depth.keys_by(lambda a: a.max, TOP_LINES)),
            threshold=th.queue_depth, threshold_label="queue-depth threshold"))
    tables = (Table("table-tasks", "Tasks", ("task", "runs", "failures", "failure rate", "retries", "p50",
                                             "p95", "queue wait p95"), rows),) if rows else ()
    return Section("tasks", "Tasks and queues", intro, tuple(charts), tables)


def _alerts(span: Span, changes: Sequence[AlertChange]) -> Section:
    intro = ("When each alert was pending (its condition held, not yet for long enough), firing and "
             "resolved, in event time; diamonds mark notifications.")
    if not changes:
        return Section("alerts", "Alert timeline", intro,
                       empty="No alert changed state in this span: every rule stayed within its threshold.")
    by_alert: dict[tuple[str, str], list[AlertChange]] = {}
    for c in sorted(changes, key=lambda c: c.at):
        by_alert.setdefault((c.rule, c.group), []).append(c)
    rows = []
    for (rule, grp), items in sorted(by_alert.items()):
        segments: list[Segment] = []
        marks: list[Mark] = []
        open_state: tuple[str, int, str] | None = None
        for c in items:
            if c.notified:  # a message sent: a mark, not a change of state
                marks.append(Mark(c.state, c.at, c.detail or "notification sent"))
                continue
            if open_state is not None:
                segments.append(Segment(open_state[0], open_state[1], c.at, open_state[2]))
                open_state = None
            if c.state in ("pending", "firing"):
                open_state = (c.state, c.at, c.detail)
            if c.state == "resolved":
                marks.append(Mark(c.state, c.at, c.detail))
        if open_state is not None:
            segments.append(Segment(open_state[0], open_state[1], None, open_state[2]))
        rows.append(TimelineRow(f"{rule} · {grp}" if grp else rule, tuple(segments), tuple(marks)))
    chart = Timeline("chart-alert-timeline", "Alerts over time", span.start, span.end, tuple(rows))
    table = Table(
        "table-alerts", "Alert state changes",
        ("time (UTC)", "rule", "about", "state", "value", "detail"),
        tuple((Cell(time.strftime("%H:%M:%S", time.gmtime(c.at))), Cell(c.rule), Cell(c.group, "code"),
               Cell(f"{c.state} sent" if c.notified else c.state, "badge"), _num(c.value), Cell(c.detail))
              for c in sorted(changes, key=lambda c: (c.at, c.notified, c.rule))),
    )
    return Section("alerts", "Alert timeline", intro, (chart,), (table,))


def _pipeline(reader: WindowReader, span: Span) -> Section:
    intro = ("What the aggregator read: every line is accounted for as a timing event, an ordinary log "
             "line, an invalid line (kept in the dead-letter file) or a late event.")
    # Pipeline windows are in wall-clock time (when the runs happened), which may lie outside the span.
    latest = reader.latest_window_start()
    horizon_end = max(span.end, int(time.time()) + 60, (latest or 0) + 60)
    aggs = list(reader.windows("pipeline", span.start, horizon_end))
    if not aggs:
        return Section("pipeline", "Pipeline", intro, empty="No run of the aggregator recorded its counts.")
    total = catalog.merge(aggs)
    assert total is not None
    rows = (
        *((Cell(name), _num(_v(f"pipeline.events.{name}", total), "count"))
          for name in ("read", "parsed", "skipped", "invalid", "late")),
        (Cell("runs"), _num(total.counters.get("runs", 0.0), "count")),
    )
    table = Table("table-pipeline", "Lines and events", ("what", "count"), rows)
    return Section("pipeline", "Pipeline", intro, (), (table,))


def _tiles(requests: Grouped, th: Thresholds, extras: Extras, span: Span) -> list[Tile]:
    tiles: list[Tile] = []
    agg = requests.overall
    if agg is not None:
        minutes = max((span.end - span.start) / 60.0, 1e-9)
        tiles.append(Tile("Requests", f"{agg.count:,}", f"{agg.count / minutes:,.1f} per minute"))
        rate = _v("request.error_rate", agg)
        tiles.append(Tile("Error rate", f"{(rate or 0) * 100:.2f}%", f"{agg.errors:,} errors",
                          _tone(rate, th.error_rate)))
        p95 = _v("request.duration.p95", agg)
        tiles.append(Tile("p95 latency", _fmt_ms(p95), f"threshold {_fmt_ms(th.api_p95_ms)}",
                          _tone(p95, th.api_p95_ms)))
        p99 = _v("request.duration.p99", agg)
        tiles.append(Tile("p99 latency", _fmt_ms(p99), f"threshold {_fmt_ms(th.api_p99_ms)}",
                          _tone(p99, th.api_p99_ms)))
        apdex = _v("request.apdex", agg)
        tiles.append(Tile("Apdex", "–" if apdex is None else f"{apdex:.2f}", "1.0 = every request satisfied",
                          "neutral" if apdex is None else ("good" if apdex >= 0.85 else "warn")))
    if extras.findings:
        reqs = sum(f.requests for f in extras.findings)
        tiles.append(Tile("N+1 findings", f"{len(extras.findings):,}", f"in {reqs:,} requests", "warn"))
    else:
        tiles.append(Tile("N+1 findings", "0", "no query repeated in a loop", "good"))
    fired = {(c.rule, c.group) for c in extras.alerts if c.state == "firing"}
    tiles.append(Tile("Alerts fired", f"{len(fired):,}", "in this span", "bad" if fired else "good"))
    return tiles


def gather(
    reader: WindowReader,
    *,
    span: Span,
    window_seconds: int,
    thresholds: Thresholds,
    extras: Extras | None = None,
    title: str = "logging-apm report",
    state_path: str = "",
    match: Mapping[str, str] | None = None,
    now: float | None = None,
) -> ReportData:
    """Everything the report shows, for ``span``."""
    extras = extras or Extras()
    reader = CachedReader(reader)
    requests, grouped = _requests(reader, span, thresholds, match)
    sections = [
        requests,
        _time_breakdown(reader, span, match),
        _database(reader, span, thresholds),
        _n_plus_one(reader, span, extras.findings),
        _cache(reader, span, thresholds),
        _external(reader, span, thresholds),
        _tasks(reader, span, thresholds),
        _alerts(span, extras.alerts),
        _pipeline(reader, span),
    ]
    return ReportData(
        title=title,
        generated_at=time.time() if now is None else now,
        state_path=state_path,
        start=span.start,
        end=span.end,
        step=span.step,
        window_seconds=window_seconds,
        tiles=_tiles(grouped, thresholds, extras, span),
        sections=sections,
        notes=list(extras.notes),
    )
