"""Properties of event-time judging, on random timelines in a real store: however the runs are scheduled
(every minute, in bursts after gaps, or once after a replay), the notification log is the same; and per
alert, notifications always follow firing -> (repeat)* -> resolved."""

from __future__ import annotations

import tempfile
from pathlib import Path

from alert_timeline_kit import request_window
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregator.config import load_config
from aggregator.store import Store
from aggregator.windows_store import WindowsStore
from alerting.rules import default_rules
from alerting.stage import evaluate_rules
from alerting.state import AlertStore

ROUTES = ("api/a/", "api/b/")
MINUTES = 30

slow_minutes = st.lists(st.sets(st.integers(0, MINUTES - 1), max_size=MINUTES), min_size=len(ROUTES),
                        max_size=len(ROUTES))
# which minutes get an alerting run (the last always does); the rest only commit windows
schedule = st.sets(st.integers(0, MINUTES - 2), max_size=MINUTES)
sizes = st.lists(st.sampled_from([3, 15, 30]), min_size=len(ROUTES), max_size=len(ROUTES))

CONFIG = load_config(environ={"ALERT_FOR_SECONDS": "120", "ALERT_REPEAT_SECONDS": "300",
                              "ALERT_KEEP_FIRING_FOR_SECONDS": "60"})
RULES = [r for r in default_rules(CONFIG) if r.name in ("api_latency_p95", "api_latency_p99")]


def play(slow: list[set[int]], n: list[int], runs: set[int]) -> list[tuple[str, object, str, int]]:
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "s.db")
        ws = WindowsStore(store)
        for k in range(MINUTES):
            with store.transaction():
                ws.put([request_window(k, route, n[i], 1200 if k in slow[i] else 100)
                        for i, route in enumerate(ROUTES)], now=0.0)
            if k in runs or k == MINUTES - 1:
                evaluate_rules(store, CONFIG, RULES, now=float(k))
        log = sorted((x["rule"], x["key"], x["kind"], x["at"]) for x in AlertStore(store).notifications())
        store.close()
        return log


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(slow=slow_minutes, n=sizes, runs=schedule)
def test_schedule_does_not_change_the_alerts(slow: list[set[int]], n: list[int], runs: set[int]) -> None:
    """Every-minute runs, an arbitrary schedule and a single run at the end log identical notifications,
    and each alert's notifications form firing, repeats, resolved, firing, ... in event-time order."""
    live = play(slow, n, set(range(MINUTES)))
    assert play(slow, n, runs) == live
    assert play(slow, n, set()) == live
    by_alert: dict[tuple[str, object], list[tuple[int, str]]] = {}
    for rule, key, kind, at in live:
        by_alert.setdefault((rule, key), []).append((at, kind))
    for seq in by_alert.values():
        expect_firing = True
        for _, kind in sorted(seq):
            if expect_firing:
                assert kind == "firing"
                expect_firing = False
            else:
                assert kind in ("repeat", "resolved")
                expect_firing = kind == "resolved"
    for i, count in enumerate(n):
        if count * 5 < 20:  # too few samples in any span: this route never alerts
            assert all(("route", ROUTES[i]) not in key for _, key, _, _ in live)  # type: ignore[operator]
