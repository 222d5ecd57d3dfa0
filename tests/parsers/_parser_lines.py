"""Event lines for the parser tests: one valid line per kind, as the app's emitter writes them."""

from __future__ import annotations

import calendar
from typing import Any

import orjson

from parsers import INVALID_REASONS, ParseResult

NOW = float(calendar.timegm((2026, 11, 29, 11, 0, 0)))
TS = "2026-11-29T10:15:04.512Z"
TS_EPOCH = calendar.timegm((2026, 11, 29, 10, 15, 4)) + 0.512

COMMON: dict[str, Any] = {
    "timestamp": TS,
    "apm.schema": 1,
    "outcome": "success",
    "service.name": "muejam-backend",
    "deployment.environment": "production",
    "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
    "span_id": "00f067aa0ba902b7",
}

BY_KIND: dict[str, dict[str, Any]] = {
    "request": {"duration_ms": 182.4, "http.request.method": "GET",
                "http.route": "api/stories/<int:story_id>/", "http.response.status_code": 200},
    "db": {"duration_ms": 3.2, "db.system": "postgresql", "db.namespace": "default",
           "db.operation.name": "SELECT", "db.collection.name": "stories_story",
           "db.query.text": "SELECT * FROM stories_story WHERE id = %s", "db.query.fingerprint": "9f86d081",
           "db.response.returned_rows": 1},
    "cache": {"duration_ms": 0.4, "cache.name": "default", "cache.operation": "get", "cache.hit": True,
              "cache.keys": 1},
    "external": {"duration_ms": 120.0, "peer.service": "s3", "external.operation": "PutObject",
                 "server.address": "s3.amazonaws.com", "http.response.status_code": 200},
    "task": {"duration_ms": 950.5, "task.name": "stories.tasks.index", "messaging.destination.name": "default",
             "task.state": "success", "task.queue_wait_ms": 12.5, "task.retries": 0},
    "metric": {"metric.name": "stories.published", "metric.type": "count", "metric.value": 1,
               "metric.tags": {"plan": "pro"}},
}


def event_dict(kind: str = "request", **changes: Any) -> dict[str, Any]:
    """A valid event of ``kind``; ``changes`` use JSON names with dots spelled as ``__``
    (``http__route="x"``); a value of ``...`` removes the field."""
    ev = {**COMMON, "apm.kind": kind, **BY_KIND[kind]}
    for key, value in changes.items():
        name = key.replace("__", ".")
        if value is ...:
            ev.pop(name, None)
        else:
            ev[name] = value
    return ev


def event_line(kind: str = "request", **changes: Any) -> bytes:
    return orjson.dumps(event_dict(kind, **changes))


def block(*lines: bytes) -> bytes:
    return b"".join(line + b"\n" for line in lines)


def check_invariant(result: ParseResult, data: bytes) -> None:
    """What every parse of ``data`` must satisfy: each line classified once (event, skipped or invalid),
    known reasons, a dead letter per invalid line pointing at its bytes, partial pieces counted apart."""
    assert result.lines == len(result.events) + result.skipped + sum(result.invalid.values())
    assert set(result.invalid) <= set(INVALID_REASONS)
    assert len(result.dead_letters) == sum(result.invalid.values())
    physical = data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)
    assert result.lines + result.fragments == physical
    for dl in result.dead_letters:
        assert data[dl.offset :].startswith(dl.line)
