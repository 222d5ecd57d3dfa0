"""The metric catalog: every design metric from events, computed by one function for points and alerts."""

from __future__ import annotations

import numpy as np
import pytest

from aggregator import catalog
from aggregator.model import SeriesKey, WindowAggregate, make_tags
from aggregator.sketch import sketch_of

DESIGN_NAMES = [
    *(f"request.duration.{s}" for s in ("avg", "p50", "p95", "p99", "max")),
    "request.count", "request.errors", "request.error_rate", "request.apdex",
    *(f"db.query.duration.{s}" for s in ("p50", "p95", "p99", "max")), "db.query.count", "db.query.slow",
    "db.queries_per_request.avg", "db.queries_per_request.p95", "db.n_plus_one",
    "db.pool.utilization.avg", "db.pool.utilization.max",
    "cache.hits", "cache.misses", "cache.hit_rate", "cache.duration.p95",
    *(f"external.duration.{s}" for s in ("p50", "p95", "p99")), "external.count", "external.errors",
    "external.error_rate",
    *(f"task.duration.{s}" for s in ("p50", "p95", "p99")), "task.count", "task.failures",
    "task.failure_rate", "task.queue_wait.p95", "task.retries", "task.queue.depth.max",
    *(f"request.time_share.{s}" for s in ("db", "cache", "external")),
    *(f"pipeline.events.{s}" for s in ("read", "parsed", "skipped", "invalid", "late")), "pipeline.run.duration",
]


def _agg(family: str, values: list[float], errors: int = 0, **counters: float) -> WindowAggregate:
    v = np.asarray(values, dtype=float)
    return WindowAggregate(SeriesKey(family, make_tags(route="r/<id>/", method="GET")), 600, 60,
                           count=v.size, errors=errors, total=float(v.sum()), min=float(v.min()),
                           max=float(v.max()), counters=dict(counters), sketch=sketch_of(v))


def test_every_design_metric_is_declared_once() -> None:
    """The catalog declares exactly the design table's event metrics, each once, with the prefix."""
    names = catalog.metric_names("apm")
    assert len(names) == len(set(names))
    assert sorted(names) == sorted(f"apm.{n}" for n in DESIGN_NAMES)


def test_request_points_and_values() -> None:
    """Request metrics: exact count, errors, error rate, Apdex, and percentiles from the sketch."""
    agg = _agg("request", [100.0, 200.0, 300.0, 2500.0], errors=1, satisfied=3, tolerating=0)
    pts = {p.metric: p for p in catalog.points(agg, "apm")}
    assert pts["apm.request.count"].value == 4 and pts["apm.request.count"].type == "count"
    assert pts["apm.request.errors"].value == 1
    assert pts["apm.request.error_rate"].value == 0.25
    assert pts["apm.request.apdex"].value == 0.75
    assert pts["apm.request.duration.max"].value == 2500.0
    assert pts["apm.request.duration.avg"].value == 775.0
    assert pts["apm.request.duration.p50"].value == pytest.approx(250.0, rel=0.01)
    assert pts["apm.request.duration.p95"].value == pytest.approx(np.quantile([100, 200, 300, 2500], 0.95), rel=0.01)
    assert all(p.tags == agg.series.tags and p.timestamp == 600 and p.interval == 60 for p in pts.values())
    for name, p in pts.items():
        assert catalog.value(name, agg) == p.value  # alerting and sinks use the same computation


def test_value_over_a_merged_span_equals_one_big_window() -> None:
    """merge() of windows gives the counts and quantiles of all their events (alerts over a 5-minute span)."""
    rng = np.random.default_rng(1)
    parts = [rng.lognormal(5, 1, int(rng.integers(1, 300))) for _ in range(5)]
    aggs = [_agg("request", list(p), errors=i) for i, p in enumerate(parts)]
    for i, a in enumerate(aggs):
        a.start = 600 + 60 * i
    span = catalog.merge(aggs)
    assert span is not None and span.start == 600 and span.width == 300
    every = np.concatenate(parts)
    assert span.count == every.size and span.errors == 10
    p99 = catalog.value("apm.request.duration.p99", span)
    assert p99 is not None and abs(p99 - np.quantile(every, 0.99)) <= 0.01 * np.quantile(every, 0.99)
    assert aggs[0].count == parts[0].size  # inputs untouched


def test_family_of() -> None:
    """Each metric names the stored family it is read from, business metrics included."""
    assert catalog.family_of("apm.request.duration.p95") == "request"
    assert catalog.family_of("apm.db.query.slow") == "db"
    assert catalog.family_of("apm.db.pool.utilization.max") == "metric:db.pool.utilization"
    assert catalog.family_of("apm.task.queue.depth.max") == "metric:celery.queue.depth"
    assert catalog.family_of("apm.task.queue_wait.p95") == "task.queue_wait"
    assert catalog.family_of("apm.business.orders.created") == "metric:orders.created"
    assert catalog.family_of("acme.cache.hit_rate", prefix="acme") == "cache"
    with pytest.raises(KeyError):
        catalog.family_of("apm.nope")


def test_business_count_and_gauge() -> None:
    """A count business metric sums its values; a gauge averages; sampled gauges keep their design names."""
    count = _agg("metric:orders", [1, 2, 3], count_samples=3)
    (p,) = catalog.points(count, "apm")
    assert (p.metric, p.value, p.type) == ("apm.business.orders", 6.0, "count")
    gauge = _agg("metric:queue.len", [1, 2, 3])
    (p,) = catalog.points(gauge, "apm")
    assert (p.metric, p.value, p.type) == ("apm.business.queue.len", 2.0, "gauge")
    pool = _agg("metric:db.pool.utilization", [0.2, 0.9])
    assert {p.metric: p.value for p in catalog.points(pool)} == {
        "apm.db.pool.utilization.avg": pytest.approx(0.55), "apm.db.pool.utilization.max": 0.9}


def test_rates_without_denominator_are_absent() -> None:
    """A cache series with no reads has no hit rate (no point rather than a made-up 0)."""
    agg = _agg("cache", [1.0], hits=0, misses=0)
    names = {p.metric for p in catalog.points(agg)}
    assert "apm.cache.hit_rate" not in names and "apm.cache.hits" in names


def test_register_compute_only_for_declared_names() -> None:
    """Extensions add computations for names declared in the catalog, never new names."""
    with pytest.raises(KeyError):
        catalog.register_compute("trace.something_new", lambda agg: 1.0)
