"""The run's trace analysis: joins the operations of each trace, then measures each request.

Contract with the run (``aggregator.run``):

- ``extract(events)`` runs in the decoder processes: it keeps request, db, cache, external and task events
  that carry a trace id and sums them per trace piece (``aggregator.insights.partials`` says what a piece
  is) into one columnar ``TraceBatch`` per chunk (``aggregator.insights.columns``);
- ``finish_part(records, window_seconds)`` runs in the decoder once its part is read: it puts first the
  ``RequestSums`` of the part's requests, summed per (window, route) each with its own piece's operations;
- ``TraceAnalyzer.feed(parts)`` is called in the parent, in input order, once per part. It takes the records
  (and, for tests and tools, ``partials.summarize``'s tuples, or batches without their sums, which it sums as a
  worker does). It adds a part's sums to its windows, then joins the batches' traces in order: a request whose
  trace had something open in the parent (a few per chunk) is corrected in its window by what its merged
  operations change. Counts, queries per request, N+1 findings and open traces are exactly what one request at
  a time gives; the time sums are added per part, so they may differ from a request-by-request sum in the last
  bits, always the same doubles for the same parts (``tests/aggregator/test_insights_columns.py`` holds them to
  the per-part path on a generated log).
- ``TraceAnalyzer.finish()`` is called inside the run's transaction: it writes the N+1 findings, the
  counters and the still-open traces, and returns the ``trace`` family's window aggregates for the run to
  merge before its commit. A killed run therefore leaves nothing behind, and a committed one has counted
  each trace once.

A trace is complete when its request event arrives: the middleware writes it when the request ends, after
every query, cache call and external call of the request, so in one log stream the operations come first.
The request takes everything open of its trace (operations of requests that ended earlier were taken by
them). Operations below a task span belong to the task, not to the request. What is open when a run ends
(a request cut in half by the run boundary) is kept in the store (``insights_open_trace_columns``: a few rows
of columns, ``findings.OpenTraceColumns``) and the next run continues from it, so that traces crossing the
boundary between two runs come out as if read in one run. Open traces expire after ``run.trace_pending_seconds`` of event time without their request (a request
that never logged, a script with a trace context) and are capped at ``run.trace_pending_max_events``
(oldest traces dropped first); both are counted, never silent.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, cast

import numpy as np

from aggregator.insights import findings as store_tables
from aggregator.insights import metrics as _metrics  # registers the trace metrics with the catalog
from aggregator.insights.columns import (
    KEY_SEPARATOR,
    RequestSums,
    TraceBatch,
    request_sums,
    split_keys,
    summarize_batch,
    take_ids,
)
from aggregator.insights.opentraces import InColumns as _InColumns
from aggregator.insights.opentraces import OpenTraces, OpenView
from aggregator.insights.partials import (
    PIECE,
    ROOT_TASK,
    Fingerprints,
    OpenTrace,
    PackedTrace,
    RequestInfo,
    TracePart,
    pack,
)
from aggregator.insights.profile import Finding, RequestProfile, profile_request
from aggregator.insights.records import TraceRecord
from aggregator.insights.text import printable
from aggregator.model import SeriesKey, WindowAggregate, make_tags

__all__ = ["FAMILY", "TraceAnalyzer", "TraceRecord", "extract", "finish_part", "summary_lines"]


FAMILY = "trace"
# an _InColumns' source (its batch's rests, its stored row) and its index there
_SOURCE, _INDEX = operator.itemgetter(2), operator.itemgetter(3)


def extract(events: Iterable[Any]) -> list[Any]:
    """In a decoder: the trace summary of one chunk's events, as a list holding one ``TraceBatch`` (a list, so
    that the engine can keep extending one list per part; ``feed`` also takes ``partials.summarize``'s
    tuples), or an empty list when the chunk has nothing traced."""
    batch = summarize_batch(events)
    return [] if batch.empty else [batch]


def finish_part(records: list[Any], window_seconds: int) -> list[Any]:
    """In a decoder, once its part is read: the part's records (``extract``'s batches) with the ``RequestSums``
    of their requests first, which the parent adds to its windows instead of each request's columns (see
    ``TraceAnalyzer.feed``)."""
    batches = [r for r in records if type(r) is TraceBatch]
    return [request_sums(batches, window_seconds), *records] if any(b.requests for b in batches) else records

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
    # queries per request -> requests: the sketch and the exact sums need only the multiset, and this stays
    # as small as the distinct counts, however many requests a window has
    queries: dict[int, int] = field(default_factory=dict)


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


class _Keys:
    """A batch's fingerprints (``TraceBatch.fp_keys``, one string): read one by one where a few are needed (a
    merged trace's, an N+1 check's: a few a batch) from where the separators are, and split into a list once
    all are (the open traces written at the end). Splitting thousands of them for a few was ~10% of the
    parent's trace join."""

    __slots__ = ("_all", "_bounds", "_keys")

    def __init__(self, keys: str | list[str]) -> None:
        self._keys = keys
        self._all: list[str] | None = keys if isinstance(keys, list) else None
        self._bounds: Any = None

    def all(self) -> list[str]:
        if self._all is None:
            self._all = split_keys(self._keys)
        return self._all

    def __getitem__(self, k: int) -> str:
        if self._all is not None:
            return self._all[k]
        keys = self._keys
        assert isinstance(keys, str)
        if self._bounds is None:
            if not keys.isascii():  # (a byte is a character only in ASCII)
                return self.all()[k]
            at = np.flatnonzero(np.frombuffer(keys.encode("ascii"), np.uint8) == ord(KEY_SEPARATOR))
            self._bounds = np.concatenate(([-1], at, [len(keys)]))
        bounds = self._bounds
        return keys[int(bounds[k]) + 1:int(bounds[k + 1])]


class _Rests:
    """The rests of one batch (its columns' tail; see ``columns``), read by the ``_InColumns`` that point here.

    Holds only the rests' own arrays, the fingerprint columns and the batch's trace ids (as unpickled: one string,
    ``columns.PackedIds``; a few KB each), not the batch."""

    __slots__ = ("_keys", "bounds", "columns", "events", "fp_key", "fp_ms", "fp_n", "fp_table", "fp_tables",
                 "fp_text", "fp_texts", "newest", "trace_codes", "traces")

    def __init__(self, b: TraceBatch, keys: _Keys) -> None:
        nreq = b.requests
        bounds = np.searchsorted(b.fp_owner, np.arange(nreq, nreq + b.rest_trace.size + 1))
        lo = int(bounds[0])
        self.bounds = bounds - lo  # rest i's groups: fp rows bounds[i]..bounds[i + 1]
        # the arrays themselves: taken in bulk at the end (``take``), an item read only for a merge (rare)
        self.newest, self.events = b.rest_newest, b.rest_events
        self.columns = (b.rest_queries, b.rest_db, b.rest_cache, b.rest_external)
        self.fp_key, self.fp_n, self.fp_ms = b.fp_key[lo:], b.fp_n[lo:], b.fp_ms[lo:]
        self.fp_text, self.fp_table = b.fp_text[lo:], b.fp_table[lo:]
        self.fp_texts, self.fp_tables = b.fp_texts, b.fp_tables
        # the batch's fingerprints, shared with the batch's requests (split once at most)
        self._keys = keys
        # the batch's trace ids, read for the few rests whose id is needed (``trace_ids_at``)
        self.traces, self.trace_codes = b.trace_ids(), b.rest_trace

    def trace_ids_at(self, idx: Any) -> list[Any]:
        """The trace ids of rests ``idx`` (an int array)."""
        return take_ids(self.traces, self.trace_codes[idx])

    def key_list(self) -> list[str]:
        """The batch's fingerprints (``TraceBatch.key_list``), split once."""
        return self._keys.all()

    def fingerprints(self, i: int) -> Fingerprints:
        """Rest ``i``'s fingerprints, as ``PackedTrace.fingerprints`` gives them, read from the columns alone (a
        merge: rare; the open traces written at the end are taken in bulk, ``take``)."""
        lo, hi = self.bounds[i:i + 2].tolist()
        return _fingerprint_rows(self, self._keys, lo, hi) if lo != hi else {}

    def sums(self, i: int) -> tuple[int, float, float, float]:
        """Rest ``i``'s queries, db_ms, cache_ms and external_ms."""
        queries, db_ms, cache_ms, external_ms = self.columns
        return int(queries[i]), float(db_ms[i]), float(cache_ms[i]), float(external_ms[i])

    def take(self, idx: Any) -> store_tables.TraceSums:
        """The sums of rests ``idx`` as the stored open traces' columns (what ``fingerprints`` and the rest's
        values give, with numpy: no Python per trace)."""
        return store_tables.take_sums(idx, self.columns, self.bounds,
                                      (self.fp_key, self.fp_n, self.fp_ms, self.fp_text, self.fp_table),
                                      (self.key_list(), self.fp_texts, self.fp_tables))

    def part(self, i: int, trace_id: str) -> TracePart:
        return TracePart(trace_id, PIECE, float(self.newest[i]), int(self.events[i]), *self.sums(i),
                         self.fingerprints(i), None)


def _fingerprint_rows(c: TraceBatch | _Rests, keys: _Keys, lo: int, hi: int) -> Fingerprints:
    """The fingerprints of fingerprint rows ``lo .. hi - 1`` of these columns (a batch's, or its rests'), as
    ``partials.summarize`` has them; ``keys``: the batch's fingerprints."""
    texts, tables = c.fp_texts, c.fp_tables
    return {keys[k]: [n, ms, texts[x], tables[y]] for k, n, ms, x, y in zip(
        c.fp_key[lo:hi].tolist(), c.fp_n[lo:hi].tolist(), c.fp_ms[lo:hi].tolist(),
        c.fp_text[lo:hi].tolist(), c.fp_table[lo:hi].tolist(), strict=True)}


_Open = PackedTrace | _InColumns  # an open trace, as the parent holds it

class TraceAnalyzer:
    """Adds up trace parts across feeds and runs and measures each completed request; one per run."""

    # Open traces are trimmed back to the cap once over TRIM_AT times it (see ``feed``).
    TRIM_AT = 1.25

    def __init__(self, store: Any, config: Any) -> None:
        self.store = store
        self.threshold = int(config["run.n_plus_one_threshold"])
        self.width = int(config["run.window_seconds"])
        self.pending_seconds = float(config["run.trace_pending_seconds"])
        self.pending_max_events = int(config["run.trace_pending_max_events"])
        self._open = OpenTraces()
        self._open_events = 0  # the events of self._open, kept as it changes (summing it per feed cost more)
        self._loaded_pending = -1  # open traces read from the store; -1 until read
        self._newest = -math.inf  # newest event time seen (the clock pending traces expire by)
        self._windows: dict[tuple[int, str], _RouteWindow] = {}
        self._findings: dict[tuple[int, str, str, str], _FindingSum] = {}
        self.counts: dict[str, int] = dict.fromkeys(store_tables.COUNTERS, 0)
        self._finished = False

    # --- feeding ---------------------------------------------------------------------------------------

    def _load_pending(self) -> None:
        """The open traces earlier runs left, as ``_InColumns`` references to their rows' columns (made in C: no
        Python per trace)."""
        if self._loaded_pending >= 0:
            return
        self._loaded_pending = 0
        for cols in store_tables.load_open_trace_columns(self.store.conn):
            n = len(cols)
            self._loaded_pending += n
            # a trace stored twice: one of its sums would be lost unsaid
            if len(set(cols.trace_ids)) != n or (self._open.lookup(cols.trace_ids) >= 0).any():
                raise store_tables.OpenTracesCorrupt(cols.rowid, "a trace id stored twice")
            self._open.append(cols.trace_ids, cols.newest, cols.events, cols, np.arange(n))
            self._open_events += int(cols.events.sum())
            self._newest = max(self._newest, float(cols.newest.max()))

    def feed(self, parts: Iterable[Any]) -> None:
        """Take the parts from ``extract`` (or ``partials.summarize``), in input order: one engine part's records
        a call (``finish_part``'s: its batches' ``RequestSums`` first). Without ``RequestSums``, the call's batches
        are summed here as a worker sums them."""
        if self._finished:
            raise RuntimeError("TraceAnalyzer.feed after finish")
        self._load_pending()
        parts = parts if type(parts) is list else list(parts)
        # The batches' requests go into their windows first, each with its own piece only: a request whose
        # trace was open here is then corrected as its batch is read (_feed_batch).
        given = False
        for raw in parts:
            if type(raw) is RequestSums:
                self._add_sums(raw)
                given = True
        if not given:
            batches = [raw for raw in parts if type(raw) is TraceBatch]
            if batches:
                self._add_sums(request_sums(batches, self.width))
        for raw in parts:
            kind = type(raw)
            if kind is TraceBatch:
                self._feed_batch(raw)
            elif kind is not RequestSums:  # summarize's tuples (the reference path, for tests and the bench)
                self._add(tuple.__new__(TracePart, raw))  # a view of the plain tuple, no NamedTuple.__new__
        # Keep a long catch-up run's memory bounded too: orphans (no request will come) would otherwise
        # pile up until finish(). Trimmed back to the cap once TRIM_AT times over it (was twice: the open
        # traces are most of the parent's memory for traces; a trim costs ~1.2 ms at 60,000 events over
        # the table's columns, ~4 ms in a dict: 30 trims in the 5M-event benchmark run, whose orphans pile up). Which
        # traces a trim evicts depends on when it runs: the benchmark log's results are the same as at 2.0, the
        # log twice over (time going back, so requests come after older orphans) differs in 7 of 732 windows.
        if self._open_events > self.TRIM_AT * self.pending_max_events:
            self._trim()

    def _add(self, part: TracePart) -> None:
        if part.newest > self._newest:
            self._newest = part.newest
        trace_id = part.trace_id
        if part.tag == PIECE:
            if part.request is None:
                packed = self._open.get(trace_id)
                ops = OpenTrace() if packed is None else packed.unpack()
                ops.merge(part)
                self._open[trace_id] = pack(ops)
                self._open_events += part.events
                return
            packed = self._open.pop(trace_id, None)
            if packed is None:
                ops = OpenTrace()
            else:
                ops = packed.unpack()
                self._open_events -= packed[1]
            ops.merge(part)
            self._complete(trace_id, part.request, ops.queries, ops.db_ms, ops.cache_ms, ops.external_ms,
                           ops.fingerprints)
        else:
            if part.tag == ROOT_TASK:  # a trace without a request: what is open of it was the task's
                dropped = self._open.pop(trace_id, None)
                if dropped is not None:
                    self._open_events -= dropped[1]
            self.counts["task_traces_completed"] += 1

    def _complete(self, trace_id: str, request: RequestInfo, queries: int, db_ms: float, cache_ms: float,
                  external_ms: float, fingerprints: Fingerprints) -> None:
        """Measure one completed request from its trace's summed operations and add it to its route's
        window (the per-part path's step; a batch's requests are summed per part, ``columns.request_sums``)."""
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
        hist = acc.queries
        hist[queries] = hist.get(queries, 0) + 1
        self.counts["traces_completed"] += 1
        if fingerprints:
            self._n_plus_one(window, trace_id, request, fingerprints)

    def _add_sums(self, sums: RequestSums) -> None:
        """A part's requests into their windows, summed per window and route (``columns.request_sums``)."""
        windows = self._windows
        get = windows.get
        for start, route, requests, failed, request_ms, db_ms, cache_ms, external_ms, hist in sums.groups:
            acc = get((start, route))
            if acc is None:  # (the sums as they are: each is 0.0 + itself, the same double)
                windows[(start, route)] = _RouteWindow(requests, failed, request_ms, db_ms, cache_ms, external_ms,
                                                       0, hist)
                continue
            acc.requests += requests
            acc.failed += failed
            acc.request_ms += request_ms
            acc.db_ms += db_ms
            acc.cache_ms += cache_ms
            acc.external_ms += external_ms
            queries = acc.queries
            for q, n in hist.items():
                queries[q] = queries.get(q, 0) + n

    def _feed_batch(self, b: TraceBatch) -> None:
        """One chunk's columns: what ``_add``/``_complete`` would do with its parts, one by one, in order, its
        requests already in their windows (``_add_sums``), each with its own piece's operations.

        Traces with nothing open here (all but a few per chunk) are independent of everything before the
        chunk, and the worker has already cut them into pieces: their requests are done. Traces with something
        open here go through their parts in order, one at a time, as ``_add`` does, and the first request of
        each is corrected in its window by what its merged operations change (``_correct``)."""
        if b.newest > self._newest:
            self._newest = b.newest
        self.counts["task_traces_completed"] += b.tasks
        open_, traces = self._open, b.trace_ids()  # (a PackedIds gives an id at a time: a str for the few needed)
        nreq = b.requests
        keys = _Keys(b.fp_keys)  # (shared by its requests and rests)
        fps = self._fingerprints_of(b, keys)
        to_check: dict[int, Fingerprints] = {}  # requests that may have findings -> their fingerprints

        hashes = open_.hashes_of(traces)
        hit = open_.lookup(traces, hashes) >= 0
        req_hit = np.flatnonzero(hit[b.req_trace])
        root_hit = np.flatnonzero(hit[b.root_trace])
        merged: list[int] = []  # the requests that took an open trace (the others: their piece is all)
        if req_hit.size or root_hit.size:
            # in event order: a request's place is its index; a root task's, the requests before it (it comes
            # before the request of that index)
            steps = sorted([(j, 1, j) for j in req_hit.tolist()]
                           + [(at, 0, j) for at, j in zip(b.root_at[root_hit].tolist(), root_hit.tolist(),
                                                          strict=True)])
            piece = None
            for _at, is_request, j in steps:
                if not is_request:  # a root task: what is open of its trace was the task's
                    dropped = open_.pop(traces[b.root_trace[j]], None)
                    if dropped is not None:
                        self._open_events -= dropped[1]
                    continue
                trace_id = traces[b.req_trace[j]]
                packed = open_.pop(trace_id, None)
                if packed is None:  # (an earlier request or root task of the batch took it: the piece is all)
                    continue
                merged.append(j)
                self._open_events -= packed[1]
                if piece is None:
                    piece = (b.req_queries, b.req_db_ms(), b.req_cache_ms(), b.req_external_ms())
                own = (int(piece[0][j]), float(piece[1][j]), float(piece[2][j]), float(piece[3][j]))
                ops = packed.unpack()
                ops.merge(TracePart(trace_id, PIECE, float(b.req_end[j]), 0, *own, fps(j), None))
                self._correct(b, j, own, ops)
                if ops.fingerprints:
                    to_check[j] = ops.fingerprints

        threshold = self.threshold
        if threshold > 0 and b.fp_n.size:
            owners = b.fp_owner[b.fp_n >= threshold]
            if owners.size:  # (np.unique would import numpy.ma, ~8 ms, in the parent)
                for owner in set(owners.tolist()).difference(merged):
                    if owner < nreq:  # (the merged requests are checked with their whole trace's)
                        to_check[owner] = fps(owner)
        if to_check:
            width = self.width
            for j in sorted(to_check):
                end = float(b.req_end[j])
                request = (end, float(b.req_dur[j]), "failure" if b.req_failed[j] else "success",
                           b.routes[b.req_route[j]], b.methods[b.req_method[j]], None)
                self._n_plus_one(int(end // width) * width, traces[b.req_trace[j]], request, to_check[j])

        self.counts["traces_completed"] += nreq
        # What stays open of the chunk's traces joins what is open here: open already are the rests' traces
        # that were before the batch, unless a request or root task of the batch took them.
        if b.rest_trace.size:
            known = hit
            if req_hit.size or root_hit.size:
                known = hit.copy()
                known[b.req_trace[req_hit]] = False
                known[b.root_trace[root_hit]] = False
            self._open_rests(b, np.flatnonzero(known[b.rest_trace]).tolist(), keys, hashes[b.rest_trace])

    def _correct(self, b: TraceBatch, j: int, own: tuple[int, float, float, float], ops: OpenTrace) -> None:
        """Request ``j`` of the batch, added to its window with its own piece's (queries, db_ms, cache_ms,
        external_ms), has the merged operations ``ops``: its window takes the difference."""
        width = self.width
        end, duration = float(b.req_end[j]), float(b.req_dur[j])
        acc = self._windows[(int(end // width) * width, b.routes[b.req_route[j]])]
        hist = acc.queries
        left = hist[own[0]] - 1
        if left:
            hist[own[0]] = left
        else:
            del hist[own[0]]
        hist[ops.queries] = hist.get(ops.queries, 0) + 1
        # capped as _complete caps them; unchanged times (most: the open part had no such call) are left alone
        for name, old, new in (("db_ms", own[1], ops.db_ms), ("cache_ms", own[2], ops.cache_ms),
                               ("external_ms", own[3], ops.external_ms)):
            old, new = min(old, duration), min(new, duration)
            if new != old:
                setattr(acc, name, getattr(acc, name) + (new - old))

    def _open_rests(self, b: TraceBatch, known: list[int], keys: _Keys, hashes: Any) -> None:
        """``_add`` of each rest (a piece without its request): merged into its open trace, or opened.

        Nearly every rest opens a new trace (the benchmark log: 148 of 64,868 rests find theirs open; most are
        orphans that a trim later drops), so the new ones are appended to the open traces' columns in bulk
        (``OpenTraces.append``), their sums left in the batch's columns (``_Rests``): read only if a trace is
        ever merged, taken in bulk if written (making every rest a ``PackedTrace`` at once was most of the
        parent's trace join). The table ends in the same order as a dict fed one rest at a time (a merged rest
        keeps its trace's place, a new one is appended in rest order), as long as no trace has two rests in one
        batch (else they go one at a time). ``known``: the rests whose trace is open here; ``keys``: the batch's
        fingerprints (``_Rests``); ``hashes``: the rests' traces' in the open traces' index."""
        open_ = self._open
        rests = _Rests(b, keys)
        n = b.rest_trace.size
        if not known:  # (a batch's rests are of distinct traces: codes into its table of distinct trace ids)
            open_.append(None, b.rest_newest, b.rest_events, rests, np.arange(n), hashes)
            self._open_events += int(b.rest_events.sum())
            return
        trace_ids = rests.trace_ids_at(np.arange(n))
        if len(set(trace_ids)) < n:
            for i, trace_id in enumerate(trace_ids):
                packed = open_.get(trace_id)
                ops = OpenTrace() if packed is None else packed.unpack()
                ops.merge(rests.part(i, trace_id))
                open_[trace_id] = pack(ops)
        else:
            for i in known:
                trace_id = trace_ids[i]
                ops = open_[trace_id].unpack()
                ops.merge(rests.part(i, trace_id))
                open_[trace_id] = pack(ops)
            new = np.ones(n, np.bool_)
            new[known] = False
            at = np.flatnonzero(new)
            open_.append(None, b.rest_newest[at], b.rest_events[at], rests, at, hashes[at])
        self._open_events += int(b.rest_events.sum())

    @staticmethod
    def _fingerprints_of(b: TraceBatch, keys: _Keys) -> Any:
        """A function giving a request's fingerprints (as ``partials.summarize`` has them) from the columns;
        ``keys``: the batch's fingerprints (shared with its ``_Rests``)."""
        owners = b.fp_owner

        def fingerprints(owner: int) -> Fingerprints:
            lo, hi = np.searchsorted(owners, (owner, owner + 1)).tolist()  # (the rows are by owner)
            return _fingerprint_rows(b, keys, lo, hi) if lo != hi else {}

        return fingerprints

    def _n_plus_one(self, window: int, trace_id: str, request: RequestInfo, fingerprints: Fingerprints) -> None:
        """The N+1 findings of one completed request, when a fingerprint ran ``threshold`` times or more (rare:
        only then is the request profiled)."""
        threshold = self.threshold
        if threshold > 0 and any(v[0] >= threshold for v in fingerprints.values()):
            ops = OpenTrace()
            ops.fingerprints = fingerprints
            self._findings_of(window, profile_request(trace_id, request, ops, threshold))

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

    def _trim(self) -> tuple[Any, Any, Any]:
        """Drop open traces too old, then the oldest (by newest event, ties by trace id) until the rest fit the
        cap. Found with numpy instead of a sort of every open trace (~40 ms at 60,000 open events, then most
        of a trim), and the expired ones too (a Python test per open trace was most of a trim after that).
        Returns the newest events and events (arrays) it read, in the table's order, and which of them stay (a
        mask; None: all), for ``_expire`` (a trim during the feed takes nothing more). A trace dropped is a
        cleared flag of its slot (``OpenTraces.kill``): no Python per open trace."""
        open_ = self._open
        slots = open_.slots()
        n = slots.size
        all_newest = newest = open_.newest[slots]
        all_events = events = open_.events[slots]
        expired = newest < self._newest - self.pending_seconds
        at = None  # where the traces not expired are among the slots (None: all of them)
        keep = None  # which of the slots stay (None: all of them)
        if expired.any():
            gone = np.flatnonzero(expired)
            self.counts["pending_expired_events"] += int(events[gone].sum())
            open_.kill(slots[gone])
            keep = ~expired
            at = np.flatnonzero(keep)
            newest, events = newest[at], events[at]
        total = int(events.sum())
        excess = total - self.pending_max_events
        if excess > 0:
            order = np.argsort(newest, kind="stable")
            by_age = newest[order]
            where = order if at is None else at[order]  # (their places among the slots)
            # the traces dropped are those older than the newest one needed to cover the excess, then of
            # those as old as it, the first ones by trace id until the rest fit
            last = by_age[int(np.searchsorted(np.cumsum(events[order]), excess))]
            lo, hi = int(np.searchsorted(by_age, last, "left")), int(np.searchsorted(by_age, last, "right"))
            evicted = int(events[order[:lo]].sum())
            open_.kill(slots[where[:lo]])
            if keep is None:
                keep = np.ones(n, np.bool_)
            keep[where[:lo]] = False
            total -= evicted
            tied = where[lo:hi].tolist()
            for _, i in sorted(zip(open_.ids_of(slots[tied]), tied, strict=True)):
                if total <= self.pending_max_events:
                    break
                open_.kill(slots[i:i + 1])
                size = int(all_events[i])
                keep[i] = False
                total -= size
                evicted += size
            self.counts["pending_evicted_events"] += evicted
        self._open_events = total
        return all_newest, all_events, keep

    def _expire(self) -> tuple[list[str], OpenView, Any, Any, list[int]]:
        """Drop open traces too old or beyond the cap (``_trim``); return what stays open, in the table's order
        (trace ids, open traces, newest events and events, arrays), and that order's places oldest trace first."""
        newest, events, keep = self._trim()
        if keep is not None:
            newest, events = newest[keep], events[keep]
        slots = self._open.slots()
        trace_ids, opens = self._open.ids_of(slots), OpenView(self._open, slots)
        # sorted by (newest, trace id): by newest with numpy (a sort of (newest, trace id) pairs was ~25 ms at
        # 23,500 open traces, the benchmark log's, most of this), then each run of equal newest by trace id
        order = np.argsort(newest, kind="stable")
        by_age = newest[order]
        ties = np.flatnonzero(by_age[1:] == by_age[:-1]).tolist()
        at = order.tolist()
        start = None
        for k, t in enumerate(ties):
            if start is None:
                start = t
            if k + 1 == len(ties) or ties[k + 1] != t + 1:  # the run is at[start:t + 2]
                at[start:t + 2] = sorted(at[start:t + 2], key=trace_ids.__getitem__)
                start = None
        return trace_ids, opens, newest, events, at

    def finish(self) -> list[WindowAggregate]:
        """Write findings, counters and open traces (in the caller's transaction); return aggregates."""
        if self._finished:
            raise RuntimeError("TraceAnalyzer.finish called twice")
        self._load_pending()
        self._finished = True
        trace_ids, opens, newest, events, order = self._expire()
        conn = self.store.conn
        with self.store.transaction():
            if opens or self._loaded_pending:
                _write_open_traces(conn, trace_ids, opens, newest, events, order)
            store_tables.upsert_findings(conn, (
                (w, route, method, fp, s.text, s.table, s.requests, s.executions, s.max_executions,
                 s.time_ms, s.example_trace_id, s.first_seen, s.last_seen)
                for (w, route, method, fp), s in sorted(self._findings.items())
            ))
            store_tables.add_counters(conn, self.counts)
        self.pending_events = self._open_events  # (the trim's sum of what stays)
        self.pending_traces = len(opens)
        windows = sorted(self._windows.items())
        sketches = _metrics.queries_sketches([acc.queries for _, acc in windows])
        return [self._aggregate(w, route, acc, sketch) for ((w, route), acc), sketch in zip(windows, sketches,
                                                                                         strict=True)]

    def _aggregate(self, window: int, route: str, acc: _RouteWindow, sketch: Any) -> WindowAggregate:
        return WindowAggregate(
            series=SeriesKey(FAMILY, make_tags(route=route or "unknown")),
            start=window,
            width=self.width,
            count=acc.requests,
            errors=acc.failed,
            total=float(sum(q * n for q, n in acc.queries.items())),
            min=float(min(acc.queries)),
            max=float(max(acc.queries)),
            counters={
                "request_ms": acc.request_ms,
                "db_ms": acc.db_ms,
                "cache_ms": acc.cache_ms,
                "external_ms": acc.external_ms,
                "n_plus_one": float(acc.n_plus_one),
            },
            sketch=sketch,
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


def _write_open_traces(conn: Any, trace_ids: list[str], opens: list[_Open] | OpenView, newest: Any, events: Any,
                       order: list[int]) -> None:
    """The stored open traces become these (their ids, the traces, their newest events and events), written in
    ``order`` (their places, oldest trace first)."""
    at = np.asarray(order, np.int64)
    place = np.empty(len(order), np.int64)
    place[at] = np.arange(len(order))
    store_tables.write_open_traces(conn, list(map(trace_ids.__getitem__, order)), newest[at], events[at],
                                   _open_sums(opens, place))


def _open_sums(opens: list[_Open] | OpenView, place: Any) -> store_tables.TraceSums:
    """The sums of these open traces as the stored columns, trace ``i`` at ``place[i]``. Nearly all are
    references to columns (a batch's rests, a stored row's traces): those of one source are taken from it at
    once with numpy; the few packed ones (merged in this run) go through Python.

    A trace's source is its third item (a ``PackedTrace``'s is its queries, an int: never a source), so the
    traces are grouped by that item's identity; in the table's order a source's traces mostly come in runs (a
    stored row's, then each batch's rests), so only the runs' identities are sorted, and the traces put in
    their groups' order by a sort of small group numbers (a radix sort)."""
    n = len(opens)
    if not n:
        return store_tables.assemble_sums(0, [])
    if isinstance(opens, OpenView):  # the table's live traces: the same from its columns, no Python per trace
        table, slots = opens.table, opens.slots
        src, index = table.src[slots], table.idx[slots]
        ids = np.fromiter(map(id, table.sources), np.uint64, len(table.sources))[src]
        in_packed = np.flatnonzero(src == 0)  # (OpenTraces' own PackedTrace list)
        ids[in_packed] = np.fromiter(map(id, map(_SOURCE, map(table.packed.__getitem__,
                                                               index[in_packed].tolist()))), np.uint64, in_packed.size)

        def source(i: int) -> Any:
            return table.sources[int(src[i])] if src[i] else None
    else:
        sources = list(map(_SOURCE, opens))
        ids = np.fromiter(map(id, sources), np.uint64, n)
        # each trace's index in its source (a PackedTrace's db_ms there, never read: a float, as the indexes are
        # read, exactly, in one pass)
        index = np.fromiter(map(_INDEX, opens), np.float64, n)

        def source(i: int) -> Any:
            return None if type(opens[i]) is PackedTrace else sources[i]
    starts = np.flatnonzero(np.concatenate(([True], ids[1:] != ids[:-1])))
    _, first_run, run_group = np.unique(ids[starts], return_index=True, return_inverse=True)
    groups = len(first_run)
    # the groups numbered by their first trace, not by identity (an address): the same bytes written every time
    by_first = np.argsort(first_run)
    rank = np.empty(groups, np.int64)
    rank[by_first] = np.arange(groups)
    first_run, run_group = first_run[by_first], rank[run_group]
    group = np.repeat(run_group.astype(np.uint16 if groups <= 1 << 16 else np.int64),
                      np.diff(np.append(starts, n)))
    by_group = np.argsort(group, kind="stable")
    parts = []
    packed = []
    for g, (lo, hi) in enumerate(pairwise([0, *np.cumsum(np.bincount(group, minlength=groups)).tolist()])):
        at = by_group[lo:hi]
        first = source(int(starts[first_run[g]]))
        if first is None:
            packed.append(at)
            continue
        parts.append((place[at], first.take(index[at].astype(np.int64))))
    if packed:
        at = np.concatenate(packed)
        parts.append((place[at], store_tables.packed_sums(cast(list[PackedTrace], [opens[i] for i in at.tolist()]))))
    return store_tables.assemble_sums(n, parts)


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
