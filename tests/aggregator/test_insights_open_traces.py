"""Open traces carried from run to run as a few rows of columns (``findings.OpenTraceColumns``): read as
references to those columns until a trace is merged (``traces._InColumns``), and written back by taking each
source's traces in bulk (``traces._open_sums``). The store ends each run as it did when every open trace was
read into a ``PackedTrace`` and written from its own values (``EagerAnalyzer``), and as it did when the open
traces were one row each (the table before insights migration 4, ``V3Analyzer``): the same aggregates, findings,
counters and open traces in the same order, run after run, through traces crossing part and run boundaries, the
cap, expiry, logs going back in time, rows of any size, and a store of rows converted by the migration."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable, Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any
from unittest.mock import patch

import numpy as np
import orjson
import pytest
from test_insights_columns import _event, chunks_of, each_run, open_trace_rows, realistic_events, state

from aggregator import store as store_module
from aggregator.config import load_config
from aggregator.insights import findings, traces
from aggregator.insights.partials import OpenTrace, pack, summarize
from aggregator.insights.traces import TraceAnalyzer, extract
from aggregator.loggen import write_log
from aggregator.store import Store

T0 = 1_764_399_960.0


class _WritesEachTrace(TraceAnalyzer):
    """The analyzer writing every open trace from its own values, through Python (each one packed: no bulk take
    from a batch's rests or a stored row)."""

    def finish(self) -> list[Any]:
        sums = traces._open_sums
        with patch.object(traces, "_open_sums", lambda opens, place: sums([pack(o.unpack()) for o in opens], place)):
            return super().finish()


class EagerAnalyzer(_WritesEachTrace):
    """The analyzer reading and writing each open trace on its own: each stored one read into a ``PackedTrace``
    at once (no ``_InColumns``), and every open trace written from its own values."""

    def _load_pending(self) -> None:
        if self._loaded_pending >= 0:
            return
        self._loaded_pending = 0
        for trace_id, ops in findings.load_open_traces(self.store.conn):
            self._loaded_pending += 1
            self._open[trace_id] = pack(ops)
            self._open_events += ops.events
            if ops.newest > self._newest:
                self._newest = ops.newest


V3_TABLE = """CREATE TABLE insights_open_traces (trace_id TEXT NOT NULL, newest REAL NOT NULL, events INTEGER NOT NULL,
    queries INTEGER NOT NULL, db_ms REAL NOT NULL, cache_ms REAL NOT NULL, external_ms REAL NOT NULL,
    fingerprints TEXT NOT NULL)"""


class V3Analyzer(TraceAnalyzer):
    """The analyzer on a store of insights schema version 3 (``v3_store``), reading and writing its open traces as
    logging-apm did up to 93d8d48: one row each, (trace_id, newest, events, queries, db_ms, cache_ms, external_ms,
    ``orjson.dumps`` text of the fingerprints), oldest trace first, every row read back into a ``PackedTrace`` (what
    that version's stored traces read as; its own tests held its lazy reads and incremental writes to that)."""

    def _load_pending(self) -> None:
        if self._loaded_pending >= 0:
            return
        self._loaded_pending = 0
        for trace_id, ops in v3_open_traces(self.store.conn):
            self._loaded_pending += 1
            self._open[trace_id] = pack(ops)
            self._open_events += ops.events
            if ops.newest > self._newest:
                self._newest = ops.newest

    def finish(self) -> list[Any]:
        def write(conn: Any, trace_ids: list[str], opens: list[Any], newest: Any, events: Any,
                  order: list[int]) -> None:
            conn.execute("DELETE FROM insights_open_traces")
            conn.executemany("INSERT INTO insights_open_traces VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [
                (trace_ids[i], o.newest, o.events, o.queries, o.db_ms, o.cache_ms, o.external_ms,
                 orjson.dumps(o.fingerprints).decode()) for i, o in ((i, opens[i]) for i in order)])

        with patch.object(traces, "_write_open_traces", write):
            return super().finish()


def v3_open_traces(conn: Any) -> Iterator[tuple[str, OpenTrace]]:
    """The open traces of a version-3 store, in rowid order, read as 93d8d48's ``findings.load_open_traces`` read
    them (the reference migration 4's own reader of that table is held to)."""
    # A copy of ``findings._open_traces_as_columns``'s loop on purpose, not a call to it: the tests compare the
    # migrated store with this, so calling the migration's reader would hold it to itself.
    for trace_id, newest, events, queries, db_ms, cache_ms, external_ms, fps in conn.execute(
            "SELECT trace_id, newest, events, queries, db_ms, cache_ms, external_ms, fingerprints"
            " FROM insights_open_traces ORDER BY rowid"):
        ops = OpenTrace()
        ops.newest, ops.events, ops.queries = newest, events, queries
        ops.db_ms, ops.cache_ms, ops.external_ms = db_ms, cache_ms, external_ms
        ops.fingerprints = orjson.loads(fps)
        yield trace_id, ops


def v3_state(store_path: Path, aggs: list[Any]) -> tuple[Any, ...]:
    """``state`` of a version-3 store (open traces from its table of one row each)."""
    with patch("test_insights_columns.load_open_traces", v3_open_traces), \
            patch.dict(store_module._MIGRATIONS, {"insights": store_module._MIGRATIONS["insights"][:3]}):
        return state(store_path, aggs, near=True)


def v3_store(path: Path) -> None:
    """A new store as logging-apm made it up to 93d8d48: insights migrations 1 to 3."""
    with patch.dict(store_module._MIGRATIONS, {"insights": store_module._MIGRATIONS["insights"][:3]}):
        Store(path).close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT sql FROM sqlite_master WHERE name = 'insights_open_traces'").fetchone()[0] \
            .replace(" ", "").replace("\n", "").endswith("fingerprintsTEXTNOTNULL)")
        assert conn.execute("SELECT max(version) FROM schema_migrations WHERE component = 'insights'").fetchone() \
            == (3,)
    finally:
        conn.close()


_V3_MIGRATIONS = {"insights": store_module._MIGRATIONS["insights"][:3]}


def runs_states(store_path: Path, runs: list[list[list[list[Any]]]], to_parts: Callable[[list[Any]], list[Any]],
                cfg: dict[str, Any], analyzer_cls: type[TraceAnalyzer], v3_runs: int = 0) -> list[tuple[Any, ...]]:
    """The stored state after each run, with that run's aggregates, their time sums apart (``state``: the
    columnar path rounds them differently from ``summarize``'s; ``repr`` of two states compares them exactly).
    With ``v3_runs``, the store is made as of insights migration 3 and its first ``v3_runs`` runs are
    ``V3Analyzer``'s, with the code knowing no later migration; the first run after them opens it with
    migration 4."""
    if v3_runs:
        v3_store(store_path)
    out = []
    for k, run in enumerate(runs):
        if k < v3_runs:
            with patch.dict(store_module._MIGRATIONS, _V3_MIGRATIONS):
                aggs = next(each_run(store_path, [run], to_parts, cfg, V3Analyzer))
            out.append(v3_state(store_path, aggs))
        else:
            aggs = next(each_run(store_path, [run], to_parts, cfg, analyzer_cls))
            out.append(state(store_path, aggs, near=True))
    return out


@pytest.fixture
def taken(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How many open traces the writes took in bulk, by source: a batch's rests, a stored row."""
    counts = {"rests": 0, "stored": 0}
    for name, cls in (("rests", traces._Rests), ("stored", findings.OpenTraceColumns)):
        def spy(self: Any, idx: Any, take: Any = cls.take, name: str = name) -> Any:
            counts[name] += len(idx)
            return take(self, idx)

        monkeypatch.setattr(cls, "take", spy)
    return counts


def _cut_log(tmp_path: Path, seed: int, chunk_bytes: int, back: bool) -> list[list[list[list[Any]]]]:
    """A generated log in decoder chunks and parts of three, cut into six runs of uneven sizes (one of a single
    part); with ``back``, the log again from its middle: time goes back, the new open traces are older than the
    stored ones."""
    log = tmp_path / "app.log"
    write_log(log, realistic_events(12_000, seed=seed), ordinary_every=13)
    chunks = chunks_of(log, chunk_bytes)
    parts = [chunks[i:i + 3] for i in range(0, len(chunks), 3)]
    cuts = [0, 1, 3, len(parts) // 3, len(parts) // 2, len(parts) * 3 // 4, len(parts)]
    runs = [parts[a:b] for a, b in pairwise(cuts)]
    if back:
        runs += [parts[len(parts) // 2:len(parts) * 2 // 3], parts[len(parts) * 2 // 3:]]
    return runs


@pytest.mark.parametrize(("chunk_bytes", "cfg", "back", "rows_of"), [
    (25_000, {}, False, findings.CHUNK_TRACES),
    (25_000, {"run.trace_pending_max_events": 300, "run.window_seconds": 10}, False, 7),
    (9_000, {"run.n_plus_one_threshold": 2, "run.trace_pending_seconds": 120}, False, findings.CHUNK_TRACES),
    (25_000, {"run.trace_pending_max_events": 300}, True, 50),
    (40_000, {}, True, 1),
])
def test_runs_carry_open_traces_as_the_eager_analyzer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       taken: dict[str, int], chunk_bytes: int, cfg: dict[str, Any],
                                                       back: bool, rows_of: int) -> None:
    """Run after run, the same store as the eager analyzer's (``rows_of``: open traces a stored row holds)."""
    monkeypatch.setattr(findings, "CHUNK_TRACES", rows_of)
    runs = _cut_log(tmp_path, 11, chunk_bytes, back)
    want = runs_states(tmp_path / "eager.db", runs, summarize, cfg, EagerAnalyzer)
    eager = runs_states(tmp_path / "eager-columns.db", runs, extract, cfg, EagerAnalyzer)
    assert eager == want
    taken.update(rests=0, stored=0)
    got = runs_states(tmp_path / "new.db", runs, extract, cfg, TraceAnalyzer)
    for run, (a, b) in enumerate(zip(got, eager, strict=True)):
        assert repr(a) == repr(b), f"run {run}"
    assert any(want[i][2] != "[]" for i in range(len(want)))  # open traces were carried
    assert taken["rests"] > 0 and taken["stored"] > 0  # and written back from both kinds of columns
    rows = sqlite3.connect(tmp_path / "new.db").execute("SELECT trace_count FROM insights_open_trace_columns")
    counts = [n for (n,) in rows]
    assert counts and max(counts) <= rows_of and (len(counts) > 1 or rows_of > 1000)


@pytest.mark.parametrize(("seed", "cfg", "v3_runs"), [
    (11, {}, 1),
    (12, {"run.trace_pending_max_events": 300, "run.n_plus_one_threshold": 2}, 3),
    (13, {"run.trace_pending_max_events": 40, "run.trace_pending_seconds": 120}, 2),
])
def test_a_store_of_one_row_per_trace_carries_on_as_before(tmp_path: Path, seed: int, cfg: dict[str, Any],
                                                           v3_runs: int) -> None:
    """A store whose open traces were one row each (insights schema 3, as logging-apm wrote it up to 93d8d48),
    migrated after some runs: every run after that leaves what runs of the version before would have left (the
    same aggregates, findings, counters and open traces), as does a store of rows of columns from the start."""
    runs = _cut_log(tmp_path, seed, 20_000, True)
    want = runs_states(tmp_path / "v3.db", runs, extract, cfg, TraceAnalyzer, v3_runs=len(runs))
    assert any(w[2] != "[]" for w in want[:v3_runs]) and sum(w[2].count("{'") for w in want) > 20
    got = runs_states(tmp_path / "migrated.db", runs, extract, cfg, TraceAnalyzer, v3_runs=v3_runs)
    for run, (a, b) in enumerate(zip(got, want, strict=True)):
        assert repr(a) == repr(b), f"run {run}"
    assert repr(runs_states(tmp_path / "new.db", runs, extract, cfg, TraceAnalyzer)) == repr(want)


@pytest.mark.parametrize("seed", range(10))
def test_random_streams_over_many_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    """Odd streams (few traces, tasks, missing fields, -0.0, time jumping back and forth) over many small
    runs, a tight cap and expiry, rows of a few traces: the same store as the eager analyzer's after every run,
    and as the version before's (one row per trace), from the start or migrated after some runs (the reference's
    time sums within rounding, ``summarize`` adding its requests one by one; every columnar path's exactly)."""
    rng = random.Random(seed)
    draw = rng.choice
    trace_ids = [f"{i:032x}" for i in range(1, rng.randint(3, 40))] + [None]
    spans = [f"{i:016x}" for i in range(1, 12)]
    kinds = ["request", "db", "db", "db", "cache", "external", "task", "metric"]
    events = []
    t = T0
    for _ in range(rng.randint(50, 600)):
        kind = draw(kinds)
        parent = draw([*spans, None]) if kind != "request" else None
        t += draw([0.0, 0.5, 7.0, 400.0, -300.0])
        events.append(_event(kind, draw(trace_ids), draw(spans), parent, t, draw([0.0, -0.0, 1.5, 0.25, 3.0]),
                             draw))
    cuts = sorted({0, len(events), *(rng.randint(0, len(events)) for _ in range(rng.randint(4, 30)))})
    chunks = [events[a:b] for a, b in pairwise(cuts) if b > a]
    parts = [chunks[i:i + 2] for i in range(0, len(chunks), 2)]
    bounds = sorted({0, len(parts), *(rng.randint(0, len(parts)) for _ in range(rng.randint(2, 8)))})
    runs = [parts[a:b] for a, b in pairwise(bounds)] + [[]]  # and a run reading nothing
    cfg = draw([{}, {"run.n_plus_one_threshold": 1, "run.trace_pending_max_events": 8},
                {"run.trace_pending_max_events": 5, "run.trace_pending_seconds": 900}])
    monkeypatch.setattr(findings, "CHUNK_TRACES", draw([1, 3, 1000]))
    want = runs_states(tmp_path / "eager.db", runs, summarize, cfg, EagerAnalyzer)
    eager = runs_states(tmp_path / "eager-columns.db", runs, extract, cfg, EagerAnalyzer)
    assert eager == want
    assert repr(runs_states(tmp_path / "new.db", runs, extract, cfg, TraceAnalyzer)) == repr(eager)
    assert repr(runs_states(tmp_path / "v3.db", runs, extract, cfg, TraceAnalyzer, v3_runs=len(runs))) == repr(eager)
    assert repr(runs_states(tmp_path / "migrated.db", runs, extract, cfg, TraceAnalyzer,
                            v3_runs=rng.randint(1, len(runs) - 1))) == repr(eager)


def _one_run(tmp_path: Path, seed: int) -> tuple[Store, TraceAnalyzer]:
    """A store (open) after one run over 3,000 generated events, and the run's analyzer."""
    log = tmp_path / "app.log"
    write_log(log, realistic_events(3_000, seed=seed))
    store = Store(tmp_path / "s.db")
    analyzer = TraceAnalyzer(store, load_config(environ={}))
    for chunk in chunks_of(log, 20_000):
        analyzer.feed(extract(chunk))
    with store.transaction():
        analyzer.finish()
    return store, analyzer


def test_a_stored_trace_reads_as_its_packed_trace(tmp_path: Path) -> None:
    """A stored trace (``_InColumns``) gives the values (and the ``OpenTrace``) of the ``PackedTrace`` read from its row."""
    store, _ = _one_run(tmp_path, 2)
    eager = dict(findings.load_open_traces(store.conn))
    lazy = TraceAnalyzer(store, load_config(environ={}))
    lazy._load_pending()
    assert eager and list(lazy._open) == list(eager)
    assert sum(len(pack(o).fingerprints) > 1 for o in eager.values()) > 5
    for trace_id, stored in lazy._open.items():
        assert type(stored) is traces._InColumns and type(stored[2]) is findings.OpenTraceColumns
        packed = pack(eager[trace_id])
        for name in ("newest", "events", "queries", "db_ms", "cache_ms", "external_ms", "fingerprints"):
            assert repr(getattr(stored, name)) == repr(getattr(packed, name))
        assert pack(stored.unpack()) == packed
        assert stored[:2] == packed[:2]  # what the trim reads
    store.close()


class _ReferenceFinish(_WritesEachTrace):
    """The analyzer writing every open trace from its own values (as ``EagerAnalyzer`` does, but reading stored
    traces as ``_InColumns``), and counting what stays open by summing it."""

    summed = (0, 0)  # what stays open after finish, summed: (events, traces)

    def finish(self) -> list[Any]:
        aggs = super().finish()
        self.summed = (sum(self._open[t].events for t in self._open), len(self._open))
        return aggs


@pytest.mark.parametrize(("seed", "cfg"), [
    (3, {}),
    (4, {"run.trace_pending_max_events": 300, "run.n_plus_one_threshold": 2}),
    (5, {"run.trace_pending_max_events": 40, "run.trace_pending_seconds": 120}),
])
def test_open_traces_taken_from_the_columns_are_the_traces_own(tmp_path: Path, taken: dict[str, int], seed: int,
                                                               cfg: dict[str, Any]) -> None:
    """Finish takes the open traces opened by a batch's rest or read from a stored row from those columns, all of
    a source at once: the stored traces, findings, counters and aggregates are those of writing each trace's own
    values, and the pending counts those summed, after every run of a sequence over one store (stored traces
    taken again, expiry, the cap)."""
    log = tmp_path / "app.log"
    write_log(log, realistic_events(9_000, seed=seed), ordinary_every=13)
    chunks = chunks_of(log, 20_000)
    parts = [chunks[i:i + 2] for i in range(0, len(chunks), 2)]
    cuts = [0, 1, len(parts) // 3, len(parts) // 2, len(parts) * 3 // 4, len(parts)]
    runs = [parts[a:b] for a, b in pairwise(cuts)] + [parts[len(parts) // 2:]]  # and time going back
    want = runs_states(tmp_path / "reference.db", runs, extract, cfg, _ReferenceFinish)
    taken.update(rests=0, stored=0)
    got = runs_states(tmp_path / "new.db", runs, extract, cfg, TraceAnalyzer)
    for run, (a, b) in enumerate(zip(got, want, strict=True)):
        assert repr(a) == repr(b), f"run {run}"
    assert sum(w[2].count("{'") for w in want) > 20  # open traces with fingerprints were written
    # (with 120 s to wait, every stored trace expires before the next run ends)
    assert taken["rests"] > 0 and (taken["stored"] > 0) == ("run.trace_pending_seconds" not in cfg)

    def pending(cls: type[TraceAnalyzer]) -> list[tuple[int, int]]:
        store = Store(tmp_path / f"{cls.__name__}.db")
        out = []
        for parts_of_run in runs:
            a = cls(store, load_config(environ={}, overrides=cfg))
            for part in parts_of_run:
                a.feed([p for chunk in part for p in extract(chunk)])
            with store.transaction():
                a.finish()
            out.append((a.pending_events, a.pending_traces))
            if isinstance(a, _ReferenceFinish):
                assert out[-1] == a.summed
        store.close()
        return out

    assert pending(TraceAnalyzer) == pending(_ReferenceFinish)


def test_rows_hold_a_bounded_number_of_traces_and_only_their_strings(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Open traces are stored ``CHUNK_TRACES`` a row, oldest first, each row with the strings its traces use and
    no other; ``counters`` sums the rows."""
    monkeypatch.setattr(findings, "CHUNK_TRACES", 5)
    store, analyzer = _one_run(tmp_path, 4)
    conn = store.conn
    rows = conn.execute("SELECT trace_count, event_count, trace_ids, dtypes, events, fp_key, fp_text, fp_table,"
                        " strings FROM insights_open_trace_columns ORDER BY rowid").fetchall()
    n = analyzer.pending_traces
    assert n > 20 and [r[0] for r in rows] == [5] * (n // 5) + ([n % 5] if n % 5 else [])
    assert sum(r[1] for r in rows) == analyzer.pending_events
    for _, events, _, dtypes, each, *codes, strings in rows:
        dtype = dict(zip(findings._ARRAYS, dtypes.split(), strict=True))
        assert events == int(np.frombuffer(each, dtype["events"]).sum())
        used = set(np.concatenate([np.frombuffer(c, dtype[name]) for c, name in zip(
            codes, ("fp_key", "fp_text", "fp_table"), strict=True)]).tolist())
        assert used == set(range(len(orjson.loads(strings))))
    got = open_trace_rows(conn)
    assert [t for t, *_ in got] == [t for r in rows for t in orjson.loads(r[2])]
    assert [(o[1], o[0]) for o in got] == sorted((o[1], o[0]) for o in got)  # oldest first, ties by trace id
    assert findings.counters(conn)["pending_traces"] == n
    store.close()


def test_the_same_open_traces_are_written_as_the_same_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The traces of several sources are written in the order they are held, whatever the sources' addresses:
    their strings come first source first, so the same open traces make the same rows, run after run."""
    monkeypatch.setattr(findings, "CHUNK_TRACES", 40)
    store, _ = _one_run(tmp_path, 6)
    rows = findings.load_open_trace_columns(store.conn)
    assert len(rows) >= 3 and all(len(r.strings()) for r in rows[:3])
    got = []
    for sources in (rows[:3], rows[2::-1]):  # their identities in one order, then in the other
        opens = [tuple.__new__(traces._InColumns, (r.newest[i], r.events[i], r, i)) for r in sources
                 for i in range(len(r))]
        sums = traces._open_sums(opens, np.arange(len(opens)))
        assert sums.strings == [x for r in sources for x in r.take(np.arange(len(r))).strings]
        got.append(sums)
    assert got[0].strings != got[1].strings
    store.close()


V3_ROWS = [  # (rowid, row) as a store before insights migration 4 held them: odd values on purpose
    (3, ("a" * 32, T0, 2, 1, 1.5, 0.0, 0.0, '{"f":[1,1.5,"SELECT 1","t"]}')),
    (7, ("b" * 32, T0 + 1.25, 1, 0, 0.0, 0.25, 0.0, "{}")),
    (8, ("c" * 32, T0 - 3.0, 4, 2, 2.0, 0.0, 3.5, '{"g":[2,-0.0,null,null],"h":[1,2.5,"","é"],"f":[3,0.5,"SELECT 1","t"]}')),
    (9, ("d\u00e9" + "d" * 30, T0 - 3.0, 1, 7, 1e300, 5e-324, 0.0, '{"\u2603 snow":[7,1e-300,"q\\n\\u0000","t"]}')),
]


@pytest.mark.parametrize("rows_of", [1, 3, findings.CHUNK_TRACES])
def test_the_migrations_keep_the_open_traces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rows_of: int) -> None:
    """A store whose open traces were kept one row each under a trace_id primary key (before insights migration
    3), once opened, holds the same open traces in rowid order, with the same values (-0.0 in a fingerprint, None
    and "" strings, any characters), as rows of columns (``rows_of`` traces a row); the old table is gone."""
    monkeypatch.setattr(findings, "CHUNK_TRACES", rows_of)
    path = tmp_path / "s.db"
    with patch.dict(store_module._MIGRATIONS, {"insights": store_module._MIGRATIONS["insights"][:2]}):
        Store(path).close()
    conn = sqlite3.connect(path, isolation_level=None)
    assert conn.execute("PRAGMA index_list(insights_open_traces)").fetchall()  # the trace_id primary key
    conn.executemany("INSERT INTO insights_open_traces (rowid, trace_id, newest, events, queries, db_ms, cache_ms,"
                     " external_ms, fingerprints) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     [(rowid, *row) for rowid, row in reversed(V3_ROWS)])
    want = repr(list(v3_open_traces_rows(conn)))
    conn.close()
    readonly = Store(path, readonly=True)  # not migrated: what is pending is read from the rows as they are
    assert (findings.counters(readonly.conn)["pending_events"], findings.counters(readonly.conn)["pending_traces"]) \
        == (8, 4)
    readonly.close()
    store = Store(path)
    conn = store.conn
    assert repr(open_trace_rows(conn)) == want and "'g': [2, -0.0, None, None]" in want
    assert conn.execute("SELECT name FROM sqlite_master WHERE name LIKE 'insights_open%'").fetchall() == [
        ("insights_open_trace_columns",)]
    assert conn.execute("SELECT count(*) FROM insights_open_trace_columns").fetchone() == (-(-4 // rows_of),)
    assert (findings.counters(conn)["pending_events"], findings.counters(conn)["pending_traces"]) == (8, 4)
    assert conn.execute("SELECT max(version) FROM schema_migrations WHERE component = 'insights'").fetchone() == (4,)
    store.close()


def v3_open_traces_rows(conn: Any) -> Iterator[tuple[Any, ...]]:
    for t, o in v3_open_traces(conn):
        yield (t, o.newest, o.events, o.queries, o.db_ms, o.cache_ms, o.external_ms, o.fingerprints)


def test_a_store_without_open_traces_migrates_to_none(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    v3_store(path)
    store = Store(path)
    assert findings.load_open_trace_columns(store.conn) == [] and open_trace_rows(store.conn) == []
    assert findings.counters(store.conn)["pending_traces"] == 0
    store.close()


def test_sums_read_back_as_the_table_of_one_row_per_trace_read_them(tmp_path: Path) -> None:
    """newest, db_ms, cache_ms and external_ms read back as the REAL columns of the table before gave them (-0.0
    as 0.0); the rest as written (a fingerprint's -0.0 time, as its JSON text kept it)."""
    ops = OpenTrace()
    ops.newest, ops.events, ops.queries, ops.db_ms, ops.cache_ms, ops.external_ms = -0.0, 3, 2, -0.0, -0.0, -0.0
    ops.fingerprints = {"f": [2, -0.0, None, ""]}
    path = tmp_path / "v3.db"
    v3_store(path)
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO insights_open_traces VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                 ("t", ops.newest, ops.events, ops.queries, ops.db_ms, ops.cache_ms, ops.external_ms,
                  orjson.dumps(ops.fingerprints).decode()))
    want = repr(list(v3_open_traces_rows(conn)))
    conn.commit()
    conn.close()
    store = Store(tmp_path / "new.db")
    with store.transaction():
        findings.write_open_traces(store.conn, ["t"], np.array([ops.newest]), np.array([ops.events]),
                                   findings.packed_sums([pack(ops)]))
    assert repr(open_trace_rows(store.conn)) == want == "[('t', 0.0, 3, 2, 0.0, 0.0, 0.0, {'f': [2, -0.0, None, '']})]"
    store.close()
    store = Store(path)  # and as migrated
    assert repr(open_trace_rows(store.conn)) == want
    store.close()


CORRUPT = {  # a damage to the stored rows -> what the error names
    "a float array cut by a value": ("UPDATE {t} SET newest = substr(newest, 1, length(newest) - 8)", "length"),
    "an array cut mid-value": ("UPDATE {t} SET fp_ms = substr(fp_ms, 1, length(fp_ms) - 3)", "cut"),
    "a count array cut": ("UPDATE {t} SET queries = substr(queries, 1, length(queries) - 1)", "length"),
    "an index array cut": ("UPDATE {t} SET fp_text = substr(fp_text, 1, length(fp_text) - 1)", "length"),
    "floats read as bytes": ("UPDATE {t} SET dtypes = replace(dtypes, '<f8', '<u1')", "dtypes"),
    "a dtype missing": ("UPDATE {t} SET dtypes = substr(dtypes, 5)", "dtypes"),
    "fewer trace ids": ("UPDATE {t} SET trace_ids = '[\"a\"]'", "trace ids"),
    "trace ids not a list": ("UPDATE {t} SET trace_ids = '{{}}'", "trace ids"),
    "trace ids not JSON": ("UPDATE {t} SET trace_ids = X'00ff'", "do not parse"),
    "no fingerprint groups": ("UPDATE {t} SET fp_groups = zeroblob(length(fp_groups))", "length"),
    "strings cut": ("UPDATE {t} SET strings = substr(strings, 1, length(strings) - 1)", "strings do not parse"),
    "strings missing": ("UPDATE {t} SET strings = '[]'", "string is not among"),
    "events not their sum": ("UPDATE {t} SET event_count = event_count + 1", "events"),
    "an empty row": ("INSERT INTO {t} SELECT 0, 0, dtypes, '[]', X'', X'', X'', X'', X'', X'', X'', X'', X'', X'',"
                     " X'', X'', '[]' FROM {t} LIMIT 1", "trace_count 0"),
    "a trace stored twice": ("INSERT INTO {t} SELECT * FROM {t} LIMIT 1", "stored twice"),
}


@pytest.mark.parametrize("damage", list(CORRUPT))
def test_a_damaged_row_of_open_traces_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       damage: str) -> None:
    """A row of open traces not as written (cut, edited) stops the next run with a ``StoreError`` naming the row
    and what is wrong, before anything is joined: read as it came, it would join a trace to another's sums, lose
    traces, or fail deep in numpy. The run's transaction is not committed: the rows stay as they were."""
    monkeypatch.setattr(findings, "CHUNK_TRACES", 50)
    store, _ = _one_run(tmp_path, 3)
    sql, why = CORRUPT[damage]
    with store.transaction():
        store.conn.execute(sql.format(t="insights_open_trace_columns"))
    before = store.conn.execute("SELECT * FROM insights_open_trace_columns ORDER BY rowid").fetchall()
    assert len(before) > 2
    analyzer = TraceAnalyzer(store, load_config(environ={}))
    with pytest.raises(store_module.StoreError, match=f"open traces' row [0-9]+ .* is corrupt: .*{why}"):
        with store.transaction():
            analyzer.finish()
    assert store.conn.execute("SELECT * FROM insights_open_trace_columns ORDER BY rowid").fetchall() == before
    store.close()
