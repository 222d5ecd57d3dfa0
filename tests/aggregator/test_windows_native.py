"""The window accumulator's native routine (``aggregator/_windows.c``: the lookup of scanned columns, the fold,
the sketches' quick forms) gives exactly what its numpy path gives: every field of every aggregate (doubles
bit for bit, sketch bins and bytes, counters in order, ``take``'s order), the counts and the same state, on
generated logs (scanned as the engine scans them, and from decoded events), under the series cap (``other``
folding), past the lookup table's and the folded-key memo's sizes, with metric events, absent (NaN) queue
waits, empty blocks, one event, zeros and negatives, NaN, times before 0, huge bucket counts, many
(series, window) keys. Bad columns raise an error, never crash."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np
import pytest

from aggregator import windows
from aggregator.loggen import generate_events, lines_of
from aggregator.model import SeriesKey, make_tags
from aggregator.windows import WindowAccumulator
from parsers import LineParser
from parsers.columns import EventColumns, from_events
from tests.aggregator.test_windows_columns import T0, chunks_of, random_cuts, random_events, state
from tests.aggregator.test_windows_fold import FLAGS, SERIES, batch

native = windows._native
pytestmark = pytest.mark.skipif(native is None, reason="aggregator._windows is not built")


def both(feed: Any, monkeypatch: pytest.MonkeyPatch, **kw: Any) -> dict[str, Any]:
    """``feed(acc)`` into an accumulator with the native routine and one without: -> the state of both, which
    must be the same."""
    with_native = WindowAccumulator(60, 100.0, 50.0, **kw)
    assert with_native._native is not None
    feed(with_native)
    with monkeypatch.context() as m:
        m.setattr(windows, "_native", None)
        without = WindowAccumulator(60, 100.0, 50.0, **kw)
        assert without._native is None
        feed(without)
        want = state(without)
    got = state(with_native)
    for name in want:
        assert got[name] == want[name], name
    return got


def scanned_log(n: int, seed: int, seconds: float = 3600.0) -> list[EventColumns | list[Any]]:
    """A generated log scanned as the engine scans it (``parse_columns``): columns, and events where the
    scanner declines."""
    start = time.time() - 7200
    data = b"".join(lines_of(generate_events(n, start=start, seconds=seconds, seed=seed), ordinary_every=50))
    parser = LineParser(now=start + 7200, max_past_seconds=86400)
    out: list[EventColumns | list[Any]] = []
    for chunk in chunks_of(data, 1 << 20):
        for res in parser.parse_columns(chunk):
            out.append(res.columns if res.columns is not None else res.events)
    return out


def feeder(blocks: Sequence[EventColumns | list[Any]]) -> Any:
    def feed(acc: WindowAccumulator) -> None:
        for block in blocks:
            if isinstance(block, EventColumns):
                acc.add_columns(block)
            else:
                acc.add(block)
    return feed


@pytest.fixture(scope="module")
def scanned() -> list[EventColumns | list[Any]]:
    blocks = scanned_log(30_000, seed=5)
    assert sum(isinstance(b, EventColumns) for b in blocks) > 3
    return blocks


@pytest.mark.parametrize("cap", [None, 4, 40])
def test_scanned_log(scanned: list[EventColumns | list[Any]], cap: int | None,
                     monkeypatch: pytest.MonkeyPatch) -> None:
    got = both(feeder(scanned), monkeypatch, max_series=cap)
    assert got["events"] == 30_000
    assert {k for k, _ in got["by_kind"]} == {"request", "db", "cache", "external", "task", "metric"}
    assert bool(got["folded"]) == (cap is not None)


def test_scanned_log_many_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ten-second windows over two hours, a fold every few blocks: many (series, window) keys, aggregates
    updated by later folds (their sketches from bucket counts, not made whole)."""
    blocks = scanned_log(20_000, seed=8, seconds=7000.0)
    monkeypatch.setattr(windows, "FOLD_EVENTS", 3_000)

    def feed(acc: WindowAccumulator) -> None:
        acc.width = 10
        feeder(blocks)(acc)
    both(feed, monkeypatch)


def test_decoded_events(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every field's values (absent, empty, 5xx, every task state, -0.0 and zero durations, gauges' zeros
    and negatives, metric events without tags), in blocks of all sizes, ``add`` and ``add_columns`` mixed."""
    events = random_events(21, 9_000, keys=15)
    blocks: list[Any] = [from_events(b) if i % 3 else b for i, b in enumerate(random_cuts(3, events, 900))]
    both(feeder(blocks), monkeypatch)
    both(feeder(blocks), monkeypatch, max_series=3,
         admitted={"request": {make_tags(route="k1", method="GET", service="web", env="prod")}})


def test_odd_statuses(monkeypatch: pytest.MonkeyPatch) -> None:
    """Statuses past what a probe's memo numbers (1000): those blocks look their events up in the table."""
    events = random_events(9, 3000, kinds=["request", "external", "db"], keys=5)
    odd = [msgspec.structs.replace(e, http_response_status_code=status) if e.kind == "request" and i % 7 == 0
           else e for i, (e, status) in enumerate(zip(events, [1200, 32_000, 999, 1000, 1001] * 600, strict=True))]
    blocks = [from_events(b) for b in random_cuts(5, odd, 700)]
    assert all((b.status > 1000).any() for b in blocks)
    both(feeder(blocks), monkeypatch)


def test_empty_and_one_event(monkeypatch: pytest.MonkeyPatch) -> None:
    events = random_events(4, 40)
    both(feeder([from_events([])]), monkeypatch)
    both(feeder([from_events([events[0]])]), monkeypatch)
    both(feeder([from_events([]), from_events(events[:1]), from_events([]), from_events(events[1:])]),
         monkeypatch)


@pytest.mark.parametrize("seed", range(3))
def test_past_the_tables(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """More keys than the lookup table holds, folded keys past the memo (looked up event by event)."""
    monkeypatch.setattr(windows, "_LOOKUP_MAX", 12)
    monkeypatch.setattr(windows, "FOLDED_MEMO", 6)
    monkeypatch.setattr(windows, "_WARM_UP", 5)
    monkeypatch.setattr(windows, "FOLD_EVENTS", 700)
    events = random_events(300 + seed, 4000, keys=300)
    blocks = [from_events(b) for b in random_cuts(seed, events, 500)]
    got = both(feeder(blocks), monkeypatch, max_series=2 + seed)
    assert len(got["lookup"]) >= 12 and sum(n for _, n in got["folded"]) > 6
    both(feeder(blocks), monkeypatch)


# --- the fold alone ---------------------------------------------------------------------------------------


def fold_both(family: str, batches: list[tuple[Any, ...]], monkeypatch: pytest.MonkeyPatch,
              declines: bool = False) -> None:
    """The family's batches (lookup values, times, values) folded one after the other, natively (or, where it
    declines, as ``_fold``) and as ``_fold``: the same aggregates."""
    series = [SeriesKey(family if family != "metric" else "metric:x", make_tags(route=f"r{i}"))
              for i in range(SERIES)]
    out = []
    for way in ("native", "numpy"):
        acc = WindowAccumulator(60, 100.0, 50.0)
        took = []
        for ids, ts, values in batches:
            ids, ts, values = ids.copy(), ts.copy(), values.copy()
            if way == "native":
                took.append(acc._fold_native(family, series, ids, ts, values))
                if not took[-1]:
                    acc._fold(family, series, ids & windows._INDEX_MASK, ts, values,
                              *windows._errors_and_flags(family, ids))
            else:
                acc._fold(family, series, ids & windows._INDEX_MASK, ts, values,
                          *windows._errors_and_flags(family, ids))
        if way == "native":
            assert (not all(took)) if declines else all(took)
        aggs = acc.take()
        out.append(([(a.series, a.start, a.count, a.errors, a.total.hex(), a.min.hex(), a.max.hex(),
                      [(k, v.hex()) for k, v in a.counters.items()], a.sketch.to_bytes(compress=False),
                      a.sketch.pos.offset, a.sketch.pos.counts.tolist(), a.sketch.neg.counts.tolist(),
                      a.sketch.zero_count) for a in aggs], acc.min_ts, acc.max_ts))
    assert out[0] == out[1]


def as_ids(family: str, sid: Any, rng: np.random.Generator) -> Any:
    """Lookup values of these series with random flag bits (every combination) under the kind's code."""
    bits = rng.integers(0, 16, sid.size)
    code = windows.KIND_CODES.get(family, 4)
    return sid | bits << windows._BITS_SHIFT | code << windows._CODE_SHIFT


@pytest.mark.parametrize("family", [*FLAGS, "external", "task.queue_wait"])
@pytest.mark.parametrize("mix", ["plain", "zeros", "ties", "many"])
def test_fold(family: str, mix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    fam = "metric" if family == "metric:x" else family
    rng = np.random.default_rng(hash((family, mix, 1)) & 0xFFFF)
    for _ in range(3):
        batches = []
        for _ in range(3):
            sid, ts, values, _, _ = batch(rng, "db", int(rng.integers(1, 2_000)), mix)
            batches.append((as_ids(fam, sid, rng), ts, values))
        with np.errstate(invalid="ignore"):
            fold_both(fam, batches, monkeypatch)


def test_fold_huge_counts_and_nan(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bucket holding more than 2 ** 16 values (the quick form's widest counts), NaN values (their
    segment's sketch refuses them: the same error either way), infinities."""
    n = 70_000
    sid = np.zeros(n, dtype=np.int64)
    sid[: n // 2] = 1
    fold_both("db", [(sid, np.full(n, T0 + 5.0), np.full(n, 12.5))], monkeypatch)
    values = np.full(n, 300.0)
    values[::3] = 301.0
    fold_both("request", [(sid, T0 + np.arange(n) / 1000.0, values)], monkeypatch)
    for bad in (np.nan, np.inf):
        vals = np.full(50, 3.0)
        vals[7] = bad
        raised = []
        for way in ("native", "numpy"):
            with monkeypatch.context() as m:
                if way == "numpy":
                    m.setattr(windows, "_native", None)
                acc = WindowAccumulator()
                acc._pending["db"] = [(np.zeros(50, dtype=np.int64), np.full(50, T0), vals)]
                with pytest.raises(Exception) as exc, np.errstate(all="ignore"):
                    acc.take()
                raised.append((exc.type, str(exc.value)))
        assert raised[0] == raised[1]


def test_fold_declines(monkeypatch: pytest.MonkeyPatch) -> None:
    """Times before 0, past 2 ** 52: ``_fold`` does those; many (series, window) keys (the numpy path sorts
    them), a fold does."""
    rng = np.random.default_rng(3)
    values = rng.lognormal(3.0, 1.0, 100)
    sid = rng.integers(0, 5, 100).astype(np.int64)
    for ts in (np.linspace(-200.0, 500.0, 100), np.full(100, 2.0 ** 53), np.linspace(2.0 ** 52 - 500, 2.0 ** 52, 100)):
        with np.errstate(invalid="ignore"):
            fold_both("db", [(sid, ts, values)], monkeypatch, declines=True)
    many = np.arange(100, dtype=np.int64) * 30  # keys: 3,000 series x 400 windows, past the direct fold's
    fold_both("db", [(many, T0 + np.linspace(0.0, 400 * 60.0, 100), values)], monkeypatch)
    rng_sid = rng.integers(0, SERIES, 5000).astype(np.int64)  # segments in no order, the hash grown
    fold_both("db", [(rng_sid, T0 + rng.uniform(0.0, 3000.0, 5000), rng.lognormal(3.0, 1.0, 5000))], monkeypatch)


# --- bad input ---------------------------------------------------------------------------------------------


def test_bad_columns_raise() -> None:
    events = random_events(1, 200)
    cols = from_events(events)
    acc = WindowAccumulator()
    bad = from_events(events)
    bad.kind = bad.kind.copy()
    bad.kind[3] = 9
    with pytest.raises(ValueError, match="kind code"):
        acc.add_columns(bad)
    bad = from_events(events)
    bad.codes = dict(bad.codes)
    bad.codes["http_route"] = np.full(bad.n, 10_000, dtype=np.int32)
    with pytest.raises(ValueError, match="out of its table"):
        acc.add_columns(bad)
    bad = from_events(events)
    bad.outcome = np.full(bad.n, 7, dtype=np.int8)
    with pytest.raises(ValueError, match="flag code"):
        WindowAccumulator().add_columns(bad)
    bad = from_events(events)
    bad.ts = bad.ts.astype(np.float32)
    with pytest.raises(TypeError):
        WindowAccumulator().add_columns(bad)
    router = acc._native
    with pytest.raises(RuntimeError, match="without probe"):
        router.emit(cols.kind, cols.ts, cols.duration_ms, cols.queue_wait_ms, (None,) * 5, (None,) * 6)
    acc.add_columns(cols)  # still works after the errors
    ref = WindowAccumulator()
    ref.add(events)
    assert [(a.series, a.start, a.count, a.total) for a in acc.take()] == \
        [(a.series, a.start, a.count, a.total) for a in ref.take()]


def _probe(router: Any, cols: EventColumns, kind: Any = None) -> Any:
    fields = tuple([(cols.codes[name], cols.tables[windows.TABLE_OF[name]]) for name in windows._NATIVE_FIELDS])
    return router.probe(cols.kind if kind is None else kind, 0, cols.n, fields, cols.outcome, cols.status,
                        cols.cache_hit, cols.task_state, cols.queue_wait_ms)


def _outputs(counts: Sequence[int]) -> tuple[Any, ...]:
    return tuple([None if not k else (np.empty(k, dtype=np.int64), np.empty(k), np.empty(k))
                  for k in (*counts[:5], counts[6])])


def _resolved(misses: Sequence[Any]) -> tuple[Any, ...]:
    return tuple([None if got is None else (np.zeros(len(got[1]) // 4, dtype=np.int64),
                                            np.full(len(got[0]), -1, dtype=np.int64)) for got in misses])


def test_misused_router_raises() -> None:
    """The Router called otherwise than WindowAccumulator calls it raises, never reads or writes past an array:
    without __init__ (NULL tables: a segfault before), emit() given a kind column other than the probe's (a
    NULL values array read, kind codes past the per-kind arrays), a queue_wait column with more waits than the
    probe's, emit() after a probe that failed (the previous block's counts with this block's misses)."""
    events = random_events(1, 200)
    cols = from_events(events)
    assert native is not None
    bare = native.Router.__new__(native.Router)
    with pytest.raises(RuntimeError, match="not initialised"):
        _probe(bare, cols)
    with pytest.raises(RuntimeError, match="without probe"):
        bare.emit(cols.kind, cols.ts, cols.duration_ms, cols.queue_wait_ms, (None,) * 5, (None,) * 6)
    assert bare.size() == 0
    acc = WindowAccumulator()
    acc.add_columns(cols)  # the table holds every combination: no misses below, except where said
    router = acc._native
    for other in (np.zeros(cols.n, dtype=np.int8), np.full(cols.n, 100, dtype=np.int8),
                  np.full(cols.n, -3, dtype=np.int8), np.roll(cols.kind, 1)):
        counts, misses = _probe(router, cols)
        with pytest.raises(ValueError, match="not the probed block's"):
            router.emit(other, cols.ts, cols.duration_ms, cols.queue_wait_ms, _resolved(misses), _outputs(counts))
    counts, misses = _probe(router, cols)
    with pytest.raises(ValueError, match="not the probed block's"):
        router.emit(cols.kind, cols.ts, cols.duration_ms, np.zeros(cols.n), _resolved(misses), _outputs(counts))
    # new combinations: every event misses, then an emit whose kinds put more misses on a kind than it has
    fresh = WindowAccumulator()._native
    counts, misses = _probe(fresh, cols)
    assert sum(len(got[1]) // 4 for got in misses if got is not None) == cols.n - counts[5]
    with pytest.raises(ValueError, match="not the probed block's"):
        fresh.emit(np.roll(cols.kind, 1), cols.ts, cols.duration_ms, cols.queue_wait_ms, _resolved(misses),
                   _outputs(counts))
    counts, misses = _probe(router, cols)
    bad = cols.kind.copy()
    bad[-1] = 9
    with pytest.raises(ValueError, match="kind code"):
        _probe(router, cols, bad)
    with pytest.raises(RuntimeError, match="without probe"):  # the failed probe left nothing to emit
        router.emit(cols.kind, cols.ts, cols.duration_ms, cols.queue_wait_ms, _resolved(misses), _outputs(counts))
    acc.add_columns(cols)  # still works after all that
    ref = WindowAccumulator()
    ref.add(events)
    ref.add(events)
    assert [(a.series, a.start, a.count, a.total) for a in acc.take()] == \
        [(a.series, a.start, a.count, a.total) for a in ref.take()]


def test_fold_declines_keys_past_int32() -> None:
    """fold() takes the logs it is given: logs whose bucket keys are past int32 (past int64: an undefined cast)
    are declined (the numpy path does them), not folded into segments whose width overflows (the bucket counts
    were then written at offsets outside their array)."""
    assert native is not None
    ids = np.array([0, 0, 1, 1], dtype=np.int64)
    ts = np.full(4, T0)
    values = np.full(4, 5.0)
    for logs in ([1e300, 1000.0, 1e300, 1000.0], [-1e300, 1000.0, 1.0, 2.0], [2.0 ** 31, 1.0, 1.0, 1.0],
                 [1.0, 1.0, 1.0, -(2.0 ** 31)]):
        got = native.fold(ids, ts, values, np.array(logs), 60, 2, 100.0, 50.0, 1e-9, 1.0, 0.01, 1, 2048, 2)
        assert got is None, logs
    got = native.fold(ids, ts, values, np.array([3.0, 1.0, 2.0, 2.0]), 60, 2, 100.0, 50.0, 1e-9, 1.0, 0.01, 1,
                      2048, 2)
    assert got is not None and np.frombuffer(got[3 + 9], dtype=np.int64).tolist() == [3, 1]
