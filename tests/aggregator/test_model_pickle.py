"""WindowAggregate and SeriesKey pickle as a call of their class with their fields (what a worker sends)."""

import math
import pickle

import numpy as np

from aggregator.model import SeriesKey, WindowAggregate, make_tags
from aggregator.sketch import DDSketch


def _fields(agg: WindowAggregate) -> tuple[object, ...]:
    sketch = None if agg.sketch is None else agg.sketch.to_bytes()
    return (agg.series, agg.start, agg.width, agg.count, agg.errors, agg.total, agg.min, agg.max, agg.counters,
            sketch)


def test_window_aggregate_round_trip() -> None:
    sk = DDSketch()
    sk.add_many(np.array([0.5, 3.0, 250.0, 1e6]))
    cases = [
        WindowAggregate(SeriesKey("request", make_tags(route="/a", method="GET")), 120, 60, 4, 1, 1e6 + 253.5, 0.5,
                        1e6, {"satisfied": 3.0, "tolerating": 0.0}, sk),
        WindowAggregate(SeriesKey("pipeline"), 0, 60),  # defaults: inf extremes, no counters, no sketch
        WindowAggregate(SeriesKey("metric:x", (("k", "v"),)), -60, 60, 1, 0, math.nan, math.nan, math.nan, {}, None),
    ]
    for agg in cases:
        assert agg.__reduce__()[0] is WindowAggregate
        back = pickle.loads(pickle.dumps(agg, protocol=5))
        assert type(back) is WindowAggregate
        got, want = _fields(back), _fields(agg)
        assert repr(got) == repr(want)  # NaN compares by its repr
        assert back.counters is not agg.counters


def test_series_key_round_trip_and_shared() -> None:
    key = SeriesKey("db", (("db", "default"), ("operation", "SELECT")))
    assert key.__reduce__() == (SeriesKey, ("db", key.tags))
    a, b = pickle.loads(pickle.dumps([WindowAggregate(key, 0, 60), WindowAggregate(key, 60, 60)]))
    assert a.series == key and a.series is b.series  # the pickle's memo sends a series once
    assert hash(a.series) == hash(key)
