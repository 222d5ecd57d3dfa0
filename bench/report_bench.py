"""Benchmark: how long ``logapm report`` takes for 1, 6 and 24 hours of windows, beside a naive baseline.

    python bench/report_bench.py                   # a day of one-minute windows, 3 repeats
    python bench/report_bench.py --series 80 --repeats 5

It fills a fresh state store with a day of one-minute windows (``--series`` series spread over the
report's families, each window a real aggregate with a real sketch) and times, medians over
``--repeats``:

- ``report``: ``aggregator.report.collect`` + ``render`` as shipped (each window merged once into its
  bucket, the buckets into the span totals and the all-series lines, each family read once);
- ``naive``: the same report with every window merged into its bucket, its total and the all-series
  line and bucket (four merges per window), and each family read again by every section that uses it.

Prints a table (seconds, the ratio naive/report, page size) and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aggregator import catalog  # noqa: E402
from aggregator.config import load_config  # noqa: E402
from aggregator.model import SeriesKey, WindowAggregate, make_tags  # noqa: E402
from aggregator.report import collect  # noqa: E402
from aggregator.report import data as report_data  # noqa: E402
from aggregator.report.render import render  # noqa: E402
from aggregator.sketch import sketch_of  # noqa: E402
from aggregator.store import Store  # noqa: E402
from aggregator.windows_store import WindowsStore  # noqa: E402

FAMILIES = (  # (family, tag builder) in the proportions of a typical app
    ("request", lambda i: {"route": f"api/r{i}/", "method": "GET", "service": "bench"}),
    ("request", lambda i: {"route": f"api/w{i}/", "method": "POST", "service": "bench"}),
    ("db", lambda i: {"db": "default", "operation": "SELECT", "table": f"t{i}"}),
    ("trace", lambda i: {"route": f"api/r{i}/"}),
    ("cache", lambda i: {"cache": "default", "operation": ("get", "set")[i % 2]}),
    ("external", lambda i: {"peer_service": f"svc{i}", "operation": "GET"}),
    ("task", lambda i: {"task": f"tasks.t{i}", "queue": "celery"}),
)


def fill(path: Path, series: int, minutes: int, seed: int = 5) -> None:
    rng = np.random.default_rng(seed)
    end = (int(time.time()) // 60 - 1) * 60
    start = end - minutes * 60
    with Store(path) as store:
        ws = WindowsStore(store)
        for m in range(minutes):
            aggs = []
            for s in range(series):
                family, tags = FAMILIES[s % len(FAMILIES)]
                values = rng.lognormal(4.0, 0.6, int(rng.integers(5, 40)))
                counters = {"hits": 30.0, "misses": 10.0} if family == "cache" else {}
                if family == "trace":
                    counters = {"request_ms": float(values.sum()), "db_ms": float(values.sum()) / 3}
                aggs.append(WindowAggregate(
                    SeriesKey(family, make_tags(tags(s))), start + m * 60, 60, count=int(values.size),
                    errors=int(rng.integers(0, 2)), total=float(values.sum()), min=float(values.min()),
                    max=float(values.max()), counters=counters, sketch=sketch_of(values)))
            with store.transaction():
                ws.put(aggs, time.time())


def naive_group(aggs: Iterable[WindowAggregate], span: Any, key: Callable[[SeriesKey], Any]) -> Any:
    out = report_data.Grouped()
    for agg in aggs:
        k = key(agg.series)
        b = span.bucket(agg.start)
        fam = agg.series.family
        for target in (
            out.totals.setdefault(k, report_data._fresh(fam, span.start, span.end - span.start)),
            out.buckets.setdefault(k, {}).setdefault(b, report_data._fresh(fam, b, span.step)),
            out.overall_buckets.setdefault(b, report_data._fresh(fam, b, span.step)),
        ):
            catalog.merge_into(target, agg)
        if out.overall is None:
            out.overall = report_data._fresh(fam, span.start, span.end - span.start)
        catalog.merge_into(out.overall, agg)
    return out


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=40)
    parser.add_argument("--minutes", type=int, default=1440)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    config = load_config(environ={})
    rows = []
    with tempfile.TemporaryDirectory(prefix="report-bench-") as tmp:
        state = Path(tmp) / "state.db"
        t = time.perf_counter()
        fill(state, args.series, args.minutes)
        print(f"filled {args.series} series x {args.minutes} windows in {time.perf_counter() - t:.1f} s",
              file=sys.stderr)
        with Store(state, readonly=True) as store:
            for hours in (1, 6, 24):
                if hours * 60 > args.minutes:
                    continue

                def shipped(h: float = hours) -> str:
                    data = collect(store, config=config, hours=h)
                    assert data is not None
                    return render(data)

                def naive(h: float = hours) -> str:
                    original_group, original_reader = report_data.group, report_data.CachedReader
                    report_data.group = naive_group  # type: ignore[assignment]
                    report_data.CachedReader = lambda reader: reader  # type: ignore[assignment,misc,return-value]
                    try:
                        return shipped(h)
                    finally:
                        report_data.group, report_data.CachedReader = original_group, original_reader

                report_s, page = timed(shipped, args.repeats)
                naive_s, _ = timed(naive, args.repeats)
                rows.append({"hours": hours, "report_s": round(report_s, 3), "naive_s": round(naive_s, 3),
                             "ratio": round(naive_s / report_s, 2), "page_kib": len(page.encode()) // 1024})
    print(f"{'span':>6} {'report s':>9} {'naive s':>9} {'naive/report':>13} {'page KiB':>9}")
    for r in rows:
        print(f"{r['hours']:>5}h {r['report_s']:>9.3f} {r['naive_s']:>9.3f} {r['ratio']:>13.2f} {r['page_kib']:>9}")
    print(json.dumps({"bench": "report", "series": args.series, "minutes": args.minutes,
                      "repeats": args.repeats, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
