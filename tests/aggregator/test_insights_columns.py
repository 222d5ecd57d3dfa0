"""The columnar trace path (``columns.summarize_batch`` in the decoders, ``TraceAnalyzer`` taking batches in
bulk) gives exactly what the per-part path (``partials.summarize`` tuples, one ``_add`` each) gives: the same
window aggregates (the same counts and sketches, time sums within rounding: see ``Near``), N+1 findings,
counters and stored open traces, on a
generated log cut into decoder chunks, parts and two runs."""

from __future__ import annotations

import itertools
import math
import pickle
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aggregator.config import load_config
from aggregator.insights.columns import (
    KEY_SEPARATOR,
    TraceBatch,
    _codes,
    _counts,
    _dense,
    _packed_ids,
    _trace_codes,
    summarize_batch,
    window_numbers,
)
from aggregator.insights.findings import load_open_traces
from aggregator.insights.partials import summarize
from aggregator.insights.traces import TraceAnalyzer, _Keys, extract, finish_part
from aggregator.loggen import generate_events, write_log
from aggregator.store import Store
from parsers import LineParser
from parsers.event import Event, Kind

T0 = 1_764_399_960.0


def realistic_events(n: int, seed: int) -> list[dict[str, Any]]:
    """loggen's mix, plus what it lacks: N+1 loops (long traces repeating a fingerprint), queries with only
    a text or with neither, events without a trace, -0.0 durations, tasks that own queries."""
    events = generate_events(n, start=T0, seconds=1800.0, seed=seed)
    for block in range(0, n - 16, 16 * 7):  # every 7th block of 16 events: one request with a loop
        trace = events[block]["trace_id"]
        for j in range(16):
            e = events[block + j]
            e["trace_id"] = trace
            if j < 11 and e["apm.kind"] != "db":
                continue
            if j == 11:
                e.clear()
                e.update({"timestamp": events[block + j - 1]["timestamp"], "apm.schema": 1, "apm.kind": "request",
                          "duration_ms": 40.0, "outcome": "success", "trace_id": trace,
                          "span_id": f"{block:016x}", "http.request.method": "GET",
                          "http.route": "api/stories/", "http.response.status_code": 200})
            elif e["apm.kind"] == "db":
                e["db.query.fingerprint"] = f"loop{block % 3}"
    for i, e in enumerate(events):
        if e["apm.kind"] == "db" and i % 23 == 0:
            e.pop("db.query.fingerprint")  # the text's fingerprint is used
            if i % 2:
                e.pop("db.query.text")  # neither: counted, not grouped
        if i % 97 == 0:
            e.pop("trace_id")
            e.pop("parent_span_id", None)
        if e["apm.kind"] in ("db", "cache") and i % 31 == 0:
            e["duration_ms"] = -0.0
    return events


def chunks_of(path: Path, chunk_bytes: int) -> list[list[Any]]:
    data = path.read_bytes()
    parser = LineParser(now=T0 + 7200)
    out, pos = [], 0
    while pos < len(data):
        end = data.find(b"\n", min(pos + chunk_bytes, len(data) - 1)) + 1 or len(data)
        out.append(parser.parse(data[pos:end], str(path), pos).events)
        pos = end
    return out


def open_trace_rows(conn: Any) -> list[tuple[Any, ...]]:
    """The stored open traces in their order, each as the row the table had before the rows of columns (the
    fingerprints as their dict)."""
    return [(t, o.newest, o.events, o.queries, o.db_ms, o.cache_ms, o.external_ms, o.fingerprints)
            for t, o in load_open_traces(conn)]


SUMS = ("request_ms", "db_ms", "cache_ms", "external_ms")


class Near:
    """One of a ``trace`` window's time sums, compared within 1e-12 of itself: the columnar path adds each part's
    requests summed per window and route (``columns.request_sums``, in the workers) and corrects the few whose
    trace was open before their chunk, where the per-part reference adds its requests one at a time, so the two
    may round differently. Every other figure (counts, queries, sketches, findings, open traces) stays exact."""

    __slots__ = ("value",)

    def __init__(self, value: float) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Near) and math.isclose(self.value, other.value, rel_tol=1e-12, abs_tol=0.0)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"~{self.value!r}"


def state(store_path: Path, aggs: list[Any], near: bool = False) -> tuple[Any, ...]:
    """What the runs stored and returned: per aggregate its repr (with its time sums as ``Near`` beside it when
    ``near``), then the findings, open traces and counters tables' reprs."""
    store = Store(store_path)
    try:
        conn = store.conn
        tables = (list(conn.execute("SELECT * FROM insights_n_plus_one ORDER BY rowid")), open_trace_rows(conn),
                  list(conn.execute("SELECT * FROM insights_counters ORDER BY rowid")))
    finally:
        store.close()
    shown = []
    for a in aggs:
        counters = [(k, v, type(v)) for k, v in a.counters.items() if not (near and k in SUMS)]
        # repr: -0.0 and 0.0 compare equal, their reprs do not
        shown.append((repr((a.series, a.start, a.width, a.count, a.errors, a.total, a.min, a.max, type(a.total),
                            type(a.min), counters, a.sketch.to_bytes())),
                      [(k, Near(v), type(v)) for k, v in a.counters.items() if near and k in SUMS]))
    return (shown, *(repr(t) for t in tables))


def each_run(store_path: Path, runs: list[list[list[list[Any]]]], to_parts: Callable[[list[Any]], list[Any]],
             cfg: dict[str, Any], analyzer_cls: type[TraceAnalyzer] = TraceAnalyzer,
             worker_sums: bool = True) -> Iterator[list[Any]]:
    """Each run's aggregates, after its commit; each run is a list of engine parts, each part a list of
    decoder chunks. A part's batches come with their ``RequestSums`` (``finish_part``, as a worker sends them)
    unless not ``worker_sums`` (then the analyzer sums them)."""
    for parts in runs:
        store = Store(store_path)
        config = load_config(environ={}, overrides=cfg)
        analyzer = analyzer_cls(store, config)
        for part in parts:
            records = [p for chunk in part for p in to_parts(chunk)]
            if worker_sums:
                records = finish_part(records, int(config["run.window_seconds"]))
            # pickled as a worker's PartResult is, on its way to the parent
            analyzer.feed(pickle.loads(pickle.dumps(records)))
        with store.transaction():
            aggs = analyzer.finish()
        store.close()
        yield aggs


def run_all(store_path: Path, runs: list[list[list[list[Any]]]], to_parts: Callable[[list[Any]], list[Any]],
            cfg: dict[str, Any], near: bool = False, worker_sums: bool = True) -> tuple[Any, ...]:
    """The state after the runs, with the aggregates of them all (``state``; ``near``: the time sums apart)."""
    return state(store_path, [a for aggs in each_run(store_path, runs, to_parts, cfg, worker_sums=worker_sums)
                              for a in aggs], near)


@pytest.mark.parametrize(("chunk_bytes", "cfg"), [
    (40_000, {}),
    (9_000, {"run.n_plus_one_threshold": 2}),
    (25_000, {"run.trace_pending_max_events": 300, "run.window_seconds": 10}),
    (60_000, {"run.n_plus_one_threshold": 0, "run.trace_pending_seconds": 60}),
    (150_000, {}),  # batches of ~200 requests (uint8 codes), parts of more than 256
])
def test_columns_give_the_per_part_result(tmp_path: Path, chunk_bytes: int, cfg: dict[str, Any]) -> None:
    log = tmp_path / "app.log"
    write_log(log, realistic_events(12_000, seed=3), ordinary_every=17)
    chunks = chunks_of(log, chunk_bytes)
    assert len(chunks) > 20
    # parts of three chunks; the second run starts in the middle of a part's worth of chunks
    parts = [chunks[i:i + 3] for i in range(0, len(chunks), 3)]
    cut = len(parts) // 2
    runs = [parts[:cut], parts[cut:]]
    old = run_all(tmp_path / "old.db", runs, summarize, cfg, near=True)
    new = run_all(tmp_path / "new.db", runs, extract, cfg, near=True)
    assert old == new
    # the parts' batches without their RequestSums: the analyzer sums them as a worker does, the same doubles
    assert repr(run_all(tmp_path / "bare.db", runs, extract, cfg, near=True, worker_sums=False)) == repr(new)
    aggs, findings, open_traces, counters = new
    assert aggs and open_traces != "[]" and counters != "[]"
    if cfg.get("run.n_plus_one_threshold", 5) > 0:
        assert findings != "[]"


def test_a_batch_holds_the_pieces_summarize_makes(tmp_path: Path) -> None:
    """Read back as tuples, a batch has the pieces ``summarize`` makes, with the same sums (compared by
    repr, so -0.0 and 0.0 differ); rests in any order."""
    log = tmp_path / "app.log"
    write_log(log, realistic_events(4_000, seed=5))
    for chunk in chunks_of(log, 30_000):
        expected = summarize(chunk)
        requests, rests = as_tuples(summarize_batch(chunk))
        assert repr(requests) == repr([(p[0], p[4], p[5], p[6], p[7], p[8], p[9][0], p[9][1], p[9][3] or "",
                                        p[9][4] or "", p[9][2] == "failure" or (p[9][5] or 0) >= 500)
                                       for p in expected if p[1] == "p" and p[9] is not None])
        assert sorted(map(repr, rests)) == sorted(repr(p) for p in expected if p[1] == "p" and p[9] is None)


def as_tuples(b: TraceBatch) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Requests as (trace, queries, db, cache, external, fingerprints, end, duration, route, method, failed);
    rests as parts."""
    fps: dict[int, dict[str, list[Any]]] = {}
    for owner, key, n, ms, text, table in zip(b.fp_owner.tolist(), b.keys(b.fp_key), b.fp_n.tolist(),
                                              b.fp_ms.tolist(), b.fp_text.tolist(), b.fp_table.tolist(),
                                              strict=True):
        fps.setdefault(owner, {})[key] = [n, ms, b.fp_texts[text], b.fp_tables[table]]
    db, cache, external = b.req_db_ms(), b.req_cache_ms(), b.req_external_ms()
    requests = [(b.traces[b.req_trace[j]], int(b.req_queries[j]), float(db[j]), float(cache[j]),
                 float(external[j]), fps.get(j, {}), float(b.req_end[j]), float(b.req_dur[j]),
                 b.routes[b.req_route[j]], b.methods[b.req_method[j]], bool(b.req_failed[j]))
                for j in range(b.requests)]
    rests = [(b.traces[b.rest_trace[s]], "p", float(b.rest_newest[s]), int(b.rest_events[s]),
              int(b.rest_queries[s]), float(b.rest_db[s]), float(b.rest_cache[s]), float(b.rest_external[s]),
              fps.get(b.requests + s, {}), None) for s in range(b.rest_trace.size)]
    return requests, rests


def _event(kind: Kind, trace: str | None, span: str, parent: str | None, ts: float, dur: float,
           draw: Callable[[list[Any]], Any]) -> Any:
    fields: dict[str, Any] = {}
    if kind == "request":
        fields = {"http_route": draw(["api/a/", "api/b/", "", None]), "http_request_method": draw(["GET", None]),
                  "http_response_status_code": draw([200, 503, None]), "outcome": draw(["success", "failure", None])}
    elif kind == "db":
        fields = {"db_system": "sqlite", "db_query_fingerprint": draw(["f1", "f2", "f3", "", None]),
                  "db_query_text": draw(["SELECT 1", "SELECT 2", "", None]), "db_collection_name": draw(["t", "", None])}
    elif kind == "task":
        fields = {"task_name": "job"}
    elif kind == "metric":
        return Event(timestamp="-", schema=1, kind="metric", trace_id=trace, metric_name="m", metric_type="count",
                     metric_value=1.0, ts=ts)
    return Event(timestamp="-", schema=1, kind=kind, duration_ms=dur, trace_id=trace, span_id=span,
                 parent_span_id=parent, ts=ts, **fields)


@pytest.mark.parametrize("seed", range(12))
def test_random_streams_give_the_per_part_result(tmp_path: Path, seed: int) -> None:
    """Odd streams (few traces, shared span ids, tasks owning queries across traces, missing fields, -0.0,
    requests without operations, chunks of one event) cut at random: both paths agree."""
    rng = random.Random(seed)
    draw = rng.choice
    traces = [f"{i:032x}" for i in range(1, rng.randint(2, 9))] + [None]
    spans = [f"{i:016x}" for i in range(1, 12)]
    kinds: list[Kind] = ["request", "db", "db", "db", "cache", "external", "task", "metric"]
    events = []
    for i in range(rng.randint(1, 400)):
        kind = draw(kinds)
        parent = draw([*spans, None]) if kind != "request" else None
        events.append(_event(kind, draw(traces), draw(spans), parent, T0 + i * rng.choice([0.5, 7.0, 400.0]),
                             draw([0.0, -0.0, 1.5, 0.25, 3.0, 1e-3]), draw))
    cuts = sorted({0, len(events), *(rng.randint(0, len(events)) for _ in range(rng.randint(0, 12)))})
    chunks = [events[a:b] for a, b in itertools.pairwise(cuts) if b > a]
    parts = [chunks[i:i + 2] for i in range(0, len(chunks), 2)]
    runs = [parts[: len(parts) // 2], parts[len(parts) // 2:]]
    cfg = draw([{}, {"run.n_plus_one_threshold": 1}, {"run.n_plus_one_threshold": 2,
                                                       "run.trace_pending_max_events": 5,
                                                       "run.trace_pending_seconds": 900}])
    assert run_all(tmp_path / "old.db", runs, summarize, cfg, near=True) == run_all(tmp_path / "new.db", runs, extract,
                                                                                    cfg, near=True)


def test_negative_durations_give_the_per_part_result(tmp_path: Path) -> None:
    """Requests of negative duration (the parser admits none; an Event can hold one) cap each of their times at
    it, zeros too: ``request_sums`` then sums whole columns, not only their entries."""
    rng = random.Random(3)
    events = []
    for i in range(300):
        trace = f"{i // 3:032x}"
        kind: Kind = "request" if i % 3 == 2 else rng.choice(["db", "cache", "external"])
        events.append(_event(kind, trace, f"{i + 1:016x}", None, T0 + i, rng.choice([-2.0, -0.0, 0.5, 4.0]),
                             rng.choice))
    chunks = [events[i:i + 40] for i in range(0, len(events), 40)]
    runs = [[chunks[i:i + 2] for i in range(0, len(chunks), 2)]]
    assert run_all(tmp_path / "old.db", runs, summarize, {}, near=True) == run_all(tmp_path / "new.db", runs,
                                                                                  extract, {}, near=True)


def test_keys_read_one_by_one_are_the_split_keys() -> None:
    """``traces._Keys`` gives each fingerprint of a batch's ``fp_keys`` as splitting them gives it: ASCII (read
    between the separators), not ASCII (split), a list (a fingerprint held the separator), empty ones too."""
    for keys in (["a1", "", "bbb", "c"], ["", ""], ["x"], ["é1", "ab", "ü"], ["a\x00b", "c"]):
        joined = KEY_SEPARATOR.join(keys)
        form: str | list[str] = joined if joined.count(KEY_SEPARATOR) == len(keys) - 1 else keys
        one_by_one = _Keys(form)
        assert [one_by_one[k] for k in reversed(range(len(keys)))] == keys[::-1]
        assert _Keys(form).all() == keys == one_by_one.all()


def test_trace_ids_pickle_as_one_string_and_come_back_as_they_were(tmp_path: Path) -> None:
    """A batch's trace ids travel as one string and where None stands (``_packed_ids``), or as the list when
    that cannot hold them: either way they come back the same (types too)."""
    log = tmp_path / "app.log"
    write_log(log, realistic_events(300, seed=2))
    (batch,) = extract(chunks_of(log, 10**9)[0])
    assert None in batch.traces and type(_packed_ids(batch.traces)) is tuple  # (an event without a trace id)
    for ids in ([None], ["a"], ["", "a"], ["a", ""], [""], ["x", None], ["a", None, "b"], ["x\x00y", "z"],
                [None, None, "a"], ["a", None, 3], [], batch.traces):
        copy = pickle.loads(pickle.dumps(batch))
        copy.traces = list(ids)
        back = pickle.loads(pickle.dumps(copy))
        assert [(type(x), x) for x in back.traces] == [(type(x), x) for x in ids]
        assert back.differences(copy) == []


def test_dense_and_counts_are_numpys_unique() -> None:
    """The counting shortcuts give np.unique's answers, for narrow and for wide (sorted) key ranges."""
    rng = np.random.default_rng(4)
    for low, high in ((0, 1), (-50, 50), (-10_000, 10_000), (0, 10**12)):
        keys = rng.integers(low, high, size=300)
        for got, want in ((_dense(keys), np.unique(keys, return_inverse=True)),
                          (_counts(keys - low), np.unique(keys - low, return_counts=True))):
            assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))


def test_window_numbers_are_pythons_floor_division() -> None:
    """``window_numbers`` gives ``int(end // width)`` as Python computes it (``_complete`` and the parent's
    corrections take windows so), at and beside window boundaries too."""
    rng = np.random.default_rng(5)
    for width in (1, 7, 10, 60, 300, 3600, 86400):
        at = np.concatenate([rng.integers(-2**30, 2**53 // width // 2, 20_000), 2 ** np.arange(45)]) * float(width)
        ends = np.concatenate([at, np.nextafter(at, -np.inf), np.nextafter(at, np.inf),
                               np.nextafter(np.nextafter(at, -np.inf), -np.inf), rng.uniform(0, 2e9, 5_000)])
        got = window_numbers(ends, width)
        assert got.dtype == np.int64
        assert got.tolist() == [int(end // width) for end in ends.tolist()]


def test_chunks_without_traces_send_nothing(tmp_path: Path) -> None:
    """A chunk with no trace id, or only metrics and untraced events, becomes no batch at all."""
    events = generate_events(500, start=T0, seed=9)
    for e in events:
        e.pop("trace_id")
        e.pop("parent_span_id", None)
    log = tmp_path / "app.log"
    write_log(log, events)
    (chunk,) = chunks_of(log, 10**9)
    assert extract(chunk) == [] and summarize(chunk) == []
    assert extract([]) == []
    assert extract([e for e in chunks_of(tmp_path / "app.log", 10**9)[0] if e.kind == "metric"]) == []


def test_codes_give_first_appearance_codes_and_where_none_is() -> None:
    """``_codes`` and ``_trace_codes`` (which hashes only the first id of each run) agree with a plain loop,
    None included, and say which code None has."""
    rng = random.Random(7)
    for _ in range(200):
        values = [rng.choice([None, "a", "b", "", "c" * 32]) for _ in range(rng.randint(0, 12))]
        table: list[Any] = []
        for v in values:
            if v not in table:
                table.append(v)
        want = ([table.index(v) for v in values], table, table.index(None) if None in table else -1)
        for codes, got_table, none in (_codes(values), _trace_codes(values)):
            assert (codes.tolist(), got_table, none) == want
            assert codes.dtype == np.int32


def test_wide_counts_and_many_traces_give_the_per_part_result(tmp_path: Path) -> None:
    """What the narrow columns must widen for: a request of 300 queries (past uint8), one whose trace's open
    queries and its own add up past 255 only in the parent, chunks of more than 256 traces (uint16 codes) and
    fingerprints holding the separator of ``fp_keys`` (sent as a list then)."""
    def db(trace: str, ts: float, key: str) -> Event:
        return Event(timestamp="-", schema=1, kind="db", duration_ms=0.5, trace_id=trace, span_id="1" * 16,
                     ts=ts, db_system="sqlite", db_query_fingerprint=key, db_query_text="SELECT 1")

    def request(trace: str, ts: float) -> Event:
        return Event(timestamp="-", schema=1, kind="request", duration_ms=9.0, trace_id=trace, span_id="2" * 16,
                     ts=ts, http_route="api/a/", http_request_method="GET", http_response_status_code=200)

    wide, split, many = "a" * 32, "b" * 32, [f"{i:032x}" for i in range(1, 400)]
    first = [db(wide, T0 + i * 1e-3, f"k{i % 3}") for i in range(300)] + [request(wide, T0 + 1)]
    first += [db(split, T0 + 2 + i * 1e-3, "x\x00y" if i % 2 else "k0") for i in range(200)]
    second = [db(split, T0 + 3 + i * 1e-3, "x\x00y") for i in range(100)] + [request(split, T0 + 4)]
    third = [e for i, t in enumerate(many) for e in (db(t, T0 + 5 + i, f"k{i}"), request(t, T0 + 5.5 + i))]
    batches = [b for chunk in (first, second, third) for b in extract(chunk)]
    assert [b.req_queries.dtype for b in batches] == [np.uint16, np.uint8, np.uint8]
    assert isinstance(batches[0].fp_keys, list) and isinstance(batches[2].fp_keys, str)
    assert batches[2].req_trace.dtype == np.uint16
    for cfg in ({}, {"run.n_plus_one_threshold": 2}):
        runs = [[[first, second]], [[third]]]
        assert run_all(tmp_path / "old.db", runs, summarize, cfg, near=True) == run_all(tmp_path / "new.db", runs, extract,
                                                                                    cfg, near=True)
        (tmp_path / "old.db").unlink()
        (tmp_path / "new.db").unlink()
