"""The run's end phase stores exactly what the previous implementation stored.

``WindowState.merge`` seals (encodes once) the sketches of the windows that look final, ``DDSketch.to_bytes``
encodes a worker's quick form without decoding it, ``WindowState.apply`` decides the cap once per series
and reads the stored windows with ``WindowsStore.get_many``. The reference below is the code before those
changes: ``merge`` without sealing, ``apply`` as it was (one sort of every window's key, a ``get`` per window; none
of the new ``apply``'s helpers, so that its order and cap are checked too), ``to_bytes`` that decodes and encodes every sketch. Whole runs through the worker pool (many parts, two files overlapping in time so that
sealed windows change again, a second run that merges into the stored windows, late events, the series cap)
must leave the same rows, column for column, and report the same counts.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from aggregator import sketch as sketch_module
from aggregator import windows as windows_module
from aggregator.catalog import merge_into
from aggregator.config import load_config
from aggregator.loggen import generate_events, write_log
from aggregator.model import SeriesKey, Tags, WindowAggregate
from aggregator.run import execute
from aggregator.sketch import DDSketch
from aggregator.store import Store
from aggregator.windows import AggKey, ApplyResult, WindowState, cap_warning, is_event_family
from aggregator.windows_store import WindowsStore, fold_tags

NOW = time.time()
START = int(NOW // 60) * 60 - 7200


# --- the previous implementation ------------------------------------------------------------------------


def _reference_to_bytes(self: DDSketch, *, compress: bool = True) -> bytes:
    blob = self._blob
    if compress and blob is not None and blob[:1] != b"\0":  # the stored form it came with, unchanged
        return blob
    if compress:  # the decoded sketch, by the stored form's numpy twin
        return sketch_module._encoded_py(self.relative_accuracy, self.min, self.max, self.zero_count, self.pos,
                                         self.neg)
    return b"".join((b"\0", sketch_module._HEADER.pack(sketch_module._FORMAT_VERSION, 0, self.relative_accuracy,
                                                       self.min, self.max, self.zero_count),
                     self.pos.to_bytes(), self.neg.to_bytes()))


def _reference_merge(self: WindowState, partials: Iterable[WindowAggregate], max_ts: float | None = None) -> None:
    aggs = self.aggs
    for p in partials:
        k = (p.series.family, p.series.tags, p.start)
        cur = aggs.get(k)
        if cur is None:
            aggs[k] = p
        else:
            merge_into(cur, p)
    if max_ts is not None and (self.max_ts is None or max_ts > self.max_ts):
        self.max_ts = max_ts


def _reference_apply(self: WindowState, ws: WindowsStore, *, lateness_seconds: int, max_series: int, now: float,
                     warn: Any = None) -> ApplyResult:
    res = ApplyResult()
    stored_wm = ws.watermark()
    wm = max((x for x in (stored_wm, self.max_ts) if x is not None), default=None)
    res.watermark = wm
    cutoff = (wm - lateness_seconds) if wm is not None else None
    known = ws.known_series()
    final: dict[AggKey, WindowAggregate] = {}
    new_series: list[tuple[str, Tags, int]] = []
    aggs = self.aggs
    for k in sorted(aggs, key=lambda k: (k[0], fold_tags(k[1]) == k[1], k[1], k[2])):
        family, tags, start = k
        agg = aggs[k]
        if cutoff is not None and agg.end <= cutoff and family != "pipeline":
            if is_event_family(family):
                res.late_events += agg.count
                res.late_windows += 1
            continue
        fam_known = known.setdefault(family, set())
        if tags not in fam_known:
            if len(fam_known) < max_series or family == "pipeline":
                fam_known.add(tags)
                new_series.append((family, tags, start))
            else:
                folded = fold_tags(tags)
                if res.folded.get(family, 0) == 0 and warn is not None:
                    warn(cap_warning(family, max_series))
                res.folded[family] = res.folded.get(family, 0) + 1
                if folded not in fam_known:
                    fam_known.add(folded)
                    new_series.append((family, folded, start))
                agg = WindowAggregate(SeriesKey(family, folded), start, agg.width, agg.count, agg.errors,
                                      agg.total, agg.min, agg.max, dict(agg.counters), agg.sketch)
                tags = folded
        fk = (family, tags, start)
        cur = final.get(fk)
        if cur is None:
            final[fk] = agg
        else:
            merge_into(cur, agg)
    out: list[WindowAggregate] = []
    for (family, tags, start), agg in final.items():
        stored = ws.get(family, tags, start)
        if stored is not None:
            merge_into(stored, agg)
            agg = stored
        out.append(agg)
        res.changed_starts.add(start)
        if family == "request":
            res.request_windows.append(agg)
    ws.put(out, now)
    ws.add_series(new_series)
    if wm is not None:
        ws.set_watermark(wm)
    res.windows_updated = len(out)
    res.new_series = len(new_series)
    return res


# --- runs ----------------------------------------------------------------------------------------------


def _state(path: Path) -> tuple[Any, ...]:
    """Every stored row of the windows' tables (the pipeline's own window aside: its figures are wall-clock)."""
    with Store(path) as store:
        conn = store.conn
        return (conn.execute("SELECT * FROM windows WHERE family != 'pipeline' ORDER BY family, tags, start").fetchall(),
                conn.execute("SELECT * FROM series WHERE family != 'pipeline' ORDER BY family, tags").fetchall(),
                conn.execute("SELECT * FROM window_state ORDER BY key").fetchall())


def _runs(tmp_path: Path, name: str, cap: int, reference: bool, monkeypatch: pytest.MonkeyPatch,
          ) -> tuple[list[Any], Any, list[WindowState]]:
    """Two runs into a new store; the reports' counts, the stored rows, and the run's window states."""
    logs = tmp_path / name
    logs.mkdir()
    a, b = logs / "a.log", logs / "b.log"
    # a: the last hour in time order; b (read after it) overlaps its middle: windows sealed behind a's parts change
    write_log(a, generate_events(6000, start=START + 3600, seconds=3600, seed=11))
    write_log(b, generate_events(800, start=START + 4800, seconds=600, seed=12))
    states: list[WindowState] = []
    merge = WindowState.merge

    def recording(self: WindowState, partials: Iterable[WindowAggregate], max_ts: float | None = None) -> None:
        if not any(s is self for s in states):
            states.append(self)
        merge(self, partials, max_ts)

    reports: list[Any] = []
    with monkeypatch.context() as m:
        if reference:
            m.setattr(DDSketch, "to_bytes", _reference_to_bytes)
            m.setattr(WindowState, "merge", _reference_merge)
            m.setattr(WindowState, "apply", _reference_apply)
        else:
            m.setattr(WindowState, "merge", recording)
        config = load_config(environ={}, overrides={"run.workers": 2, "run.max_series_per_metric": cap,
                                                    "run.lateness_seconds": 3600})
        state = logs / "state.db"
        for step in range(2):
            if step:  # more of a's hour (windows already stored), late events within and beyond the lateness
                write_log(a, generate_events(1500, start=START + 6600, seconds=600, seed=13)
                          + generate_events(300, start=START + 5600, seconds=60, seed=14)
                          + generate_events(200, start=START + 60, seconds=120, seed=15))
            report = execute(config, inputs=[str(a), str(b)], state_path=state, stages=(), warn=lambda msg: None,
                             now=NOW, part_bytes=256 << 10)
            reports.append((report.parts, report.events, report.late, report.windows_updated, report.window_starts,
                            report.folded, report.outbox_entries))
    return reports, _state(state), states


@pytest.mark.parametrize("cap", [1000, 4])
def test_runs_store_what_the_previous_implementation_stored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           cap: int) -> None:
    new_reports, new_state, states = _runs(tmp_path, "new", cap, False, monkeypatch)
    ref_reports, ref_state, _ = _runs(tmp_path, "ref", cap, True, monkeypatch)
    assert new_reports == ref_reports
    assert new_state == ref_state
    # not vacuous: many parts, windows merged into stored ones, late events, folding past the cap, and the
    # runs' states sealed windows (some of them sealed, then changed by b's parts)
    assert new_reports[0][0] > 10 and new_reports[1][0] > 2
    assert new_reports[0][2] == 0 and new_reports[1][2] == 200  # late: the events beyond the lateness
    assert len(new_state[0]) > 500 and all(row[10] is not None for row in new_state[0] if row[0] == "request")
    assert bool(new_reports[0][5]) == (cap < 1000)
    run_states = [s for s in states if len(s.aggs) > 1]
    assert len(run_states) == 2 and all(s._sealed > 100 for s in run_states)
    assert run_states[0]._resealed > 0


def test_sealing_stops_when_sealed_windows_keep_changing() -> None:
    """Batches that keep reopening the windows behind them (inputs out of time order) stop the sealing; the
    aggregates are the same either way."""
    def batch(start: int, first: int, n: int) -> list[WindowAggregate]:
        out = []
        for s in range(first, first + n):
            sk = DDSketch()
            sk.add_many([1.0 + s, 2.0 * (s + 1)])
            out.append(WindowAggregate(SeriesKey("request", (("route", f"r{start % 7}"),)), 60 * s, 60, count=2,
                                       total=3.0, min=1.0, max=2.0, sketch=sk))
        return out

    state, plain = WindowState(), WindowState()
    for i in range(400):
        parts = batch(i, (i * 7) % 40, 3)
        state.merge(parts)
        _reference_merge(plain, batch(i, (i * 7) % 40, 3))
    assert state._resealed * windows_module.SEAL_WASTE > state._sealed + windows_module.SEAL_SLACK
    sealed = state._sealed
    state.merge(batch(400, 50, 3))
    _reference_merge(plain, batch(400, 50, 3))
    state.merge(batch(401, 60, 3))
    _reference_merge(plain, batch(401, 60, 3))
    assert state._sealed == sealed  # stopped
    assert set(state.aggs) == set(plain.aggs)
    for k, agg in state.aggs.items():
        want = plain.aggs[k]
        assert (agg.count, agg.total, agg.min, agg.max) == (want.count, want.total, want.min, want.max)
        assert agg.sketch is not None and want.sketch is not None
        assert agg.sketch.to_bytes() == _reference_to_bytes(want.sketch)  # type: ignore[arg-type]


def test_an_unknown_other_series_past_the_cap_counts_one_folded_window(tmp_path: Path) -> None:
    """A family at its cap, and the workers' `other` series (what they folded) not stored yet: its first window
    folds (into itself: counted once, the series registered), its later windows are then of a known series, as
    the per-window check counted them (a spilled batch of a run meets this: the cap filled by an earlier batch).
    Fails when the decision taken once per series counts every window of `other` as folded."""
    def windows(tags: Tags, starts: range) -> list[WindowAggregate]:
        out = []
        for s in starts:
            sk = DDSketch()
            sk.add_many([10.0, 20.0])
            out.append(WindowAggregate(SeriesKey("request", tags), START + 60 * s, 60, count=2, total=30.0,
                                       min=10.0, max=20.0, counters={"satisfied": 2.0}, sketch=sk))
        return out

    real = [(("method", "GET"), ("route", f"r{i}")) for i in range(3)]
    other = fold_tags(real[0])
    results = []
    for apply in (WindowState.apply, _reference_apply):
        with Store(tmp_path / f"{apply.__name__}.db") as store:
            ws = WindowsStore(store)
            with store.transaction():
                first = WindowState()
                first.merge([agg for tags in real[:2] for agg in windows(tags, range(2))])
                apply(first, ws, lateness_seconds=10**6, max_series=2, now=NOW)
                later = WindowState()  # a later batch: the family full, and the `other` series alone
                later.merge(windows(other, range(2, 6)) + windows(real[0], range(2, 6)))
                res = apply(later, ws, lateness_seconds=10**6, max_series=2, now=NOW)
            results.append((res.folded, res.new_series, res.windows_updated, _state(tmp_path / f"{apply.__name__}.db")))
    assert results[0] == results[1]
    assert results[1][0] == {"request": 1}  # `other`'s first window


@pytest.mark.parametrize("cap", [1000, 4])
def test_spilled_runs_store_and_count_what_the_previous_implementation_did(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch,
                                                                          cap: int) -> None:
    """The same runs, their aggregates spilled into the store every few parts (``run.SPILL_AGGREGATES``): the
    later batches meet a family already at its cap and the `other` series the workers folded (with cap 4, the
    folded counts differed before ``apply`` stopped counting `other`'s later windows)."""
    import aggregator.run as run_module

    monkeypatch.setattr(run_module, "SPILL_AGGREGATES", 40)
    new_reports, new_state, _ = _runs(tmp_path, "new", cap, False, monkeypatch)
    ref_reports, ref_state, _ = _runs(tmp_path, "ref", cap, True, monkeypatch)
    assert new_reports == ref_reports
    assert new_state == ref_state
