"""``WindowAccumulator.add_columns`` (a block's events as ``parsers.columns.EventColumns``) gives exactly what
``add`` of the same events gives: every field of every aggregate (doubles bit for bit, sketch bins, counters in
order, ``take``'s order), the event, kind and folded counts, the time range, and the same state (series in the
same order, lookup table, admitted series), for any sequence of calls of either, under the series cap, past
the lookup table's and the memo's sizes; with the native routine and without it (``either_way``)."""

from __future__ import annotations

import random
import struct
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest

from aggregator import windows
from aggregator.engine import CHUNK_BYTES
from aggregator.loggen import generate_events, lines_of
from aggregator.model import Tags, WindowAggregate, make_tags
from aggregator.sketch import DDSketch
from aggregator.windows import WindowAccumulator
from parsers import LineParser
from parsers.columns import from_events
from parsers.event import Event

T0 = 1_764_410_400.0  # a minute boundary


def bits(x: float) -> bytes:
    return struct.pack("<d", x)


def sketch_state(s: Any) -> Any:
    if s is None:
        return None
    assert isinstance(s, DDSketch)
    return (s.relative_accuracy, bits(s.min), bits(s.max), s.zero_count,
            s.pos.offset, s.pos.counts.dtype.str, s.pos.counts.tobytes(),
            s.neg.offset, s.neg.counts.dtype.str, s.neg.counts.tobytes(), s.to_bytes(compress=False))


def agg_state(a: WindowAggregate) -> Any:
    return (a.series, a.start, a.width, a.count, a.errors, bits(a.total), bits(a.min), bits(a.max),
            [(k, bits(v)) for k, v in a.counters.items()], sketch_state(a.sketch))


def state(acc: WindowAccumulator) -> dict[str, Any]:
    """Everything ``take`` hands over and everything the accumulator keeps (orders included)."""
    aggs = acc.take()
    return {
        "aggregates": [agg_state(a) for a in aggs],
        "events": acc.events,
        "by_kind": list(acc.by_kind.items()),
        "folded": list(acc.folded.items()),
        "min_ts": None if acc.min_ts is None else bits(acc.min_ts),
        "max_ts": None if acc.max_ts is None else bits(acc.max_ts),
        "series": dict(acc._series),
        "index": list(acc._index.items()),
        "lookup": list(acc._lookup.items()),
        "sizes": dict(acc._sizes),
        "held": dict(acc._held),
    }


def assert_same(a: WindowAccumulator, b: WindowAccumulator) -> None:
    sa, sb = state(a), state(b)
    for name in sa:
        assert sa[name] == sb[name], name


def feed(batches: Sequence[Sequence[Event]], modes: Sequence[str], **kw: Any) -> WindowAccumulator:
    acc = WindowAccumulator(60, 100.0, 50.0, **kw)
    for batch, mode in zip(batches, modes, strict=True):
        if mode == "add":
            acc.add(batch)
        else:
            acc.add_columns(from_events(batch))
    return acc


def check(batches: Sequence[Sequence[Event]], modes: Sequence[str] | None = None, **kw: Any) -> WindowAccumulator:
    """``modes`` (default: columns only) against ``add`` of every batch."""
    modes = modes or ["columns"] * len(batches)
    ref = feed(batches, ["add"] * len(batches), **kw)
    got = feed(batches, modes, **kw)
    assert_same(got, ref)
    return ref


# --- events ---------------------------------------------------------------------------------------------

KINDS = ("request", "db", "cache", "external", "task", "metric")
DURATIONS = (-0.0, 0.0, 1e-12, 0.5, 3.0, 120.0, 499.9, 500.0, 2000.0, 9e5)


def pick(rng: random.Random, values: Sequence[Any]) -> Any:
    return values[rng.randrange(len(values))]


def random_event(rng: random.Random, kind: str, keys: int) -> Event:
    """One event of ``kind`` with fields drawn from small pools (absent and empty values included); ``keys``
    sizes the pool of the main key field (routes, tables, cache and task names, metric names)."""
    ts = T0 + rng.uniform(-5.0, 600.0)
    d = pick(rng, DURATIONS) if rng.random() < 0.3 else rng.lognormvariate(3.0, 1.5)
    common: dict[str, Any] = {"timestamp": "", "schema": 1, "kind": kind, "ts": ts,
                              "outcome": pick(rng, ("success", "failure", None, "success")),
                              "service_name": pick(rng, ("web", "worker", None, "")),
                              "deployment_environment": pick(rng, ("prod", "staging", None))}
    main = f"k{rng.randrange(keys)}"
    if kind == "request":
        return Event(**common, duration_ms=d, http_route=pick(rng, (main, main, None, "")),
                     http_request_method=pick(rng, ("GET", "POST", None)),
                     http_response_status_code=pick(rng, (200, 200, 201, 404, 500, 503, 599, None)))
    if kind == "db":
        return Event(**common, duration_ms=d, db_system=pick(rng, ("postgresql", "sqlite", None)),
                     db_namespace=pick(rng, ("default", "replica", None, "")),
                     db_operation_name=pick(rng, ("SELECT", "INSERT", None)),
                     db_collection_name=pick(rng, (main, None)))
    if kind == "cache":
        return Event(**common, duration_ms=d, cache_name=pick(rng, (main, "default")),
                     cache_operation=pick(rng, ("get", "set", "delete", None)),
                     cache_hit=pick(rng, (True, False, None)))
    if kind == "external":
        return Event(**common, duration_ms=d, peer_service=pick(rng, (main, "s3", None)),
                     external_operation=pick(rng, ("PutObject", "GET", None)),
                     http_response_status_code=pick(rng, (200, 502, 503, 404, None)))
    if kind == "task":
        return Event(**common, duration_ms=d, task_name=pick(rng, (main, "send")),
                     messaging_destination_name=pick(rng, ("celery", "mail", None)),
                     task_state=pick(rng, ("success", "failure", "retry", None)),
                     task_queue_wait_ms=pick(rng, (None, 0.0, -0.0, 12.5, 3000.0)))
    tags = pick(rng, (None, {}, {"plan": "pro"}, {"plan": main}, {"db": "default", "plan": "free"},
                      {"plan": "free", "db": "default"}, {"a": ""}))
    return Event(timestamp="", schema=1, kind="metric", ts=ts, metric_name=pick(rng, (main, "orders", "pool.util")),
                 metric_type=pick(rng, ("count", "gauge")), metric_tags=tags,
                 metric_value=pick(rng, (1.0, 0.0, -0.0, -3.5, 0.75, 1e-300, 42.0)))


def random_events(seed: int, n: int, *, kinds: Sequence[str] = KINDS, keys: int = 8) -> list[Event]:
    rng = random.Random(seed)
    return [random_event(rng, pick(rng, kinds), keys) for _ in range(n)]


def random_cuts(seed: int, events: list[Event], most: int) -> list[list[Event]]:
    rng = random.Random(seed)
    out: list[list[Event]] = []
    pos = 0
    while pos < len(events):
        k = rng.randint(1, most)
        out.append(events[pos:pos + k])
        pos += k
    return out


def chunks_of(data: bytes, block: int = CHUNK_BYTES) -> Iterator[bytes]:
    pos = 0
    while pos < len(data):
        end = data.find(b"\n", min(pos + block, len(data)) - 1)
        end = len(data) if end < 0 else end + 1
        yield data[pos:end]
        pos = end


def parsed_log(n: int, seed: int) -> list[list[Event]]:
    """A generated log (with ordinary lines) decoded as the engine does: ``CHUNK_BYTES`` at a time."""
    start = time.time() - 7200
    data = b"".join(lines_of(generate_events(n, start=start, seconds=3600.0, seed=seed), ordinary_every=50))
    parser = LineParser(now=start + 7200, max_past_seconds=86400)
    return [parser.parse(chunk).events for chunk in chunks_of(data)]


@pytest.fixture(scope="module")
def log() -> list[list[Event]]:
    return parsed_log(45_000, seed=3)


@pytest.fixture
def small_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables small enough to fill: the lookup table, the folded-key memo, the warm-up, the fold buffer."""
    monkeypatch.setattr(windows, "_LOOKUP_MAX", 12)
    monkeypatch.setattr(windows, "FOLDED_MEMO", 6)
    monkeypatch.setattr(windows, "_WARM_UP", 5)
    monkeypatch.setattr(windows, "FOLD_EVENTS", 700)


@pytest.fixture(autouse=True, params=["native", "numpy"])
def either_way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test with the native routine (``aggregator._windows``) when it is built, and without it."""
    if request.param == "numpy":
        monkeypatch.setattr(windows, "_native", None)
    elif windows._native is None:
        pytest.skip("aggregator._windows is not built")


# --- tests ----------------------------------------------------------------------------------------------


def test_realistic_log_in_engine_chunks(log: list[list[Event]]) -> None:
    assert len(log) > 3 and min(map(len, log)) > 4 * windows._WARM_UP
    ref = check(log)
    assert ref.events == sum(map(len, log)) and set(ref.by_kind) == set(KINDS)


@pytest.mark.parametrize("cap", [3, 40])
def test_realistic_log_under_the_cap(log: list[list[Event]], cap: int) -> None:
    ref = check(log, max_series=cap)
    assert ref.folded
    admitted: dict[str, set[Tags]] = {
        "request": {make_tags(route="api/stories/", method="GET", service="web", env="prod"), make_tags(route="x")},
        "db": {make_tags(db="default", operation="SELECT", table="story")},
        "metric:stories.published": {make_tags(plan="pro")},
    }
    check(log, max_series=cap, admitted=admitted)


def test_realistic_log_mixed_calls(log: list[list[Event]]) -> None:
    for seed in range(3):
        rng = random.Random(seed)
        check(log, [pick(rng, ("add", "columns")) for _ in log], max_series=None if seed else 30)


def test_realistic_log_cut_small(log: list[list[Event]]) -> None:
    events = [e for chunk in log[:2] for e in chunk]
    check(random_cuts(1, events, 7))
    check([events[:1], events[1:3000], events[3000:]])


@pytest.mark.parametrize("seed", range(4))
def test_tiny_chunks(seed: int) -> None:
    events = random_events(seed, 1500)
    check(random_cuts(seed, events, 5))
    check(random_cuts(seed, events, 5), max_series=4)


@pytest.mark.parametrize("kind", KINDS)
def test_one_kind(kind: str) -> None:
    events = random_events(7, 4000, kinds=[kind], keys=30)
    check([events[:2500], events[2500:]])
    check([events], max_series=5)
    check(random_cuts(2, events, 300), max_series=5, admitted={kind: {make_tags(cache="k3", operation="get")}})


def test_every_kind_every_value() -> None:
    """Each field's values (absent, empty, 5xx, hits and misses, every task state, -0.0) in one batch, then
    again in the batch that follows the warm-up."""
    events = random_events(11, 12_000, keys=12)
    ref = check([events[:5000], events[5000:]])
    assert set(ref.by_kind) == set(KINDS)
    aggs = feed([events], ["add"]).take()
    counters = {k for a in aggs for k in a.counters}
    assert {"hits", "misses", "failures", "retries", "satisfied", "slow", "count_samples"} <= counters
    assert any(a.series.family == "task.queue_wait" for a in aggs)
    assert any(a.errors for a in aggs if a.series.family == "external")


@pytest.mark.parametrize("seed", range(6))
def test_random_sequences(seed: int) -> None:
    """Random batches, random calls of either, with and without a cap and admitted series."""
    rng = random.Random(seed)
    events = random_events(100 + seed, 6000, keys=pick(rng, (3, 20, 200)))
    batches = random_cuts(seed, events, pick(rng, (10, 400, 3000)))
    modes = [pick(rng, ("add", "columns")) for _ in batches]
    check(batches, modes)
    admitted = {"request": {make_tags(route="k1", method="GET", service="web", env="prod")},
                "task": {make_tags(task="send", queue="celery")}}
    check(batches, modes, max_series=pick(rng, (1, 5, 25)), admitted=admitted if seed % 2 else None)


@pytest.mark.usefixtures("small_tables")
@pytest.mark.parametrize("seed", range(6))
def test_past_the_tables(seed: int) -> None:
    """More distinct keys than the lookup table holds and (under a cap) than the folded-key memo holds,
    flushes between calls, a warm-up of a few events."""
    rng = random.Random(seed)
    events = random_events(200 + seed, 5000, keys=300)
    batches = random_cuts(seed, events, pick(rng, (30, 600)))
    modes = [pick(rng, ("add", "columns")) for _ in batches]
    check(batches)
    check(batches, modes)
    ref = check(batches, modes, max_series=pick(rng, (2, 8)))
    assert len(ref._lookup) >= windows._LOOKUP_MAX and sum(ref.folded.values()) > windows.FOLDED_MEMO
    check(batches, max_series=3, admitted={"request": {make_tags(route="k7", method="POST")}})


def test_empty_and_single() -> None:
    events = random_events(5, 50)
    acc = WindowAccumulator()
    acc.add_columns(from_events([]))
    assert acc.take() == [] and acc.events == 0
    check([[e] for e in events])
    check([events[:1], [], events[1:]], ["columns", "columns", "add"])


@pytest.mark.parametrize("codes", [[3, None, 5], [40_000, 40_000, None], [1 << 40, 1 << 40, 1 << 30]])
def test_combinations(codes: list[int | None]) -> None:
    """Rows with the same codes share a number, others do not, and the row given for a number has its codes:
    with a small table of combined values, past it (``np.unique``), and past int64 (renumbered on the way)."""
    rng = np.random.default_rng(len(codes))
    n = 5000
    parts = [rng.integers(-1, min(r, 50), n).astype(np.int32) if r is not None else
             rng.choice(np.array([-1, 200, 404, 503, 599], dtype=np.int16), n) for r in codes]
    assert codes[0] is not None
    parts[0][::2] = rng.integers(-1, min(codes[0], 40_000), n)[::2]  # many values in the first column
    inv, rows = windows._combos(parts, codes)
    got = list(zip(*(p.tolist() for p in parts), strict=True))
    number: dict[tuple[int, ...], int] = {}
    for row, j in zip(got, inv.tolist(), strict=True):
        assert number.setdefault(row, j) == j
    assert len(set(number.values())) == len(number) == rows.size
    assert all(got[r] == key for key, r in zip(sorted(number, key=number.__getitem__), rows.tolist(), strict=True))
