"""Open traces carried from run to run: kept as their stored rows until read (``traces._Stored``), and written
back by deleting and appending only what changed (``traces._write_open_traces``), the store ends each run as
it did when every open trace was read into a ``PackedTrace`` and every row rewritten (``EagerAnalyzer``, the
analyzer as it was): the same aggregates, findings, counters and open-trace rows in the same order, run after
run, through traces crossing part and run boundaries, the cap, expiry, and logs going back in time."""

from __future__ import annotations

import random
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

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
    """The stored state after each run, with that run's aggregates."""
    return [state(store_path, aggs) for aggs in each_run(store_path, runs, to_parts, cfg, analyzer_cls)]


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
    assert runs_states(tmp_path / "eager-columns.db", runs, extract, cfg, EagerAnalyzer) == want
    kept_rows.clear()
    got = runs_states(tmp_path / "new.db", runs, extract, cfg, TraceAnalyzer)
    for run, (a, b) in enumerate(zip(got, want, strict=True)):
        assert a == b, f"run {run}"
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
