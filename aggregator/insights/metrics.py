"""How the ``trace`` family's window aggregates become metrics (the names live in ``aggregator.catalog``).

A ``trace`` aggregate (tags: ``route``) is about the requests of one route that ended in one window and
whose trace was analysed:

- ``count``: requests; ``errors``: those that failed or answered 5xx;
- ``total``/``min``/``max``/``sketch``: queries per request (the sketch holds one value per request, zeros
  included, so its p95 is the p95 of queries per request);
- ``counters``: ``request_ms`` (sum of request durations), ``db_ms``/``cache_ms``/``external_ms`` (sum of
  the requests' time in each kind of call, each capped per request at the request's duration, see
  ``aggregator.insights.profile``), ``n_plus_one`` (N+1 findings).

Time shares are ratios of sums (time-weighted over the requests of the window or span), so merging windows
and then dividing gives the share over the span, never an average of shares.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from aggregator.catalog import register_compute
from aggregator.model import WindowAggregate
from aggregator.sketch import MAX_BUCKETS, DDSketch, sketch_of

TIME_COUNTERS = {"db": "db_ms", "cache": "cache_ms", "external": "external_ms"}


def queries_sketch(queries: Sequence[int] | npt.NDArray[np.int64]) -> DDSketch:
    return sketch_of(queries)


def queries_sketches(histograms: Sequence[dict[int, int]]) -> list[DDSketch]:
    """``queries_sketch`` of each histogram's multiset (queries per request -> requests), the same sketches
    (``tests/aggregator/test_insights_metrics.py``), made together: the bucket keys of every distinct count at
    once (``key_of``, the numpy computation ``add_many`` makes per value), then per sketch its bucket counts
    summed in Python and handed over (``of_bucket_counts``), with the zeros as ``add_many`` counts them.
    ``queries_sketch`` per window was ~200,000 instructions, most of them numpy calls on a few hundred values:
    most of the trace family's aggregates at the end of a run (732 windows on the benchmark log)."""
    distinct = sorted(set().union(*histograms))
    if not distinct or distinct[0] < 0:  # (a count of queries is never negative)
        return [_sketch_of_histogram(h) for h in histograms]
    probe = DDSketch()
    positive = [q for q in distinct if q > probe.min_indexable]
    key = dict(zip(positive, probe.key_of(np.asarray(positive, np.float64)).tolist(), strict=True))
    out = []
    for hist in histograms:
        counts: dict[int, int] = {}
        zeros = 0
        for q, n in hist.items():
            k = key.get(q)
            if k is None:
                zeros += n
            else:
                counts[k] = counts.get(k, 0) + n
        if not counts or max(counts) - min(counts) >= MAX_BUCKETS:  # (no bucket: only zeros; too many: collapsed)
            out.append(_sketch_of_histogram(hist))
            continue
        lo = min(counts)
        buckets = [0] * (max(counts) - lo + 1)
        for k, n in counts.items():
            buckets[k - lo] = n
        sketch = DDSketch.of_bucket_counts(lo, np.array(buckets, np.int64), float(min(hist)), float(max(hist)))
        sketch.zero_count = zeros
        out.append(sketch)
    return out


def _sketch_of_histogram(hist: dict[int, int]) -> DDSketch:
    """``queries_sketch`` of the multiset a histogram holds, one value per request."""
    return queries_sketch(np.repeat(np.fromiter(hist, np.int64, len(hist)),
                                    np.fromiter(hist.values(), np.int64, len(hist))))


def _share(counter: str):  # type: ignore[no-untyped-def]
    def compute(agg: WindowAggregate) -> float | None:
        request_ms = agg.counters.get("request_ms", 0.0)
        if not agg.count or request_ms <= 0.0:
            return None
        return min(agg.counters.get(counter, 0.0) / request_ms, 1.0)

    return compute


def _queries_avg(agg: WindowAggregate) -> float | None:
    return agg.total / agg.count if agg.count else None


def _queries_p95(agg: WindowAggregate) -> float | None:
    if not agg.count or agg.sketch is None:
        return None
    return agg.sketch.quantile(0.95)


def _n_plus_one(agg: WindowAggregate) -> float | None:
    return float(agg.counters.get("n_plus_one", 0.0))


def register() -> None:
    for kind, counter in TIME_COUNTERS.items():
        register_compute(f"request.time_share.{kind}", _share(counter))
    register_compute("db.queries_per_request.avg", _queries_avg)
    register_compute("db.queries_per_request.p95", _queries_p95)
    register_compute("db.n_plus_one", _n_plus_one)


register()
