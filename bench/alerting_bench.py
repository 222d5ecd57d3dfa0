"""Benchmark: what judging the alert rules costs a run, beside the cost of only reading the windows.

    python bench/alerting_bench.py                     # 50, 200 and 1000 routes
    python bench/alerting_bench.py --routes 200 --repeats 3
    python bench/alerting_bench.py --state /tmp/sa/s.db --repeats 7   # catch-up on a store `logapm run` built

For each size it fills a fresh state store with request windows (every route, 4 methods, 60 s windows,
sketches of 30 values) for ``--hours`` of event time, then times, medians over ``--repeats``:

- ``read``: the baseline - reading and decoding the windows one evaluation of the request rules needs
  (the 5-minute span, every series), through the same ``WindowsStore``;
- ``live``: one punctual run's alerting evaluation (the 8 default rules at one new evaluation point;
  four of them read the request family), including the transaction and the state writes;
- ``catch-up``: a rule set judged for the first time over the whole history (one point per minute), e.g.
  after a replay or a long outage of the cron job.

Reported: milliseconds, the ratio to the ``read`` baseline, and evaluation points per second.

``--state PATH``: the catch-up of the rules (``load_rules``: the defaults, plus the config's) on copies of a
store built by ``logapm run`` (e.g. ``logapm run --input /tmp/lb/1m.log --state /tmp/sa/s.db -q``: a
1M-event hour, 480 points), its alert tables emptied first, timed in CPU seconds (``time.process_time``,
medians and best of ``--repeats``, each on a fresh copy); with the outcome's fingerprint (points,
transitions, notifications and a hash of the group states, history and notification log), so two versions
can be checked to judge alike. ``--merging`` times the evaluator's merging path (every span's sketches
merged, each quantile read from the merged sketch) instead; ``--compare`` times, interleaved in one process,
the evaluator's read of the stored rows as columns (``alerting.columns``, the default) and its previous
read (decoded windows, ``alerting.spans``), and checks the two outcomes are identical.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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
from alerting.state import AlertStore  # noqa: E402 - also registers the migrations

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


ALERT_TABLES = ("alert_deliveries", "alert_notifications", "alert_history", "alert_groups", "alert_rules")


def catch_up_on(source: Path, repeats: int, *, merging: bool, compare: bool = False) -> None:
    """The catch-up of the configured rules on fresh copies of ``source`` with no alert state; ``compare``:
    interleaved with the evaluator's previous read (``--spans``), both timed, outcomes checked equal."""
    from alerting.evaluate import Evaluator
    from alerting.rules import load_rules

    config = load_config(environ={})
    rules = load_rules(config)
    paths = {"merging path": {"_quantiles": lambda self, rules: None}} if merging else {"": {}}
    if compare:
        paths["previous read (alerting.spans)"] = {"_chunk_columns": lambda self, job: None}
    samples: dict[str, list[float]] = {name: [] for name in paths}
    prints: dict[str, set[str]] = {name: set() for name in paths}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats + 1):  # the first also pays the imports a run has already paid: not counted
            for name, patches in paths.items():
                saved = {attr: getattr(Evaluator, attr) for attr in patches}
                for attr, fn in patches.items():
                    setattr(Evaluator, attr, fn)
                try:
                    cpu, outcome = _catch_up_once(source, Path(tmp) / "state.db", config, rules)
                finally:
                    for attr, fn in saved.items():
                        setattr(Evaluator, attr, fn)
                samples[name].append(cpu)
                prints[name].add(outcome)
    for name in paths:
        timed_ = samples[name][1:]
        print(f"catch-up of {len(rules)} rules{f' ({name})' if name else ''} on {source}: "
              f"median {statistics.median(timed_):.3f} CPU s, best {min(timed_):.3f} ({len(timed_)} runs)")
        for line in sorted(prints[name]):
            print("  " + line)
    if compare:
        new, old = (statistics.median(samples[name][1:]) for name in paths)
        same = len({frozenset(p) for p in prints.values()}) == 1
        print(f"ratio {new / old:.3f}; outcomes {'identical' if same else 'DIFFER'}")


def _catch_up_once(source: Path, path: Path, config: Any, rules: Any) -> tuple[float, str]:
    """One catch-up on a fresh copy of ``source``: CPU seconds, and the outcome's fingerprint."""
    shutil.copyfile(source, path)
    store = Store(path)
    AlertStore(store)
    with store.transaction():
        for table in ALERT_TABLES:
            store.conn.execute(f"DELETE FROM {table}")
    started = time.process_time()
    report = evaluate_rules(store, config, rules, now=0.0)
    cpu = time.process_time() - started
    c = store.conn
    outcome = repr((
        c.execute("SELECT * FROM alert_groups ORDER BY rule, group_key").fetchall(),
        c.execute("SELECT rule, group_key, at, from_state, to_state, value FROM alert_history ORDER BY id")
        .fetchall(),
        c.execute("SELECT rule, group_key, kind, at, body FROM alert_notifications ORDER BY id").fetchall(),
        report.errors,
    ))
    store.close()
    path.unlink()
    return cpu, (f"{report.points} points, {len(report.transitions)} transitions, "
                 f"{len(report.notifications)} notifications, "
                 f"outcome {hashlib.sha256(outcome.encode()).hexdigest()[:16]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--routes", type=int, action="append")
    ap.add_argument("--hours", type=float, default=1.0, help="event time in the store (default 1 hour)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--state", type=Path, help="time the catch-up on copies of this store instead")
    ap.add_argument("--merging", action="store_true", help="with --state: the evaluator's merging path")
    ap.add_argument("--compare", action="store_true",
                    help="with --state: interleaved with the previous read (alerting.spans), outcomes compared")
    args = ap.parse_args()
    if args.state is not None:
        catch_up_on(args.state, args.repeats, merging=args.merging, compare=args.compare)
        return
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
