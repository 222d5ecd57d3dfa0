"""Trace insights on constructed traces: N+1 findings, time shares, queries per request, pending traces."""

from __future__ import annotations

import itertools
import math
import uuid
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregator import catalog
from aggregator.config import Config, load_config
from aggregator.insights.findings import counters, load_findings
from aggregator.insights.partials import summarize
from aggregator.insights.records import TraceRecord
from aggregator.insights.traces import TraceAnalyzer, extract, summary_lines
from aggregator.model import WindowAggregate
from aggregator.store import Store
from parsers.event import Event

T0 = 1_764_399_960.0  # a window boundary for 60 s windows (divisible by 60)
_ids = itertools.count(1)


def span() -> str:
    return f"{next(_ids):016x}"


def rec(kind: str, trace: str, end: float, dur: float, name: str, detail: str = "", *, parent: str = "",
        span_id: str | None = None, extra: object = "", status: int = 0, failed: bool = False) -> TraceRecord:
    return TraceRecord(trace, span_id or span(), parent or None, kind, end, dur,
                       "failure" if failed else "success", name, detail, None if extra == "" else extra, status or None)


def request_trace(trace: str, start: float, route: str, queries: list[tuple[str, float]], *,
                  cache: list[float] = (), external: list[float] = (), dur: float | None = None,
                  method: str = "GET", status: int = 200) -> list[TraceRecord]:
    """A sequential request: its queries, then cache calls, then external calls, then the request event."""
    root = span()
    out: list[TraceRecord] = []
    t = start
    for fp, ms in queries:
        t += ms / 1000
        out.append(rec("db", trace, t, ms, fp, f"SELECT * FROM t WHERE id = ? -- {fp}", parent=root,
                       extra="t"))
    for ms in cache:
        t += ms / 1000
        out.append(rec("cache", trace, t, ms, "get", "default", parent=root, extra=True))
    for ms in external:
        t += ms / 1000
        out.append(rec("external", trace, t, ms, "s3", "PutObject", parent=root, status=200))
    used = (t - start) * 1000
    total = used + 1.0 if dur is None else dur
    out.append(rec("request", trace, start + total / 1000, total, route, method, span_id=root, status=status))
    return out


def as_event(r: TraceRecord) -> Event:
    """The parsed event a record stands for (what the decoders summarise)."""
    fields: dict[str, object] = {}
    if r.kind == "request":
        fields = {"http_route": r.name, "http_request_method": r.detail, "http_response_status_code": r.status}
    elif r.kind == "db":
        fields = {"db_system": "sqlite", "db_query_fingerprint": r.name, "db_query_text": r.detail or None,
                  "db_collection_name": r.extra}
    elif r.kind == "cache":
        fields = {"cache_name": r.detail, "cache_operation": r.name, "cache_hit": r.extra}
    elif r.kind == "external":
        fields = {"peer_service": r.name, "external_operation": r.detail, "http_response_status_code": r.status}
    elif r.kind == "task":
        fields = {"task_name": r.name, "messaging_destination_name": r.detail or None}
    return Event(timestamp="-", schema=1, kind=r.kind, duration_ms=r.duration_ms, outcome=r.outcome,
                 trace_id=r.trace_id, span_id=r.span_id, parent_span_id=r.parent_span_id, ts=r.end, **fields)


def parts(batch: list[TraceRecord]) -> list[object]:
    """A batch summarised the way a decoder summarises one chunk's events (the run's path: ``extract``;
    ``test_insights_columns`` holds it to the per-part reference, ``partials.summarize``)."""
    return extract([as_event(r) for r in batch])


def config(**overrides: object) -> Config:
    return load_config(environ={}, overrides=overrides)


def analyse(store_path: Path, batches: list[list[TraceRecord]], cfg: Config | None = None
            ) -> tuple[list[WindowAggregate], TraceAnalyzer]:
    """One run: feed the batches, finish inside a transaction (as the run does)."""
    store = Store(store_path)
    try:
        analyzer = TraceAnalyzer(store, cfg or config())
        for batch in batches:  # each batch is summarised as a decoder summarises one chunk
            analyzer.feed(parts(batch))
        with store.transaction():
            aggs = analyzer.finish()
        return aggs, analyzer
    finally:
        store.close()


def findings(store_path: Path) -> list[tuple[object, ...]]:
    store = Store(store_path)
    try:
        return [tuple(r) for r in store.conn.execute("SELECT * FROM insights_n_plus_one ORDER BY 1, 2, 3, 4")]
    finally:
        store.close()


def metric(aggs: list[WindowAggregate], name: str, route: str) -> float | None:
    merged = catalog.merge(a for a in aggs if a.series.tag("route") == route)
    assert merged is not None
    return catalog.value(name, merged, prefix="apm")


def test_n_plus_one_found_with_count_and_time(tmp_path: Path) -> None:
    """Seven runs of one fingerprint in a request make one finding with executions 7 and their summed time;
    the query run twice in the same request is not a finding."""
    loop = [("fp_loop", 1.5 + i * 0.25) for i in range(7)]
    trace = "a" * 32
    records = request_trace(trace, T0 + 1, "api/stories/", [("fp_list", 3.0), *loop, ("fp_x", 1.0),
                                                            ("fp_x", 1.0)])
    aggs, analyzer = analyse(tmp_path / "s.db", [records])
    rows = findings(tmp_path / "s.db")
    assert len(rows) == 1
    (window, route, method, fp, text, table, requests, executions, max_exec, time_ms, example, *_rest) = rows[0]
    assert (window, route, method, fp, table) == (T0, "api/stories/", "GET", "fp_loop", "t")
    assert text == "SELECT * FROM t WHERE id = ? -- fp_loop"
    assert (requests, executions, max_exec, example) == (1, 7, 7, trace)
    assert time_ms == pytest.approx(sum(ms for _, ms in loop))
    assert metric(aggs, "apm.db.n_plus_one", "api/stories/") == 1.0
    assert analyzer.counts["n_plus_one_findings"] == 1
    lines = analyzer.summary_lines()
    assert any("api/stories/" in line and "7.0 executions/request" in line for line in lines), lines


def test_below_threshold_no_finding_and_threshold_is_configurable(tmp_path: Path) -> None:
    """Four runs of a fingerprint are not an N+1 at the default threshold (5) but are at threshold 4."""
    records = request_trace("b" * 32, T0 + 1, "api/a/", [("fp", 1.0)] * 4)
    aggs, _ = analyse(tmp_path / "default.db", [records])
    assert findings(tmp_path / "default.db") == []
    assert metric(aggs, "apm.db.n_plus_one", "api/a/") == 0.0
    analyse(tmp_path / "four.db", [records], config(**{"run.n_plus_one_threshold": 4}))
    assert [r[7] for r in findings(tmp_path / "four.db")] == [4]


def test_findings_sum_over_requests_and_keep_the_worst_example(tmp_path: Path) -> None:
    """Findings of one route and query add up per window; the example trace is the one with most runs."""
    records = []
    for i, n in enumerate([5, 9, 6]):
        records += request_trace(f"{i + 1:032x}", T0 + i, "api/b/", [("fp", 2.0)] * n)
    analyse(tmp_path / "s.db", [records])
    store = Store(tmp_path / "s.db")
    (row,) = load_findings(store.conn)
    assert (row.requests, row.executions, row.max_executions) == (3, 20, 9)
    assert row.example_trace_id == f"{2:032x}"
    assert row.time_ms == pytest.approx(40.0)
    assert row.executions_per_request == pytest.approx(20 / 3)
    text = "\n".join(summary_lines(store))
    assert "api/b/" in text and "6.7 executions/request" in text
    store.close()


def test_time_shares_exact_on_constructed_traces(tmp_path: Path) -> None:
    """Shares are sum of child time / sum of request time over the window's requests of a route."""
    r1 = request_trace("1" * 32, T0 + 1, "api/c/", [("q1", 10.0), ("q2", 20.0)], cache=[5.0], external=[25.0],
                       dur=100.0)
    r2 = request_trace("2" * 32, T0 + 2, "api/c/", [("q1", 30.0)], external=[10.0], dur=300.0)
    aggs, _ = analyse(tmp_path / "s.db", [r1 + r2])
    assert metric(aggs, "apm.request.time_share.db", "api/c/") == pytest.approx(60.0 / 400.0)
    assert metric(aggs, "apm.request.time_share.cache", "api/c/") == pytest.approx(5.0 / 400.0)
    assert metric(aggs, "apm.request.time_share.external", "api/c/") == pytest.approx(35.0 / 400.0)
    assert metric(aggs, "apm.db.queries_per_request.avg", "api/c/") == pytest.approx(1.5)


def test_parallel_children_are_capped_at_the_request_time(tmp_path: Path) -> None:
    """Three 80 ms external calls in parallel inside a 100 ms request count as 100 ms, not 240 ms."""
    root = span()
    trace = "3" * 32
    calls = [rec("external", trace, T0 + 0.09, 80.0, "s3", "GetObject", parent=root) for _ in range(3)]
    req = rec("request", trace, T0 + 0.1, 100.0, "api/par/", "GET", span_id=root, status=200)
    other = request_trace("4" * 32, T0 + 5, "api/par/", [], external=[50.0], dur=100.0)
    aggs, _ = analyse(tmp_path / "s.db", [[*calls, req, *other]])
    # (min(240, 100) + 50) / (100 + 100)
    assert metric(aggs, "apm.request.time_share.external", "api/par/") == pytest.approx(0.75)


def test_queries_per_request_p95_matches_numpy(tmp_path: Path) -> None:
    """The p95 of queries per request comes from a sketch of per-request counts (zeros included) and is
    within 1% of numpy's interpolated percentile."""
    rng = np.random.default_rng(7)
    counts = [int(c) for c in rng.poisson(6, size=400)] + [0] * 30 + [40, 55]
    records: list[TraceRecord] = []
    for i, n in enumerate(counts):
        records += request_trace(f"{i + 1:032x}", T0 + (i % 50), "api/q/",
                                 [(f"fp{j}", 0.5) for j in range(n)])
    aggs, _ = analyse(tmp_path / "s.db", [records])
    assert metric(aggs, "apm.db.queries_per_request.avg", "api/q/") == pytest.approx(np.mean(counts))
    p95 = metric(aggs, "apm.db.queries_per_request.p95", "api/q/")
    assert p95 is not None and p95 == pytest.approx(float(np.percentile(counts, 95)), rel=0.01)


def _summarise(aggs: list[WindowAggregate]) -> dict[tuple[int, str], tuple[object, ...]]:
    merged: dict[tuple[int, str], WindowAggregate] = {}
    for a in aggs:
        key = (a.start, a.series.tag("route"))
        if key not in merged:
            merged[key] = WindowAggregate(a.series, a.start, a.width)
        catalog.merge_into(merged[key], a)
    out: dict[tuple[int, str], tuple[object, ...]] = {}
    for key, a in merged.items():
        assert a.sketch is not None
        out[key] = (a.count, a.errors, a.total, a.min, a.max,
                    tuple(sorted((k, round(v, 6)) for k, v in a.counters.items())), a.sketch.to_bytes())
    return out


def test_traces_split_across_two_runs_give_the_same_result(tmp_path: Path) -> None:
    """For every cut of the event stream into run 1 and run 2, findings and aggregates equal one run's."""
    stream: list[TraceRecord] = []
    for i in range(6):
        queries = [("loop", 1.0 + i)] * (3 + i) + [("other", 2.0)]
        stream += request_trace(f"{i + 1:032x}", T0 + 20 * i, f"api/r{i % 2}/", queries, cache=[1.0],
                                external=[3.0] * (i % 3))
    one_aggs, _ = analyse(tmp_path / "one.db", [stream])
    expected_findings = findings(tmp_path / "one.db")
    expected = _summarise(one_aggs)
    assert len(expected_findings) >= 3
    for cut in range(1, len(stream)):
        path = tmp_path / f"cut{cut}.db"
        aggs1, _ = analyse(path, [stream[:cut]])
        aggs2, _ = analyse(path, [stream[cut:]])
        assert findings(path) == expected_findings, cut
        assert _summarise(aggs1 + aggs2) == expected, cut
        store = Store(path)
        assert counters(store.conn)["pending_events"] == 0
        store.close()


def test_pending_traces_survive_a_run_killed_before_commit(tmp_path: Path) -> None:
    """A run whose transaction rolls back leaves the pending traces as they were (nothing lost or doubled)."""
    stream = request_trace("5" * 32, T0, "api/k/", [("loop", 1.0)] * 6)
    path = tmp_path / "s.db"
    analyse(path, [stream[:4]])
    store = Store(path)
    analyzer = TraceAnalyzer(store, config())
    analyzer.feed(parts(stream[4:]))
    with pytest.raises(RuntimeError), store.transaction():
        analyzer.finish()
        raise RuntimeError("killed before the commit")
    assert counters(store.conn)["pending_events"] == 4
    store.close()
    analyse(path, [stream[4:]])
    assert [r[7] for r in findings(path)] == [6]


def test_pending_traces_expire_in_event_time_and_are_counted(tmp_path: Path) -> None:
    """Events whose request never arrives wait run.trace_pending_seconds of event time, then are counted
    as expired; a cap on pending events drops the oldest traces first, counted too."""
    path = tmp_path / "s.db"
    orphan = [rec("db", "6" * 32, T0, 1.0, "fp"), rec("db", "6" * 32, T0 + 1, 1.0, "fp")]
    cfg = config(**{"run.trace_pending_seconds": 600})
    analyse(path, [orphan], cfg)
    _, a2 = analyse(path, [request_trace("7" * 32, T0 + 300, "api/e/", [])], cfg)
    assert a2.counts["pending_expired_events"] == 0 and a2.pending_events == 2
    _, a3 = analyse(path, [request_trace("8" * 32, T0 + 700, "api/e/", [])], cfg)
    assert a3.counts["pending_expired_events"] == 2 and a3.pending_events == 0

    capped = config(**{"run.trace_pending_max_events": 3})
    path2 = tmp_path / "cap.db"
    old = [rec("db", "9" * 32, T0 + i, 1.0, "fp") for i in range(3)]
    new = [rec("cache", "c" * 32, T0 + 10 + i, 1.0, "get") for i in range(2)]
    _, a4 = analyse(path2, [old + new], capped)
    assert a4.counts["pending_evicted_events"] == 3 and a4.pending_events == 2
    store = Store(path2)
    assert counters(store.conn)["pending_evicted_events"] == 3
    store.close()


def test_a_task_closes_only_its_own_spans(tmp_path: Path) -> None:
    """A task run inside a request takes its own queries, not the request's; a task's trace does not stay
    pending."""
    trace = "d" * 32
    root, task_span = span(), span()
    stream = [
        rec("db", trace, T0 + 0.01, 1.0, "req_q", parent=root),
        rec("db", trace, T0 + 0.02, 1.0, "task_q", parent=task_span),
        rec("task", trace, T0 + 0.03, 5.0, "app.tasks.send", "celery", span_id=task_span, parent=root),
        rec("request", trace, T0 + 0.05, 50.0, "api/t/", "POST", span_id=root, status=201),
        rec("db", "e" * 32, T0 + 0.1, 1.0, "bg_q", parent="f" * 16),
        rec("task", "e" * 32, T0 + 0.2, 150.0, "app.tasks.bg", span_id="f" * 16),
    ]
    aggs, analyzer = analyse(tmp_path / "s.db", [stream])
    assert metric(aggs, "apm.db.queries_per_request.avg", "api/t/") == 1.0
    assert analyzer.counts["task_traces_completed"] == 2
    assert analyzer.pending_events == 0


def test_trace_aggregates_render_every_trace_metric(tmp_path: Path) -> None:
    """The catalog renders a trace aggregate into the design's metric names, tagged by route."""
    aggs, _ = analyse(tmp_path / "s.db", [request_trace("1" * 32, T0, "api/m/", [("a", 1.0)] * 5,
                                                        cache=[1.0], external=[1.0], dur=10.0)])
    (agg,) = aggs
    points = {p.metric: p for p in catalog.points(agg, "apm")}
    assert set(points) == {
        "apm.request.time_share.db", "apm.request.time_share.cache", "apm.request.time_share.external",
        "apm.db.queries_per_request.avg", "apm.db.queries_per_request.p95", "apm.db.n_plus_one",
    }
    assert points["apm.db.n_plus_one"].type == "count"
    assert points["apm.request.time_share.db"].value == pytest.approx(0.5)
    assert all(p.tags == (("route", "api/m/"),) and p.timestamp == T0 for p in points.values())


def test_summary_escapes_control_characters_from_the_logs(tmp_path: Path) -> None:
    """A route or query text carrying an ANSI escape is printed escaped in the run summary."""
    evil_route = "api/\x1b[31mred\x1b[0m/"
    records = request_trace("1" * 32, T0, evil_route, [("fp", 1.0)] * 5)
    records = [r._replace(detail="SELECT \x1b]0;pwned\x07") if r.kind == "db" else r for r in records]
    _, analyzer = analyse(tmp_path / "s.db", [records])
    store = Store(tmp_path / "s.db")
    for text in ("\n".join(analyzer.summary_lines()), "\n".join(summary_lines(store))):
        assert "\x1b" not in text and "\x07" not in text
        assert "api/\\x1b[31mred\\x1b[0m/" in text and "\\x1b]0;pwned\\x07" in text
    store.close()


def test_a_run_without_trace_events_writes_nothing(tmp_path: Path) -> None:
    """No records: no aggregates, no findings, no pending rows, and the summary says so."""
    aggs, analyzer = analyse(tmp_path / "s.db", [])
    assert aggs == [] and findings(tmp_path / "s.db") == []
    assert analyzer.summary_lines()[0].startswith("traces: 0 requests analysed, 0 traces pending")
    assert math.isinf(analyzer._newest)


def test_extract_keeps_only_traced_operations_as_small_records() -> None:
    """extract() keeps request/db/cache/external/task events with a trace id, as picklable records with
    the kind's names; metric events and untraced events are dropped."""
    import pickle

    from parsers.event import Event

    tid, sid, pid = "ab" * 16, "cd" * 8, "ef" * 8
    events = [
        Event(timestamp="x", schema=1, kind="db", duration_ms=1.5, trace_id=tid, span_id=sid, parent_span_id=pid,
              db_system="sqlite", db_query_text="SELECT ?", db_query_fingerprint="f1", db_collection_name="t",
              ts=T0),
        Event(timestamp="x", schema=1, kind="db", duration_ms=1.0, db_system="sqlite", ts=T0),  # no trace id
        Event(timestamp="x", schema=1, kind="db", duration_ms=1.0, trace_id=tid, db_system="sqlite",
              db_query_text="SELECT 2", ts=T0),  # no fingerprint: derived from the text
        Event(timestamp="x", schema=1, kind="cache", duration_ms=0.2, trace_id=tid, cache_name="default",
              cache_operation="get", cache_hit=False, ts=T0),
        Event(timestamp="x", schema=1, kind="external", duration_ms=9.0, trace_id=tid, peer_service="s3",
              external_operation="PutObject", http_response_status_code=503, outcome="failure", ts=T0),
        Event(timestamp="x", schema=1, kind="metric", trace_id=tid, metric_name="m", metric_type="count",
              metric_value=1.0, ts=T0),
        Event(timestamp="x", schema=1, kind="request", duration_ms=20.0, trace_id=tid, span_id=pid,
              http_request_method="GET", http_route="api/x/", http_response_status_code=200, ts=T0 + 1),
    ]
    from aggregator.insights.records import as_record, extract_records

    raw = extract_records(events)
    assert all(type(r) is tuple for r in raw)  # plain tuples: pickled in C on the way to the parent
    records = [as_record(r) for r in raw]
    assert [r.kind for r in records] == ["db", "db", "cache", "external", "request"]
    db, db2, cache, ext, req = records
    assert (db.trace_id, db.span_id, db.parent_span_id, db.name, db.detail, db.extra) == (
        tid, sid, pid, "f1", "SELECT ?", "t")
    assert db.end == T0 and db.duration_ms == 1.5 and db.start == pytest.approx(T0 - 0.0015)
    assert db2.name is None and db2.detail == "SELECT 2"
    assert (cache.name, cache.detail, cache.extra) == ("get", "default", False)
    assert (ext.name, ext.detail, ext.status, ext.failed) == ("s3", "PutObject", 503, True)
    assert (req.name, req.detail, req.status) == ("api/x/", "GET", 200)
    assert pickle.loads(pickle.dumps(raw)) == raw


def test_open_traces_stay_bounded_within_a_long_run(tmp_path: Path) -> None:
    """Orphan events (no request will ever come) are capped during a run too, not only at its end."""
    store = Store(tmp_path / "s.db")
    analyzer = TraceAnalyzer(store, config(**{"run.trace_pending_max_events": 100}))
    for batch in range(50):
        analyzer.feed(parts([rec("db", f"{batch:08x}{i:024x}", T0 + batch, 1.0, "fp") for i in range(40)]))
        assert sum(t.events for t in analyzer._open.values()) == analyzer._open_events <= 125 + 40
    with store.transaction():
        analyzer.finish()
    assert analyzer.pending_events <= 100
    assert analyzer.counts["pending_evicted_events"] == 50 * 40 - analyzer.pending_events
    store.close()


def test_a_chunk_becomes_one_small_part_per_trace() -> None:
    """``partials.summarize`` (the per-part reference) makes one plain tuple per trace piece, not one per
    event; operations written after their trace's request event start a new piece instead of joining the
    finished request."""
    import pickle

    from aggregator.insights.partials import TracePart

    stream = request_trace("1" * 32, T0, "api/p/", [("loop", 1.0)] * 6 + [("x", 2.0)], cache=[0.5],
                           external=[4.0], dur=50.0)
    late = rec("db", "1" * 32, T0 + 1, 3.0, "late")
    chunk = summarize([as_event(r) for r in [*stream, late]])
    assert all(type(p) is tuple for p in chunk) and len(chunk) == 2
    done, rest = (TracePart(*p) for p in chunk)
    assert done.request is not None and done.events == len(stream)
    assert (done.queries, done.db_ms, done.cache_ms, done.external_ms) == (7, 8.0, 0.5, 4.0)
    assert done.fingerprints["loop"][:2] == [6, 6.0]
    assert rest.request is None and rest.events == 1 and rest.fingerprints["late"][:2] == [1, 3.0]
    assert len(pickle.dumps(chunk)) < 30 * len(stream) + 400


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shapes=st.lists(st.tuples(st.integers(0, 9), st.integers(0, 2), st.integers(0, 2)), min_size=1,
                       max_size=8),
       cuts=st.lists(st.floats(0, 1), min_size=0, max_size=4))
def test_any_chunking_and_run_split_gives_the_one_shot_result(tmp_path: Path, shapes: list[tuple[int, int, int]],
                                                              cuts: list[float]) -> None:
    """Property: however the stream is cut into decoder chunks and runs, findings and aggregates equal
    those of one chunk in one run (traces interleaved as concurrent requests are)."""
    streams = []
    for i, (loops, caches, externals) in enumerate(shapes):
        streams.append(request_trace(f"{i + 1:032x}", T0 + i * 7, f"api/h{i % 3}/", [("loop", 1.0)] * loops
                                     + [("one", 2.0)], cache=[0.5] * caches, external=[4.0] * externals))
    # Interleave the traces' events round-robin; each trace keeps its own order (request last).
    stream: list[TraceRecord] = []
    for group in itertools.zip_longest(*streams):
        stream.extend(r for r in group if r is not None)
    positions = sorted({int(c * len(stream)) for c in cuts} | {0, len(stream)})
    chunks = [stream[a:b] for a, b in itertools.pairwise(positions)]
    base = tmp_path / f"{uuid.uuid4().hex}"
    base.mkdir()
    one_aggs, _ = analyse(base / "one.db", [stream])
    split_aggs: list[WindowAggregate] = []
    for i, chunk in enumerate(chunks):  # odd chunks in a new run, even ones as a second chunk of a run
        if i % 2 == 0:
            aggs, _ = analyse(base / "split.db", [chunk])
        else:
            aggs, _ = analyse(base / "split.db", [chunk[: len(chunk) // 2], chunk[len(chunk) // 2:]])
        split_aggs += aggs
    assert findings(base / "split.db") == findings(base / "one.db")
    assert _summarise(split_aggs) == _summarise(one_aggs)


def test_a_packed_open_trace_gives_back_the_same_values() -> None:
    """The parent keeps open traces packed (partials.PackedTrace): the same numbers, the same fingerprint
    order, the same entries, and the same stored JSON, zero sums of either sign included."""
    import orjson

    from aggregator.insights.partials import OpenTrace, PackedTrace, pack

    ops = OpenTrace()
    ops.newest, ops.events, ops.queries = T0, 7, 5
    ops.db_ms, ops.cache_ms, ops.external_ms = 3.25, 0.0, -0.0
    ops.fingerprints = {"b": [3, 1.5, "SELECT b", "tb"], "a": [2, 1.75, None, None], "": [0, 0.0, "", ""]}
    packed = pack(ops)
    assert type(packed) is PackedTrace
    back = packed.unpack()
    for name in ("newest", "events", "queries", "db_ms", "cache_ms", "external_ms"):
        assert repr(getattr(back, name)) == repr(getattr(ops, name)) == repr(getattr(packed, name))
    assert list(back.fingerprints.items()) == list(ops.fingerprints.items())
    assert orjson.dumps(packed.fingerprints) == orjson.dumps(ops.fingerprints)
    assert pack(back) == packed


@pytest.mark.parametrize("columns", [False, True])
def test_open_traces_are_trimmed_to_the_cap_once_a_quarter_over_it(tmp_path: Path, columns: bool) -> None:
    """The trim during a run: nothing evicted up to 1.25 times the cap, back to the cap (oldest traces first)
    past it; the analyzer's running count of open events stays the sum of what is open through orphans,
    requests that take open traces, and root tasks that drop them, on both feeding paths."""
    store = Store(tmp_path / "s.db")
    analyzer = TraceAnalyzer(store, config(**{"run.trace_pending_max_events": 100}))

    def feed(batch: list[TraceRecord]) -> None:
        events = [as_event(r) for r in batch]
        analyzer.feed(extract(events) if columns else summarize(events))
        assert analyzer._open_events == sum(t.events for t in analyzer._open.values())

    feed([rec("db", f"{i:032x}", T0 + i, 1.0, "fp") for i in range(125)])  # 125 events: not over 1.25 x 100
    assert len(analyzer._open) == 125 and analyzer.counts["pending_evicted_events"] == 0
    feed([rec("db", f"{125:032x}", T0 + 125, 1.0, "fp")])  # one more: trimmed back to 100, oldest first
    assert analyzer._open_events == 100 and analyzer.counts["pending_evicted_events"] == 26
    assert min(analyzer._open) == f"{26:032x}"
    # a request takes its open trace, a root task drops its own, an orphan piece joins its open trace
    feed([*request_trace(f"{30:032x}", T0 + 200, "api/x/", [("q", 1.0)]),
          rec("task", f"{31:032x}", T0 + 201, 1.0, "job"), rec("db", f"{32:032x}", T0 + 202, 1.0, "fp")])
    assert analyzer._open_events == 99 and f"{30:032x}" not in analyzer._open
    assert analyzer._open[f"{32:032x}"].events == 2
    with store.transaction():
        analyzer.finish()
    assert analyzer.pending_events == 99 and analyzer.counts["traces_completed"] == 1
    store.close()


@given(st.lists(st.tuples(st.integers(0, 5), st.integers(1, 4)), min_size=1, max_size=60), st.integers(1, 40))
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_a_trim_drops_what_a_sort_drops(tmp_path: Path, traces: list[tuple[int, int]], cap: int) -> None:
    """The trim (numpy) drops the traces a plain sort finds: the expired ones, then the oldest newest event
    first, ties by trace id (many here), until the rest fit the cap; with the same counters. ``_expire``
    (finish's) gives back what stays, oldest first; both tell what stays in the dict's order (newest events and
    events; ``_expire`` the ids too)."""
    from aggregator.insights.partials import PackedTrace

    open_ = {f"{(i * 7919) % 101:04x}{i}": tuple.__new__(PackedTrace, (T0 + age, events, 0, 0.0, 0.0, 0.0))
             for i, (age, events) in enumerate(traces)}
    horizon = T0 + 6 - 4
    expired = sum(t.events for t in open_.values() if t.newest < horizon)
    kept = sorted((t.newest, tid) for tid, t in open_.items() if t.newest >= horizon)
    total = sum(open_[tid].events for _, tid in kept)
    while kept and total > cap:
        total -= open_[kept.pop(0)[1]].events
    want = [(tid, open_[tid]) for _, tid in kept]

    def analyzer_with_open() -> TraceAnalyzer:
        a = TraceAnalyzer(None, config(**{"run.trace_pending_max_events": cap, "run.trace_pending_seconds": 4}))
        for trace_id, trace in open_.items():  # (opened in this order: the table reads as the dict did)
            a._open[trace_id] = trace
        a._newest = T0 + 6
        return a

    trimmed, finished = analyzer_with_open(), analyzer_with_open()
    new, ev, keep = trimmed._trim()
    stays = (list(trimmed._open), new, ev) if keep is None else (list(trimmed._open), new[keep], ev[keep])
    trace_ids, opens, newest, events, order = finished._expire()
    assert [(trace_ids[i], opens[i]) for i in order] == want
    assert sorted(trimmed._open.items()) == sorted(want)
    for a, (ids, new, ev) in ((trimmed, stays), (finished, (trace_ids, newest, events))):
        assert ids == list(a._open) and list(a._open.values()) == opens
        assert new.tolist() == [t.newest for t in opens] and ev.tolist() == [t.events for t in opens]
    for a in (trimmed, finished):
        assert a.counts["pending_expired_events"] == expired
        assert a.counts["pending_evicted_events"] == sum(t.events for t in open_.values()) - expired - total
        assert a._open_events == total == sum(t.events for t in a._open.values())


def test_query_fingerprint_is_hashlibs_blake2b() -> None:
    """``query_fingerprint`` gives hashlib's 8-byte BLAKE2b hex digest of the text (what stored findings hold)."""
    import hashlib

    from aggregator.insights.records import query_fingerprint

    for text in ("SELECT * FROM t WHERE id = ?", "", "é \udcff"):
        want = hashlib.blake2b(text.encode("utf-8", "replace"), digest_size=8).hexdigest()
        assert query_fingerprint(text) == want
