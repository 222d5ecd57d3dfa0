"""The trace summary in C (``aggregator/insights/_summary.c``, ``columns._summarize_native``) gives the batch the
numpy path gives (``columns.summarize_columns`` without the extension), field by field (``TraceBatch.differences``:
arrays by dtype and bytes, -0.0 apart from 0.0, lists item by item with their types), and leaves to the numpy
path exactly the chunks it must (a kept query without a fingerprint, or with an empty one)."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_insights_columns import T0, chunks_of, realistic_events
from test_insights_columns_native import cut_at_random, stream

from aggregator.insights import columns
from aggregator.insights.columns import TraceBatch, request_sums, summarize_columns
from aggregator.loggen import generate_events, write_log
from parsers import scan
from parsers.columns import EventColumns, from_events
from parsers.event import Event, Kind

pytestmark = pytest.mark.skipif(columns._native is None,
                                reason="aggregator.insights._summary not built, or LOGAPM_NATIVE=0")


def numpy_batch(cols: EventColumns, monkeypatch: pytest.MonkeyPatch) -> TraceBatch:
    with monkeypatch.context() as m:
        m.setattr(columns, "_native", None)
        return summarize_columns(cols)


def same(cols: EventColumns, monkeypatch: pytest.MonkeyPatch) -> TraceBatch | None:
    """The C batch of these columns, checked identical to the numpy path's; None where C leaves it to numpy
    (then ``summarize_columns`` is the numpy path's batch all the same)."""
    want = numpy_batch(cols, monkeypatch)
    got = columns._summarize_native(cols)
    assert summarize_columns(cols).differences(want) == []
    if got is not None:
        # the trace ids as pickled (from the native scanner's table: ScannedIds.pack) are the list's
        state, want_state = got.__getstate__()[columns._TRACES], want.__getstate__()[columns._TRACES]
        assert (type(state), state) == (type(want_state), want_state)
        assert got.differences(want) == [], f"{got.differences(want)} differ"
    return got


def scanned_chunks(path: Path, chunk_bytes: int) -> Iterator[EventColumns]:
    """The native scanner's columns of the log's chunks (as a worker has them), or ``from_events``' where it is
    not built."""
    if not scan.available:
        yield from map(from_events, chunks_of(path, chunk_bytes))
        return
    data = path.read_bytes()
    pos = 0
    while pos < len(data):
        end = data.find(b"\n", min(pos + chunk_bytes, len(data) - 1)) + 1 or len(data)
        got = scan.scan(data[pos:end], T0 - 400 * 86400.0, T0 + 7200 + 600.0, 64 * 1024)
        assert got is not None
        yield got[2]
        pos = end


@pytest.mark.skipif(not scan.available, reason="parsers._scan not built, or LOGAPM_NATIVE=0")
def test_scanned_trace_ids_pickle_as_their_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch made in C from the native scanner's columns keeps its trace ids as the scanner's table
    (``ScannedIds``, no str per id) until it is pickled or read: pickled, they are what ``_packed_ids`` gives
    of the list (one string and where None stands; the list where an id holds the separator), and they come
    back, and read, as the numpy path's ids: ASCII, not ASCII, with and without untraced events."""
    import pickle

    traced = generate_events(400, start=T0, seconds=600.0, seed=3)  # (every query with a fingerprint: C's)
    base = [{k: v for k, v in e.items() if k != "trace_id" or i % 9} for i, e in enumerate(traced)]
    first = traced[1]["trace_id"]
    variants = {"as generated": base, "all traced": traced, "non-ASCII": [
        {**e, "trace_id": "caf\u00e9" + e["trace_id"][4:]} if e.get("trace_id") == first else e for e in base],
        "separator": [{**e, "trace_id": "\x00" + e["trace_id"][1:]} if e.get("trace_id") == first else e
                      for e in base]}
    forms = set()
    for i, (name, events) in enumerate(variants.items()):
        log = tmp_path / f"{i}.log"
        write_log(log, events)
        (cols,) = scanned_chunks(log, 1 << 30)
        b = columns._summarize_native(cols)
        assert b is not None and type(b._traces) is columns.ScannedIds, name
        state = b.__getstate__()[columns._TRACES]
        untraced = None in state if type(state) is list else state[1] >= 0
        forms.add(f"{type(state).__name__}{' with None' if untraced else ''}")
        same(cols, monkeypatch)  # (its pickled ids against the numpy path's)
        back = pickle.loads(pickle.dumps(b))
        want = numpy_batch(cols, monkeypatch).traces
        assert back.differences(numpy_batch(cols, monkeypatch)) == [] and b.trace_ids() == want, name
        assert [(type(x), x) for x in back.traces] == [(type(x), x) for x in want], name
    assert forms == {"tuple with None", "tuple", "list with None"}, forms


@pytest.mark.parametrize("chunk_bytes", [4 << 20, 40_000, 9_000])
def test_generated_logs(tmp_path: Path, chunk_bytes: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """loggen's events (every query with a fingerprint: C takes every chunk), cut mid-trace into chunks; and
    the tests' realistic mix (queries without a fingerprint or text, untraced events, -0.0, N+1 loops), where
    C takes the chunks whose kept queries all have one."""
    log = tmp_path / "plain.log"
    write_log(log, generate_events(12_000, start=T0, seconds=1800.0, seed=4), ordinary_every=13)
    batches = [same(cols, monkeypatch) for cols in scanned_chunks(log, chunk_bytes)]
    assert batches and all(b is not None for b in batches)
    taken = [b for b in batches if b is not None]
    assert sum(b.requests for b in taken) > 3000 and any(b.rest_trace.size for b in taken)
    assert any(b.root_trace.size for b in taken) and any(b.fp_owner.size for b in taken)
    assert any(b.req_failed.any() for b in taken)

    log = tmp_path / "realistic.log"
    write_log(log, realistic_events(12_000, seed=7), ordinary_every=17)
    batches = [same(cols, monkeypatch) for cols in scanned_chunks(log, chunk_bytes // 4)]
    assert None in batches  # (queries without a fingerprint)
    if chunk_bytes < 1 << 20:
        assert any(b is not None and None in b.traces for b in batches)


def odd_stream(rng: random.Random) -> list[Any]:
    """``test_insights_columns_native.stream`` (few traces and spans, tasks with and without parents and spans,
    operations below tasks' spans, None trace ids, -0.0, 5xx, failures, metrics) with NaN durations too and
    every query's fingerprint present (some holding ``fp_keys``' separator), but in a fifth of the streams."""
    events = stream(rng)
    missing = rng.random() < 0.2
    for e in events:
        if e.kind == "db" and not (missing and rng.random() < 0.3):
            e.db_query_fingerprint = rng.choice(["f1", "f2", "f3", "f\x00"])
        if e.kind != "metric" and rng.random() < 0.05:
            e.duration_ms = math.nan
    return events


@pytest.mark.parametrize("seed", range(60))
def test_odd_streams_cut_at_random(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(seed)
    for chunk in cut_at_random(odd_stream(rng), seed, rng):
        same(from_events(chunk), monkeypatch)


def test_the_odd_streams_reach_c_and_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    """What ``test_odd_streams_cut_at_random`` is for happens: C takes most streams, with root tasks,
    operations below tasks, rests, -0.0 and NaN groups and keys sent as a list; the others go to numpy."""
    seen: set[str] = set()
    for seed in range(60):
        events = odd_stream(random.Random(seed))
        b = same(from_events(events), monkeypatch)
        spans = {e.span_id for e in events if e.kind == "task"} - {None}
        seen.add("numpy" if b is None else "C")
        if b is None:
            continue
        seen |= {name for name, yes in (
            ("root task", b.root_trace.size > 0), ("rest", b.rest_trace.size > 0),
            ("below a task", any(e.kind == "db" and e.parent_span_id in spans for e in events)),
            ("-0.0 group", bool((np.signbit(b.fp_ms) & (b.fp_ms == 0.0)).any())),
            ("NaN group", bool(np.isnan(b.fp_ms).any())), ("keys as a list", isinstance(b.fp_keys, list)),
            ("None trace", None in b.traces), ("failed", bool(b.req_failed.any())),
        ) if yes}
    assert len(seen) == 10, seen


def test_nothing_traced_and_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    """No events, only metrics, no trace ids at all: C's False, the empty batch, as numpy has it."""
    metrics = [Event(timestamp="-", schema=1, kind="metric", trace_id=t, metric_name="m", metric_type="count",
                     metric_value=1.0, ts=T0 + i) for i, t in enumerate(["a" * 32, None, "b" * 32, "a" * 32])]
    for events in ([], metrics, metrics[1:2]):
        b = same(from_events(events), monkeypatch)
        assert b is not None and b.empty
    assert same(from_events(metrics), monkeypatch).traces == ["a" * 32, None, "b" * 32]  # type: ignore[union-attr]


def test_one_trace_and_its_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    """One trace: two requests (each with the queries before it), a child task, a root task that drops what
    is open, a query below the root task's span, and a rest at the end."""
    def ev(kind: Kind, ts: float, span: str, parent: str | None = None, key: str = "k", dur: float = 1.0) -> Event:
        fields: dict[str, Any] = {"db_query_fingerprint": key, "db_query_text": f"SELECT {key}",
                                  "db_collection_name": "t"} if kind == "db" else {}
        if kind == "request":
            fields = {"http_route": "api/a/", "http_request_method": "GET", "http_response_status_code": 200}
        return Event(timestamp="-", schema=1, kind=kind, duration_ms=dur, trace_id="a" * 32, span_id=span,
                     parent_span_id=parent, ts=T0 + ts, **fields)

    events = [ev("db", 1, "1"), ev("db", 2, "2", key="j"), ev("db", 3, "3"), ev("request", 4, "r"),
              ev("cache", 5, "4"), ev("task", 6, "t", parent="r"), ev("db", 7, "5"), ev("request", 8, "s"),
              ev("db", 9, "6"), ev("db", 10, "7", parent="u"), ev("task", 11, "u"), ev("external", 12, "8"),
              ev("db", 13, "9", dur=-0.0)]
    b = same(from_events(events), monkeypatch)
    assert b is not None
    assert b.req_queries.tolist() == [3, 1] and b.req_cache_ms().tolist() == [0.0, 1.0]
    assert (b.root_trace.tolist(), b.root_at.tolist(), b.tasks) == ([0], [2], 2)
    assert (b.rest_trace.tolist(), b.rest_events.tolist(), b.rest_queries.tolist()) == ([0], [2], [1])
    assert (b.fp_owner.tolist(), b.key_list(), b.fp_n.tolist()) == ([0, 0, 1, 2], ["k", "j"], [2, 1, 1, 1])
    assert b.rest_external.tolist() == [1.0] and str(b.fp_ms[-1]) == "-0.0"


def test_fingerprints_of_every_width(monkeypatch: pytest.MonkeyPatch) -> None:
    """``fp_keys`` joined in C as ``"\0".join`` joins them: ASCII, Latin-1, BMP and astral fingerprints in one
    chunk (the joined string as wide as the widest), and a list where one holds the separator."""
    def db(key: str, ts: float) -> Event:
        return Event(timestamp="-", schema=1, kind="db", duration_ms=1.0, trace_id="a" * 32, span_id="1" * 16,
                     ts=T0 + ts, db_query_fingerprint=key, db_query_text="SELECT 1")

    for keys in (["k1", "k2"], ["k1", "sé"], ["k1", "sé", "s€"], ["s€", "k1", "😀", "sé"], ["é"], ["k1", "a\x00b"]):
        b = same(from_events([db(key, i) for i, key in enumerate(keys)]), monkeypatch)
        assert b is not None and b.key_list() == keys
        assert isinstance(b.fp_keys, list) == any("\x00" in key for key in keys)


def test_wide_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the narrow columns widen for: more than 65,536 traces and fingerprints (int32 codes), a group of
    70,000 executions (uint32 counts), a request of as many queries."""
    n = 70_000
    events = []
    for i in range(n):
        events.append(Event(timestamp="-", schema=1, kind="db", duration_ms=0.5, trace_id=f"{i:032x}",
                            span_id="1" * 16, ts=T0 + i * 1e-3, db_query_fingerprint=f"k{i}",
                            db_query_text="SELECT 1"))
        events.append(Event(timestamp="-", schema=1, kind="db", duration_ms=0.25, trace_id="f" * 32,
                            span_id="2" * 16, ts=T0 + i * 1e-3, db_query_fingerprint="loop",
                            db_query_text="SELECT 2", db_collection_name="t"))
    events.append(Event(timestamp="-", schema=1, kind="request", duration_ms=9.0, trace_id="f" * 32,
                        span_id="3" * 16, ts=T0 + n, http_route="api/a/", http_request_method="GET",
                        http_response_status_code=200))
    b = same(from_events(events), monkeypatch)
    assert b is not None
    assert (b.req_trace.dtype, b.rest_trace.dtype, b.fp_key.dtype, b.fp_owner.dtype) == (np.int32,) * 4
    assert (b.req_queries.dtype, b.fp_n.dtype, int(b.fp_n.max())) == (np.uint32, np.uint32, n)


def test_queries_without_a_fingerprint_go_to_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kept query without a fingerprint, or with an empty one, is numpy's (its text's fingerprint, or none);
    one dropped by a root task, or below a task, does not matter."""
    def db(key: str | None, parent: str | None = None) -> Event:
        return Event(timestamp="-", schema=1, kind="db", duration_ms=1.0, trace_id="a" * 32, span_id="1" * 16,
                     parent_span_id=parent, ts=T0, db_query_fingerprint=key, db_query_text="SELECT 1")

    task = Event(timestamp="-", schema=1, kind="task", duration_ms=1.0, trace_id="a" * 32, span_id="9" * 16,
                 ts=T0 + 1)
    for key in (None, ""):
        assert same(from_events([db("k"), db(key)]), monkeypatch) is None
        assert same(from_events([db(key), task, db("k")]), monkeypatch) is not None  # dropped by the root task
        assert same(from_events([db("k"), db(key, parent="9" * 16), task]), monkeypatch) is not None


def numpy_sums(batches: list[TraceBatch], width: int, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    with monkeypatch.context() as m:
        m.setattr(columns, "_native", None)
        return request_sums(batches, width).groups


def first_difference(got: list[Any], want: list[Any]) -> str | None:
    """Where these groups first differ from numpy's (order, types, reprs: -0.0 apart), in a line; None where
    they do not. Group by group, not ``assert repr(got) == repr(want)``: pytest explains a failed ``==`` of two
    strings with difflib's ndiff, quadratic in their length, and a part's groups (2,905, a 234 kB repr) took
    it past the 300 s time limit when one double differed (a broken value reader in C)."""
    for at, (g, w) in enumerate(zip(got, want, strict=False)):
        if [type(x) for x in g] != [type(x) for x in w] or repr(g) != repr(w):
            return f"group {at} of {len(want)}: {g!r} where numpy has {w!r}"
    return None if len(got) == len(want) else f"{len(got)} groups where numpy has {len(want)}"


def same_sums(batches: list[TraceBatch], width: int, monkeypatch: pytest.MonkeyPatch) -> list[Any] | None:
    """C's ``request_sums`` groups of these batches, checked identical (``first_difference``) to the numpy
    path's; None where C leaves them to numpy."""
    want = numpy_sums(batches, width, monkeypatch)
    assert (difference := first_difference(request_sums(batches, width).groups, want)) is None, difference
    with_requests = [b for b in batches if b.requests]
    got = columns._native.request_sums(with_requests, width) if with_requests else []  # type: ignore[union-attr]
    if got is not None:
        assert (difference := first_difference(got, want)) is None, difference
    return got


@pytest.mark.parametrize("width", [5, 60, 3600])
def test_request_sums_of_generated_parts(tmp_path: Path, width: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A part's batches (loggen, in chunks: each batch with its own routes table), summed per window and route;
    and parts with negative durations (every request adds its capped times, zeros too)."""
    log = tmp_path / "plain.log"
    write_log(log, realistic_events(12_000, seed=5), ordinary_every=13)
    batches = [summarize_columns(cols) for cols in scanned_chunks(log, 40_000)]
    for part in (batches, batches[:1], batches[3:9], batches[::2]):
        got = same_sums(part, width, monkeypatch)
        assert got  # C took them
    rng = random.Random(width)
    for b in batches[:6]:
        b.req_dur = np.where(np.random.default_rng(width).random(b.requests) < 0.2, -b.req_dur, b.req_dur)
        b.req_dur[rng.randrange(b.requests)] = -0.0
    assert same_sums(batches[:6], width, monkeypatch)


def test_request_sums_edges(monkeypatch: pytest.MonkeyPatch) -> None:
    """No batch with requests; "" and None-read-as-"" routes shared across batches; a request of 100,000
    queries (uint32 counts) and windows far apart (numpy's: too wide a range to count over); -0.0 times; an
    end that is no number of windows, or whose window starts past int64 (numpy's); many batches."""
    def request(trace: str, ts: float, route: str | None, dur: float = 9.0) -> Event:
        return Event(timestamp="-", schema=1, kind="request", duration_ms=dur, trace_id=trace, span_id="2" * 16,
                     ts=ts, http_route=route, http_request_method="GET", http_response_status_code=200)

    def db(trace: str, ts: float, dur: float = 0.5) -> Event:
        return Event(timestamp="-", schema=1, kind="db", duration_ms=dur, trace_id=trace, span_id="1" * 16,
                     ts=ts, db_system="sqlite", db_query_fingerprint="k", db_query_text="SELECT 1")

    def batch(events: list[Event]) -> TraceBatch:
        return summarize_columns(from_events(events))

    only_rests = batch([db("a" * 32, T0)])
    assert same_sums([only_rests], 60, monkeypatch) == []
    a = batch([db("a" * 32, T0, -0.0), request("a" * 32, T0 + 1, ""), request("b" * 32, T0 + 2, None),
               db("c" * 32, T0 + 3, 7.0), request("c" * 32, T0 + 4, "api/x/", 5.0)])
    b = batch([request("d" * 32, T0 + 61, "api/x/"), request("e" * 32, T0 + 62, "api/y/")])
    assert same_sums([a, only_rests, b], 60, monkeypatch)
    wide = batch([db("f" * 32, T0 + i * 1e-6) for i in range(100_000)] + [request("f" * 32, T0 + 1, "api/x/")])
    assert wide.req_queries.dtype == np.uint32
    assert same_sums([wide, a], 60, monkeypatch) is None  # (too wide a range to count the pairs over: numpy's)
    far = batch([request("a" * 32, T0 + i * 86_400.0, "api/x/") for i in range(50)])
    assert same_sums([far], 1, monkeypatch) is None  # (the same for the windows)
    assert same_sums([far], 86_400, monkeypatch)
    never = batch([request("a" * 32, T0, "api/x/")])
    never.req_end = np.array([math.inf])  # (not from a parser: it reads no such timestamp)
    with np.errstate(invalid="ignore"):
        assert same_sums([never], 60, monkeypatch) is None
    past = batch([request("a" * 32, T0, "api/x/")])
    past.req_end = np.array([1e19])  # (a window starting past 2**63 s: numpy's product wraps, C's overflowed)
    assert same_sums([past], 10**5, monkeypatch) is None
    many = [batch([request(f"{i:032x}", T0 + i, f"api/{i % 7}/")]) for i in range(150)]
    assert same_sums(many, 60, monkeypatch)  # (more batches than the C side's first allocation table holds)


def summarize_args(cols: EventColumns) -> list[Any]:
    """``_native.summarize``'s arguments for these columns, as ``columns._summarize_native`` passes them."""
    codes, tables = cols.codes, cols.tables
    return [cols.kind, codes["trace_id"], len(tables["trace_id"]), cols.ts, cols.duration_ms, codes["span_id"],
            codes["parent_span_id"], len(tables["span_id"]), cols.outcome, cols.status, codes["http_route"],
            tables["http_route"], codes["http_request_method"], tables["http_request_method"],
            codes["db_query_fingerprint"], tables["db_query_fingerprint"], codes["db_query_text"],
            tables["db_query_text"], codes["db_collection_name"], tables["db_collection_name"]]


def test_codes_and_sizes_outside_the_tables_go_to_numpy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No parser makes them: a route code below -1 (it was read as the absent route), a span table said to be
    larger than int32 codes index, with a code at INT32_MAX (its + 1 overflowed, and read before the marks: a
    crash), a trace table as large: None, the numpy path's, at once."""
    log = tmp_path / "plain.log"
    write_log(log, generate_events(300, start=T0, seconds=60.0, seed=4))
    cols = next(scanned_chunks(log, 1 << 20))
    assert same(cols, monkeypatch) is not None
    args = summarize_args(cols)
    args[10] = args[10].copy()
    args[10][int(np.flatnonzero(cols.kind == 0)[0])] = -5
    assert columns._native.summarize(*args) is None  # type: ignore[union-attr]
    args = summarize_args(cols)
    args[5] = args[5].copy()
    args[5][0] = np.iinfo(np.int32).max
    args[7] = 2**31 + 5
    assert columns._native.summarize(*args) is None  # type: ignore[union-attr]
    args = summarize_args(cols)
    args[2] = 2**40
    assert columns._native.summarize(*args) is None  # type: ignore[union-attr]


class Proxy:
    """A batch read through ``__getattr__`` (Python code run at each of ``request_sums``' reads): what
    ``effect(name, reads of it so far)`` returns, or the batch's own attribute where that is None."""

    def __init__(self, batch: TraceBatch, effect: Any) -> None:
        self.batch, self.effect, self.reads = batch, effect, Counter[str]()

    def __getattr__(self, name: str) -> Any:
        self.reads[name] += 1
        value = self.effect(name, self.reads[name])
        return getattr(self.batch, name) if value is None else value


def test_request_sums_of_batches_that_change_while_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What no caller does (TraceBatch has slots; routes are str), from Python code the C runs: the caller's list
    of batches emptied by an attribute read, a batch's routes list emptied by a route's ``__hash__``: the sums of
    the batches as they were (the C reads copies of the lists; it read the emptied ones: a crash); a batch whose
    queries per request grow between two reads of them: left to numpy (they indexed past the counts: a write out
    of bounds)."""
    log = tmp_path / "plain.log"
    write_log(log, realistic_events(3000, seed=5), ordinary_every=13)
    batches = [summarize_columns(cols) for cols in scanned_chunks(log, 40_000)][:4]
    want = [repr(g) for g in numpy_sums(batches, 60, monkeypatch)]
    proxies: list[Any] = []
    proxies += [Proxy(b, lambda name, reads: proxies.clear()) for b in batches]
    got = columns._native.request_sums(proxies, 60)  # type: ignore[union-attr]
    assert not proxies and [repr(g) for g in got] == want

    class Emptying(str):
        __slots__ = ()

        def __hash__(self) -> int:
            routes.clear()
            return str.__hash__(self)

    routes = [Emptying(r) for r in batches[0].routes]
    got = columns._native.request_sums(  # type: ignore[union-attr]
        [Proxy(batches[0], lambda name, reads: routes if name == "routes" else None), *batches[1:]], 60)
    assert not routes and [repr(g) for g in got] == want

    def growing(name: str, reads: int) -> Any:
        return batches[0].req_queries.astype(np.int64) + 10**9 if name == "req_queries" and reads > 1 else None

    assert columns._native.request_sums([Proxy(batches[0], growing)], 60) is None  # type: ignore[union-attr]
