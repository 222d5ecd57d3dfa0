"""The run's trace analysis: joins the operations of each trace, then measures each request.

Contract with the run (``aggregator.run``):

- ``extract(events)`` runs in the decoder processes: it keeps request, db, cache, external and task events
  that carry a trace id and sums them per trace into a few small parts (``aggregator.insights.partials``);
- ``TraceAnalyzer.feed(parts)`` is called in the parent, in input order, as often as needed;
- ``TraceAnalyzer.finish()`` is called inside the run's transaction: it writes the N+1 findings, the
  counters and the still-open traces, and returns the ``trace`` family's window aggregates for the run to
  merge before its commit. A killed run therefore leaves nothing behind, and a committed one has counted
  each trace once.

A trace is complete when its request event arrives: the middleware writes it when the request ends, after
every query, cache call and external call of the request, so in one log stream the operations come first.
The request takes everything open of its trace (operations of requests that ended earlier were taken by
them). Operations below a task span belong to the task, not to the request. What is open when a run ends
(a request cut in half by the run boundary) is kept in the store (``insights_open_traces``) and the next
run continues from it, so that traces crossing the boundary between two runs come out as if read in one
run. Open traces expire after ``run.trace_pending_seconds`` of event time without their request (a request
that never logged, a script with a trace context) and are capped at ``run.trace_pending_max_events``
(oldest traces dropped first); both are counted, never silent.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aggregator.insights import findings as store_tables
from aggregator.insights import metrics as _metrics  # registers the trace metrics with the catalog
from aggregator.insights.partials import (
    PIECE,
    ROOT_TASK,
    Fingerprints,
    OpenTrace,
    RequestInfo,
    TracePart,
    summarize,
)
from aggregator.insights.profile import Finding, RequestProfile, profile_request
from aggregator.insights.records import TraceRecord
from aggregator.insights.text import printable
from aggregator.model import SeriesKey, WindowAggregate, make_tags

__all__ = ["FAMILY", "TraceAnalyzer", "TraceRecord", "extract", "summary_lines"]


FAMILY = "trace"


def extract(events: Iterable[Any]) -> list[tuple[Any, ...]]:
    """In a decoder: the trace parts of one chunk's events (plain tuples, in feeding order)."""
    return summarize(events)


@dataclass(slots=True)
class _RouteWindow:
    """Accumulated per route and window; becomes one ``trace`` WindowAggregate."""

    requests: int = 0
    failed: int = 0
    request_ms: float = 0.0
    db_ms: float = 0.0
    cache_ms: float = 0.0
    external_ms: float = 0.0
    n_plus_one: int = 0
    queries: list[int] = field(default_factory=list)  # per request, for the sketch and the exact sums


@dataclass(slots=True)
class _FindingSum:
    method: str
    text: str
    table: str
    requests: int = 0
    executions: int = 0
    max_executions: int = 0
    time_ms: float = 0.0
    example_trace_id: str = ""
    first_seen: float = math.inf
    last_seen: float = -math.inf

    def add(self, f: Finding) -> None:
        self.requests += 1
        self.executions += f.executions
        if f.executions > self.max_executions:
            self.max_executions = f.executions
            self.example_trace_id = f.trace_id
        self.time_ms += f.time_ms
        self.first_seen = min(self.first_seen, f.end)
        self.last_seen = max(self.last_seen, f.end)


class TraceAnalyzer:
    """Adds up trace parts across feeds and runs and measures each completed request; one per run."""

    def __init__(self, store: Any, config: Any) -> None:
        self.store = store
        self.threshold = int(config["run.n_plus_one_threshold"])
        self.width = int(config["run.window_seconds"])
        self.pending_seconds = float(config["run.trace_pending_seconds"])
        self.pending_max_events = int(config["run.trace_pending_max_events"])
        self._open: dict[str, OpenTrace] = {}
        self._loaded_pending = -1  # rows read from the store; -1 until read
        self._newest = -math.inf  # newest event time seen (the clock pending traces expire by)
        self._windows: dict[tuple[int, str], _RouteWindow] = {}
        self._findings: dict[tuple[int, str, str, str], _FindingSum] = {}
        self.counts: dict[str, int] = dict.fromkeys(store_tables.COUNTERS, 0)
        self._finished = False

    # --- feeding ---------------------------------------------------------------------------------------

    def _load_pending(self) -> None:
        if self._loaded_pending >= 0:
            return
        self._loaded_pending = 0
        for trace_id, ops in store_tables.load_open_traces(self.store.conn):
            self._loaded_pending += 1
            self._open[trace_id] = ops
            if ops.newest > self._newest:
                self._newest = ops.newest

    def feed(self, parts: Iterable[tuple[Any, ...]]) -> None:
        """Take the parts from ``extract`` (or ``partials.summarize``), in input order."""
        if self._finished:
            raise RuntimeError("TraceAnalyzer.feed after finish")
        self._load_pending()
        add, new, complete, open_ = self._add, tuple.__new__, self._complete, self._open
        newest = self._newest
        for raw in parts:
            # The common part: a piece ending with its request, nothing of its trace open (the decoder saw
            # the whole trace in one chunk). Measured straight from the tuple, as ``_add`` would.
            if raw[9] is not None and raw[0] not in open_ and raw[1] == PIECE:
                if raw[2] > newest:
                    newest = self._newest = raw[2]
                complete(raw[0], raw[9], raw[4], raw[5], raw[6], raw[7], raw[8])
            else:
                add(new(TracePart, raw))  # a view of the plain tuple, without NamedTuple's Python __new__
                newest = self._newest
        # Keep a long catch-up run's memory bounded too: orphans (no request will come) would otherwise
        # pile up until finish(). Checked cheaply by trace count first.
        if len(self._open) * 8 > self.pending_max_events and (
            sum(t.events for t in self._open.values()) > 2 * self.pending_max_events
        ):
            self._expire()

    def _add(self, part: TracePart) -> None:
        if part.newest > self._newest:
            self._newest = part.newest
        trace_id = part.trace_id
        if part.tag == PIECE:
            if part.request is None:
                ops = self._open.get(trace_id)
                if ops is None:
                    ops = self._open[trace_id] = OpenTrace()
                ops.merge(part)
                return
            ops = self._open.pop(trace_id, None)
            if ops is None:
                ops = OpenTrace()
            ops.merge(part)
            self._complete(trace_id, part.request, ops.queries, ops.db_ms, ops.cache_ms, ops.external_ms,
                           ops.fingerprints)
        else:
            if part.tag == ROOT_TASK:  # a trace without a request: what is open of it was the task's
                self._open.pop(trace_id, None)
            self.counts["task_traces_completed"] += 1

    def _complete(self, trace_id: str, request: RequestInfo, queries: int, db_ms: float, cache_ms: float,
                  external_ms: float, fingerprints: Fingerprints) -> None:
        """Measure one completed request from its trace's summed operations and add it to its route's
        window: ``profile_request`` followed by ``_account``, without the intermediate objects (this runs
        once per request in the parent, the serial part of a run)."""
        end, duration, outcome, route, _method, status = request
        window = int(end // self.width) * self.width
        key = (window, route or "")
        acc = self._windows.get(key)
        if acc is None:
            acc = self._windows[key] = _RouteWindow()
        acc.requests += 1
        acc.failed += outcome == "failure" or (status or 0) >= 500
        acc.request_ms += duration
        acc.db_ms += min(db_ms, duration)
        acc.cache_ms += min(cache_ms, duration)
        acc.external_ms += min(external_ms, duration)
        acc.queries.append(queries)
        self.counts["traces_completed"] += 1
        if fingerprints and self.threshold > 0:
            for n, _ms, _text, _table in fingerprints.values():
                if n >= self.threshold:  # rare: only then build the profile with its findings
                    ops = OpenTrace()
                    ops.fingerprints = fingerprints
                    self._findings_of(window, profile_request(trace_id, request, ops, self.threshold))
                    break

    def _findings_of(self, window: int, p: RequestProfile) -> None:
        acc = self._windows[(window, p.route)]
        for f in p.findings:
            acc.n_plus_one += 1
            key = (window, f.route, f.method, f.fingerprint)
            agg = self._findings.get(key)
            if agg is None:
                agg = self._findings[key] = _FindingSum(f.method, f.text, f.table)
            agg.add(f)
            self.counts["n_plus_one_findings"] += 1

    # --- the end of the run --------------------------------------------------------------------------

    def _expire(self) -> list[tuple[str, OpenTrace]]:
        """Drop open traces too old or beyond the cap; return what stays open, oldest trace first."""
        horizon = self._newest - self.pending_seconds
        kept: list[tuple[float, str]] = []
        for trace_id, ops in list(self._open.items()):
            if ops.newest < horizon:
                self.counts["pending_expired_events"] += ops.events
                del self._open[trace_id]
            else:
                kept.append((ops.newest, trace_id))
        kept.sort()
        total = sum(ops.events for ops in self._open.values())
        for _, trace_id in kept:
            if total <= self.pending_max_events:
                break
            n = self._open.pop(trace_id).events
            total -= n
            self.counts["pending_evicted_events"] += n
        return [(tid, self._open[tid]) for _, tid in kept if tid in self._open]

    def finish(self) -> list[WindowAggregate]:
        """Write findings, counters and open traces (in the caller's transaction); return aggregates."""
        if self._finished:
            raise RuntimeError("TraceAnalyzer.finish called twice")
        self._load_pending()
        self._finished = True
        still_open = self._expire()
        conn = self.store.conn
        with self.store.transaction():
            if still_open or self._loaded_pending:
                store_tables.replace_open_traces(conn, still_open)
            store_tables.upsert_findings(conn, (
                (w, route, method, fp, s.text, s.table, s.requests, s.executions, s.max_executions,
                 s.time_ms, s.example_trace_id, s.first_seen, s.last_seen)
                for (w, route, method, fp), s in sorted(self._findings.items())
            ))
            store_tables.add_counters(conn, self.counts)
        self.pending_events = sum(ops.events for _, ops in still_open)
        self.pending_traces = len(still_open)
        return [self._aggregate(w, route, acc) for (w, route), acc in sorted(self._windows.items())]

    def _aggregate(self, window: int, route: str, acc: _RouteWindow) -> WindowAggregate:
        return WindowAggregate(
            series=SeriesKey(FAMILY, make_tags(route=route or "unknown")),
            start=window,
            width=self.width,
            count=acc.requests,
            errors=acc.failed,
            total=float(sum(acc.queries)),
            min=float(min(acc.queries)),
            max=float(max(acc.queries)),
            counters={
                "request_ms": acc.request_ms,
                "db_ms": acc.db_ms,
                "cache_ms": acc.cache_ms,
                "external_ms": acc.external_ms,
                "n_plus_one": float(acc.n_plus_one),
            },
            sketch=_metrics.queries_sketch(acc.queries),
        )

    # --- the run summary -----------------------------------------------------------------------------

    def summary_lines(self, limit: int = 5) -> list[str]:
        """This run's trace analysis in a few lines: what was joined, what waits, the worst N+1 patterns."""
        c = self.counts
        lines = [
            f"traces: {c['traces_completed']} requests analysed, {getattr(self, 'pending_traces', 0)} traces "
            f"pending ({getattr(self, 'pending_events', 0)} events)"
            + (f", {c['pending_expired_events']} events expired" if c["pending_expired_events"] else "")
            + (f", {c['pending_evicted_events']} evicted over the cap" if c["pending_evicted_events"] else "")
        ]
        if not self._findings:
            return lines
        per_query: dict[tuple[str, str, str], _FindingSum] = {}
        for (_w, route, method, fp), s in self._findings.items():
            t = per_query.setdefault((route, method, fp), _FindingSum(method, s.text, s.table))
            t.requests += s.requests
            t.executions += s.executions
            if s.max_executions > t.max_executions:
                t.max_executions, t.example_trace_id = s.max_executions, s.example_trace_id
            t.time_ms += s.time_ms
        ranked = sorted(per_query.items(), key=lambda kv: (-kv[1].time_ms, kv[0]))
        lines.append(f"N+1 queries: {c['n_plus_one_findings']} findings in {len(per_query)} route/query pairs")
        for (route, method, _fp), s in ranked[:limit]:
            lines.extend(_finding_lines(route, method, s.text, s.requests, s.executions, s.time_ms,
                                       s.example_trace_id))
        if len(ranked) > limit:
            lines.append(f"  ... and {len(ranked) - limit} more (see `logapm report`)")
        return lines


def _finding_lines(route: str, method: str, text: str, requests: int, executions: int, time_ms: float,
                   example: str) -> list[str]:
    """Two lines per finding: where and how much, then the query (escaped, cut to fit a terminal)."""
    per = executions / requests if requests else 0
    return [
        f"  {printable(method)} {printable(route, 60)}: {per:.1f} executions/request, "
        f"{time_ms / max(requests, 1):.1f} ms/request, {requests} request{'s' if requests != 1 else ''}"
        f" (logapm trace {printable(example)})",
        f"    {printable(text, 100) or '(no query text)'}",
    ]


def summary_lines(store: Any, start: int | None = None, end: int | None = None, limit: int = 5) -> list[str]:
    """The stored N+1 findings over windows starting in ``[start, end)`` (all when unset), most time first."""
    rows = store_tables.load_findings(store.conn, start, end)
    if not rows:
        return ["N+1 queries: none found"]
    lines = [f"N+1 queries: {sum(r.requests for r in rows)} findings in {len(rows)} route/query pairs"]
    for r in rows[:limit]:
        lines.extend(_finding_lines(r.route, r.method, r.query_text, r.requests, r.executions, r.time_ms,
                                   r.example_trace_id))
    if len(rows) > limit:
        lines.append(f"  ... and {len(rows) - limit} more (see `logapm report`)")
    return lines
