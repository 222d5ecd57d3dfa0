"""``columns.summarize_columns`` (a chunk's trace summary from its ``parsers.columns.EventColumns``) gives the
batch ``summarize_batch`` gives from the chunk's ``Event`` objects, field by field (``TraceBatch.differences``:
arrays by dtype and bytes, lists item by item with their types), and ``TraceAnalyzer`` fed either path's
batches ends in the same aggregates, findings, open traces and counters."""

from __future__ import annotations

import itertools
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_insights_columns import T0, _event, chunks_of, realistic_events, run_all

from aggregator.engine import CHUNK_BYTES
from aggregator.insights.columns import (
    TraceBatch,
    _first_codes,
    _subset_codes,
    extract_columns,
    summarize_batch,
    summarize_columns,
)
from aggregator.insights.traces import extract
from aggregator.loggen import generate_events, write_log
from parsers import LineParser, scan
from parsers.columns import from_events
from parsers.event import Event, Kind


def same_batch(events: list[Any]) -> TraceBatch:
    """Both paths' batches of one chunk, checked identical; returns the batch."""
    want = summarize_batch(events)
    got = summarize_columns(from_events(events))
    assert got.differences(want) == [], f"{got.differences(want)} differ"
    extracted = extract_columns(from_events(events))
    assert len(extracted) == len(extract(events)) == (0 if want.empty else 1)
    assert all(b.differences(want) == [] for b in extracted)
    return got


def columns_extract(chunk: list[Any]) -> list[Any]:
    return extract_columns(from_events(chunk))


def test_differences_sees_each_kind_of_difference() -> None:
    """The comparison the other tests rely on: -0.0 against 0.0, dtypes, where None sits, "" against None."""
    events = [_event("db", "a" * 32, "1" * 16, None, T0, -0.0, lambda xs: xs[0]),
              _event("request", None, "2" * 16, None, T0 + 1, 1.0, lambda xs: xs[0]),
              _event("request", "b" * 32, "3" * 16, None, T0 + 2, 1.0, lambda xs: xs[-1])]
    base = summarize_batch(events)
    assert base.differences(summarize_batch(events)) == []
    for name, change in (("rest_db", lambda b: np.negative(b.rest_db)),
                         ("req_trace", lambda b: b.req_trace.astype(np.int64)),
                         ("traces", lambda b: [b.traces[1], b.traces[0], *b.traces[2:]]),
                         ("routes", lambda b: [None if r == "" else r for r in b.routes]),
                         ("fp_texts", lambda b: [t.encode() for t in b.fp_texts]),
                         ("newest", lambda b: float(np.nextafter(b.newest, np.inf)))):
        other = summarize_batch(events)
        setattr(other, name, change(other))
        assert base.differences(other) == [name]
    assert base.fp_ms.tolist() == [-0.0] and base.traces == ["a" * 32, None, "b" * 32]


@pytest.mark.parametrize("chunk_bytes", [CHUNK_BYTES, 40_000, 9_000])
def test_a_generated_log_in_chunks(tmp_path: Path, chunk_bytes: int) -> None:
    """loggen's mix with N+1 loops, missing fingerprints and texts, untraced events and -0.0 durations,
    parsed as the engine's chunks (cut mid-trace)."""
    log = tmp_path / "app.log"
    write_log(log, realistic_events(12_000, seed=11), ordinary_every=17)
    chunks = chunks_of(log, chunk_bytes)
    assert len(chunks) >= 2
    cut_traces = sum(a[-1].trace_id is not None and any(e.trace_id == a[-1].trace_id for e in b[:20])
                     for a, b in itertools.pairwise(chunks))
    assert cut_traces  # some trace goes on in the next chunk
    batches = [same_batch(chunk) for chunk in chunks]
    assert sum(b.requests for b in batches) > 4000 and all(b.requests for b in batches[::5])
    assert any(b.rest_trace.size for b in batches) and any(b.fp_owner.size for b in batches)
    assert any(None in b.traces and b.traces[0] is not None for b in batches)  # None later
    assert any(b.req_failed.any() for b in batches)
    assert any(b.root_trace.size for b in batches)
    assert any((np.signbit(b.fp_ms) & (b.fp_ms == 0.0)).any() for b in batches)  # a group of -0.0 only


def test_the_parent_sees_no_difference(tmp_path: Path) -> None:
    """TraceAnalyzer (feed + finish, two runs, parts of chunks) fed either path's batches."""
    log = tmp_path / "app.log"
    write_log(log, realistic_events(12_000, seed=3), ordinary_every=17)
    chunks = chunks_of(log, 30_000)
    parts = [chunks[i:i + 3] for i in range(0, len(chunks), 3)]
    runs = [parts[: len(parts) // 2], parts[len(parts) // 2:]]
    for cfg in ({}, {"run.n_plus_one_threshold": 2, "run.trace_pending_max_events": 300}):
        objects = run_all(tmp_path / "objects.db", runs, extract, cfg)
        columns = run_all(tmp_path / "columns.db", runs, columns_extract, cfg)
        assert objects == columns
        aggs, findings, open_traces, counters = columns
        assert aggs and findings != "[]" and open_traces != "[]" and counters != "[]"
        for db in ("objects.db", "columns.db"):
            (tmp_path / db).unlink()


@pytest.mark.skipif(not scan.available, reason="parsers._scan not built, or LOGAPM_NATIVE=0")
def test_the_native_scanners_columns(tmp_path: Path) -> None:
    """Columns as the worker will get them (``parsers.scan``: read-only arrays straight from the bytes) give
    the batch ``summarize_batch`` gives from ``LineParser``'s events of the same chunk."""
    log = tmp_path / "app.log"
    write_log(log, realistic_events(12_000, seed=13), ordinary_every=17)
    data = log.read_bytes()
    now, past, future, max_line = T0 + 7200, 400 * 86400.0, 600.0, 64 * 1024
    parser = LineParser(now=now, max_future_seconds=future, max_past_seconds=past, max_line_bytes=max_line)
    scanned = pos = 0
    while pos < len(data):
        end = data.find(b"\n", min(pos + 200_000, len(data) - 1)) + 1 or len(data)
        got = scan.scan(data[pos:end], now - past, now + future, max_line)
        if got is not None:
            events = parser.parse(data[pos:end]).events
            assert summarize_columns(got[2]).differences(summarize_batch(events)) == []
            scanned += len(events)
        pos = end
    assert scanned > 10_000


def stream(rng: random.Random) -> list[Any]:
    """Odd events: few traces and spans (tasks with and without parents, operations below tasks' spans, in
    other traces too), missing or empty fingerprints, texts, tables, routes and methods, -0.0, 5xx and
    failures, metrics with and without a trace id."""
    draw = rng.choice
    traces: list[str | None] = [f"{i:032x}" for i in range(1, rng.randint(2, 9))] + [None] * rng.randint(0, 2)
    spans = [f"{i:016x}" for i in range(1, rng.randint(3, 14))]
    kinds: list[Kind] = ["request", "request", "db", "db", "db", "cache", "external", "task", "metric"]
    events = []
    for i in range(rng.randint(1, 300)):
        kind = draw(kinds)
        parent = draw([*spans, None]) if kind != "request" else None
        e = _event(kind, draw(traces), draw(spans), parent, T0 + i * draw([0.5, 7.0, 400.0]),
                   draw([0.0, -0.0, 1.5, 0.25, 3.0, 1e-3]), draw)
        if kind == "task" and rng.random() < 0.2:
            e.span_id = None
        elif kind == "request" and rng.random() < 0.3:
            e.http_response_status_code = draw([499, 500, 404, 599])
        events.append(e)
    return events


def cut_at_random(events: list[Any], seed: int, rng: random.Random) -> list[list[Any]]:
    """The events (trace ids taken away from the first, or from the second half, by ``seed``) cut into chunks
    at random."""
    if seed % 4 == 1:
        events[0].trace_id = None  # None first
    elif seed % 4 == 2 and len(events) > 2:
        for e in events[len(events) // 2:]:
            e.trace_id = None  # None only late
    cuts = sorted({0, len(events), *(rng.randint(0, len(events)) for _ in range(rng.randint(0, 8)))})
    return [events[a:b] for a, b in itertools.pairwise(cuts)]


@pytest.mark.parametrize("seed", range(40))
def test_odd_streams_cut_at_random(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    chunks = cut_at_random(stream(rng), seed, rng)
    for chunk in chunks:
        same_batch(chunk)
    if seed % 5 == 0:  # and through the parent
        parts = [chunks[i:i + 2] for i in range(0, len(chunks), 2)]
        runs = [parts[: len(parts) // 2], parts[len(parts) // 2:]]
        cfg = {"run.n_plus_one_threshold": 1, "run.trace_pending_max_events": 5}
        assert run_all(tmp_path / "o.db", runs, extract, cfg) == run_all(tmp_path / "c.db", runs, columns_extract, cfg)


def test_the_odd_streams_cover_the_cases() -> None:
    """What ``test_odd_streams_cut_at_random`` is for actually happens in its streams."""
    seen: set[str] = set()
    for seed in range(40):
        events = stream(random.Random(seed))
        spans = {e.span_id for e in events if e.kind == "task"} - {None}
        b = summarize_batch(events)
        tids = [e.trace_id for e in events]
        seen |= {name for name, yes in (
            ("None first", tids[0] is None and any(tids)), ("None later", tids[0] is not None and None in tids),
            ("root task", b.root_trace.size > 0),
            ("child task", any(e.kind == "task" and e.trace_id and e.parent_span_id for e in events)),
            ("operation below a task", any(e.kind == "db" and e.parent_span_id in spans for e in events)),
            ("fingerprint from text", any(e.kind == "db" and not e.db_query_fingerprint and e.db_query_text
                                          for e in events)),
            ("neither", any(e.kind == "db" and not e.db_query_fingerprint and not e.db_query_text
                            for e in events)),
            ("empty fingerprint", any(e.db_query_fingerprint == "" for e in events)),
            ("-0.0 group", bool((np.signbit(b.fp_ms) & (b.fp_ms == 0.0)).any())),
            ("500", any(e.http_response_status_code == 500 and e.outcome != "failure" for e in events)),
            ("499", any(e.http_response_status_code == 499 and e.outcome != "failure" for e in events)),
            ("task without a span", any(e.kind == "task" and e.span_id is None for e in events)),
            ("failure", any(e.outcome == "failure" for e in events)),
            ("None and empty route", None in [e.http_route for e in events if e.kind == "request"]
             and "" in b.routes),
            ("None and empty text", {None, ""} <= set(b.fp_texts)),
        ) if yes}
    assert len(seen) == 15, seen


def test_no_trace_context_only_metrics_and_empty(tmp_path: Path) -> None:
    """Events without trace context (each of loggen's kinds), an empty chunk, a chunk of only metrics."""
    log = tmp_path / "app.log"
    write_log(log, generate_events(500, start=T0, seed=9))
    (chunk,) = chunks_of(log, 10**9)
    for e in chunk:
        e.trace_id = e.parent_span_id = None
    assert same_batch(chunk).empty and extract_columns(from_events(chunk)) == []
    assert same_batch([]).empty
    metrics = [Event(timestamp="-", schema=1, kind="metric", trace_id=t, metric_name="m", metric_type="count",
                     metric_value=1.0, ts=T0 + i) for i, t in enumerate(["a" * 32, None, "b" * 32, "a" * 32])]
    b = same_batch(metrics)
    assert b.empty and b.traces == ["a" * 32, None, "b" * 32]
    assert same_batch(metrics[1:2]).traces == []  # no trace id at all: the empty batch


def test_first_codes_and_subset_codes_are_codes_of_the_values() -> None:
    rng = random.Random(5)
    for _ in range(300):
        table = rng.sample(["a", "", "b", "c", "d"], rng.randint(0, 5))
        codes = np.array([rng.randint(-1, len(table) - 1) for _ in range(rng.randint(0, 12))], np.int32)
        for absent in (None, ""):
            values = [table[c] if c >= 0 else absent for c in codes.tolist()]
            distinct = list(dict.fromkeys(values))
            got, got_table = _subset_codes(codes, table, absent)
            assert (got.dtype, got.tolist(), got_table) == (np.int32, [distinct.index(v) for v in values], distinct)
        dense, ids = _first_codes(codes + 1)
        assert list(ids) == list(dict.fromkeys((codes + 1).tolist()))
        assert (dense.dtype, dense.tolist()) == (np.int32, [ids.index(c) for c in (codes + 1).tolist()])
