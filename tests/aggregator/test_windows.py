"""Window accumulators: exact counts and counters per series and window, lateness and the series cap."""

from __future__ import annotations

import math
from itertools import pairwise
from pathlib import Path
from typing import Literal

import numpy as np
import pytest

from aggregator import catalog
from aggregator.model import SeriesKey, WindowAggregate, make_tags
from aggregator.sketch import DDSketch
from aggregator.store import Store
from aggregator.windows import WindowAccumulator, WindowState
from aggregator.windows_store import WindowsStore
from parsers.event import Event

T0 = 1_764_410_400.0  # a minute boundary


def req(ts: float, d: float, route: str = "r/", status: int = 200,
        outcome: Literal["success", "failure"] = "success") -> Event:
    return Event(timestamp="", schema=1, kind="request", duration_ms=d, outcome=outcome, ts=ts,
                 http_route=route, http_request_method="GET", http_response_status_code=status,
                 service_name="svc", deployment_environment="prod")


def test_request_series_counts_and_apdex() -> None:
    """Per window and route: exact count, errors (5xx or failure), Apdex counters, sketch percentiles."""
    acc = WindowAccumulator(60, apdex_t_ms=100.0)
    rng = np.random.default_rng(0)
    durations = rng.lognormal(4, 1, 1000)
    events = [req(T0 + i * 0.05, float(d), status=503 if i % 100 == 0 else 200) for i, d in enumerate(durations)]
    events.append(req(T0 + 1, 50.0, outcome="failure"))
    acc.add(events[:400])
    acc.flush()
    acc.add(events[400:])
    (agg,) = acc.take()
    every = np.append(durations, 50.0)
    assert agg.series.family == "request" and agg.start == int(T0)
    assert agg.series.tags == make_tags(route="r/", method="GET", service="svc", env="prod")
    assert agg.count == 1001 and agg.errors == 11
    assert agg.counters["satisfied"] == np.count_nonzero(every <= 100)
    assert agg.counters["tolerating"] == np.count_nonzero((every > 100) & (every <= 400))
    assert agg.total == pytest.approx(every.sum())
    p99 = catalog.value("request.duration.p99", agg)
    assert p99 is not None and abs(p99 - np.quantile(every, 0.99)) <= 0.01 * np.quantile(every, 0.99)


def test_every_kind_goes_to_its_family() -> None:
    """db, cache, external, task (+ queue wait) and metric events land in their families with counters."""
    ev = [
        Event(timestamp="", schema=1, kind="db", duration_ms=150.0, ts=T0, db_system="postgresql",
              db_namespace="default", db_operation_name="SELECT", db_collection_name="story"),
        Event(timestamp="", schema=1, kind="db", duration_ms=5.0, ts=T0, db_system="postgresql",
              db_namespace="default", db_operation_name="SELECT", db_collection_name="story"),
        Event(timestamp="", schema=1, kind="cache", duration_ms=1.0, ts=T0, cache_name="default",
              cache_operation="get", cache_hit=True),
        Event(timestamp="", schema=1, kind="cache", duration_ms=1.0, ts=T0, cache_name="default",
              cache_operation="get", cache_hit=False),
        Event(timestamp="", schema=1, kind="external", duration_ms=80.0, ts=T0, peer_service="s3",
              external_operation="PutObject", http_response_status_code=502),
        Event(timestamp="", schema=1, kind="task", duration_ms=900.0, ts=T0, task_name="send", task_state="retry",
              messaging_destination_name="celery", task_queue_wait_ms=12.0),
        Event(timestamp="", schema=1, kind="task", duration_ms=10.0, ts=T0, task_name="send", task_state="failure",
              messaging_destination_name="celery"),
        Event(timestamp="", schema=1, kind="metric", ts=T0, metric_name="orders", metric_type="count",
              metric_value=3.0, metric_tags={"plan": "pro"}),
        Event(timestamp="", schema=1, kind="metric", ts=T0, metric_name="db.pool.utilization",
              metric_type="gauge", metric_value=0.75, metric_tags={"db": "default"}),
    ]
    acc = WindowAccumulator(60, slow_query_ms=100.0)
    acc.add(ev)
    aggs = {a.series.family: a for a in acc.take()}
    assert aggs["db"].count == 2 and aggs["db"].counters["slow"] == 1
    assert aggs["db"].series.tags == make_tags(db="default", operation="SELECT", table="story")
    assert aggs["cache"].counters == {"hits": 1, "misses": 1}
    assert aggs["external"].errors == 1
    assert aggs["task"].counters == {"failures": 1, "retries": 1} and aggs["task"].errors == 1
    assert aggs["task.queue_wait"].count == 1 and aggs["task.queue_wait"].max == 12.0
    assert aggs["metric:orders"].series.tags == make_tags(plan="pro")
    assert catalog.points(aggs["metric:orders"])[0].metric == "apm.business.orders"
    assert {p.metric for p in catalog.points(aggs["metric:db.pool.utilization"])} == {
        "apm.db.pool.utilization.avg", "apm.db.pool.utilization.max"}
    assert acc.by_kind == {"db": 2, "cache": 2, "external": 1, "task": 2, "metric": 2}


def test_windows_split_by_time() -> None:
    """Events fall in the window containing their timestamp; window starts are multiples of the width."""
    acc = WindowAccumulator(60)
    acc.add([req(T0 + 59.999, 1.0), req(T0 + 60.0, 1.0), req(T0 + 3600 + 5, 1.0)])
    starts = sorted(a.start for a in acc.take())
    assert starts == [int(T0), int(T0) + 60, int(T0) + 3600]


def _apply(tmp_path: Path, events: list[Event], *, lateness: int = 3600, cap: int = 100) -> tuple:
    acc = WindowAccumulator(60)
    acc.add(events)
    state = WindowState()
    state.merge(acc.take(), acc.max_ts)
    warnings: list[str] = []
    with Store(tmp_path / "s.db") as store:
        ws = WindowsStore(store)
        with store.transaction():
            res = state.apply(ws, lateness_seconds=lateness, max_series=cap, now=0.0, warn=warnings.append)
        stored = list(ws.all_windows())
    return res, stored, warnings


def test_late_events_update_or_are_counted(tmp_path: Path) -> None:
    """Within the lateness a late event merges into its stored window; older ones are counted as late."""
    res, stored, _ = _apply(tmp_path, [req(T0 + 7200, 10.0)])
    assert res.watermark == T0 + 7200 and res.late_events == 0
    res, stored, _ = _apply(tmp_path, [req(T0 + 7200 - 1800, 20.0), req(T0 + 7200 - 1800, 30.0),
                                       req(T0, 40.0)])
    assert res.late_events == 1  # 2 hours old with 1 hour of lateness
    assert res.changed_starts == {int(T0 + 7200 - 1800)}
    assert sorted(a.count for a in stored) == [1, 2]
    res, stored, _ = _apply(tmp_path, [req(T0 + 7200 - 1800 + 1, 50.0)])  # republished: merged, not replaced
    assert sorted(a.count for a in stored) == [1, 3]


def test_series_cap_folds_into_other(tmp_path: Path) -> None:
    """Beyond the cap, new series fold into one `other` series with a single warning; counts stay exact."""
    events = [req(T0, 1.0, route=f"r{i:03d}/") for i in range(50)]
    res, stored, warnings = _apply(tmp_path, events, cap=10)
    assert res.folded == {"request": 40} and len(warnings) == 1
    by_route = {a.series.tag("route"): a.count for a in stored}
    assert len(by_route) == 11 and by_route["other"] == 40
    assert sum(by_route.values()) == 50
    assert sorted(set(by_route) - {"other"}) == [f"r{i:03d}/" for i in range(10)]  # first in sorted order kept
    res, stored, _ = _apply(tmp_path, [req(T0 + 60, 1.0, route="r005/"), req(T0 + 60, 1.0, route="new/")], cap=10)
    assert {a.series.tag("route") for a in stored if a.start == int(T0) + 60} == {"r005/", "other"}


def test_accumulator_folds_past_the_cap_as_it_reads() -> None:
    """With a cap of 10 and 5 routes already admitted by the store, an accumulator fed 50 new routes (twice,
    in two batches) holds the 5 admitted, the first 5 new and one `other` series: never more than the cap
    plus `other`, and count, errors and sum are exact (folded, not dropped)."""
    admitted = {"request": frozenset(make_tags(route=f"s{i}/", method="GET", service="svc", env="prod")
                                     for i in range(5))}
    acc = WindowAccumulator(60, max_series=10, admitted=admitted)
    events = [req(T0 + i, float(i + 1), route=f"r{i:03d}/", status=500 if i % 3 == 0 else 200) for i in range(50)]
    events.append(req(T0, 7.0, route="s1/"))  # admitted before: kept whatever the cap
    acc.add(events)
    acc.add(events)
    aggs = acc.take()
    routes = {a.series.tag("route"): a for a in aggs}
    assert set(routes) == {"s1/", "other"} | {f"r{i:03d}/" for i in range(5)}
    assert routes["other"].count == 2 * 45 and routes["s1/"].count == 2
    assert sum(a.count for a in aggs) == 102
    assert sum(a.errors for a in aggs) == 2 * 17
    assert sum(a.total for a in aggs) == 2 * (sum(range(1, 51)) + 7.0)
    assert acc.folded == {"request": 45}  # distinct series folded (the second batch's are remembered)


# --- the columnar accumulator against a per-event reference -------------------------------------------


class _Reference:
    """What ``WindowAccumulator`` computes, written per event the plain way: each event's family, series
    (with the cap's rule, its memo of folded keys included), value, error and counters; at each flush, per
    (series, window), a running sum over the events in their order added to the aggregate's total, and one
    ``add_many`` of the values into its sketch."""

    _FIELDS = {
        "request": ("http_route", "http_request_method", "service_name", "deployment_environment"),
        "db": ("db_namespace", "db_system", "db_operation_name", "db_collection_name"),
        "cache": ("cache_name", "cache_operation"),
        "external": ("peer_service", "external_operation"),
        "task": ("task_name", "messaging_destination_name"),
    }

    def __init__(self, width: int, apdex_t: float, slow_ms: float, max_series: int | None,
                 admitted: dict, fold_events: int, memo: int) -> None:
        self.width, self.apdex_t, self.slow_ms = width, apdex_t, slow_ms
        self.cap, self.admitted, self.fold_events, self.memo = max_series, admitted, fold_events, memo
        self.known: dict[str, dict] = {}  # kind -> remembered key -> SeriesKey (and `other` entries)
        self.held: dict[str, set] = {}
        self.folded: dict[str, int] = {}
        self.pending: dict = {}  # (family, tags, start) -> [(value, error, counters)] in event order
        self.aggs: dict = {}
        self.buffered = 0
        self.events = 0
        self.by_kind: dict[str, int] = {}
        self.min_ts = self.max_ts = None

    def _series_of(self, kind: str, raw: tuple) -> SeriesKey:
        from aggregator.windows import _series
        from aggregator.windows_store import fold_tags

        table = self.known.setdefault(kind, {})
        if raw in table:
            return table[raw]
        sk = _series(kind, raw)
        if self.cap is not None:
            held = self.held.setdefault(sk.family, set(self.admitted.get(sk.family, ())))
            if sk.tags not in held and len(held) >= self.cap:
                other = SeriesKey(sk.family, fold_tags(sk.tags))
                held.add(other.tags)
                if ("other", other) not in table:
                    table[("other", other)] = other
                self.folded[sk.family] = self.folded.get(sk.family, 0) + 1
                if len(table) < self.memo + self.cap:
                    table[raw] = other
                return other
            held.add(sk.tags)
        table[raw] = sk
        return sk

    def _put(self, sk: SeriesKey, ts: float, value: float, error: bool, counters: dict) -> None:
        start = math.floor(ts / self.width) * self.width
        self.pending.setdefault((sk.family, sk.tags, start), []).append((value, error, counters, ts))

    def add(self, events: list) -> None:
        for e in events:
            kind = e.kind
            if kind == "metric":
                raw = (e.metric_name, tuple(sorted(e.metric_tags.items())) if e.metric_tags else ())
                sk = self._series_of("metric", raw)
                self._put(sk, e.ts, e.metric_value, False, {"count_samples": e.metric_type == "count"})
            elif kind in self._FIELDS:
                sk = self._series_of(kind, tuple(getattr(e, f) for f in self._FIELDS[kind]))
                d, failed = e.duration_ms, e.outcome == "failure"
                server_error = e.http_response_status_code in range(500, 600)
                if kind == "request":
                    self._put(sk, e.ts, d, failed or server_error,
                              {"satisfied": d <= self.apdex_t, "tolerating": self.apdex_t < d <= 4 * self.apdex_t})
                elif kind == "db":
                    self._put(sk, e.ts, d, failed, {"slow": d > self.slow_ms})
                elif kind == "cache":
                    self._put(sk, e.ts, d, failed, {"hits": e.cache_hit is True, "misses": e.cache_hit is False})
                elif kind == "external":
                    self._put(sk, e.ts, d, failed or server_error, {})
                else:
                    failure = e.task_state == "failure" or (e.task_state is None and failed)
                    self._put(sk, e.ts, d, failure, {"failures": failure, "retries": e.task_state == "retry"})
                    if e.task_queue_wait_ms is not None:
                        self._put(SeriesKey("task.queue_wait", sk.tags), e.ts, e.task_queue_wait_ms, False, {})
            else:
                continue
            self.events += 1
            self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
        self.buffered += len(events)
        if self.buffered >= self.fold_events:
            self.flush()

    def flush(self) -> None:
        for (family, tags, start), items in self.pending.items():
            agg = self.aggs.get((family, tags, start))
            if agg is None:
                agg = self.aggs[family, tags, start] = WindowAggregate(
                    SeriesKey(family, tags), start, self.width, sketch=DDSketch())
            running = 0.0
            for value, error, _, ts in items:
                running += value
                agg.count += 1
                agg.errors += error
                agg.min, agg.max = min(agg.min, value), max(agg.max, value)
                self.min_ts = ts if self.min_ts is None else min(self.min_ts, ts)
                self.max_ts = ts if self.max_ts is None else max(self.max_ts, ts)
            agg.total += running
            for name in items[0][2]:
                agg.counters[name] = agg.counters.get(name, 0.0) + float(sum(c[name] for _, _, c, _ in items))
            sketch = agg.sketch
            assert isinstance(sketch, DDSketch)
            sketch.add_many([value for value, *_ in items])
        self.pending = {}
        self.buffered = 0

    def take(self) -> list:
        self.flush()
        out, self.aggs = list(self.aggs.values()), {}
        return out


def _exactly(agg: WindowAggregate) -> tuple:
    assert agg.sketch is not None
    return (agg.series.family, agg.series.tags, agg.start, agg.width, agg.count, type(agg.errors), agg.errors, agg.total.hex(),
            agg.min, agg.max, list(agg.counters.items()), agg.sketch.to_bytes())


@pytest.mark.parametrize(("cap", "memo", "table"), [(None, 1 << 16, 1 << 16), (6, 1 << 16, 1 << 16), (6, 3, 1 << 16),
                                                    (None, 1 << 16, 40), (6, 3, 40)])
def test_accumulator_matches_a_per_event_reference(monkeypatch: pytest.MonkeyPatch, cap: int | None,
                                                   memo: int, table: int) -> None:
    """A realistic generated log (every kind, failures, cache hits and misses, metric events with zero and
    negative gauge values, several windows) in uneven batches, with folds inside ``add`` and explicit
    flushes: the columnar accumulator's aggregates equal the per-event reference's exactly (totals to the
    bit, counters in the same order, sketch bytes), with or without a series cap, past the memo of folded
    keys and with a full lookup table; events, kinds, folded counts and the time range too."""
    from aggregator import loggen, windows
    from parsers import LineParser

    docs = loggen.generate_events(30_000, start=T0, seconds=900, seed=7)  # 1,000 metric events
    for i, doc in enumerate(docs):
        if doc["apm.kind"] == "metric" and doc["metric.type"] == "gauge" and i % 5 == 0:
            doc["metric.value"] = -doc["metric.value"] if i % 10 else 0.0
        if doc["apm.kind"] == "metric" and i % 3 == 0:  # two tags, in either order: one series
            doc["metric.tags"] = {"zone": "b", "db": "default"} if i % 2 else {"db": "default", "zone": "b"}
        if doc["apm.kind"] == "metric" and i % 7 == 0:  # no tags in the last batch only (they take another path)
            doc.pop("metric.tags") if i % 2 and i > 20_000 else doc.update({"metric.tags": {}})
        if doc["apm.kind"] == "request" and i % 97 == 0:
            doc["http.route"] = f"api/rare/{i}/"  # many series, to fold past the cap
        if doc["apm.kind"] == "task" and i % 4 == 0:  # no state: the outcome decides
            doc.pop("task.state")
            doc["outcome"] = "failure" if i % 8 else "success"
        if doc["apm.kind"] == "task" and i % 4 == 2:  # a state: it decides, whatever the outcome
            doc["outcome"] = "failure"
        if doc["apm.kind"] in ("request", "external", "db") and i % 11 == 0:  # a 5xx alone, a failure alone
            doc.update({"outcome": "success", "http.response.status_code": 500 + i % 100} if i % 2
                       else {"outcome": "failure", "http.response.status_code": 200 + i % 300})
    events = LineParser(now=T0 + 3600).parse(b"".join(loggen.lines_of(docs))).events
    assert len(events) == len(docs)
    gauges = [e.metric_value for e in events if e.kind == "metric" and e.metric_value is not None]
    assert min(gauges) < 0 and 0 in gauges
    assert {None, 0, 1, 2} == {e.metric_tags if e.metric_tags is None else len(e.metric_tags)
                            for e in events if e.kind == "metric"}
    assert {e.cache_hit for e in events if e.kind == "cache"} == {True, False, None}
    assert {(e.task_state, e.outcome) for e in events if e.kind == "task"} >= {
        (None, "failure"), (None, "success"), ("success", "failure"), ("retry", "failure"), ("failure", "failure")}
    events.insert(5, Event(timestamp="", schema=1, kind="bogus", ts=T0))  # type: ignore[arg-type]

    fold_events = 7_000
    monkeypatch.setattr(windows, "FOLD_EVENTS", fold_events)
    monkeypatch.setattr(windows, "FOLDED_MEMO", memo)
    monkeypatch.setattr(windows, "_LOOKUP_MAX", table)
    admitted = {"request": frozenset({make_tags(route="api/feed/", method="GET", service=loggen.SERVICE,
                                                env=loggen.ENV)})}
    acc = WindowAccumulator(60, 100.0, 50.0, max_series=cap, admitted=admitted)
    ref = _Reference(60, 100.0, 50.0, cap, admitted, fold_events, memo)
    bounds = [0, 3_000, 3_001, 3_002, 3_500, 11_000, 19_000, 30_001]  # a fresh accumulator's warm-up first
    for i, (a, b) in enumerate(pairwise(bounds)):
        for target in (acc, ref):
            target.add(events[a:b])
            if i == 3:
                target.flush()
    got, want = acc.take(), ref.take()
    assert sorted(map(_exactly, got)) == sorted(map(_exactly, want))
    assert len(got) > 100
    assert (acc.events, acc.by_kind, acc.folded) == (ref.events, ref.by_kind, ref.folded)
    assert (acc.min_ts, acc.max_ts) == (ref.min_ts, ref.max_ts)
    if cap is not None:
        assert acc.folded["request"] > 0 and acc.folded["db"] > 0
    if cap is not None and memo == 3:  # past the memo, the events of unremembered keys count again
        assert acc.folded["request"] > len({e.http_route for e in events if e.kind == "request"}) - cap


def test_series_tags_are_make_tags() -> None:
    """The tags a new series gets equal ``make_tags`` of its fields, empty and odd values included."""
    from aggregator.windows import _series

    names = {"request": ("route", "method", "service", "env"), "cache": ("cache", "operation"),
             "external": ("peer_service", "operation"), "task": ("task", "queue"),
             "task.queue_wait": ("task", "queue")}
    odd = ["api/x/", "", None, "GET", 0, False, "über", " "]
    for family, fields in names.items():
        for i in range(len(odd) ** len(fields)):
            raw = tuple(odd[(i // len(odd) ** k) % len(odd)] for k in range(len(fields)))
            assert _series(family, raw).tags == make_tags(dict(zip(fields, raw, strict=True))), (family, raw)
    for raw in [("default", "pg", "SELECT", "t"), (None, "pg", "SELECT", ""), ("", None, None, "t")]:
        assert _series("db", raw).tags == make_tags(db=raw[0] or raw[1], operation=raw[2], table=raw[3])


@pytest.mark.parametrize("cap", [1000, 3])
def test_apply_takes_the_keys_in_the_reference_order(tmp_path: Path, cap: int) -> None:
    """``apply`` walks the aggregates by (family, `other` series last, tags, start) (sorted per series then
    per start): the windows it writes and the series it admits come in the order of sorting every key by that
    tuple, with the cap admitting the same series."""
    from aggregator.windows_store import fold_tags

    rng = np.random.default_rng(3)
    keys = [(fam, make_tags(route=route, method=method), int(T0) + 60 * int(s))
            for fam in ("request", "db", "cache") for route in ("a/", "b/", "other", "z/")
            for method in ("GET", "other") for s in rng.choice(40, 5, replace=False)]
    keys += [("task", (), int(T0) + 60 * int(s)) for s in (9, 2, 5)]
    rng.shuffle(keys)  # type: ignore[arg-type]
    state = WindowState()
    state.merge([WindowAggregate(SeriesKey(f, t), s, 60, count=1, errors=0, total=1.0, min=1.0, max=1.0)
                 for f, t, s in keys])
    written: list[tuple[str, tuple, int]] = []
    admitted: list[tuple[str, tuple, int]] = []
    with Store(tmp_path / "s.db") as store:
        ws = WindowsStore(store)

        def put(aggs: list[WindowAggregate], now: float) -> int:
            written.extend((a.series.family, a.series.tags, a.start) for a in aggs)
            return len(aggs)

        ws.put = put  # type: ignore[method-assign,assignment]
        ws.add_series = admitted.extend  # type: ignore[method-assign,assignment]
        with store.transaction():
            state.apply(ws, lateness_seconds=10**9, max_series=cap, now=0.0)
    # the reference: every key sorted by the tuple, folded past the cap as it comes
    want_written: dict[tuple[str, tuple, int], None] = {}
    want_admitted: list[tuple[str, tuple, int]] = []
    known: dict[str, set[tuple]] = {}
    for fam, tags, start in sorted(keys, key=lambda k: (k[0], fold_tags(k[1]) == k[1], k[1], k[2])):
        seen = known.setdefault(fam, set())
        if tags not in seen:
            if len(seen) >= cap:
                tags = fold_tags(tags)
            if tags not in seen:
                seen.add(tags)
                want_admitted.append((fam, tags, start))
        want_written[(fam, tags, start)] = None
    assert admitted == want_admitted
    assert written == list(want_written)
