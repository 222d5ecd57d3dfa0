"""A state store with something in every part of the report, filled through the owners' own write APIs:

- windows of every family through ``WindowsStore.put`` (real aggregates: exact fields and real sketches of
  generated latencies);
- traces (time shares, queries per request, N+1 findings) through the insights' ``TraceAnalyzer``;
- alert transitions and notifications through alerting's ``AlertStore``.

Deterministic (seeded), 30 one-minute windows ending a few minutes before now.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import orjson

from aggregator.config import load_config
from aggregator.insights.records import TraceRecord
from aggregator.insights.traces import TraceAnalyzer
from aggregator.model import SeriesKey, WindowAggregate, make_tags
from aggregator.sketch import sketch_of
from aggregator.store import Store
from aggregator.windows_store import WindowsStore
from alerting.state import AlertStore, Notification, Transition  # registers alerting's tables

ROUTES: tuple[str, ...] = ("api/stories/<int:story_id>/", "api/feed/", "api/search/")
EVIL_ROUTES: tuple[str, ...] = (
    "<script>window.__pwned=1;alert(1)</script>",
    '"><img src=x onerror="window.__pwned=2">',
    "</script><script>window.__pwned=3</script><!--",
    "api/\u2028line\u2029sep/&amp;/<b>bold</b>",
)
WINDOWS = 30


def _agg(family: str, tags: dict[str, str], start: int, values: np.ndarray, *, errors: int = 0,
         counters: dict[str, float] | None = None) -> WindowAggregate:
    v = np.asarray(values, dtype=float)
    return WindowAggregate(
        SeriesKey(family, make_tags(tags)), start, 60, count=int(v.size), errors=errors, total=float(v.sum()),
        min=float(v.min()), max=float(v.max()), counters=dict(counters or {}), sketch=sketch_of(v),
    )


def _record(trace: str, span: str, parent: str, kind: str, end: float, duration_ms: float, name: str,
            detail: str, extra: object, status: int) -> TraceRecord:
    """A successful operation's record, by field name (the record's shape belongs to the insights)."""
    fields: dict[str, object] = {"trace_id": trace, "span_id": span, "parent_span_id": parent, "kind": kind,
                                 "end": end, "duration_ms": duration_ms, "name": name, "detail": detail,
                                 "extra": extra, "status": status}
    if "outcome" in TraceRecord._fields:
        fields["outcome"] = "success"
    else:
        fields["failed"] = False
    return TraceRecord(**fields)  # type: ignore[arg-type]


def _hex(rng: np.random.Generator, n: int) -> str:
    return bytes(rng.integers(0, 256, n, dtype=np.uint8)).hex()


def build_store(tmp_path: Path, *, routes: Sequence[str] = ROUTES, alerts: bool = True, seed: int = 7,
                raw: dict[str, list[float]] | None = None, windows: int = WINDOWS) -> Path:
    """Fill ``tmp_path/state.db`` and return its path; ``raw`` (when given) receives every request
    duration per route, for checking the report's figures against exact percentiles."""
    rng = np.random.default_rng(seed)
    path = tmp_path / "state.db"
    config = load_config(environ={})
    end = (int(time.time()) // 60 - 3) * 60
    t0 = end - windows * 60
    aggs: list[WindowAggregate] = []
    records: list[TraceRecord] = []
    slow_route = routes[0]
    for w in range(windows):
        start = t0 + w * 60
        for i, route in enumerate(routes):
            mu = 6.4 if route == slow_route and w >= windows // 2 else 3.8 + 0.3 * i
            n = int(rng.integers(40, 80))
            durations = rng.lognormal(mu, 0.45, n)
            if raw is not None:
                raw.setdefault(route, []).extend(durations.tolist())
            errors = int(rng.binomial(n, 0.08 if i == 1 else 0.01))
            aggs.append(_agg("request", {"route": route, "method": "GET", "service": "demo"}, start, durations,
                             errors=errors, counters={"satisfied": float((durations <= 500).sum()),
                                                      "tolerating": float(((durations > 500) &
                                                                           (durations <= 2000)).sum())}))
            # A few traced requests per window and route; the first route loops over a query (N+1).
            for k in range(3):
                trace = _hex(rng, 16)
                root = _hex(rng, 8)
                req_end = start + 5 + k * 15 + i
                req_ms = float(durations[k])
                loops = 8 if i == 0 else 1
                for q in range(loops):
                    records.append(_record(trace, _hex(rng, 8), root, "db", req_end - 0.002 * (loops - q),
                                           req_ms * 0.4 / loops, f"fp{i}",
                                           f"SELECT * FROM chapters WHERE story_id = ? -- {route}",
                                           "chapters", 0))
                hit = True if "outcome" in TraceRecord._fields else "hit"
                records.append(_record(trace, _hex(rng, 8), root, "cache", req_end - 0.001, 0.3, "get",
                                       "default", hit, 0))
                records.append(_record(trace, _hex(rng, 8), root, "external", req_end - 0.0005,
                                       req_ms * 0.2, "clerk", "GET", "127.0.0.1", 200))
                records.append(_record(trace, root, "", "request", req_end, req_ms, route, "GET", None, 200))
        aggs.append(_agg("db", {"db": "default", "operation": "SELECT", "table": "chapters"}, start,
                         rng.lognormal(1.0, 1.0, 300), counters={"slow": 4.0}))
        aggs.append(_agg("db", {"db": "default", "operation": "INSERT", "table": routes[-1][:60]}, start,
                         rng.lognormal(2.5, 0.8, 30), counters={"slow": 1.0}))
        hits = int(rng.integers(50, 90))
        aggs.append(_agg("cache", {"cache": "default", "operation": "get"}, start, rng.lognormal(-1, 0.3, 100),
                         counters={"hits": float(hits), "misses": float(100 - hits)}))
        aggs.append(_agg("external", {"peer_service": "clerk", "operation": "GET"}, start,
                         rng.lognormal(5.0, 0.4, 12), errors=int(rng.integers(0, 2))))
        aggs.append(_agg("external", {"peer_service": routes[-1][:40], "operation": "POST"}, start,
                         rng.lognormal(4.0, 0.4, 6)))
        aggs.append(_agg("task", {"task": "stories.tasks.send_digest", "queue": "celery"}, start,
                         rng.lognormal(5.5, 0.5, 10), counters={"failures": 1.0, "retries": 0.0}))
        aggs.append(_agg("task.queue_wait", {"task": "stories.tasks.send_digest", "queue": "celery"}, start,
                         rng.lognormal(3.0, 0.5, 10)))
        aggs.append(_agg("metric:celery.queue.depth", {"queue": "celery"}, start,
                         rng.integers(0, 40, 4).astype(float)))
    with Store(path) as store:
        ws = WindowsStore(store)
        analyzer = TraceAnalyzer(store, config)
        analyzer.feed(records)
        trace_aggs = analyzer.finish()
        with store.transaction():
            ws.put(aggs, time.time())
            ws.put(trace_aggs, time.time())
        if alerts:
            _alert_history(store, routes[0], t0)
    return path


def _alert_history(store: Store, route: str, t0: int) -> None:
    alert_store = AlertStore(store)
    key = (("route", route),)
    now = time.time()
    steps = [(16, "inactive", "pending", 520.0), (18, "pending", "firing", 640.0),
             (27, "firing", "resolved", 180.0)]
    with store.transaction():
        for minute, frm, to, value in steps:
            alert_store.record_transition(
                Transition("api_p95_latency", key, t0 + minute * 60, frm, to, value), now)
        alert_store.enqueue(Notification("api_p95_latency", key, "firing", t0 + 18 * 60, {"value": 640.0}),
                            [], now)
        alert_store.enqueue(Notification("api_p95_latency", key, "resolved", t0 + 27 * 60, {"value": 180.0}),
                            [], now)


# --- the same kind of store, made by the real pipeline: JSON log lines -> `logapm run` ------------------


def _stamp(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


def write_log(path: Path, *, routes: Sequence[str] = ROUTES, minutes: int = 20, seed: int = 11) -> int:
    """Schema-1 lines of every kind (requests with their traces, queries with an N+1 loop on the first
    route, cache, external, tasks, queue-depth samples) and a few ordinary log lines; returns the number
    of request events. Strings that come from the app (routes, service names, query text, task names)
    are taken from ``routes``, so hostile names travel the whole pipeline."""
    rng = np.random.default_rng(seed)
    end = (int(time.time()) // 60 - 2) * 60
    t0 = end - minutes * 60
    lines: list[bytes] = []
    requests = 0

    def emit(ts: float, kind: str, duration: float | None, trace: str, span: str, parent: str | None,
             **attrs: object) -> None:
        event: dict[str, object] = {"timestamp": _stamp(ts), "apm.schema": 1, "apm.kind": kind}
        if duration is not None:
            event["duration_ms"] = round(duration, 3)
        event["outcome"] = attrs.pop("outcome", "success")
        event["service.name"] = "report-test"
        if trace:
            event.update({"trace_id": trace, "span_id": span})
            if parent:
                event["parent_span_id"] = parent
        event.update(attrs)
        lines.append(orjson.dumps(event))

    for minute in range(minutes):
        base = t0 + minute * 60
        for i, route in enumerate(routes):
            for _ in range(int(rng.integers(25, 35))):
                ts = base + rng.uniform(1, 59)
                slow = i == 0 and minute >= minutes // 2
                duration = float(rng.lognormal(6.6 if slow else 3.8 + 0.2 * i, 0.35))
                failed = rng.random() < (0.2 if i == 1 else 0.005)
                trace, root = _hex(rng, 16), _hex(rng, 8)
                loops = 7 if i == 0 else 1
                for q in range(loops):
                    emit(ts - duration / 1000 + 0.001 * (q + 1), "db", duration * 0.3 / loops, trace,
                         _hex(rng, 8), root, **{
                             "db.system": "sqlite", "db.namespace": "default", "db.operation.name": "SELECT",
                             "db.collection.name": f"tbl_{i}", "db.query.fingerprint": f"{i:016x}",
                             "db.query.text": f"SELECT * FROM tbl_{i} WHERE note = ? /* {route} */"})
                emit(ts - 0.002, "cache", 0.4, trace, _hex(rng, 8), root, **{
                    "cache.name": "default", "cache.operation": "get", "cache.hit": bool(rng.random() < 0.8)})
                emit(ts - 0.001, "external", duration * 0.2, trace, _hex(rng, 8), root, **{
                    "peer.service": route[:60], "external.operation": "GET", "server.address": "127.0.0.1",
                    "http.response.status_code": 200})
                emit(ts, "request", duration, trace, root, None, **{
                    "http.request.method": "GET", "http.route": route,
                    "http.response.status_code": 500 if failed else 200,
                    **({"outcome": "failure", "error.type": "RuntimeError"} if failed else {})})
                requests += 1
            task = _hex(rng, 16)
            emit(base + 30 + i, "task", float(rng.lognormal(5, 0.3)), task, _hex(rng, 8), None, **{
                "task.name": f"tasks.{route[:40]}", "messaging.destination.name": "celery",
                "task.state": "success", "task.retries": 0, "task.queue_wait_ms": float(rng.lognormal(3, 0.5))})
        emit(base + 45, "metric", None, "", "", None, **{
            "metric.name": "celery.queue.depth", "metric.type": "gauge", "metric.value": float(minute % 7),
            "metric.tags": {"queue": "celery"}})
        lines.append(orjson.dumps({"timestamp": _stamp(base + 50), "level": "INFO", "logger": "app",
                                   "message": f"{routes[0]} ordinary line"}))
    path.write_bytes(b"\n".join(lines) + b"\n")
    return requests


def run_pipeline(tmp_path: Path, *, routes: Sequence[str] = ROUTES, minutes: int = 20) -> tuple[Path, int]:
    """Write the log, aggregate it with ``logapm run``'s code (alerting included); (state path, requests)."""
    from aggregator.run import execute

    log = tmp_path / "app.log"
    requests = write_log(log, routes=routes, minutes=minutes)
    state = tmp_path / "state.db"
    config = load_config(environ={}, overrides={"run.workers": 1})
    report = execute(config, inputs=[str(log)], state_path=state, warn=lambda _m: None)
    assert report.events > requests and report.invalid_total == 0, report.counts()
    return state, requests
