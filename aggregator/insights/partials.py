"""Per-trace partial summaries: the pieces a chunk's trace events are cut into, and their sums.

Everything measured per request is a sum over the request's operations (time per kind of call, queries,
executions and time per query fingerprint), so a trace can be summarised piece by piece wherever its
events are (a decoder's chunk, the next chunk, the next run) and the pieces added up when the request event
arrives. ``summarize`` turns a chunk's ~10,000 events into about one small tuple per trace piece; pickling
one record per event instead cost about as much as parsing the events (``bench/insights_bench.py``).

The run's decoders now send the same pieces as columns (``aggregator.insights.columns``, one batch of numpy
arrays per chunk, several times cheaper to pickle and to feed than a tuple with its own dict per piece);
``summarize`` stays the reference those columns are tested against, and ``TraceAnalyzer.feed`` takes either.
``OpenTrace`` is what the parent stores between runs of a trace whose request has not come yet; while the run
goes on it keeps each as a ``PackedTrace`` (one flat tuple, its strings interned), a quarter less memory.

A part is a plain tuple (pickled in C), viewed as ``TracePart``:

- tag ``p``: a piece of a trace; ``request`` is set when the piece ends with the trace's request event,
  and then the piece holds exactly the operations logged before it in the chunk (operations after it start
  a new piece, so an operation is never attributed to a request that ended before it was written);
- tag ``t``: a root task (no parent span) ended: its trace has no request, so its open pieces are dropped;
- tag ``n``: a task inside another span ended (counted only).

Operations whose parent span is a task of the same chunk belong to that task, not to the request, and are
left out. Only leaf operations (db, cache, external) are summed; tasks and requests are never children.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable
from operator import itemgetter
from typing import Any, NamedTuple

from aggregator.insights.records import query_fingerprint

PIECE, ROOT_TASK, TASK = "p", "t", "n"
RequestInfo = tuple[float, float, Any, Any, Any, Any]  # end, duration_ms, outcome, route, method, status
Fingerprints = dict[str, list[Any]]  # fingerprint -> [executions, time_ms, text, table]


class TracePart(NamedTuple):
    trace_id: str
    tag: str
    newest: float  # newest event end in the piece (the clock pending pieces expire by)
    events: int
    queries: int
    db_ms: float
    cache_ms: float
    external_ms: float
    fingerprints: Fingerprints
    request: RequestInfo | None


class OpenTrace:
    """The sums of the operations of one trace seen so far (in a decoder, or in the parent)."""

    __slots__ = ("cache_ms", "db_ms", "events", "external_ms", "fingerprints", "newest", "queries")

    def __init__(self) -> None:
        self.newest = float("-inf")
        self.events = 0
        self.queries = 0
        self.db_ms = 0.0
        self.cache_ms = 0.0
        self.external_ms = 0.0
        self.fingerprints: Fingerprints = {}

    def merge(self, part: TracePart) -> None:
        self.events += part.events
        if part.newest > self.newest:
            self.newest = part.newest
        self.queries += part.queries
        self.db_ms += part.db_ms
        self.cache_ms += part.cache_ms
        self.external_ms += part.external_ms
        for key, (n, ms, text, table) in part.fingerprints.items():
            entry = self.fingerprints.get(key)
            if entry is None:
                self.fingerprints[key] = [n, ms, text, table]
            else:
                entry[0] += n
                entry[1] += ms
                if not entry[2] and text:
                    entry[2], entry[3] = text, table

    def part(self, trace_id: str, request: RequestInfo | None = None) -> tuple[Any, ...]:
        return (trace_id, PIECE, self.newest, self.events, self.queries, self.db_ms, self.cache_ms,
                self.external_ms, self.fingerprints, request)


_ZERO = 0.0  # one shared object for the many zero sums of the open traces (cache, external) ...
_intern = sys.intern  # ... and one str per fingerprint, query text and table (mortal: freed with the last trace)


def _shared_zero(x: float) -> float:
    """``x``, or the shared 0.0 when ``x`` is 0.0 (not -0.0: the same double either way)."""
    return x if x or math.copysign(1.0, x) < 0 else _ZERO


class PackedTrace(tuple[Any, ...]):
    """An ``OpenTrace`` as the parent holds it while it waits for its request: one flat tuple (newest, events,
    queries, db_ms, cache_ms, external_ms, then key, executions, time_ms, text, table per fingerprint, in the
    dict's order), its strings interned and its zero sums shared.

    The same values as the ``OpenTrace`` it packs (``unpack`` gives them back, the same objects), in 550
    bytes a trace instead of 740 (tracemalloc, the parent's side of the benchmark log, whose generator gives
    every query its own fingerprint: less where the same fingerprints repeat across traces, as they do in an
    app's log). The open traces are most of what the parent's trace join holds, up to 1.25 times
    ``run.trace_pending_max_events`` events of them (``TraceAnalyzer.feed`` trims them back to the cap)."""

    __slots__ = ()

    newest = property(itemgetter(0))
    events = property(itemgetter(1))
    queries = property(itemgetter(2))
    db_ms = property(itemgetter(3))
    cache_ms = property(itemgetter(4))
    external_ms = property(itemgetter(5))

    @property
    def fingerprints(self) -> Fingerprints:
        return {self[i]: [self[i + 1], self[i + 2], self[i + 3], self[i + 4]] for i in range(6, len(self), 5)}

    def unpack(self) -> OpenTrace:
        ops = OpenTrace.__new__(OpenTrace)
        ops.newest, ops.events, ops.queries, ops.db_ms, ops.cache_ms, ops.external_ms = self[:6]
        ops.fingerprints = self.fingerprints
        return ops


def pack(ops: OpenTrace) -> PackedTrace:
    items: list[Any] = [ops.newest, ops.events, ops.queries, _shared_zero(ops.db_ms), _shared_zero(ops.cache_ms),
             _shared_zero(ops.external_ms)]
    for key, (n, ms, text, table) in ops.fingerprints.items():
        items += (_intern(key), n, ms, text and _intern(text), table and _intern(table))
    return tuple.__new__(PackedTrace, items)


def summarize(events: Iterable[Any]) -> list[tuple[Any, ...]]:
    """The parts of one chunk's parsed events (``parsers`` Event), in the order they must be fed.

    Not on the run's path (its decoders call ``columns.summarize_batch``): kept as the reference the columns
    are tested against (``tests/aggregator/test_insights_columns.py``) and as the per-part path
    ``bench/insights_bench.py --log`` compares them with. One pass written out inline, as when the decoders
    ran it: attribute reads straight from the events, and strings that repeat (query texts, tables, routes)
    shared per chunk so that pickle sends each once per chunk. Events without a trace id, and metric events,
    are ignored.
    """
    events = events if isinstance(events, list) else list(events)
    task_spans = {e.span_id for e in events if e.kind == "task" and e.span_id is not None}
    share: dict[str, str] = {}
    intern = share.setdefault
    open_: dict[str, OpenTrace] = {}
    out: list[tuple[Any, ...]] = []
    for e in events:
        trace_id = e.trace_id
        if trace_id is None:
            continue
        kind = e.kind
        if kind == "request":
            end = e.ts
            route, method = e.http_route, e.http_request_method
            # outcome is a Literal: msgspec hands out the one shared str per value already
            request = (end, e.duration_ms, e.outcome, route and intern(route, route),
                       method and intern(method, method), e.http_response_status_code)
            piece = open_.pop(trace_id, None)
            if piece is None:  # a request without operations in this chunk: its part directly
                out.append((trace_id, PIECE, end, 1, 0, 0.0, 0.0, 0.0, {}, request))
                continue
            piece.events += 1
            if end > piece.newest:
                piece.newest = end
            out.append(piece.part(trace_id, request))
            continue
        if kind == "task":
            if e.parent_span_id is not None:
                out.append((trace_id, TASK, e.ts, 1, 0, 0.0, 0.0, 0.0, {}, None))
            else:
                dropped = open_.pop(trace_id, None)
                out.append((trace_id, ROOT_TASK, e.ts, 1 + (dropped.events if dropped else 0), 0, 0.0, 0.0,
                            0.0, {}, None))
            continue
        if kind == "metric":
            continue
        parent = e.parent_span_id
        if parent is not None and parent in task_spans:
            continue
        acc = open_.get(trace_id)
        if acc is None:
            acc = open_[trace_id] = OpenTrace()
        acc.events += 1
        end = e.ts
        if end > acc.newest:
            acc.newest = end
        duration = e.duration_ms
        if kind == "db":
            acc.queries += 1
            acc.db_ms += duration
            text = e.db_query_text
            key = e.db_query_fingerprint or (query_fingerprint(text) if text else None)
            if key is None:  # neither fingerprint nor text: counted, but cannot be grouped
                continue
            entry = acc.fingerprints.get(key)
            if entry is None:
                table = e.db_collection_name
                acc.fingerprints[key] = [1, duration, text and intern(text, text), table and intern(table, table)]
            else:
                entry[0] += 1
                entry[1] += duration
        elif kind == "cache":
            acc.cache_ms += duration
        elif kind == "external":
            acc.external_ms += duration
    out.extend(rest.part(trace_id) for trace_id, rest in open_.items())
    return out
