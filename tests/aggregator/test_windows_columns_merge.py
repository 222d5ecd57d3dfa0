"""A part's aggregates as columns (``AggregateColumns``, what a worker sends) merge into ``WindowState`` as the
aggregates themselves do: the same windows, fields, counters and sketch bytes, in the same order."""

from __future__ import annotations

import math
import pickle

import numpy as np

from aggregator.loggen import generate_events, lines_of
from aggregator.model import SeriesKey, WindowAggregate
from aggregator.sketch import DDSketch
from aggregator.windows import AggregateColumns, WindowAccumulator, WindowState


def _parts(n_parts: int, seed: int) -> list[list[WindowAggregate]]:
    """The aggregates of consecutive parts of a generated log, each from its own accumulator (as the workers')."""
    from parsers import LineParser

    lines = list(lines_of(generate_events(6000, start=1.7e9, seconds=900.0, seed=seed)))
    parser = LineParser(now=1.7e9 + 900.0)
    per = -(-len(lines) // n_parts)
    out = []
    for i in range(n_parts):
        acc = WindowAccumulator(60)
        data = b"".join(lines[i * per:(i + 1) * per])
        for res in parser.parse_columns(data, "gen", 0):
            if res.columns is not None:
                acc.add_columns(res.columns)
            else:
                acc.add(res.events)
        out.append(acc.take())
    return out


def _dump(state: WindowState) -> list[tuple[object, ...]]:
    return [(k, a.series, a.start, a.width, a.count, a.errors, repr(a.total), repr(a.min), repr(a.max),
             sorted(a.counters.items()), None if a.sketch is None else a.sketch.to_bytes())
            for k, a in state.aggs.items()]


def _merged(parts: list[object]) -> WindowState:
    state = WindowState()
    for p in parts:
        state.merge(p, None)  # type: ignore[arg-type]
    return state


def test_columns_merge_as_the_aggregates() -> None:
    for seed, n_parts in ((1, 1), (2, 3), (3, 7)):
        parts = _parts(n_parts, seed)
        sent = [pickle.loads(pickle.dumps(p, protocol=5)) for p in parts]
        cols = [pickle.loads(pickle.dumps(AggregateColumns.of(p), protocol=5)) for p in parts]
        assert all(type(c) is AggregateColumns for c in cols)
        assert sum(map(len, cols)) == sum(map(len, parts)) > 0
        assert _dump(_merged(cols)) == _dump(_merged(sent))


def test_edge_aggregates() -> None:
    sk = DDSketch()
    sk.add_many(np.array([-2.0, 0.0, 3.5]))  # negative and zero buckets: not the quick form's merge
    key = SeriesKey("metric:g", (("k", "v"),))
    a = [WindowAggregate(key, 0, 60, 3, 0, 1.5, -2.0, 3.5, {"count_samples": 1.0}, sk),
         WindowAggregate(SeriesKey("pipeline"), 0, 60),  # no sketch, no counters, inf extremes
         WindowAggregate(key, 60, 60, 1, 1, math.nan, math.nan, math.nan, {}, None)]
    b = [WindowAggregate(key, 0, 60, 1, 0, 1e300, 1e300, 1e300, {"count_samples": 2.0, "x": 1.0}, DDSketch()),
         WindowAggregate(SeriesKey("pipeline"), 0, 60, 2, 0, 1.0, 0.5, 0.5, {}, None)]
    for parts in ([a, b], [b, a], [a, a, b], [[], a], [[]]):
        cols = [pickle.loads(pickle.dumps(AggregateColumns.of(p))) for p in parts]
        objs = [pickle.loads(pickle.dumps(p)) for p in parts]
        assert repr(_dump(_merged(cols))) == repr(_dump(_merged(objs)))
        # iterating gives the aggregates themselves (fresh copies: a merge adds into the first part's)
        cols = [pickle.loads(pickle.dumps(AggregateColumns.of(p))) for p in parts]
        objs = [pickle.loads(pickle.dumps(p)) for p in parts]
        for c, p in zip(cols, objs, strict=True):
            assert [(x.series, x.start, x.count, repr(x.total), x.counters) for x in c] == \
                [(x.series, x.start, x.count, repr(x.total), x.counters) for x in p]
