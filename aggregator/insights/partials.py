"""Per-trace partial summaries: what the decoders send to the parent instead of one record per event.

Everything measured per request is a sum over the request's operations (time per kind of call, queries,
executions and time per query fingerprint), so a trace can be summarised piece by piece wherever its
events are (a decoder's chunk, the next chunk, the next run) and the pieces added up when the request event
arrives. A decoder turns a chunk's ~10,000 events into about one small tuple per trace, which is what
crosses the process boundary: pickling one record per event cost about as much as parsing the events
(``bench/insights_bench.py``).

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

from collections.abc import Iterable
from typing import Any, NamedTuple

from aggregator.insights.records import TraceRecord, query_fingerprint

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


def summarize(records: Iterable[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The parts of a chunk's records (``TraceRecord`` field order), in the order they must be fed.

    The hot loop of the decoders' share of trace analysis: written out inline (no method call per event),
    and strings that repeat (query texts, tables, routes) are shared per chunk so that pickle sends each
    once per chunk, not once per trace.
    """
    records = records if isinstance(records, list) else list(records)
    task_spans = {r[1] for r in records if r[3] == "task" and r[1]}
    texts: dict[str, str] = {}
    open_: dict[str, OpenTrace] = {}
    out: list[tuple[Any, ...]] = []
    for r in records:
        trace_id, parent, kind, end, duration = r[0], r[2], r[3], r[4], r[5]
        if kind == "request":
            piece = open_.pop(trace_id, None) or OpenTrace()
            piece.events += 1
            if end > piece.newest:
                piece.newest = end
            share = texts.setdefault
            outcome, route, method = r[6], r[7], r[8]
            out.append(piece.part(trace_id, (end, duration, outcome and share(outcome, outcome),
                                             route and share(route, route), method and share(method, method),
                                             r[10])))
            continue
        if kind == "task":
            if parent:
                out.append((trace_id, TASK, end, 1, 0, 0.0, 0.0, 0.0, {}, None))
            else:
                dropped = open_.pop(trace_id, None)
                out.append((trace_id, ROOT_TASK, end, 1 + (dropped.events if dropped else 0), 0, 0.0, 0.0,
                            0.0, {}, None))
            continue
        if parent is not None and parent in task_spans:
            continue
        acc = open_.get(trace_id)
        if acc is None:
            acc = open_[trace_id] = OpenTrace()
        acc.events += 1
        if end > acc.newest:
            acc.newest = end
        if kind == "db":
            acc.queries += 1
            acc.db_ms += duration
            text = r[8]
            key = r[7] or (query_fingerprint(text) if text else None)
            if key is None:  # neither fingerprint nor text: counted, but cannot be grouped
                continue
            entry = acc.fingerprints.get(key)
            if entry is None:
                table = r[9]
                if text is not None:
                    text = texts.setdefault(text, text)
                if table is not None:
                    table = texts.setdefault(table, table)
                acc.fingerprints[key] = [1, duration, text, table]
            else:
                entry[0] += 1
                entry[1] += duration
        elif kind == "cache":
            acc.cache_ms += duration
        elif kind == "external":
            acc.external_ms += duration
    out.extend(rest.part(trace_id) for trace_id, rest in open_.items())
    return out


def parts_of(records: Iterable[TraceRecord]) -> list[tuple[Any, ...]]:
    """``summarize`` for ``TraceRecord`` values (tests, tools)."""
    return summarize(list(records))
