"""The metric catalog: THE one place for metric names, and how each is computed from a window aggregate.

Every metric of the design's table that can come from the events is declared once below as a
``MetricDef``: its name (without the configurable prefix), the series family it is computed from, its type
and a function of a ``WindowAggregate``. Three users share it, so a figure is computed by the same code
everywhere:

- ``points(agg, prefix)`` renders every metric of an aggregate's family (sinks, ``logapm metrics``);
- ``value(metric_name, agg)`` computes one metric (alerting evaluates it over ``merge(aggs)`` of a span);
- ``family_of(metric_name)`` says which stored family a metric is read from.

Families and their series tags (the design's table): ``request`` (route, method, service, env), ``db``
(db, operation, table), ``cache`` (cache, operation), ``external`` (peer_service, operation), ``task``
(task, queue), ``task.queue_wait`` (task, queue), ``metric:<name>`` (the event's own tags; two sampled
gauges have design names, the rest are ``business.<name>``), ``pipeline`` (no tags) and ``trace`` (route;
its metrics are computed by ``aggregator.insights``, which registers their functions with
``register_compute`` -- the names stay here).

Family counters (exact, additive, kept in ``WindowAggregate.counters``): see ``COUNTERS``.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Final

from aggregator.model import MetricPoint, MetricType, SeriesKey, WindowAggregate
from aggregator.sketch import DDSketch

Compute = Callable[[WindowAggregate], "float | None"]

# Family counters, by family: the one list of counter names the windows accumulate.
COUNTERS: Final[dict[str, tuple[str, ...]]] = {
    "request": ("satisfied", "tolerating"),
    "db": ("slow",),
    "cache": ("hits", "misses"),
    "external": (),
    "task": ("retries", "failures"),
    "task.queue_wait": (),
    "metric": ("count_samples",),  # samples whose metric.type is `count` (the rest are gauges)
    "pipeline": ("read", "parsed", "skipped", "invalid", "late", "runs"),
}

POOL_UTILIZATION_METRIC: Final = "db.pool.utilization"  # metric.name of the app's pool sampler
QUEUE_DEPTH_METRIC: Final = "celery.queue.depth"  # metric.name of the app's queue-depth sampler


@dataclass(frozen=True, slots=True)
class MetricDef:
    name: str  # without the prefix, e.g. "request.duration.p95"
    family: str  # stored family it is computed from
    type: MetricType
    compute: Compute | None  # None: declared here, computed by an extension (see register_compute)
    doc: str = ""


def base_family(family: str) -> str:
    """``metric:orders.created`` -> ``metric``; ``trace.route`` -> ``trace``; others unchanged."""
    if family.startswith("metric:"):
        return "metric"
    if family.startswith("trace"):
        return "trace"
    return family


# --- computing helpers ---------------------------------------------------------------------------

# What the computations below read of the sketch: a quantile (``_q``), or nothing at all (the rest).
# Alerting reads a span's quantiles without merging its sketches when it knows this (``quantile_of``,
# ``reads_sketch``).
_QUANTILES: dict[Compute, float] = {}
_SKETCH_FREE: set[Compute] = set()


def _sketch_free(f: Compute) -> Compute:
    _SKETCH_FREE.add(f)
    return f


def _q(q: float) -> Compute:
    def f(agg: WindowAggregate) -> float | None:
        if agg.sketch is None or agg.count == 0:
            return None
        return agg.sketch.quantile(q)

    _QUANTILES[f] = q
    return f


@_sketch_free
def _avg(agg: WindowAggregate) -> float | None:
    return agg.total / agg.count if agg.count else None


@_sketch_free
def _max(agg: WindowAggregate) -> float | None:
    return agg.max if agg.count else None


@_sketch_free
def _count(agg: WindowAggregate) -> float | None:
    return float(agg.count)


@_sketch_free
def _errors(agg: WindowAggregate) -> float | None:
    return float(agg.errors)


@_sketch_free
def _error_rate(agg: WindowAggregate) -> float | None:
    return agg.errors / agg.count if agg.count else None


def _counter(name: str) -> Compute:
    def f(agg: WindowAggregate) -> float | None:
        return float(agg.counters.get(name, 0.0))

    return _sketch_free(f)


@_sketch_free
def _apdex(agg: WindowAggregate) -> float | None:
    if not agg.count:
        return None
    return (agg.counters.get("satisfied", 0.0) + agg.counters.get("tolerating", 0.0) / 2.0) / agg.count


@_sketch_free
def _hit_rate(agg: WindowAggregate) -> float | None:
    hits, misses = agg.counters.get("hits", 0.0), agg.counters.get("misses", 0.0)
    return hits / (hits + misses) if hits + misses else None


@_sketch_free
def _failure_rate(agg: WindowAggregate) -> float | None:
    return agg.counters.get("failures", 0.0) / agg.count if agg.count else None


@_sketch_free
def _business(agg: WindowAggregate) -> float | None:
    """A `count` metric is the sum of its values in the window; a gauge is their mean."""
    if not agg.count:
        return None
    if is_count_metric(agg):
        return agg.total
    return agg.total / agg.count


def is_count_metric(agg: WindowAggregate) -> bool:
    return bool(agg.count) and agg.counters.get("count_samples", 0.0) >= agg.count


# --- the table ------------------------------------------------------------------------------------

_DEFS: list[MetricDef] = [
    # request (route, method, service, env)
    MetricDef("request.duration.avg", "request", "gauge", _avg, "mean request duration, ms"),
    MetricDef("request.duration.p50", "request", "gauge", _q(0.50), "median request duration, ms"),
    MetricDef("request.duration.p95", "request", "gauge", _q(0.95), "95th percentile request duration, ms"),
    MetricDef("request.duration.p99", "request", "gauge", _q(0.99), "99th percentile request duration, ms"),
    MetricDef("request.duration.max", "request", "gauge", _max, "slowest request, ms"),
    MetricDef("request.count", "request", "count", _count, "requests"),
    MetricDef("request.errors", "request", "count", _errors, "requests answered 5xx or failed"),
    MetricDef("request.error_rate", "request", "gauge", _error_rate, "errors / requests (0..1)"),
    MetricDef("request.apdex", "request", "gauge", _apdex, "(satisfied + tolerating / 2) / requests"),
    # db (db, operation, table)
    MetricDef("db.query.duration.p50", "db", "gauge", _q(0.50), "median query duration, ms"),
    MetricDef("db.query.duration.p95", "db", "gauge", _q(0.95), "95th percentile query duration, ms"),
    MetricDef("db.query.duration.p99", "db", "gauge", _q(0.99), "99th percentile query duration, ms"),
    MetricDef("db.query.duration.max", "db", "gauge", _max, "slowest query, ms"),
    MetricDef("db.query.count", "db", "count", _count, "queries"),
    MetricDef("db.query.slow", "db", "count", _counter("slow"), "queries slower than run.slow_query_ms"),
    # db pool (db), from the app's sampled gauge
    MetricDef("db.pool.utilization.avg", f"metric:{POOL_UTILIZATION_METRIC}", "gauge", _avg,
              "mean sampled connection-pool utilization (0..1)"),
    MetricDef("db.pool.utilization.max", f"metric:{POOL_UTILIZATION_METRIC}", "gauge", _max,
              "highest sampled connection-pool utilization (0..1)"),
    # cache (cache, operation)
    MetricDef("cache.hits", "cache", "count", _counter("hits"), "reads that found their key(s)"),
    MetricDef("cache.misses", "cache", "count", _counter("misses"), "reads that did not"),
    MetricDef("cache.hit_rate", "cache", "gauge", _hit_rate, "hits / (hits + misses) (0..1)"),
    MetricDef("cache.duration.p95", "cache", "gauge", _q(0.95), "95th percentile cache call, ms"),
    # external (peer_service, operation)
    MetricDef("external.duration.p50", "external", "gauge", _q(0.50), "median external call, ms"),
    MetricDef("external.duration.p95", "external", "gauge", _q(0.95), "95th percentile external call, ms"),
    MetricDef("external.duration.p99", "external", "gauge", _q(0.99), "99th percentile external call, ms"),
    MetricDef("external.count", "external", "count", _count, "external calls"),
    MetricDef("external.errors", "external", "count", _errors, "failed calls (failure outcome or 5xx)"),
    MetricDef("external.error_rate", "external", "gauge", _error_rate, "errors / calls (0..1)"),
    # task (task, queue)
    MetricDef("task.duration.p50", "task", "gauge", _q(0.50), "median task run time, ms"),
    MetricDef("task.duration.p95", "task", "gauge", _q(0.95), "95th percentile task run time, ms"),
    MetricDef("task.duration.p99", "task", "gauge", _q(0.99), "99th percentile task run time, ms"),
    MetricDef("task.count", "task", "count", _count, "task runs"),
    MetricDef("task.failures", "task", "count", _counter("failures"), "runs that ended in failure"),
    MetricDef("task.failure_rate", "task", "gauge", _failure_rate, "failures / runs (0..1)"),
    MetricDef("task.retries", "task", "count", _counter("retries"), "runs that ended in a retry"),
    MetricDef("task.queue_wait.p95", "task.queue_wait", "gauge", _q(0.95),
              "95th percentile publish-to-start wait, ms"),
    # queue depth (queue), from the app's sampled gauge
    MetricDef("task.queue.depth.max", f"metric:{QUEUE_DEPTH_METRIC}", "gauge", _max,
              "deepest sampled queue (messages)"),
    # trace insights (route): computed by aggregator.insights (register_compute)
    MetricDef("request.time_share.db", "trace", "gauge", None, "share of request time spent in the DB"),
    MetricDef("request.time_share.cache", "trace", "gauge", None, "share of request time in cache calls"),
    MetricDef("request.time_share.external", "trace", "gauge", None,
              "share of request time in external calls"),
    MetricDef("db.queries_per_request.avg", "trace", "gauge", None, "queries per request, mean"),
    MetricDef("db.queries_per_request.p95", "trace", "gauge", None, "queries per request, 95th percentile"),
    MetricDef("db.n_plus_one", "trace", "count", None, "N+1 query findings"),
    # the pipeline's own counts (no tags); window = wall-clock minute of the run
    MetricDef("pipeline.events.read", "pipeline", "count", _counter("read"), "lines read"),
    MetricDef("pipeline.events.parsed", "pipeline", "count", _counter("parsed"), "timing events parsed"),
    MetricDef("pipeline.events.skipped", "pipeline", "count", _counter("skipped"),
              "ordinary (non-APM) log lines"),
    MetricDef("pipeline.events.invalid", "pipeline", "count", _counter("invalid"),
              "invalid lines (dead-lettered)"),
    MetricDef("pipeline.events.late", "pipeline", "count", _counter("late"),
              "events older than run.lateness_seconds, not counted in their window"),
    MetricDef("pipeline.run.duration", "pipeline", "gauge", _max, "longest run in the window, ms"),
]

BUSINESS_PREFIX: Final = "business."
METRICS: Final[dict[str, MetricDef]] = {d.name: d for d in _DEFS}
_BY_FAMILY: dict[str, list[MetricDef]] = {}
for _d in _DEFS:
    _BY_FAMILY.setdefault(_d.family, []).append(_d)

# Where trace computations may come from: imported on first use so that G1's module registers itself.
EXTENSION_MODULES: Final[tuple[str, ...]] = ("aggregator.insights.traces",)
_extensions_loaded = False


def register_compute(name: str, compute: Compute) -> None:
    """Supply the computation of a metric declared here with ``compute=None`` (the ``trace`` family).

    The name must already be in the catalog: extensions add computations, never names.
    """
    bare = _strip(name)
    if bare not in METRICS:
        raise KeyError(f"{name!r} is not a catalog metric; declare it in aggregator/catalog.py")
    d = replace(METRICS[bare], compute=compute)
    METRICS[bare] = d
    _BY_FAMILY[d.family] = [d if x.name == bare else x for x in _BY_FAMILY[d.family]]


def _load_extensions() -> None:
    global _extensions_loaded
    if _extensions_loaded:
        return
    _extensions_loaded = True
    for module in EXTENSION_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name is None or not module.startswith(exc.name):
                raise


def _strip(metric_name: str, prefix: str | None = None) -> str:
    """Remove the prefix (given, or any first dotted segment that is not a catalog name)."""
    if prefix and metric_name.startswith(prefix + "."):
        return metric_name[len(prefix) + 1:]
    if metric_name in METRICS or metric_name.startswith(BUSINESS_PREFIX):
        return metric_name
    _head, _, rest = metric_name.partition(".")
    return rest if rest else metric_name


def _def_for(metric_name: str, prefix: str | None = None) -> MetricDef:
    bare = _strip(metric_name, prefix)
    if bare in METRICS:
        return METRICS[bare]
    if bare.startswith(BUSINESS_PREFIX) and len(bare) > len(BUSINESS_PREFIX):
        name = bare[len(BUSINESS_PREFIX):]
        return MetricDef(bare, f"metric:{name}", "gauge", _business)
    raise KeyError(f"unknown metric {metric_name!r}")


def family_of(metric_name: str, prefix: str | None = None) -> str:
    """The stored family a metric is computed from (``apm.request.duration.p95`` -> ``request``,
    ``apm.business.orders`` -> ``metric:orders``). Raises ``KeyError`` for an unknown name."""
    return _def_for(metric_name, prefix).family


def value(metric_name: str, agg: WindowAggregate, prefix: str | None = None) -> float | None:
    """The metric's value for one aggregate (a window, or ``merge()`` of a span); None when undefined
    (no events, a rate with no denominator, a trace metric whose extension is not installed)."""
    _load_extensions()
    d = _def_for(metric_name, prefix)
    if d.compute is None:
        return None
    v = d.compute(agg)
    return None if v is None or not math.isfinite(v) else float(v)


def quantile_of(metric_name: str, prefix: str | None = None) -> float | None:
    """``q`` when the metric is the ``q`` quantile of its aggregate's sketch (``request.duration.p95`` ->
    0.95: ``value`` is ``agg.sketch.quantile(q)``, None without a sketch or events), else None."""
    _load_extensions()
    d = _def_for(metric_name, prefix)
    return _QUANTILES.get(d.compute) if d.compute is not None else None


def reads_sketch(metric_name: str, prefix: str | None = None) -> bool:
    """Whether the metric's value may depend on the aggregate's sketch (a quantile, or a computation this
    module does not know, such as an extension's): the rest need only the exact fields."""
    _load_extensions()
    d = _def_for(metric_name, prefix)
    return d.compute is not None and d.compute not in _SKETCH_FREE


def metric_names(prefix: str = "apm") -> list[str]:
    """Every fixed metric name (business metrics are ``<prefix>.business.<name>``)."""
    return [f"{prefix}.{d.name}" for d in _DEFS]


def definitions() -> list[MetricDef]:
    _load_extensions()
    return list(METRICS.values())


def points(agg: WindowAggregate, prefix: str = "apm") -> list[MetricPoint]:
    """Every metric point of one window aggregate, with the series' tags."""
    _load_extensions()
    family = agg.series.family
    defs = _BY_FAMILY.get(family)
    if defs is None and family.startswith("metric:"):
        name = family[len("metric:"):]
        v = _business(agg)
        if v is None:
            return []
        kind: MetricType = "count" if is_count_metric(agg) else "gauge"
        return [MetricPoint(f"{prefix}.{BUSINESS_PREFIX}{name}", agg.series.tags, agg.start, v, kind,
                            agg.width)]
    if defs is None and family.startswith("trace") and family != "trace":
        defs = _BY_FAMILY.get("trace")
    out: list[MetricPoint] = []
    for d in defs or ():
        if d.compute is None:
            continue
        v = d.compute(agg)
        if v is None or not math.isfinite(v):
            continue
        out.append(MetricPoint(f"{prefix}.{d.name}", agg.series.tags, agg.start, float(v), d.type, agg.width))
    return out


def merge(aggs: Iterable[WindowAggregate], series: SeriesKey | None = None, *,
          sketches: bool = True) -> WindowAggregate | None:
    """One aggregate over many (windows of a span, or series of a group): exact fields add, sketches
    merge. The result starts at the earliest start and spans to the latest end; None for no input.
    ``sketches=False``: the exact fields alone (the result has no sketch)."""
    out: WindowAggregate | None = None
    end = 0
    for agg in aggs:
        if out is None:
            out = WindowAggregate(series or agg.series, agg.start, agg.width)
        merge_into(out, agg, sketch=sketches)
        agg_end = agg.start + agg.width
        if agg_end > end:
            end = agg_end
        if agg.start < out.start:
            out.start = agg.start
    if out is not None:
        out.width = end - out.start
    return out


def merge_into(target: WindowAggregate, agg: WindowAggregate, *, sketch: bool = True) -> None:
    """Add ``agg``'s exact fields and (unless ``sketch=False``) its sketch into ``target`` (same series and
    window, or a span)."""
    # Comparisons rather than min()/max() calls (alerting merges ~15 aggregates per point): the same
    # result, ties and all (min(a, b) is a unless b < a).
    target.count += agg.count
    target.errors += agg.errors
    target.total += agg.total
    if agg.min < target.min:
        target.min = agg.min
    if agg.max > target.max:
        target.max = agg.max
    if agg.counters:
        counters = target.counters
        for k, v in agg.counters.items():
            counters[k] = counters.get(k, 0.0) + v
    if sketch and agg.sketch is not None:
        if target.sketch is None:
            target.sketch = DDSketch(agg.sketch.relative_accuracy)
        target.sketch.merge(agg.sketch)
