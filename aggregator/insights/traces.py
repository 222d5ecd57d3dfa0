"""The run's trace analysis: joins the events of each trace, then measures each request.

Contract with the run (``aggregator.run``):

- ``extract(events)`` runs in the decoder processes and keeps only ``TraceRecord`` tuples of request, db,
  cache and external events that carry a trace id (plus task events, which close their own traces);
- ``TraceAnalyzer.feed(records)`` is called in the parent, in input order, as often as needed;
- ``TraceAnalyzer.finish()`` is called inside the run's transaction: it writes the N+1 findings, the
  counters and the still-open traces, and returns the ``trace`` family's window aggregates for the run to
  merge before its commit. A killed run therefore leaves nothing behind, and a committed one has counted
  each trace once.

A trace is complete when its request event arrives: the middleware writes it when the request ends, after
every query, cache call and external call of the request, so in one log stream the children come first.
Its children are all the open records of the trace (records of traces that ended earlier were consumed by
them). A task event closes only its own descendants (by parent span), so a task run inside a request does
not take the request's queries. Records of a trace whose request has not arrived yet are kept in the store
(``insights_pending``) for the next run, so that traces crossing the boundary between two runs come out as
if read in one run. Pending traces expire after ``run.trace_pending_seconds`` of event time without their
request (a request that never logged, a script with a trace context) and are capped at
``run.trace_pending_max_events`` (oldest traces dropped first); both are counted, never silent.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aggregator.insights import findings as store_tables
from aggregator.insights import metrics as _metrics  # registers the trace metrics with the catalog
from aggregator.insights.profile import Finding, RequestProfile, descendants, profile_request
from aggregator.insights.records import RawRecord, TraceRecord, as_record, extract
from aggregator.insights.text import printable
from aggregator.model import SeriesKey, WindowAggregate, make_tags

__all__ = ["FAMILY", "TraceAnalyzer", "TraceRecord", "extract", "summary_lines"]

FAMILY = "trace"


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
    """Joins trace records across feeds and runs; one instance per run."""

    def __init__(self, store: Any, config: Any) -> None:
        self.store = store
        self.threshold = int(config["run.n_plus_one_threshold"])
        self.width = int(config["run.window_seconds"])
        self.pending_seconds = float(config["run.trace_pending_seconds"])
        self.pending_max_events = int(config["run.trace_pending_max_events"])
        self._open: dict[str, list[TraceRecord]] = {}
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
        for rec in store_tables.load_pending(self.store.conn):
            self._loaded_pending += 1
            self._add(rec)

    def feed(self, records: Iterable[RawRecord]) -> None:
        """Take records from ``extract`` (plain tuples or ``TraceRecord``), in input order."""
        if self._finished:
            raise RuntimeError("TraceAnalyzer.feed after finish")
        self._load_pending()
        add = self._add
        for raw in records:
            add(as_record(raw))
        # Keep a long catch-up run's memory bounded too: orphans (no request will come) would otherwise
        # pile up until finish(). Checked cheaply by trace count first.
        if len(self._open) * 8 > self.pending_max_events and (
            sum(map(len, self._open.values())) > 2 * self.pending_max_events
        ):
            self._expire()

    def _add(self, rec: TraceRecord) -> None:
        if rec.end > self._newest:
            self._newest = rec.end
        if rec.kind == "request":
            self._complete_request(rec)
        elif rec.kind == "task":
            self._complete_task(rec)
        else:
            self._open.setdefault(rec.trace_id, []).append(rec)

    def _complete_task(self, task: TraceRecord) -> None:
        records = self._open.get(task.trace_id)
        if not records:
            return
        claimed = descendants(task, records)
        if not claimed:
            return
        ids = {id(r) for r in claimed}
        rest = [r for r in records if id(r) not in ids]
        if rest:
            self._open[task.trace_id] = rest
        else:
            del self._open[task.trace_id]
        self.counts["task_traces_completed"] += 1

    def _complete_request(self, request: TraceRecord) -> None:
        children = self._open.pop(request.trace_id, ())
        profile = profile_request(request, children, self.threshold)
        self._account(profile)

    def _account(self, p: RequestProfile) -> None:
        req = p.request
        window = int(req.end // self.width) * self.width
        route = req.name or ""
        acc = self._windows.get((window, route))
        if acc is None:
            acc = self._windows[(window, route)] = _RouteWindow()
        acc.requests += 1
        acc.failed += req.failed or (req.status or 0) >= 500
        acc.request_ms += req.duration_ms
        acc.db_ms += p.time_ms["db"]
        acc.cache_ms += p.time_ms["cache"]
        acc.external_ms += p.time_ms["external"]
        acc.queries.append(p.queries)
        self.counts["traces_completed"] += 1
        for f in p.findings:
            acc.n_plus_one += 1
            key = (window, f.route, f.method, f.fingerprint)
            agg = self._findings.get(key)
            if agg is None:
                agg = self._findings[key] = _FindingSum(f.method, f.text, f.table)
            agg.add(f)
            self.counts["n_plus_one_findings"] += 1

    # --- the end of the run --------------------------------------------------------------------------

    def _expire(self) -> list[TraceRecord]:
        """Drop pending traces too old or beyond the cap; return what stays pending, oldest trace first."""
        horizon = self._newest - self.pending_seconds
        newest_of: list[tuple[float, str]] = []
        for trace_id, records in list(self._open.items()):
            newest = max(r.end for r in records)
            if newest < horizon:
                self.counts["pending_expired_events"] += len(records)
                del self._open[trace_id]
            else:
                newest_of.append((newest, trace_id))
        newest_of.sort()
        total = sum(len(v) for v in self._open.values())
        for _, trace_id in newest_of:
            if total <= self.pending_max_events:
                break
            n = len(self._open.pop(trace_id))
            total -= n
            self.counts["pending_evicted_events"] += n
        return [r for _, tid in newest_of if tid in self._open for r in self._open[tid]]

    def finish(self) -> list[WindowAggregate]:
        """Write findings, counters and pending traces (in the caller's transaction); return aggregates."""
        if self._finished:
            raise RuntimeError("TraceAnalyzer.finish called twice")
        self._load_pending()
        self._finished = True
        still_open = self._expire()
        conn = self.store.conn
        with self.store.transaction():
            if still_open or self._loaded_pending:
                store_tables.replace_pending(conn, still_open)
            store_tables.upsert_findings(conn, (
                (w, route, method, fp, s.text, s.table, s.requests, s.executions, s.max_executions,
                 s.time_ms, s.example_trace_id, s.first_seen, s.last_seen)
                for (w, route, method, fp), s in sorted(self._findings.items())
            ))
            store_tables.add_counters(conn, self.counts)
        self.pending_events = len(still_open)
        self.pending_traces = len({r.trace_id for r in still_open})
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
            lines.append(_finding_line(route, method, s.text, s.requests, s.executions, s.time_ms,
                                       s.example_trace_id))
        if len(ranked) > limit:
            lines.append(f"  ... and {len(ranked) - limit} more (see `logapm report`)")
        return lines


def _finding_line(route: str, method: str, text: str, requests: int, executions: int, time_ms: float,
                  example: str) -> str:
    per = executions / requests if requests else 0
    return (
        f"  {printable(method)} {printable(route, 60)}: {per:.1f} executions/request of "
        f"{printable(text, 80)!s} ({requests} requests, {time_ms / max(requests, 1):.1f} ms/request; "
        f"e.g. trace {printable(example)})"
    )


def summary_lines(store: Any, start: int | None = None, end: int | None = None, limit: int = 5) -> list[str]:
    """The stored N+1 findings over windows starting in ``[start, end)`` (all when unset), most time first."""
    rows = store_tables.load_findings(store.conn, start, end)
    if not rows:
        return ["N+1 queries: none found"]
    lines = [f"N+1 queries: {sum(r.requests for r in rows)} findings in {len(rows)} route/query pairs"]
    for r in rows[:limit]:
        lines.append(_finding_line(r.route, r.method, r.query_text, r.requests, r.executions, r.time_ms,
                                   r.example_trace_id))
    if len(rows) > limit:
        lines.append(f"  ... and {len(rows) - limit} more (see `logapm report`)")
    return lines
