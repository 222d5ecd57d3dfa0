"""The catch-up's quantiles without merged sketches (``alerting.spans``) are the merged sketches' figures,
bit for bit, and the evaluator judges exactly as the merging path does: same transitions, group states,
history and notification log, on random spans and on a generated hour of logs through ``execute``."""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregator import catalog
from aggregator.config import load_config
from aggregator.loggen import generate_events, write_log
from aggregator.model import SeriesKey, WindowAggregate, make_tags
from aggregator.run import execute
from aggregator.sketch import DDSketch, sketch_of
from aggregator.store import Store
from alerting.columns import read_chunk
from alerting.evaluate import Evaluator
from alerting.rules import load_rules
from alerting.spans import span_quantiles
from alerting.stage import evaluate_rules
from alerting.state import AlertStore

W = 60
QS = (0.0, 0.25, 0.5, 0.95, 0.99, 1.0)


def _values(rng: np.random.Generator, kind: int, n: int) -> np.ndarray:
    if kind == 0:
        return rng.lognormal(4.0, 1.0, n)
    if kind == 1:  # heavy tail
        return (rng.pareto(1.2, n) + 1.0) * 3.0
    if kind == 2:  # zeros among the values
        return np.where(rng.random(n) < 0.4, 0.0, rng.lognormal(1.0, 0.5, n))
    return np.full(n, 7.0)  # one bucket


windows_st = st.lists(  # (row, sizes of the group's series in that row, kind of values)
    st.tuples(st.integers(0, 24), st.lists(st.integers(0, 40), min_size=1, max_size=3), st.integers(0, 3)),
    max_size=30,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(groups=st.lists(windows_st, min_size=1, max_size=3), per_span=st.integers(0, 7),
       seed=st.integers(0, 2**32 - 1))
def test_span_quantiles_are_the_merged_sketches(groups: list[Any], per_span: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    points = 25 - per_span + 1 if per_span <= 25 else 0
    rows = points - 1 + per_span
    first = np.arange(points, dtype=np.int64)
    sketches: dict[Any, list[tuple[int, DDSketch]]] = {}
    for g, windows in enumerate(groups):
        items = sketches.setdefault((("route", str(g)),), [])
        for row, sizes, kind in windows:
            if row >= rows:
                continue
            items.extend((row, sketch_of(_values(rng, kind, n))) for n in sizes)
    got = span_quantiles(sketches, rows, first, per_span, QS)
    assert got.merge == set()
    for key, items in sketches.items():
        for i in range(points):
            inside = [s for row, s in items if i <= row < i + per_span]
            merged = None
            if inside:  # as catalog.merge builds it: an empty sketch, then each merged in
                merged = DDSketch(inside[0].relative_accuracy)
                for s in inside:
                    merged.merge(s)
            for q in QS:
                want = merged.quantile(q) if merged is not None else None
                x = got.values[q][key][i]
                assert (want is None and math.isnan(x)) or want == x, (key, i, q, want, x)


def test_sketches_it_does_not_take_are_left_to_the_merge() -> None:
    pos, neg, zeros = sketch_of([1.0, 2.0]), sketch_of([-1.0, 2.0]), sketch_of([0.0, 0.0, 3.0])
    other = DDSketch(0.02)
    other.add_many([1.0, 2.0])
    first = np.zeros(1, dtype=np.int64)

    def left(*group: DDSketch) -> set[Any]:
        return span_quantiles({(): [(0, s) for s in group]}, 1, first, 1, [0.5]).merge

    assert left(pos) == left(pos, zeros) == set()
    assert left(pos, neg) == left(pos, other) == left(sketch_of([-0.0, 1.0])) == {()}
    assert left(sketch_of([1e-200]), sketch_of([1e-30, 1e30])) == {()}  # > MAX_BUCKETS: the merge collapses
    # accuracies may differ between groups (they are never merged together); only the odd group is left
    got = span_quantiles({(("a", "1"),): [(0, pos)], (("a", "2"),): [(0, other), (0, pos)]}, 1, first, 1, [0.5])
    assert got.merge == {(("a", "2"),)} and list(got.values[0.5]) == [(("a", "1"),)]


def test_catalog_says_what_its_metrics_read_of_the_sketch() -> None:
    """Quantile metrics name their q; a metric said not to read the sketch computes the same without it."""
    assert catalog.quantile_of("apm.request.duration.p95") == 0.95
    assert catalog.quantile_of("apm.db.query.duration.p50", "apm") == 0.5
    assert catalog.quantile_of("apm.request.error_rate") is None
    assert catalog.quantile_of("apm.business.orders") is None and not catalog.reads_sketch("apm.business.orders")
    values = np.array([0.5, 3.0, 40.0, 700.0])
    for d in catalog.definitions():
        tags = make_tags(route="r")
        agg = WindowAggregate(SeriesKey(d.family, tags), 0, W, count=4, errors=1, total=float(values.sum()),
                              min=0.5, max=700.0, sketch=sketch_of(values),
                              counters={"satisfied": 2.0, "tolerating": 1.0, "hits": 3.0, "misses": 1.0,
                                        "failures": 1.0, "slow": 1.0, "retries": 2.0, "count_samples": 4.0})
        name = f"apm.{d.name}"
        if d.compute is None:
            assert catalog.reads_sketch(name) is False and catalog.quantile_of(name) is None
        elif (q := catalog.quantile_of(name)) is not None:
            assert agg.sketch is not None and catalog.value(name, agg) == agg.sketch.quantile(q)
        elif not catalog.reads_sketch(name):
            assert catalog.value(name, agg) == catalog.value(name, dataclasses.replace(agg, sketch=None)), name


# --- the evaluator, against its merging path ---------------------------------------------------------------


def _outcome(state: Path, config: Any, *, merging: bool, monkeypatch: pytest.MonkeyPatch,
             columns: bool = True) -> tuple[Any, bool]:
    """Everything a catch-up of the default rules leaves, and whether it took a quick path: the span
    quantiles from the stored rows (``alerting.columns``), or, with ``columns=False`` (the evaluator's
    previous read), from the decoded windows (``alerting.spans``)."""
    store = Store(state)
    try:
        AlertStore(store)
        with store.transaction():
            for table in ("alert_deliveries", "alert_notifications", "alert_history", "alert_groups",
                          "alert_rules"):
                store.conn.execute(f"DELETE FROM {table}")
        calls: list[int] = []
        with monkeypatch.context() as m:
            if merging:
                m.setattr(Evaluator, "_quantiles", lambda self, rules: None)
            else:
                m.setattr("alerting.evaluate.span_quantiles",
                          lambda *a: calls.append(1) or span_quantiles(*a))  # type: ignore[func-returns-value]
                if columns:  # a chunk of quantile rules read from the stored rows
                    m.setattr("alerting.evaluate.read_chunk", lambda *a: (
                        out := read_chunk(*a), out is not None and bool(a[3]) and calls.append(1))[0])
                else:
                    m.setattr(Evaluator, "_chunk_columns", lambda self, *a: None)
            report = evaluate_rules(store, config, load_rules(config), now=0.0)
        c = store.conn
        return (
            (report.points, report.transitions, report.notifications, report.firing, report.pending,
             report.errors),
            c.execute("SELECT * FROM alert_groups ORDER BY rule, group_key").fetchall(),
            c.execute("SELECT rule, group_key, at, from_state, to_state, value FROM alert_history ORDER BY id"
                      ).fetchall(),
            c.execute("SELECT rule, group_key, kind, at, body FROM alert_notifications ORDER BY id").fetchall(),
            c.execute("SELECT * FROM alert_rules ORDER BY rule").fetchall(),
        ), bool(calls)
    finally:
        store.close()


ENVS = [
    {},
    # low thresholds, no waiting, frequent repeats: many transitions and notifications carrying values
    {"API_P95_THRESHOLD_MS": "150", "API_P99_THRESHOLD_MS": "400", "SLOW_QUERY_THRESHOLD_MS": "15",
     "EXTERNAL_P95_THRESHOLD_MS": "250", "ALERT_FOR_SECONDS": "0", "ALERT_REPEAT_SECONDS": "120",
     "ALERT_MIN_SAMPLES": "1", "API_ERROR_RATE_THRESHOLD": "0.01"},
    {"API_P95_THRESHOLD_MS": "200", "ALERT_SPAN_SECONDS": "900", "ALERT_FOR_SECONDS": "60",
     "ALERT_KEEP_FIRING_FOR_SECONDS": "120"},
    {"API_P95_THRESHOLD_MS": "200", "ALERT_SPAN_SECONDS": "90"},  # span off the window grid: merging path
]


@pytest.fixture(scope="module")
def hour_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("hour")
    start = int(time.time() // 3600) * 3600 - 2 * 3600
    log = tmp / "app.log"
    write_log(log, generate_events(40_000, start=start, seconds=3600, seed=11))
    config = load_config(environ={}, overrides={"run.workers": 1})
    execute(config, inputs=[str(log)], state_path=tmp / "s.db", stages=(), warn=lambda m: None)
    return tmp / "s.db"


@pytest.mark.parametrize("env", ENVS)
def test_catch_up_judges_as_the_merging_path(hour_store: Path, env: dict[str, str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(environ=env)
    quick, took_quick = _outcome(hour_store, config, merging=False, monkeypatch=monkeypatch)
    spans, took_spans = _outcome(hour_store, config, merging=False, monkeypatch=monkeypatch, columns=False)
    merging, _ = _outcome(hour_store, config, merging=True, monkeypatch=monkeypatch)
    assert took_quick == took_spans == (env.get("ALERT_SPAN_SECONDS") != "90")
    assert quick[0][0] > 7 * 60  # most default rules at every minute of the hour
    assert quick == spans == merging
    if env.get("ALERT_FOR_SECONDS") == "0":
        assert len(quick[2]) > 50 and len(quick[3]) > 50  # the comparison saw many values


@pytest.mark.parametrize("coarse", [False, True])
def test_groups_left_to_the_merge_judge_as_before(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  coarse: bool) -> None:
    """Routes whose sketches the quick path does not take (negative values, -0.0) are merged, beside routes
    it does take (zeros, plain, count-only minutes): the same outcome as merging all. A route mixing
    accuracies fails its cluster as before, with the same error."""
    from aggregator.windows_store import WindowsStore

    rng = np.random.default_rng(5)
    t0 = int(time.time() // 3600) * 3600 - 3 * 3600
    aggs = []
    for k in range(45):
        for route in ("plain", "zeros", "negative", "negzero", "countonly") + (("coarse",) if coarse else ()):
            values = rng.lognormal(5.0, 0.8, 25)
            if route == "zeros":
                values[: k % 7] = 0.0
            elif route == "negative" and k % 9 == 0:
                values[0] = -3.0
            elif route == "negzero" and k % 11 == 0:
                values[0] = -0.0
            sketch: DDSketch | None = DDSketch(0.02 if route == "coarse" and k % 2 else 0.01)
            assert sketch is not None
            sketch.add_many(values)
            if route == "countonly" and k % 3:
                sketch = None
            aggs.append(WindowAggregate(
                SeriesKey("request", make_tags(route=route, method="GET")), t0 + k * W, W, count=25,
                errors=int(k % 4 == 0), total=float(values.sum()), min=float(values.min()),
                max=float(values.max()), counters={"satisfied": 20.0, "tolerating": 5.0}, sketch=sketch))
    state = tmp_path / "s.db"
    store = Store(state)
    with store.transaction():
        WindowsStore(store).put(aggs, now=0.0)
    store.close()
    config = load_config(environ={"API_P95_THRESHOLD_MS": "300", "API_P99_THRESHOLD_MS": "600",
                                  "ALERT_FOR_SECONDS": "0", "ALERT_REPEAT_SECONDS": "120",
                                  "ALERT_MIN_SAMPLES": "1"})
    quick, took_quick = _outcome(state, config, merging=False, monkeypatch=monkeypatch)
    merging, _ = _outcome(state, config, merging=True, monkeypatch=monkeypatch)
    assert took_quick and quick == merging
    if coarse:
        assert "cannot merge sketches of different accuracy" in " ".join(quick[0][5])
    else:
        assert len(quick[2]) > 20 and any("negative" in str(k) for _, k, *_ in quick[2])


def test_earliest_start_is_what_reading_the_windows_finds(hour_store: Path) -> None:
    """``WindowsStore.earliest_start`` (one query) against the evaluator's reading five windows at a time."""
    from aggregator.windows_store import WindowsStore

    class Plain:  # a reader without earliest_start
        def __init__(self, ws: WindowsStore) -> None:
            self.windows, self.latest_window_start = ws.windows, ws.latest_window_start

    store = Store(hour_store)
    try:
        ws = WindowsStore(store)
        watermark = ws.latest_window_start()
        assert watermark is not None
        alerts = AlertStore(store)
        quick = Evaluator(alerts, ws, width=W)
        plain = Evaluator(alerts, Plain(ws), width=W)  # type: ignore[arg-type]
        cases = [("request", None), ("request", {"http.route": "api/feed/"}), ("request", {"route": "api/feed/"}),
                 ("request", {"route": "none"}), ("db", {"operation": "SELECT"}), ("nothing", None)]
        for family, match in cases:
            for floor in (watermark - 6 * 3600, watermark - 1800, watermark - 7, watermark + 60):
                assert quick._earliest(family, match, floor, watermark) == plain._earliest(
                    family, match, floor, watermark), (family, match, floor)
        assert quick._earliest("request", {"route": "api/feed/"}, watermark - 1800, watermark) == watermark - 1800
    finally:
        store.close()
