"""Benchmark: what the sinks' own checks cost beside the SDKs' encoding of the same request.

    python bench/sinks_bench.py                      # 10k, 50k and 200k points
    python bench/sinks_bench.py --points 50000 --repeats 5

Points look like a run's catalog output (request metrics over 500 routes x 4 methods, tags route, method,
service, env). For each vendor and size, medians over ``--repeats`` of:

- ``encode``: the baseline - the SDK's own encoding of all the items as one request (json.dumps and
  zlib for Datadog, compact JSON and gzip for New Relic), which every send pays anyway;
- ``prepare``: checking and normalising names, tags and attributes into the vendor's items;
- ``plan``: cutting the items into requests under the byte limits, measured exactly (``plan_requests``).

Reported: milliseconds, the ratio to ``encode``, and points per second of prepare + plan.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aggregator.model import MetricPoint, make_tags  # noqa: E402
from aggregator.sinks.chunking import plan_requests  # noqa: E402
from aggregator.sinks.datadog import DatadogSink  # noqa: E402
from aggregator.sinks.newrelic import NewRelicSink  # noqa: E402

METRICS = ["apm.request.duration.avg", "apm.request.duration.p50", "apm.request.duration.p95",
           "apm.request.duration.p99", "apm.request.duration.max", "apm.request.count", "apm.request.errors",
           "apm.request.error_rate", "apm.request.apdex"]


def make_points(n: int) -> list[MetricPoint]:
    ts = int(time.time()) // 60 * 60
    out: list[MetricPoint] = []
    i = 0
    while len(out) < n:
        tags = make_tags(route=f"api/v1/resource{i % 500}/<int:id>/", method=("GET", "POST", "PUT", "DELETE")[i % 4],
                         service="muejam-backend", env="production")
        for m in METRICS:
            kind = "count" if m.endswith(("count", "errors")) else "gauge"
            out.append(MetricPoint(m, tags, ts - 60 * (i // 2000), 10.0 + (i * 7919 % 1000) / 7, kind, 60))
        i += 1
    return out[:n]


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", type=int, action="append")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sizes = args.points or [10_000, 50_000, 200_000]
    sinks = {
        "datadog": DatadogSink(api_key="k", api_host="http://127.0.0.1:9", host_name="bench"),
        "newrelic": NewRelicSink(license_key="k", host="127.0.0.1", port=9, common={"service.name": "svc"}),
    }
    print(f"{'vendor':<9} {'points':>8} {'encode ms':>10} {'prepare ms':>11} {'plan ms':>9} "
          f"{'prep/enc':>9} {'plan/enc':>9} {'points/s':>10} {'requests':>9}")
    for n in sizes:
        points = make_points(n)
        for name, sink in sinks.items():
            items = sink.prepare(points).items
            enc = median_ms(lambda s=sink, it=items: s.sizes(it), args.repeats)  # type: ignore[misc]
            prep = median_ms(lambda s=sink, p=points: s.prepare(p), args.repeats)  # type: ignore[misc]
            ranges: list[tuple[int, int]] = []

            def plan(s=sink, it=items, out=ranges) -> None:  # type: ignore[no-untyped-def]
                out[:] = list(plan_requests(it, s.sizes, s.item_size, s.request_limits))

            pl = median_ms(plan, args.repeats)
            rate = n / ((prep + pl) / 1000)
            print(f"{name:<9} {n:>8} {enc:>10.1f} {prep:>11.1f} {pl:>9.1f} {prep / enc:>9.2f} {pl / enc:>9.2f} "
                  f"{rate:>10,.0f} {len(ranges):>9}")


if __name__ == "__main__":
    main()
