"""One timed operation of a trace as a flat tuple: what ``logapm trace`` draws.

``to_record`` views one parsed event as a ``TraceRecord``; ``extract_records`` does it for a whole chunk in
one pass (one C-level ``attrgetter`` per kind, no keyword arguments per event). The run does not send
these to its parent process: it sends per-trace sums (``aggregator.insights.partials``), now as columns
(``aggregator.insights.columns``), far cheaper to transfer; ``bench/insights_bench.py`` keeps
``extract_records`` as the comparison.
"""

from __future__ import annotations

from collections.abc import Iterable
from operator import attrgetter
from typing import Any, NamedTuple

try:  # what hashlib.blake2b is, without importing hashlib (it loads OpenSSL: see aggregator.sources)
    from _blake2 import blake2b
except ImportError:  # an interpreter built without it
    from hashlib import blake2b

ANALYZED_KINDS = frozenset({"request", "db", "cache", "external", "task"})
SHOWN_KINDS = ANALYZED_KINDS


class TraceRecord(NamedTuple):
    """One timed operation of a trace.

    ``name``/``detail``/``extra`` depend on the kind, so that one flat tuple serves every kind:

    ========  ==================  ==================  ======================
    kind      name                detail              extra
    ========  ==================  ==================  ======================
    request   http.route          method              (None)
    db        query fingerprint   query text          table
    cache     operation           cache alias         cache.hit (bool/None)
    external  peer.service        operation           server address
    task      task name           queue               task state
    ========  ==================  ==================  ======================
    """

    trace_id: str
    span_id: str | None
    parent_span_id: str | None
    kind: str
    end: float  # epoch seconds: events are written when the operation ends
    duration_ms: float
    outcome: str | None
    name: str | None
    detail: str | None
    extra: Any
    status: int | None  # HTTP status (request, external)

    @property
    def start(self) -> float:
        return self.end - self.duration_ms / 1000.0

    @property
    def failed(self) -> bool:
        return self.outcome == "failure"


_COMMON = ("trace_id", "span_id", "parent_span_id", "kind", "ts", "duration_ms", "outcome")
# Per kind: the getter of the record's fields, and how many trailing fields it lacks (filled with None).
_GETTERS: dict[str, tuple[attrgetter[Any], tuple[None, ...]]] = {
    "db": (attrgetter(*_COMMON, "db_query_fingerprint", "db_query_text", "db_collection_name"), (None,)),
    "cache": (attrgetter(*_COMMON, "cache_operation", "cache_name", "cache_hit"), (None,)),
    "external": (attrgetter(*_COMMON, "peer_service", "external_operation", "server_address",
                            "http_response_status_code"), ()),
    "task": (attrgetter(*_COMMON, "task_name", "messaging_destination_name", "task_state"), (None,)),
}
_REQUEST = attrgetter(*_COMMON, "http_route", "http_request_method")
_new = tuple.__new__

RawRecord = tuple[Any, ...]  # a TraceRecord's fields as a plain tuple (what extract_records returns)


def as_record(raw: RawRecord) -> TraceRecord:
    """View a plain tuple from ``extract_records`` as a ``TraceRecord`` (no copy of the fields)."""
    return raw if type(raw) is TraceRecord else _new(TraceRecord, raw)  # type: ignore[return-value]


def query_fingerprint(text: str) -> str:
    """The fingerprint used when an event has query text but no ``db.query.fingerprint``."""
    return blake2b(text.encode("utf-8", "replace"), digest_size=8).hexdigest()


def to_record(event: Any) -> TraceRecord | None:
    """The record of one parsed event (``parsers`` Event), or None for kinds a trace does not show."""
    kind = event.kind
    if kind == "request":
        return as_record((*_REQUEST(event), None, event.http_response_status_code))
    got = _GETTERS.get(kind)
    if got is None:
        return None
    getter, pad = got
    return as_record(getter(event) + pad)


def extract_records(events: Iterable[Any]) -> list[RawRecord]:
    """Request, db, cache, external and task events with a trace id, as plain tuples in ``TraceRecord``
    field order (``aggregator.insights.partials`` sums them per trace)."""
    out: list[RawRecord] = []
    append = out.append
    getters = _GETTERS
    request = _REQUEST
    for event in events:
        if event.trace_id is None:
            continue
        kind = event.kind
        if kind == "request":
            append((*request(event), None, event.http_response_status_code))
            continue
        got = getters.get(kind)
        if got is not None:
            append(got[0](event) + got[1])
    return out
