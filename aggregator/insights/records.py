"""The slice of an event that trace analysis needs: small, picklable, the same for every stage.

Worker processes reduce parsed events to ``TraceRecord`` tuples (``extract``) so that only a few dozen
bytes per event cross to the parent process, and pending traces are stored in the same shape.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterable
from typing import Any, NamedTuple

ANALYZED_KINDS = frozenset({"request", "db", "cache", "external"})
SHOWN_KINDS = frozenset({"request", "db", "cache", "external", "task"})


class TraceRecord(NamedTuple):
    """One timed operation of a trace.

    ``name``/``detail``/``extra`` depend on the kind, so that one flat tuple serves every kind:

    ========  ==================  ==================  ===================
    kind      name                detail              extra
    ========  ==================  ==================  ===================
    request   http.route          method              (empty)
    db        query fingerprint   query text          table
    cache     operation           cache alias         ``hit``/``miss``/""
    external  peer.service        operation           server address
    task      task name           queue               task state
    ========  ==================  ==================  ===================
    """

    trace_id: str
    span_id: str
    parent_span_id: str
    kind: str
    end: float  # epoch seconds: events are written when the operation ends
    duration_ms: float
    name: str
    detail: str
    extra: str
    status: int  # HTTP status (request, external), 0 when none
    failed: bool

    @property
    def start(self) -> float:
        return self.end - self.duration_ms / 1000.0


def _s(value: Any) -> str:
    return "" if value is None else str(value)


def query_fingerprint(text: str) -> str:
    """The fingerprint used when an event has query text but no ``db.query.fingerprint``."""
    return hashlib.blake2b(text.encode("utf-8", "replace"), digest_size=8).hexdigest()


def to_record(event: Any) -> TraceRecord | None:
    """The record of one parsed event (``parsers`` Event), or None for kinds a trace view does not show."""
    kind = event.kind
    if kind not in SHOWN_KINDS:
        return None
    status = 0
    extra = ""
    if kind == "request":
        name, detail = _s(event.http_route), _s(event.http_request_method)
        status = event.http_response_status_code or 0
    elif kind == "db":
        detail = _s(event.db_query_text)
        name = _s(event.db_query_fingerprint) or (query_fingerprint(detail) if detail else "")
        if not name:  # neither text nor fingerprint: the operation and table are all there is
            name = f"{_s(event.db_operation_name)} {_s(event.db_collection_name)}".strip()
        extra = _s(event.db_collection_name)
    elif kind == "cache":
        name, detail = _s(event.cache_operation), _s(event.cache_name)
        hit = event.cache_hit
        extra = "" if hit is None else ("hit" if hit else "miss")
    elif kind == "external":
        name, detail = _s(event.peer_service), _s(event.external_operation)
        extra = _s(getattr(event, "server_address", None))
        status = event.http_response_status_code or 0
    else:  # task
        name = _s(event.task_name)
        detail = _s(getattr(event, "messaging_destination_name", None))
        extra = _s(getattr(event, "task_state", None))
    # Routes, fingerprints, operations repeat across millions of events: share one string object each.
    intern = sys.intern
    return TraceRecord(
        trace_id=_s(event.trace_id),
        span_id=_s(event.span_id),
        parent_span_id=_s(event.parent_span_id),
        kind=kind,
        end=float(event.ts),
        duration_ms=float(event.duration_ms or 0.0),
        name=intern(name),
        detail=intern(detail) if len(detail) < 512 else detail,
        extra=intern(extra),
        status=int(status),
        failed=event.outcome == "failure",
    )


def extract(events: Iterable[Any]) -> list[TraceRecord]:
    """Keep what trace analysis needs: request, db, cache and external events that carry a trace id."""
    out: list[TraceRecord] = []
    append = out.append
    for event in events:
        if event.kind in ANALYZED_KINDS and event.trace_id:
            record = to_record(event)
            if record is not None:
                append(record)
    return out
