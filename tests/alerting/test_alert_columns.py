"""The evaluator's columnar read (``alerting.columns``) against the way it read before (decoded windows,
merged per minute, ``alerting.spans`` over the decoded sketches): on generated timelines in a real store -
late data republishing earlier windows, runs with gaps (catch-ups), rules with for-durations, keep-firing,
recoveries, no-data handling, filters and mixed clusters - every run leaves the same alert state, history,
notifications and reports."""

from __future__ import annotations

import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregator.config import load_config
from aggregator.model import SeriesKey, WindowAggregate, make_tags
from aggregator.sketch import DDSketch
from aggregator.store import Store
from aggregator.windows_store import WindowsStore
from alerting import columns
from alerting.evaluate import Evaluator
from alerting.rules import Rule, default_rules
from alerting.stage import evaluate_rules

T0 = 1_795_000_000 - 1_795_000_000 % 3600
W = 60
MINUTES = 36
ROUTES = ("api/a/", "api/b/", "api/c/")
METHODS = ("GET", "POST")

CONFIG = load_config(environ={
    "API_P95_THRESHOLD_MS": "180", "API_P99_THRESHOLD_MS": "260", "API_ERROR_RATE_THRESHOLD": "0.08",
    "SLOW_QUERY_THRESHOLD_MS": "20", "CACHE_MISS_RATE_THRESHOLD": "0.3", "DB_POOL_UTILIZATION_THRESHOLD": "0.8",
    "ALERT_FOR_SECONDS": "60", "ALERT_KEEP_FIRING_FOR_SECONDS": "60", "ALERT_REPEAT_SECONDS": "300",
    "ALERT_MIN_SAMPLES": "5",
})
RULES = [
    *default_rules(CONFIG),
    # joins the request-by-route cluster (quantiles and exact fields together)
    Rule("avg_by_route", "apm.request.duration.avg", ">", 150.0, group_by=("route",), for_seconds=120),
    Rule("p50_by_method", "apm.request.duration.p50", ">", 120.0, group_by=("method",), span_seconds=600,
         for_seconds=180, keep_firing_for_seconds=120, min_samples=3, no_data="keep"),
    Rule("traffic_low", "apm.request.count", "<", 60.0, span_seconds=120, for_seconds=0, min_samples=0,
         no_data="alert"),
    Rule("apdex_get", "apm.request.apdex", "<", 0.9, match=(("method", "GET"),), group_by=("route",),
         for_seconds=60, min_samples=1),
    Rule("p95_post", "apm.request.duration.p95", ">", 150.0, match=(("method", "POST"),), group_by=("route",),
         span_seconds=180, for_seconds=0, repeat_seconds=120),
    Rule("db_p99", "apm.db.query.duration.p99", ">", 25.0, group_by=("operation",), span_seconds=240),
]


def _sketch(values: np.ndarray) -> DDSketch:
    s = DDSketch()
    if values.size:
        s.add_many(values)
    return s


def _windows(rng: np.random.Generator, k: int, boost: float) -> list[WindowAggregate]:
    """Minute ``k``'s windows: requests per route and method (some minutes absent, some without a sketch,
    some with zeros or no events), db queries, a cache and a pool gauge."""
    out: list[WindowAggregate] = []
    start = T0 + k * W
    for r, route in enumerate(ROUTES):
        for method in METHODS:
            n = int(rng.choice([0, 0, 2, 6, 12, 25]))
            if n == 0 and rng.random() < 0.6:
                continue  # no window at all
            slow = 1.0 + boost * ((k // (5 + r)) % 2)
            values = rng.lognormal(4.3 + 0.3 * r, 0.5, n) * slow
            if n and rng.random() < 0.2:
                values[: max(1, n // 4)] = 0.0
            errors = int(rng.binomial(n, 0.1)) if n else 0
            sketch = None if rng.random() < 0.1 else _sketch(values)
            out.append(WindowAggregate(
                SeriesKey("request", make_tags(route=route, method=method)), start, W, count=n, errors=errors,
                total=float(values.sum()), min=float(values.min()) if n else float("inf"),
                max=float(values.max()) if n else float("-inf"),
                counters={"satisfied": float((values <= 150).sum()), "tolerating": float((values > 150).sum())},
                sketch=sketch))
    for op in ("SELECT", "UPDATE"):
        values = rng.lognormal(2.5, 0.7, int(rng.integers(1, 15))) * (1.0 + boost * (k % 3 == 0))
        out.append(WindowAggregate(
            SeriesKey("db", make_tags(db="default", operation=op, table="t")), start, W, count=values.size,
            total=float(values.sum()), min=float(values.min()), max=float(values.max()),
            counters={"slow": float((values > 20).sum())}, sketch=_sketch(values)))
    hits = float(rng.integers(0, 20))
    misses = float(rng.integers(0, 12))
    out.append(WindowAggregate(SeriesKey("cache", make_tags(cache="default")), start, W, count=int(hits + misses),
                               counters={"hits": hits, "misses": misses}, sketch=_sketch(rng.random(3))))
    if rng.random() < 0.8:
        util = rng.random(4)
        out.append(WindowAggregate(SeriesKey("metric:db.pool.utilization", make_tags(db="default")), start, W,
                                   count=4, total=float(util.sum()), min=float(util.min()), max=float(util.max()),
                                   sketch=_sketch(util)))
    return out


def _outcome(store: Store, reports: list[Any]) -> Any:
    c = store.conn
    return (
        reports,
        c.execute("SELECT * FROM alert_groups ORDER BY rule, group_key").fetchall(),
        c.execute("SELECT rule, group_key, at, from_state, to_state, value FROM alert_history ORDER BY id").fetchall(),
        c.execute("SELECT rule, group_key, kind, at, body FROM alert_notifications ORDER BY id").fetchall(),
        c.execute("SELECT * FROM alert_rules ORDER BY rule").fetchall(),
    )


def _read_by(m: pytest.MonkeyPatch, use_columns: bool, taken: list[bool]) -> None:
    """The evaluator reads as columns (each chunk's ``read_chunk`` outcome noted in ``taken``: read, or left
    to the merging way), or as before (``_chunk_columns`` off)."""
    def counting(*a: Any) -> Any:
        out = columns.read_chunk(*a)
        taken.append(out is not None)
        return out

    if use_columns:
        m.setattr("alerting.evaluate.read_chunk", counting)
    else:
        m.setattr(Evaluator, "_chunk_columns", lambda self, *a: None)


def play(seed: int, runs: set[int], late: float, boost: float, *, use_columns: bool,
         monkeypatch: pytest.MonkeyPatch) -> tuple[Any, int]:
    """The timeline of ``seed``: minute ``k`` commits its windows and, with probability ``late``, republishes
    an earlier minute's windows (late data); the minutes in ``runs`` (and the last) judge the rules."""
    rng = np.random.default_rng(seed)
    taken: list[int] = []
    reports: list[Any] = []
    with tempfile.TemporaryDirectory() as tmp, monkeypatch.context() as m:
        _read_by(m, use_columns, taken)
        store = Store(Path(tmp) / "s.db")
        ws = WindowsStore(store)
        for k in range(MINUTES):
            batch = _windows(rng, k, boost)
            if k > 2 and rng.random() < late:
                batch += _windows(rng, k - int(rng.integers(1, min(k, 8) + 1)), boost)  # replaces those windows
            with store.transaction():
                ws.put(batch, now=float(k))
            if k in runs or k == MINUTES - 1:
                r = evaluate_rules(store, CONFIG, RULES, now=float(k))
                reports.append((r.points, r.transitions, r.notifications, r.firing, r.pending, r.errors))
        out = _outcome(store, reports)
        store.close()
    return out, sum(taken)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), runs=st.sets(st.integers(0, MINUTES - 2), max_size=MINUTES),
       late=st.sampled_from([0.0, 0.3, 0.8]), boost=st.sampled_from([0.5, 1.5, 3.0]))
def test_columns_judge_as_before(seed: int, runs: set[int], late: float, boost: float,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    new, taken = play(seed, runs, late, boost, use_columns=True, monkeypatch=monkeypatch)
    old, _ = play(seed, runs, late, boost, use_columns=False, monkeypatch=monkeypatch)
    assert taken > 0  # the columnar read was used
    assert new == old


def test_columns_judge_as_before_with_many_transitions(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fixed timeline where every kind of outcome happens, so the comparison above is not vacuous."""
    runs = set(range(0, MINUTES, 3)) | {20, 21, 22}
    new, taken = play(7, runs, 0.5, 3.0, use_columns=True, monkeypatch=monkeypatch)
    old, _ = play(7, runs, 0.5, 3.0, use_columns=False, monkeypatch=monkeypatch)
    assert taken > 0 and new == old
    _, _, history, notifications, _ = new
    kinds = {n[2] for n in notifications}
    assert {"firing", "resolved", "repeat"} <= kinds, kinds
    rules = {h[0] for h in history}
    assert {"api_latency_p95", "api_error_rate", "cache_miss_rate", "db_pool_utilization", "avg_by_route",
            "p50_by_method", "traffic_low", "apdex_get", "p95_post", "db_p99"} <= rules, rules
    assert any(h[4] == "pending" for h in history) and len(notifications) > 30


def test_what_columns_refuse_is_read_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    """Negative values, -0.0 extremes, an off-grid window: the chunk is read the merging way (same outcome);
    a chunk with none of them is read as columns."""
    cases: dict[str, list[WindowAggregate]] = {}
    base = [WindowAggregate(SeriesKey("request", make_tags(route="r", method="GET")), T0 + k * W, W, count=30,
                            total=3000.0, min=50.0, max=200.0, sketch=_sketch(np.linspace(50, 200, 30)))
            for k in range(20)]
    neg = _sketch(np.array([-1.0, 5.0, 9.0]))
    negzero = _sketch(np.array([-0.0, 5.0, 9.0]))
    off = WindowAggregate(SeriesKey("request", make_tags(route="r", method="PUT")), T0 + 5 * W + 7, W, count=30,
                          total=9000.0, min=200.0, max=400.0, sketch=_sketch(np.linspace(200, 400, 30)))
    cases["plain"] = base
    cases["negative"] = [*base[:10], WindowAggregate(base[10].series, base[10].start, W, count=3, total=13.0,
                                                     min=-1.0, max=9.0, sketch=neg), *base[11:]]
    cases["negzero"] = [*base[:10], WindowAggregate(base[10].series, base[10].start, W, count=3, total=14.0,
                                                    min=-0.0, max=9.0, sketch=negzero), *base[11:]]
    cases["offgrid"] = [*base, off]
    rules = [r for r in default_rules(CONFIG) if r.name.startswith("api_")]
    taken: list[bool] = []
    for name, aggs in cases.items():
        outcomes = []
        for use_columns in (True, False):
            taken.clear()
            with tempfile.TemporaryDirectory() as tmp, monkeypatch.context() as m:
                _read_by(m, use_columns, taken)
                store = Store(Path(tmp) / "s.db")
                with store.transaction():
                    WindowsStore(store).put(aggs, now=0.0)
                r = evaluate_rules(store, CONFIG, rules, now=0.0)
                outcomes.append(((r.points, r.transitions, r.notifications, r.errors), _outcome(store, [])))
                store.close()
            if use_columns:
                assert taken == [name == "plain"], name
        assert outcomes[0] == outcomes[1], name


def _in_form(blob: bytes, form: str) -> bytes:
    """A sketch's bytes (its quick form) in ``form``: "quick" as it is, "stored" (form 2, ``to_bytes``), "zlib"
    (form 1, what stores hold from before form 2), or "mixed": one of those, at random."""
    if form == "mixed":
        form = ("quick", "stored", "zlib")[zlib.crc32(blob) % 3]
    if form == "stored":
        return DDSketch.from_bytes(blob).to_bytes()
    return zlib.compress(blob[1:], 1) if form == "zlib" else blob


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), per_span=st.integers(1, 6), points=st.integers(1, 12),
       form=st.sampled_from(["stored", "quick", "zlib", "mixed"]))
def test_stored_sketches_read_as_the_decoded_ones(seed: int, per_span: int, points: int, form: str) -> None:
    """``read_chunk``'s quantiles from stored bytes against ``alerting.spans`` over the decoded sketches:
    counts of every width (8 to 32 bits), empty and zero-only sketches, sketches of any span of rows, the
    stored form, the quick one, form 1 (zlib) and all of them mixed."""
    from aggregator.sketch import DDSketch as Sketch
    from alerting.spans import span_quantiles

    rng = np.random.default_rng(seed)
    grid = columns.Grid.of([T0 + W * (per_span + i) for i in range(points)], per_span * W, W)
    rows: list[tuple[SeriesKey, tuple[Any, ...]]] = []
    decoded: dict[Any, list[tuple[int, Any]]] = {}
    for r in range(grid.rows):
        for route in ("a", "b", "c"):
            if rng.random() < 0.3:
                continue
            kind = rng.integers(0, 5)
            values = {0: np.array([]), 1: np.zeros(int(rng.integers(1, 5))),
                      2: rng.lognormal(3.0, 1.0, int(rng.integers(1, 40))),
                      3: np.full(int(rng.choice([300, 70_000])), float(rng.integers(1, 100))),
                      4: np.concatenate([np.zeros(3), rng.lognormal(6.0, 2.0, 20)])}[int(kind)]
            s = _sketch(values)
            blob = _in_form(s.to_bytes(compress=False), form)
            series = SeriesKey("request", make_tags(route=route))
            rows.append((series, ("request", route, grid.base + r * W, W, int(values.size), 0, float(values.sum()),
                                  None, None, "{}", blob)))
            decoded.setdefault((("route", route),), []).append((r, Sketch.from_bytes(blob)))
    qs = {0.5, 0.95, 0.99}
    chunk = columns.read_chunk(lambda sketches: rows, ("route",), grid, qs, False)
    assert chunk is not None
    expected = span_quantiles(decoded, grid.rows, grid.first, grid.per_span, qs)
    assert not expected.merge
    for q in qs:
        assert chunk.quantiles.values[q].keys() == expected.values[q].keys()
        for key, values in expected.values[q].items():
            np.testing.assert_array_equal(chunk.quantiles.values[q][key], values)


def _raw_sketch(accuracy: float, counts: list[int], code: int, offset: int, lo: float, hi: float) -> bytes:
    """A stored sketch written by hand (``DDSketch.to_bytes``' uncompressed form), for counts the sketch
    itself would not write: a wider count type than needed, uint64 counts past 2**63."""
    from aggregator import sketch as sk

    body = np.array(counts, dtype=np.uint64).astype(sk._DTYPES[code]).tobytes()
    return b"".join((b"\0", sk._HEADER.pack(sk._FORMAT_VERSION, 0, accuracy, lo, hi, 2),
                     sk._STORE_HEADER.pack(offset, len(counts), code), body, sk._EMPTY_STORE))


@pytest.mark.parametrize("form", ["quick", "mixed"])
@pytest.mark.parametrize("cells", [None, 1, 200])
@pytest.mark.parametrize("case", ["accuracies", "widths", "wrapping", "near_2_62"])
def test_unusual_stored_sketches_read_as_the_decoded_ones(case: str, cells: int | None, form: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """``read_chunk`` reads the groups of a chunk together (one matrix per batch of groups, bisection of the
    ranks): against ``alerting.spans`` over the decoded sketches, bit for bit, when the groups' accuracies
    differ (one read-out per accuracy), when one group's sketches mix count types, and when uint64 counts
    wrap past 2**63 or sum near it (the sums may then decrease: every bucket compared instead of
    bisecting); all groups in one batch, one group a batch (``cells`` 1), or some of each; the bytes in the
    quick form, or each in one of the forms (``_in_form``)."""
    from aggregator.sketch import DDSketch as Sketch
    from alerting.spans import span_quantiles

    if cells is not None:
        monkeypatch.setattr(columns, "_CELLS", cells)

    rng = np.random.default_rng(11)
    per_span, points = 3, 8
    grid = columns.Grid.of([T0 + W * (per_span + i) for i in range(points)], per_span * W, W)
    rows: list[tuple[SeriesKey, tuple[Any, ...]]] = []
    decoded: dict[Any, list[tuple[int, Any]]] = {}
    for r in range(grid.rows):
        for route in ("a", "b", "c"):
            if case == "accuracies":
                s = DDSketch(0.01 if route == "a" else 0.02 if route == "b" else 0.05)
                s.add_many(rng.lognormal(3.0, 1.0, int(rng.integers(1, 40))))
                blob = s.to_bytes(compress=False)
            else:
                n = int(rng.integers(1, 30))
                counts = [int(c) for c in rng.integers(0, 4, n)]
                code = int(rng.integers(0, 4)) if case == "widths" else 3
                if case == "wrapping" and route == "b" and r % 3 == 0:  # wraps to a small positive total
                    counts = [2**62, 2**63 + int(rng.integers(0, 9)), 2**62, *counts]
                if case == "near_2_62" and route == "c":
                    counts[int(rng.integers(0, n))] = 2**60 + int(rng.integers(0, 2**40))
                blob = _raw_sketch(0.01, counts, code, int(rng.integers(300, 340)), 1.0, 500.0)
            blob = _in_form(blob, form)
            series = SeriesKey("request", make_tags(route=route))
            rows.append((series, ("request", route, grid.base + r * W, W, 1, 0, 1.0, None, None, "{}", blob)))
            decoded.setdefault((("route", route),), []).append((r, Sketch.from_bytes(blob)))
    qs = {0.0, 0.5, 0.95, 0.99, 1.0}
    with np.errstate(all="ignore"):  # wrapped counts: the decoded path computes with them as they are
        chunk = columns.read_chunk(lambda sketches: rows, ("route",), grid, qs, False)
        expected = span_quantiles(decoded, grid.rows, grid.first, grid.per_span, qs)
    assert chunk is not None and not expected.merge
    for q in qs:
        assert chunk.quantiles.values[q].keys() == expected.values[q].keys()
        for key, values in expected.values[q].items():
            assert chunk.quantiles.values[q][key].tobytes() == values.tobytes(), (case, q, key)


def test_many_wide_groups_are_read_in_bounded_memory() -> None:
    """A long catch-up's chunk of many routes whose sketches are wide (values from 1 to 1e17: ~2,000
    buckets): their summed counts are read a batch of groups at a time (``columns._CELLS``), not in one
    matrix of every group's buckets (~170 MB here, ~1 GB at a thousand routes), with the same quantiles
    as ``alerting.spans`` over the decoded sketches."""
    import tracemalloc

    from aggregator.sketch import DDSketch as Sketch
    from alerting.spans import span_quantiles

    per_span, points = 61, 120
    grid = columns.Grid.of([T0 + W * (per_span + i) for i in range(points)], per_span * W, W)
    rows: list[tuple[SeriesKey, tuple[Any, ...]]] = []
    decoded: dict[Any, list[tuple[int, Any]]] = {}
    for g in range(60):
        route = f"r{g}"
        for r, values in ((g % grid.rows, np.array([1.0, 2.0 + g])), ((7 * g) % grid.rows, np.array([1e17]))):
            blob = _sketch(values).to_bytes()
            rows.append((SeriesKey("request", make_tags(route=route)),
                         ("request", route, grid.base + r * W, W, 2, 0, 1.0, None, None, "{}", blob)))
            decoded.setdefault((("route", route),), []).append((r, Sketch.from_bytes(blob)))
    rows.sort(key=lambda x: (x[1][2], x[1][1]))
    qs = {0.5, 0.99}
    expected = span_quantiles(decoded, grid.rows, grid.first, grid.per_span, qs)
    tracemalloc.start()
    try:
        chunk = columns.read_chunk(lambda sketches: rows, ("route",), grid, qs, False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 80 * 2**20, peak
    assert chunk is not None and not expected.merge
    for q in qs:
        assert chunk.quantiles.values[q].keys() == expected.values[q].keys()
        for key, values in expected.values[q].items():
            assert chunk.quantiles.values[q][key].tobytes() == values.tobytes(), (q, key)
