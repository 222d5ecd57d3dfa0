"""Live window accumulators: events -> per (series, window) aggregates, and the run's merged window state.

Two halves:

- ``WindowAccumulator`` runs where the events are decoded (a worker process). ``add(events)`` makes one
  pass over a batch, grouping each event's value into a list per (window, series) keyed by a plain tuple of
  its raw fields (no tag building per event); ``flush()`` turns the lists into numpy arrays and updates the
  aggregates in bulk (counts, sums, min/max, Apdex and slow-query counters with vector comparisons, the
  sketch with one ``add_many``). Flushing after every chunk keeps memory bounded by the number of series,
  never by the input.
- ``WindowState`` runs in the parent: it merges the workers' partial aggregates, then, inside the run's
  transaction, applies them to the stored windows (``apply``): lateness, the series cap, merge with what is
  stored, write back.

Series (the design's metric table), tags named as the metrics' tags:

=================  =====================================  =========================================
family             tags                                   values / counters
=================  =====================================  =========================================
request            route, method, service, env            duration; errors = 5xx or failure;
                                                          satisfied (<= T), tolerating (<= 4T)
db                 db (alias, else system), operation,    duration; errors = failure; slow (> slow ms)
                   table
cache              cache, operation                       duration; hits, misses (reads only)
external           peer_service, operation                duration; errors = failure or 5xx
task               task, queue                            duration; failures (state failure, else
                                                          outcome failure), retries (state retry)
task.queue_wait    task, queue                            task.queue_wait_ms
metric:<name>      the event's metric.tags                metric.value; count_samples (type count)
pipeline           (none)                                 the run's own counts (``pipeline_aggregate``)
=================  =====================================  =========================================
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from operator import attrgetter
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from aggregator.catalog import merge_into
from aggregator.model import SeriesKey, Tags, WindowAggregate, make_tags
from aggregator.sketch import DDSketch
from aggregator.windows_store import WindowsStore, fold_tags

# Families with exactly one aggregate entry per event: the ones whose counts make "events" (late ones too).
EVENT_FAMILIES: Final = frozenset({"request", "db", "cache", "external", "task"})


def is_event_family(family: str) -> bool:
    return family in EVENT_FAMILIES or family.startswith("metric:")


class _Group:
    """One series' values, timestamps and flagged timestamps collected from a batch (before numpy)."""

    __slots__ = ("a", "b", "errors", "ts", "values")

    def __init__(self) -> None:
        self.values: list[float] = []
        self.ts: list[float] = []
        self.errors: list[float] = []  # timestamps of the events that count as errors
        self.a: list[float] = []  # hits (cache), failures (task), count-typed samples (metric)
        self.b: list[float] = []  # misses (cache), retries (task)


AggKey = tuple[str, Tags, int]  # family, tags, window start

_REQUEST = attrgetter("http_route", "http_request_method", "service_name", "deployment_environment")
_DB = attrgetter("db_namespace", "db_system", "db_operation_name", "db_collection_name")
_CACHE = attrgetter("cache_name", "cache_operation")
_EXTERNAL = attrgetter("peer_service", "external_operation")
_TASK = attrgetter("task_name", "messaging_destination_name")


def _series(family: str, raw: tuple[Any, ...]) -> SeriesKey:
    """SeriesKey from a family and the raw field tuple it was grouped by."""
    if family == "request":
        return SeriesKey(family, make_tags(route=raw[0], method=raw[1], service=raw[2], env=raw[3]))
    if family == "db":
        return SeriesKey(family, make_tags(db=raw[0] or raw[1], operation=raw[2], table=raw[3]))
    if family == "cache":
        return SeriesKey(family, make_tags(cache=raw[0], operation=raw[1]))
    if family == "external":
        return SeriesKey(family, make_tags(peer_service=raw[0], operation=raw[1]))
    if family in ("task", "task.queue_wait"):
        return SeriesKey(family, make_tags(task=raw[0], queue=raw[1]))
    if family == "metric":
        return SeriesKey(f"metric:{raw[0]}", make_tags(dict(raw[1])))
    raise ValueError(f"unknown family {family!r}")


# Which family counter each flagged list feeds.
_FLAG_COUNTERS: Final[dict[str, tuple[str | None, str | None]]] = {
    "cache": ("hits", "misses"),
    "task": ("failures", "retries"),
    "metric": ("count_samples", None),
}


class WindowAccumulator:
    """Per-process accumulator: ``add`` batches of events, ``flush`` into aggregates, ``take`` them.

    ``add`` costs one ``attrgetter`` call, one dict look-up and two list appends per event: windows are
    not computed per event but in ``flush``, where all values of the batch are handled as numpy arrays
    (window index, segment sort, ``reduceat`` sums/min/max/threshold counts, sketch bucket keys for every
    value at once and one ``bincount`` over (segment, bucket)).
    """

    def __init__(self, width: int = 60, apdex_t_ms: float = 500.0, slow_query_ms: float = 100.0) -> None:
        if width <= 0:
            raise ValueError("window width must be positive")
        self.width = width
        self.apdex_t = apdex_t_ms
        self.slow_ms = slow_query_ms
        self._groups: dict[str, dict[Any, _Group]] = {f: {} for f in
                                                       ("request", "db", "cache", "external", "task",
                                                        "task.queue_wait", "metric")}
        self._aggs: dict[AggKey, WindowAggregate] = {}
        self._series_cache: dict[tuple[str, Any], SeriesKey] = {}
        self._sketch = DDSketch()  # for its mapping
        self.events = 0
        self.by_kind: dict[str, int] = {}
        self.max_ts: float | None = None
        self.min_ts: float | None = None

    def add(self, events: Sequence[Any]) -> None:
        """Group one batch of events by series; values stay in lists until ``flush``."""
        if not events:
            return
        gr = self._groups
        req, db, cache, ext, task, wait, met = (gr["request"], gr["db"], gr["cache"], gr["external"], gr["task"],
                                                gr["task.queue_wait"], gr["metric"])
        n_req = n_db = n_cache = n_ext = n_task = n_met = 0
        key: Any
        for e in events:
            kind = e.kind
            if kind == "request":
                key = _REQUEST(e)
                g = req.get(key)
                if g is None:
                    g = req[key] = _Group()
                g.values.append(e.duration_ms)
                g.ts.append(e.ts)
                status = e.http_response_status_code
                if e.outcome == "failure" or (status is not None and status >= 500):
                    g.errors.append(e.ts)
                n_req += 1
            elif kind == "db":
                key = _DB(e)
                g = db.get(key)
                if g is None:
                    g = db[key] = _Group()
                g.values.append(e.duration_ms)
                g.ts.append(e.ts)
                if e.outcome == "failure":
                    g.errors.append(e.ts)
                n_db += 1
            elif kind == "cache":
                key = _CACHE(e)
                g = cache.get(key)
                if g is None:
                    g = cache[key] = _Group()
                g.values.append(e.duration_ms)
                g.ts.append(e.ts)
                hit = e.cache_hit
                if hit is True:
                    g.a.append(e.ts)
                elif hit is False:
                    g.b.append(e.ts)
                if e.outcome == "failure":
                    g.errors.append(e.ts)
                n_cache += 1
            elif kind == "external":
                key = _EXTERNAL(e)
                g = ext.get(key)
                if g is None:
                    g = ext[key] = _Group()
                g.values.append(e.duration_ms)
                g.ts.append(e.ts)
                status = e.http_response_status_code
                if e.outcome == "failure" or (status is not None and status >= 500):
                    g.errors.append(e.ts)
                n_ext += 1
            elif kind == "task":
                key = _TASK(e)
                g = task.get(key)
                if g is None:
                    g = task[key] = _Group()
                g.values.append(e.duration_ms)
                g.ts.append(e.ts)
                state = e.task_state
                if state == "failure" or (state is None and e.outcome == "failure"):
                    g.a.append(e.ts)
                    g.errors.append(e.ts)
                elif state == "retry":
                    g.b.append(e.ts)
                w = e.task_queue_wait_ms
                if w is not None:
                    g = wait.get(key)
                    if g is None:
                        g = wait[key] = _Group()
                    g.values.append(w)
                    g.ts.append(e.ts)
                n_task += 1
            elif kind == "metric":
                tags = e.metric_tags
                key = (e.metric_name, tuple(sorted(tags.items())) if tags else ())
                g = met.get(key)
                if g is None:
                    g = met[key] = _Group()
                g.values.append(e.metric_value)
                g.ts.append(e.ts)
                if e.metric_type == "count":
                    g.a.append(e.ts)
                n_met += 1
            # any other kind: the parsers only produce known kinds; a new one is ignored, not a crash
        kinds = self.by_kind
        for k, n in (("request", n_req), ("db", n_db), ("cache", n_cache), ("external", n_ext),
                     ("task", n_task), ("metric", n_met)):
            if n:
                kinds[k] = kinds.get(k, 0) + n
        self.events += n_req + n_db + n_cache + n_ext + n_task + n_met

    def flush(self) -> None:
        """Move the grouped values into the aggregates, with numpy over the whole batch."""
        series: list[SeriesKey] = []
        fam_of: list[str] = []
        groups: list[_Group] = []
        cache = self._series_cache
        for family, fam_groups in self._groups.items():
            for raw, g in fam_groups.items():
                sk = cache.get((family, raw))
                if sk is None:
                    if len(cache) > 100_000:  # a pathological tag explosion must not grow memory unboundedly
                        cache.clear()
                    sk = cache[(family, raw)] = _series(family, raw)
                series.append(sk)
                fam_of.append(family)
                groups.append(g)
            fam_groups.clear()
        if not groups:
            return
        lens = np.fromiter((len(g.values) for g in groups), dtype=np.int64, count=len(groups))
        values = np.fromiter(chain.from_iterable(g.values for g in groups), dtype=np.float64, count=int(lens.sum()))
        ts = np.fromiter(chain.from_iterable(g.ts for g in groups), dtype=np.float64, count=values.size)
        sid = np.repeat(np.arange(len(groups), dtype=np.int64), lens)
        win = np.floor_divide(ts, self.width).astype(np.int64)
        wmin = int(win.min())
        span = int(win.max()) - wmin + 1
        comp = sid * span + (win - wmin)
        seg_keys, inv = np.unique(comp, return_inverse=True)
        nseg = seg_keys.size
        order = np.argsort(inv, kind="stable")
        v = values[order]
        counts = np.bincount(inv, minlength=nseg)
        starts = np.zeros(nseg, dtype=np.int64)
        np.cumsum(counts[:-1], out=starts[1:])
        sums = np.add.reduceat(v, starts)
        mins = np.minimum.reduceat(v, starts)
        maxs = np.maximum.reduceat(v, starts)
        sat = np.add.reduceat((v <= self.apdex_t).astype(np.int64), starts)
        tol = np.add.reduceat((v <= 4.0 * self.apdex_t).astype(np.int64), starts) - sat
        slow = np.add.reduceat((v > self.slow_ms).astype(np.int64), starts)

        def flagged(attr: str) -> npt.NDArray[np.int64]:
            """Per segment, how many of the series' flagged timestamps fall in the segment's window."""
            fl = np.fromiter((len(getattr(g, attr)) for g in groups), dtype=np.int64, count=len(groups))
            total = int(fl.sum())
            if not total:
                return np.zeros(nseg, dtype=np.int64)
            fts = np.fromiter(chain.from_iterable(getattr(g, attr) for g in groups), dtype=np.float64,
                              count=total)
            fcomp = np.repeat(np.arange(len(groups), dtype=np.int64), fl) * span + (
                np.floor_divide(fts, self.width).astype(np.int64) - wmin)
            return np.bincount(np.searchsorted(seg_keys, fcomp), minlength=nseg)

        errors, flag_a, flag_b = flagged("errors"), flagged("a"), flagged("b")

        # Sketch buckets for every positive value at once; segments with zeros or negatives take the
        # general path (only gauges can have them).
        mapping = self._sketch
        positive = mins > mapping.min_indexable
        keys = mapping.key_of(np.where(v > mapping.min_indexable, v, 1.0))
        kmin = np.minimum.reduceat(keys, starts)
        kmax = np.maximum.reduceat(keys, starts)
        widths = np.where(positive, kmax - kmin + 1, 0)
        base = np.zeros(nseg, dtype=np.int64)
        np.cumsum(widths[:-1], out=base[1:])
        seg_of = np.repeat(np.arange(nseg, dtype=np.int64), counts)
        pos_values = positive[seg_of]
        flat = (base[seg_of] + keys - kmin[seg_of])[pos_values]
        binned = np.bincount(flat, minlength=int(widths.sum())) if flat.size else np.zeros(0, dtype=np.int64)

        seg_series = (seg_keys // span).tolist()
        seg_start = ((seg_keys % span + wmin) * self.width).tolist()
        counts_l, sums_l, mins_l, maxs_l = counts.tolist(), sums.tolist(), mins.tolist(), maxs.tolist()
        err_l, a_l, b_l = errors.tolist(), flag_a.tolist(), flag_b.tolist()
        sat_l, tol_l, slow_l = sat.tolist(), tol.tolist(), slow.tolist()
        base_l, widths_l, kmin_l, starts_l = base.tolist(), widths.tolist(), kmin.tolist(), starts.tolist()
        positive_l = positive.tolist()
        aggs = self._aggs
        for s in range(nseg):
            i = seg_series[s]
            sk = series[i]
            start = seg_start[s]
            k = (sk.family, sk.tags, start)
            agg = aggs.get(k)
            if agg is None:
                agg = aggs[k] = WindowAggregate(sk, start, self.width, sketch=DDSketch())
            agg.count += counts_l[s]
            agg.errors += err_l[s]
            agg.total += sums_l[s]
            if mins_l[s] < agg.min:
                agg.min = mins_l[s]
            if maxs_l[s] > agg.max:
                agg.max = maxs_l[s]
            sketch = agg.sketch
            assert isinstance(sketch, DDSketch)
            if positive_l[s]:
                sketch.add_bucket_counts(kmin_l[s], binned[base_l[s]: base_l[s] + widths_l[s]], mins_l[s], maxs_l[s])
            else:
                sketch.add_many(v[starts_l[s]: starts_l[s] + counts_l[s]])
            family = fam_of[i]
            c = agg.counters
            if family == "request":
                c["satisfied"] = c.get("satisfied", 0.0) + sat_l[s]
                c["tolerating"] = c.get("tolerating", 0.0) + tol_l[s]
            elif family == "db":
                c["slow"] = c.get("slow", 0.0) + slow_l[s]
            elif family in _FLAG_COUNTERS:
                name_a, name_b = _FLAG_COUNTERS[family]
                if name_a:
                    c[name_a] = c.get(name_a, 0.0) + a_l[s]
                if name_b:
                    c[name_b] = c.get(name_b, 0.0) + b_l[s]
        tmin, tmax = float(ts.min()), float(ts.max())
        self.min_ts = tmin if self.min_ts is None else min(self.min_ts, tmin)
        self.max_ts = tmax if self.max_ts is None else max(self.max_ts, tmax)

    def take(self) -> list[WindowAggregate]:
        """The aggregates so far (after a flush), handing them over and starting afresh."""
        self.flush()
        out = list(self._aggs.values())
        self._aggs = {}
        return out


def pipeline_aggregate(start: int, width: int, *, read: int, parsed: int, skipped: int, invalid: int,
                       late: int, duration_ms: float) -> WindowAggregate:
    """The pipeline's own counts for one run, in the wall-clock window the run committed in."""
    return WindowAggregate(
        SeriesKey("pipeline"), start, width, count=1, total=duration_ms, min=duration_ms, max=duration_ms,
        counters={"read": float(read), "parsed": float(parsed), "skipped": float(skipped),
                  "invalid": float(invalid), "late": float(late), "runs": 1.0},
    )


@dataclass(slots=True)
class ApplyResult:
    """What ``WindowState.apply`` did, for the summary and the outbox."""

    changed_starts: set[int] = field(default_factory=set)
    windows_updated: int = 0
    late_events: int = 0
    late_windows: int = 0
    folded: dict[str, int] = field(default_factory=dict)  # family -> series folded into `other`
    new_series: int = 0
    watermark: float | None = None
    request_windows: list[WindowAggregate] = field(default_factory=list)  # for the summary's slowest routes


class WindowState:
    """The run's merged aggregates, keyed by (family, tags, window start)."""

    def __init__(self) -> None:
        self.aggs: dict[AggKey, WindowAggregate] = {}
        self.max_ts: float | None = None

    def merge(self, partials: Iterable[WindowAggregate], max_ts: float | None = None) -> None:
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

    def apply(self, ws: WindowsStore, *, lateness_seconds: int, max_series: int, now: float,
              warn: Any = None) -> ApplyResult:
        """Merge the run's aggregates into the stored windows (call inside the run's transaction).

        Late: the watermark is the newest event time ever committed (this run's included); a window that
        ended more than ``lateness_seconds`` before it is not updated, and its events count as late.
        Cap: a family admits new series (in sorted order, so that a rerun folds the same way) until it
        has ``max_series``; the rest merge into the series whose tag values are all ``other``.
        """
        res = ApplyResult()
        stored_wm = ws.watermark()
        wm = max((x for x in (stored_wm, self.max_ts) if x is not None), default=None)
        res.watermark = wm
        cutoff = (wm - lateness_seconds) if wm is not None else None
        known = ws.known_series()
        final: dict[AggKey, WindowAggregate] = {}
        new_series: list[tuple[str, Tags, int]] = []
        for k in sorted(self.aggs, key=lambda k: (k[0], k[1], k[2])):
            family, tags, start = k
            agg = self.aggs[k]
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
                        warn(f"{family}: more than {max_series} series; further tag values fold into "
                             f"'other' (run.max_series_per_metric)")
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


def stderr_warning(message: str) -> None:
    print(f"logapm: warning: {message}", file=sys.stderr)
