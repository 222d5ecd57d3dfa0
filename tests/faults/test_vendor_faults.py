"""Vendors misbehaving for a long time: down for many runs then back, a storm of 429s, an intake so slow
that every request times out. Nothing is lost (each window's true count reaches both vendors once they
answer), the retries within a run are bounded, and so is the run's duration."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from intakes import Fail
from pipeline_kit import Pipeline, dd_counts, nr_counts, per_window, repeats, request_event, start_pipeline

from aggregator.loggen import write_log

BUDGET = 4.0  # LOGAPM_SINK_TIME_BUDGET_SECONDS: per sink per run
MAX_ATTEMPTS = 3


def _minute_of_requests(log: Path, start: float, k: int, truth: Counter[int]) -> None:
    events = [request_event(start + k * 60 + i * 5, f"api/r{i % 3}/", 10.0 + i) for i in range(12)]
    write_log(log, events)
    truth[int(start + k * 60)] += len(events)


def _check_delivered(p: Pipeline, truth: Counter[int]) -> None:
    dd, nr = dd_counts(p.dd, "apm.request.count"), nr_counts(p.nr, "apm.request.count")
    assert per_window(dd) == truth and per_window(nr) == truth
    # No kill here, and every minute is its own window: each point accepted exactly once.
    assert repeats(dd) == 0 and repeats(nr) == 0
    assert all(len(v) == 1 for v in dd.values()) and all(len(v) == 1 for v in nr.values())


def _timed_run(p: Pipeline, log: Path) -> tuple[int, float, str]:
    t0 = time.monotonic()
    proc = p.run(log)
    return proc.returncode, time.monotonic() - t0, proc.stdout + proc.stderr


def _pipeline(tmp_path: Path) -> Pipeline:
    p = start_pipeline(tmp_path)
    p.extra_env.update(LOGAPM_SINK_TIME_BUDGET_SECONDS=str(BUDGET), LOGAPM_SINK_MAX_ATTEMPTS=str(MAX_ATTEMPTS),
                       LOGAPM_WORKERS="1", PERFORMANCE_ALERT_EMAIL_ENABLED="false",
                       PERFORMANCE_ALERT_SLACK_ENABLED="false")
    return p


def _start() -> float:
    return time.time() // 60 * 60 - 40 * 60


def test_vendors_down_for_many_runs_then_back(tmp_path: Path) -> None:
    """Both intakes refuse connections for 8 runs, each run adding a minute of requests: each exits 3
    naming the vendors, quickly; then they come back and one run delivers every window once."""
    p = _pipeline(tmp_path)
    log, truth, start = tmp_path / "app.log", Counter[int](), _start()
    try:
        p.dd.stop()
        p.nr.stop()
        for k in range(8):
            _minute_of_requests(log, start, k, truth)
            rc, took, out = _timed_run(p, log)
            assert rc == 3 and "datadog" in out and "newrelic" in out.replace(" ", "").lower(), out
            assert took < 2 * BUDGET + 30, took
            time.sleep(0.7)  # past the retry-later delay
        p.dd.start()
        p.nr.start()
        p.settle(log, runs=4)
        _check_delivered(p, truth)
    finally:
        p.stop()


def test_429_storm_retries_bounded_then_delivered(tmp_path: Path) -> None:
    """Every request answered 429 (Retry-After: 1) for a long while: each run makes at most
    MAX_ATTEMPTS tries per request and stays within its time budget; once the storm ends, everything
    arrives, once."""
    p = _pipeline(tmp_path)
    log, truth, start = tmp_path / "app.log", Counter[int](), _start()
    try:
        p.dd.script("/api/v1/series", *[Fail(429, retry_after="1")] * 1000)
        p.nr.script("/metric/v1", *[Fail(429, retry_after="1")] * 1000)
        for k in range(5):
            _minute_of_requests(log, start, k, truth)
            before = len(p.dd.requests_to("/api/v1/series")), len(p.nr.requests_to("/metric/v1"))
            rc, took, out = _timed_run(p, log)
            after = len(p.dd.requests_to("/api/v1/series")), len(p.nr.requests_to("/metric/v1"))
            assert rc == 3, out
            assert took < 2 * BUDGET + 30, took
            # One request's worth of points per sink here: at most MAX_ATTEMPTS tries each.
            assert 0 <= after[0] - before[0] <= MAX_ATTEMPTS and 0 <= after[1] - before[1] <= MAX_ATTEMPTS
            time.sleep(1.1)  # Retry-After is a floor for the next try
        assert p.dd.series == [] and p.nr.metrics == []
        for intake in (p.dd, p.nr):
            with intake._lock:
                intake._scripts.clear()
        p.settle(log, runs=4)
        _check_delivered(p, truth)
    finally:
        p.stop()


def test_slow_intake_times_out_run_bounded(tmp_path: Path) -> None:
    """Datadog takes 5 s and then hangs up on every request (the sink's timeout is 1 s): runs end within
    the time budget, New Relic is delivered meanwhile, and Datadog gets everything once it is fast again."""
    p = _pipeline(tmp_path)
    log, truth, start = tmp_path / "app.log", Counter[int](), _start()
    try:
        p.dd.script("/api/v1/series", *[Fail(hang=True, delay=5.0)] * 1000)
        for k in range(3):
            _minute_of_requests(log, start, k, truth)
            before = len(p.dd.requests_to("/api/v1/series"))
            rc, took, out = _timed_run(p, log)
            assert rc == 3 and "datadog" in out, out
            assert took < 2 * BUDGET + 30, took
            assert len(p.dd.requests_to("/api/v1/series")) - before <= MAX_ATTEMPTS
            time.sleep(0.7)
        assert p.dd.series == []
        assert per_window(nr_counts(p.nr, "apm.request.count")) == truth  # the other sink was not held up
        with p.dd._lock:
            p.dd._scripts.clear()
        p.settle(log, runs=4)
        _check_delivered(p, truth)
    finally:
        p.stop()
