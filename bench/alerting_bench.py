"""Benchmark: what judging the alert rules costs a run, beside the cost of only reading the windows.

    python bench/alerting_bench.py                     # 50, 200 and 1000 routes
    python bench/alerting_bench.py --routes 200 --repeats 3

For each size it fills a fresh state store with request windows (every route, 4 methods, 60 s windows,
sketches of 30 values) for ``--hours`` of event time, then times, medians over ``--repeats``:

- ``read``: the baseline - reading and decoding the windows one evaluation of the request rules needs
  (the 5-minute span, every series), through the same ``WindowsStore``;
- ``live``: one punctual run's alerting evaluation (the 8 default rules at one new evaluation point;
  four of them read the request family), including the transaction and the state writes;
- ``catch-up``: a rule set judged for the first time over the whole history (one point per minute), e.g.
  after a replay or a long outage of the cron job.

Reported: milliseconds, the ratio to the ``read`` baseline, and evaluation points per second.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aggregator.config import load_config  # noqa: E402
from aggregator.model import SeriesKey, WindowAggregate, make_tags  # noqa: E402
from aggregator.sketch import sketch_of  # noqa: E402
from aggregator.store import Store  # noqa: E402
from aggregator.windows_store import WindowsStore  # noqa: E402
from alerting.rules import default_rules  # noqa: E402
from alerting.stage import evaluate_rules  # noqa: E402
from alerting.state import AlertStore  # noqa: E402, F401 - registers the migrations

T0 = 1_795_000_000 - 1_795_000_000 % 3600
METHODS = ("GET", "POST", "PUT", "DELETE")


def fill(path: Path, routes: int, minutes: int) -> None:
    rng = np.random.default_rng(7)
    store = Store(path)
    ws = WindowsStore(store)
    with store.transaction():
        for m in range(minutes):
            batch = []
            for r in range(routes):
                for method in METHODS:
                    values = rng.lognormal(4.5, 0.6, 30)
                    agg = WindowAggregate(SeriesKey("request", make_tags(route=f"api/r{r}/", method=method)),
                                          start=T0 + 60 * m, width=60, count=30, total=float(values.sum()),
                                          min=float(values.min()), max=float(values.max()),
                                          sketch=sketch_of(values))
                    batch.append(agg)
            ws.put(batch, now=0.0)
    store.close()


def timed(fn: object, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        samples.append(time.perf_counter() - t)
    return statistics.median(samples) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--routes", type=int, action="append")
    ap.add_argument("--hours", type=float, default=1.0, help="event time in the store (default 1 hour)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    config = load_config(environ={})
    rules = default_rules(config)
    minutes = int(args.hours * 60)
    print(f"{'routes':>7} {'series':>7} {'read ms':>9} {'live ms':>9} {'live/read':>10} "
          f"{'catch-up ms':>12} {'points':>7} {'points/s':>9}")
    for routes in args.routes or [50, 200, 1000]:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "state.db"
            fill(path, routes, minutes)
            store = Store(path)
            ws = WindowsStore(store)
            end = T0 + 60 * (minutes - 1)

            def read(ws: WindowsStore = ws, end: int = end) -> None:
                for _ in ws.windows("request", end - 300, end):
                    pass

            read_ms = timed(read, args.repeats)

            def catch_up(store: Store = store) -> None:
                with store.transaction():
                    store.conn.execute("DELETE FROM alert_rules")
                    store.conn.execute("DELETE FROM alert_groups")
                evaluate_rules(store, config, rules, now=0.0)

            catch_ms = timed(catch_up, 1)
            points = (minutes - 1) * len(rules)

            def live(store: Store = store, end: int = end) -> None:
                with store.transaction():  # rewind one point: the next evaluation judges exactly one
                    store.conn.execute("UPDATE alert_rules SET last_eval = ?", (end - 60,))
                evaluate_rules(store, config, rules, now=0.0)

            live_ms = timed(live, args.repeats)
            store.close()
        print(f"{routes:>7} {routes * len(METHODS):>7} {read_ms:>9.1f} {live_ms:>9.1f} {live_ms / read_ms:>10.2f} "
              f"{catch_ms:>12.0f} {points:>7} {points / (catch_ms / 1000):>9.0f}")


if __name__ == "__main__":
    main()
