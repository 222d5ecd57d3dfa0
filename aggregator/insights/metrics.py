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
from aggregator.sketch import DDSketch, sketch_of

TIME_COUNTERS = {"db": "db_ms", "cache": "cache_ms", "external": "external_ms"}


def queries_sketch(queries: Sequence[int] | npt.NDArray[np.int64]) -> DDSketch:
    return sketch_of(queries)


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
