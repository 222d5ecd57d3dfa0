"""Open traces carried from run to run: kept as their stored rows until read (``traces._Stored``), and written
back by deleting and appending only what changed (``traces._write_open_traces``), the store ends each run as
it did when every open trace was read into a ``PackedTrace`` and every row rewritten (``EagerAnalyzer``, the
analyzer as it was): the same aggregates, findings, counters and open-trace rows in the same order, run after
run, through traces crossing part and run boundaries, the cap, expiry, and logs going back in time."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable, Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any
from unittest.mock import patch

import orjson
import pytest
from test_insights_columns import _event, chunks_of, each_run, realistic_events, state

from aggregator.config import load_config
from aggregator.insights import findings, traces
from aggregator.insights.partials import pack, summarize
from aggregator.insights.traces import TraceAnalyzer, extract
from aggregator.loggen import write_log
from aggregator.store import Store

T0 = 1_764_399_960.0


class EagerAnalyzer(TraceAnalyzer):
    """The analyzer as it was: each stored open trace read into a ``PackedTrace`` at once (no ``_Stored``, so
    ``finish`` deletes every row and inserts every open trace)."""

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


def runs_states(store_path: Path, runs: list[list[list[list[Any]]]], to_parts: Callable[[list[Any]], list[Any]],
                cfg: dict[str, Any], analyzer_cls: type[TraceAnalyzer]) -> list[tuple[Any, ...]]:
    """The stored state after each run, with that run's aggregates, their time sums apart (``state``: the
    columnar path rounds them differently from ``summarize``'s; ``repr`` of two states compares them exactly)."""
    return [state(store_path, aggs, near=True) for aggs in each_run(store_path, runs, to_parts, cfg, analyzer_cls)]


@pytest.fixture
def kept_rows(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many rows each incremental write left in place (one entry per ``update_open_trace_rows``)."""
    kept: list[int] = []
    update = findings.update_open_trace_rows

    def spy(conn: Any, below: int, deleted: Any, rows: Any) -> None:
        inserted = list(rows)
        update(conn, below, deleted, inserted)
        kept.append(conn.execute("SELECT count(*) FROM insights_open_traces").fetchone()[0] - len(inserted))

    monkeypatch.setattr(findings, "update_open_trace_rows", spy)
    return kept


@pytest.mark.parametrize(("chunk_bytes", "cfg", "back"), [
    (25_000, {}, False),
    (25_000, {"run.trace_pending_max_events": 300, "run.window_seconds": 10}, False),
    (9_000, {"run.n_plus_one_threshold": 2, "run.trace_pending_seconds": 120}, False),
    (25_000, {"run.trace_pending_max_events": 300}, True),
    (40_000, {}, True),
])
def test_runs_carry_open_traces_as_the_eager_analyzer(tmp_path: Path, kept_rows: list[int], chunk_bytes: int,
                                                       cfg: dict[str, Any], back: bool) -> None:
    log = tmp_path / "app.log"
    write_log(log, realistic_events(12_000, seed=11), ordinary_every=13)
    chunks = chunks_of(log, chunk_bytes)
    parts = [chunks[i:i + 3] for i in range(0, len(chunks), 3)]
    # six runs of uneven sizes (one of a single part); with `back`, the log again from its middle: time goes
    # back, the new open traces are older than the stored ones
    cuts = [0, 1, 3, len(parts) // 3, len(parts) // 2, len(parts) * 3 // 4, len(parts)]
    runs = [parts[a:b] for a, b in pairwise(cuts)]
    if back:
        runs += [parts[len(parts) // 2:len(parts) * 2 // 3], parts[len(parts) * 2 // 3:]]
    want = runs_states(tmp_path / "eager.db", runs, summarize, cfg, EagerAnalyzer)
    eager = runs_states(tmp_path / "eager-columns.db", runs, extract, cfg, EagerAnalyzer)
    assert eager == want
    kept_rows.clear()
    got = runs_states(tmp_path / "new.db", runs, extract, cfg, TraceAnalyzer)
    for run, (a, b) in enumerate(zip(got, eager, strict=True)):
        assert repr(a) == repr(b), f"run {run}"
    assert any(want[i][2] != "[]" for i in range(len(want)))  # open traces were carried
    assert kept_rows and max(kept_rows) > 0  # rows stayed in place


@pytest.mark.parametrize("seed", range(10))
def test_random_streams_over_many_runs(tmp_path: Path, kept_rows: list[int], seed: int) -> None:
    """Odd streams (few traces, tasks, missing fields, -0.0, time jumping back and forth) over many small
    runs, a tight cap and expiry: the same store as the eager analyzer's after every run."""
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
    want = runs_states(tmp_path / "eager.db", runs, summarize, cfg, EagerAnalyzer)
    assert runs_states(tmp_path / "new.db", runs, extract, cfg, TraceAnalyzer) == want


def test_a_stored_trace_reads_as_its_packed_trace(tmp_path: Path) -> None:
    """A ``_Stored`` row gives the values (and the ``OpenTrace``) of the ``PackedTrace`` read from it."""
    log = tmp_path / "app.log"
    write_log(log, realistic_events(3_000, seed=2))
    store = Store(tmp_path / "s.db")
    analyzer = TraceAnalyzer(store, load_config(environ={}))
    for chunk in chunks_of(log, 20_000):
        analyzer.feed(extract(chunk))
    with store.transaction():
        analyzer.finish()
    eager = dict(findings.load_open_traces(store.conn))
    lazy = TraceAnalyzer(store, load_config(environ={}))
    lazy._load_pending()
    assert eager and list(lazy._open) == list(eager)
    for trace_id, stored in lazy._open.items():
        assert type(stored) is traces._Stored
        packed = pack(eager[trace_id])
        for name in ("newest", "events", "queries", "db_ms", "cache_ms", "external_ms", "fingerprints"):
            assert repr(getattr(stored, name)) == repr(getattr(packed, name))
        assert pack(stored.unpack()) == packed
        assert stored[:2] == packed[:2]  # what the trim reads
    store.close()


def _reference_rows(open_: list[tuple[str, traces._Open]]) -> Iterator[tuple[Any, ...]]:
    """The open-trace rows as finish wrote them before ``_Rests.rows``: one tuple per trace from its own
    values, the fingerprints text ``orjson.dumps`` of the trace's fingerprints dict (a stored row as read)."""
    for trace_id, o in open_:
        if type(o) is traces._Stored:
            yield (trace_id, o[0], o[1], *o[3].values[o[2]])
        else:
            yield (trace_id, o.newest, o.events, o.queries, o.db_ms, o.cache_ms, o.external_ms,
                   orjson.dumps(o.fingerprints).decode())


class _ReferenceFinish(TraceAnalyzer):
    """The analyzer writing its open traces with ``_reference_rows``, and counting what stays open by summing
    it, as finish did."""

    summed = (0, 0)  # what stays open after finish, summed: (events, traces)

    def finish(self) -> list[Any]:
        with patch.object(traces, "_open_trace_rows", _reference_rows):
            aggs = super().finish()
        self.summed = (sum(self._open[t].events for t in self._open), len(self._open))
        return aggs


@pytest.mark.parametrize(("seed", "cfg"), [
    (3, {}),
    (4, {"run.trace_pending_max_events": 300, "run.n_plus_one_threshold": 2}),
    (5, {"run.trace_pending_max_events": 40, "run.trace_pending_seconds": 120}),
])
def test_open_trace_rows_from_the_columns_are_the_traces_own(tmp_path: Path, seed: int,
                                                             cfg: dict[str, Any]) -> None:
    """Finish writes each open trace opened by a batch's rest from the batch's columns at once (``_Rests.rows``:
    one zip, the fingerprints text made per batch from its group columns, entries as tuples) and reads the
    open events from the trim: the stored rows, findings, counters and aggregates are those of writing each
    trace's own values and ``orjson.dumps`` of its fingerprints dict, and the pending counts those summed, after
    every run of a sequence over one store (rows kept in place, expiry, the cap)."""
    log = tmp_path / "app.log"
    write_log(log, realistic_events(9_000, seed=seed), ordinary_every=13)
    chunks = chunks_of(log, 20_000)
    parts = [chunks[i:i + 2] for i in range(0, len(chunks), 2)]
    cuts = [0, 1, len(parts) // 3, len(parts) // 2, len(parts) * 3 // 4, len(parts)]
    runs = [parts[a:b] for a, b in pairwise(cuts)] + [parts[len(parts) // 2:]]  # and time going back
    want = runs_states(tmp_path / "reference.db", runs, extract, cfg, _ReferenceFinish)
    got = runs_states(tmp_path / "new.db", runs, extract, cfg, TraceAnalyzer)
    for run, (a, b) in enumerate(zip(got, want, strict=True)):
        assert a == b, f"run {run}"
    assert sum(w[2].count("{\"") for w in want) > 20  # open traces with fingerprints were written

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


def test_the_migration_keeps_the_open_trace_rows_and_drops_the_trace_id_index(tmp_path: Path) -> None:
    """A store whose open traces were kept under a trace_id primary key (the schema before insights
    migration 3) holds, once opened, the same rows under the same rowids, without an index; the next row
    appended takes the largest rowid plus one, as ``_write_open_traces`` expects."""
    path = tmp_path / "s.db"
    Store(path).close()
    rows = [(3, "a" * 32, T0, 2, 1, 1.5, 0.0, -0.0, '{"f":[1,1.5,"SELECT 1","t"]}'),
            (7, "b" * 32, T0 + 1.25, 1, 0, 0.0, 0.25, 0.0, "{}"),
            (8, "c" * 32, T0 - 3.0, 4, 2, 2.0, 0.0, 3.5, '{"g":[2,2.0,null,null]}')]
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript("""
        DROP TABLE insights_open_traces;
        CREATE TABLE insights_open_traces (trace_id TEXT PRIMARY KEY, newest REAL NOT NULL,
            events INTEGER NOT NULL, queries INTEGER NOT NULL, db_ms REAL NOT NULL, cache_ms REAL NOT NULL,
            external_ms REAL NOT NULL, fingerprints TEXT NOT NULL);
        DELETE FROM schema_migrations WHERE component = 'insights' AND version = 3;
    """)
    conn.executemany("INSERT INTO insights_open_traces (rowid, trace_id, newest, events, queries, db_ms, cache_ms,"
                     " external_ms, fingerprints) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    assert conn.execute("PRAGMA index_list(insights_open_traces)").fetchall()
    before = conn.execute("SELECT rowid, * FROM insights_open_traces ORDER BY rowid").fetchall()
    conn.close()
    store = Store(path)
    conn = store.conn
    got = conn.execute("SELECT rowid, * FROM insights_open_traces ORDER BY rowid").fetchall()
    assert repr(got) == repr(before) and [r[0] for r in got] == [3, 7, 8]
    assert conn.execute("PRAGMA index_list(insights_open_traces)").fetchall() == []
    with store.transaction():
        findings.update_open_trace_rows(conn, 0, [], [("d" * 32, T0, 1, 0, 0.0, 0.0, 0.0, "{}")])
    assert conn.execute("SELECT max(rowid) FROM insights_open_traces").fetchone() == (9,)
    store.close()
