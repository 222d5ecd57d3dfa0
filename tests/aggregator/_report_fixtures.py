"""Stores for the report tests, made by the real pipeline: schema-1 JSON log lines of every kind, read by
``logapm run``'s own code (``aggregator.run.execute``: parsers, windows, trace insights, alerting).

Deterministic (seeded) lines over whole minutes ending two minutes before now; the first route turns slow
half-way (so the p95 alert fires) and loops over one query (an N+1 finding); the second route fails often.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import orjson

from aggregator.config import load_config

ROUTES: tuple[str, ...] = ("api/stories/<int:story_id>/", "api/feed/", "api/search/")
EVIL_ROUTES: tuple[str, ...] = (
    "<script>window.__pwned=1;alert(1)</script>",
    '"><img src=x onerror="window.__pwned=2">',
    "</script><script>window.__pwned=3</script><!--",
    "api/\u2028line\u2029sep/&amp;/<b>bold</b>",
)
N_PLUS_ONE_LOOPS = 7


def _hex(rng: np.random.Generator, n: int) -> str:
    return bytes(rng.integers(0, 256, n, dtype=np.uint8)).hex()


def _stamp(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


def write_log(path: Path, *, routes: Sequence[str] = ROUTES, minutes: int = 20, seed: int = 11,
              rate: tuple[int, int] = (25, 35), raw: dict[str, list[float]] | None = None) -> int:
    """Schema-1 lines of every kind (requests with their traces, queries with an N+1 loop on the first
    route, cache, external, tasks, queue-depth samples) and a few ordinary log lines; returns the number
    of request events (``raw``, when given, receives each route's durations). Strings that come from the app (routes, service names, query text, task names)
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
            for _ in range(int(rng.integers(*rate))):
                ts = base + rng.uniform(1, 59)
                slow = i == 0 and minute >= minutes // 2
                duration = float(rng.lognormal(6.6 if slow else 3.8 + 0.2 * i, 0.35))
                if raw is not None:
                    raw.setdefault(route, []).append(round(duration, 3))
                failed = rng.random() < (0.2 if i == 1 else 0.005)
                trace, root = _hex(rng, 16), _hex(rng, 8)
                loops = N_PLUS_ONE_LOOPS if i == 0 else 1
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


def run_pipeline(tmp_path: Path, *, routes: Sequence[str] = ROUTES, minutes: int = 20,
                 rate: tuple[int, int] = (25, 35), raw: dict[str, list[float]] | None = None) -> tuple[Path, int]:
    """Write the log, aggregate it with ``logapm run``'s code (alerting included); (state path, requests)."""
    from aggregator.run import execute

    log = tmp_path / "app.log"
    requests = write_log(log, routes=routes, minutes=minutes, rate=rate, raw=raw)
    state = tmp_path / "state.db"
    config = load_config(environ={}, overrides={"run.workers": 1})
    report = execute(config, inputs=[str(log)], state_path=state, warn=lambda _m: None)
    assert report.events > requests and report.invalid_total == 0, report.counts()
    return state, requests
