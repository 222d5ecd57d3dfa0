"""Synthetic schema-1 logs with a known ground truth, for the tests and the benchmark.

``generate_events`` makes realistic event dicts (a mix of requests, queries, cache calls, external calls,
tasks and business metrics, with trace context, about 300 bytes per line) spread over a time span;
``write_log`` writes them (plus ordinary log lines, which a run must skip) as a JSON-lines file. Tests
compute the expected counts and percentiles from the returned dicts with numpy.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson

ROUTES = [f"api/{name}/" for name in ("stories", "stories/<int:story_id>", "users/<int:user_id>", "feed",
                                       "search", "comments/<int:comment_id>", "auth/login", "notifications",
                                       "uploads", "health", "stories/<int:story_id>/chapters",
                                       "users/<int:user_id>/followers")]
METHODS = ["GET", "GET", "GET", "POST", "PUT", "DELETE"]
TABLES = ["story", "chapter", "user", "comment", "follow", "notification", "tag", "upload"]
OPERATIONS = ["SELECT", "SELECT", "SELECT", "INSERT", "UPDATE", "DELETE"]
CACHE_OPS = ["get", "get", "get", "set", "delete", "get_many"]
PEERS = [("s3", "PutObject"), ("s3", "GetObject"), ("clerk", "verify_session"), ("resend", "send_email"),
         ("rekognition", "DetectModerationLabels")]
TASKS = [("stories.tasks.publish", "default"), ("notify.tasks.send_email", "email"),
         ("media.tasks.moderate", "media")]
KIND_WEIGHTS = {"request": 0.40, "db": 0.35, "cache": 0.12, "external": 0.05, "task": 0.05, "metric": 0.03}
SERVICE = "muejam-backend"
ENV = "production"

_TS_CACHE: dict[int, str] = {}


def rfc3339(ts: float) -> str:
    sec = int(ts)
    head = _TS_CACHE.get(sec)
    if head is None:
        if len(_TS_CACHE) > 100_000:
            _TS_CACHE.clear()
        head = _TS_CACHE[sec] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    return f"{head}.{int((ts - sec) * 1000):03d}Z"


def _hex(rng: np.random.Generator, n: int, digits: int) -> list[str]:
    raw = rng.integers(1, 2**63 - 1, size=n * (digits // 16), dtype=np.int64).tolist()
    if digits == 16:
        return [f"{x:016x}" for x in raw]
    return [f"{a:016x}{b:016x}" for a, b in zip(raw[::2], raw[1::2], strict=True)]


def generate_events(n: int, *, start: float, seconds: float = 3600.0, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` event dicts (JSON names) with timestamps spread uniformly over ``[start, start + seconds)``,
    in time order, with lognormal and heavy-tailed durations."""
    rng = np.random.default_rng(seed)
    kinds = list(KIND_WEIGHTS)
    kind_idx = rng.choice(len(kinds), size=n, p=np.array(list(KIND_WEIGHTS.values())))
    ts = np.sort(rng.uniform(start, start + seconds, n))
    ts = np.floor(ts * 1000.0) / 1000.0  # the line carries milliseconds
    dur = np.round(rng.lognormal(3.0, 1.1, n), 3)
    heavy = rng.random(n) < 0.02
    dur[heavy] = np.round((rng.pareto(1.2, int(heavy.sum())) + 1.0) * 200.0, 3)
    dur = np.minimum(dur, 3_600_000.0)
    pick = rng.integers(0, 1 << 30, n)
    fail = rng.random(n) < 0.02
    traces = _hex(rng, max(1, n // 8), 32)
    spans = _hex(rng, n, 16)
    out: list[dict[str, Any]] = []
    for i in range(n):
        kind = kinds[kind_idx[i]]
        p = int(pick[i])
        e: dict[str, Any] = {"timestamp": rfc3339(float(ts[i])), "apm.schema": 1, "apm.kind": kind}
        if kind != "metric":
            e["duration_ms"] = float(dur[i])
        e["outcome"] = "failure" if fail[i] else "success"
        e["service.name"] = SERVICE
        e["deployment.environment"] = ENV
        e["trace_id"] = traces[(i // 8) % len(traces)]
        e["span_id"] = spans[i]
        if kind == "request":
            e["http.request.method"] = METHODS[p % len(METHODS)]
            e["http.route"] = ROUTES[(p >> 3) % len(ROUTES)]
            e["http.response.status_code"] = 500 if fail[i] else (200 if p % 7 else 201)
        elif kind == "db":
            table = TABLES[p % len(TABLES)]
            op = OPERATIONS[(p >> 4) % len(OPERATIONS)]
            e.update({"db.system": "postgresql", "db.namespace": "default", "db.operation.name": op,
                      "db.collection.name": table,
                      "db.query.text": f'{op} * FROM "{table}" WHERE "id" = %s',
                      "db.query.fingerprint": f"{(p * 2654435761) % (1 << 32):08x}"})
            e["parent_span_id"] = spans[i - 1] if i else spans[0]
        elif kind == "cache":
            op = CACHE_OPS[p % len(CACHE_OPS)]
            e.update({"cache.name": "default", "cache.operation": op, "cache.keys": 1})
            if op in ("get", "get_many"):
                e["cache.hit"] = bool((p >> 5) % 4)
        elif kind == "external":
            peer, op = PEERS[p % len(PEERS)]
            e.update({"peer.service": peer, "external.operation": op, "server.address": f"{peer}.example.com",
                      "http.response.status_code": 503 if fail[i] else 200})
        elif kind == "task":
            name, queue = TASKS[p % len(TASKS)]
            state = "failure" if fail[i] else ("retry" if p % 50 == 0 else "success")
            e.update({"task.name": name, "messaging.destination.name": queue, "task.state": state,
                      "task.queue_wait_ms": float(round(dur[i] / 3.0, 3)), "task.retries": p % 3})
        else:
            if p % 3 == 0:
                e.update({"metric.name": "db.pool.utilization", "metric.type": "gauge",
                          "metric.value": round((p % 100) / 100.0, 2), "metric.tags": {"db": "default"}})
            elif p % 3 == 1:
                e.update({"metric.name": "celery.queue.depth", "metric.type": "gauge",
                          "metric.value": float(p % 500), "metric.tags": {"queue": TASKS[p % 3][1]}})
            else:
                e.update({"metric.name": "stories.published", "metric.type": "count", "metric.value": 1.0,
                          "metric.tags": {"plan": ("free", "pro")[p % 2]}})
        out.append(e)
    return out


ORDINARY = b'{"timestamp":"%s","level":"info","logger":"django.request","message":"GET /api/health/ 200"}\n'


def lines_of(events: list[dict[str, Any]], *, ordinary_every: int = 0) -> Iterator[bytes]:
    """The log lines of ``events``; every ``ordinary_every``-th line is followed by an ordinary log line."""
    for i, e in enumerate(events):
        yield orjson.dumps(e) + b"\n"
        if ordinary_every and i % ordinary_every == 0:
            yield ORDINARY % e["timestamp"].encode()


@dataclass(slots=True)
class Written:
    events: int = 0
    ordinary: int = 0
    bytes: int = 0


def write_log(path: str | Path | IO[bytes], events: list[dict[str, Any]], *, ordinary_every: int = 0) -> Written:
    """Write (append) the events' lines, with ordinary lines as in ``lines_of``; returns what was written."""
    w = Written()
    buf: list[bytes] = []
    handle: IO[bytes] = open(path, "ab") if isinstance(path, str | Path) else path  # noqa: SIM115
    try:
        for i, e in enumerate(events):
            line = orjson.dumps(e) + b"\n"
            buf.append(line)
            w.events += 1
            w.bytes += len(line)
            if ordinary_every and i % ordinary_every == 0:
                line = ORDINARY % e["timestamp"].encode()
                buf.append(line)
                w.ordinary += 1
                w.bytes += len(line)
            if len(buf) >= 10_000:
                handle.write(b"".join(buf))
                buf.clear()
        handle.write(b"".join(buf))
    finally:
        if isinstance(path, str | Path):
            handle.close()
    return w
