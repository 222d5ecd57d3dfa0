"""The retry policy (full jitter, Retry-After floor, bounded attempts and time) and the SDK state it
must not inherit (Datadog's class-level timeout backoff)."""

from __future__ import annotations

import random
import time

import pytest
from intakes import DatadogIntake, Fail
from intakes.kit import DD_APP, DD_KEY, unset_proxies

from aggregator.model import MetricPoint, SinkError
from aggregator.sinks.datadog import DatadogSink
from aggregator.sinks.retry import RetryBudget, RetryPolicy, RetryStats, call_with_retry


def test_backoff_is_full_jitter_capped_and_floored_by_retry_after() -> None:
    """Draws lie in [0, min(cap, base*2^(n-1))]; Retry-After is a floor; later-run delays likewise, and
    never under one second."""
    rng = random.Random(1)
    policy = RetryPolicy(base=1.0, cap=8.0, later_base=30.0, later_cap=600.0)
    for attempt in range(1, 8):
        draws = [policy.backoff(attempt, rng) for _ in range(200)]
        assert min(draws) >= 0.0 and max(draws) <= min(8.0, 2 ** (attempt - 1))
        assert max(draws) > 0.5 * min(8.0, 2 ** (attempt - 1))  # spread over the range, not a constant
    assert policy.backoff(1, rng, retry_after=5.0) >= 5.0
    assert all(1.0 <= policy.later(n, rng) <= 600.0 for n in range(1, 40))
    assert policy.later(1, rng, retry_after=900.0) == 900.0


def test_call_with_retry_bounds_attempts_and_time() -> None:
    """Retryable errors are retried up to max_attempts; a wait that would overrun the budget stops at once;
    a non-retryable error is never retried."""
    calls: list[int] = []
    slept: list[float] = []

    def failing() -> None:
        calls.append(1)
        raise SinkError("503", retryable=True)

    policy = RetryPolicy(max_attempts=3, base=0.01, cap=0.01)
    stats = RetryStats()
    with pytest.raises(SinkError):
        call_with_retry(failing, policy, RetryBudget(10.0), rng=random.Random(0), sleep=slept.append, stats=stats)
    assert len(calls) == 3 and len(slept) == 2 and stats.retries == 2

    calls.clear()

    def throttled() -> None:
        calls.append(1)
        raise SinkError("429", retryable=True, retry_after=60.0)

    with pytest.raises(SinkError):
        call_with_retry(throttled, policy, RetryBudget(5.0), rng=random.Random(0), sleep=slept.append)
    assert len(calls) == 1  # 60 s > the 5 s budget: no sleep, the entry goes to a later run

    calls.clear()

    def forbidden() -> None:
        calls.append(1)
        raise SinkError("403", retryable=False)

    with pytest.raises(SinkError):
        call_with_retry(forbidden, policy, RetryBudget(10.0), rng=random.Random(0), sleep=slept.append)
    assert len(calls) == 1


def test_datadog_timeouts_are_retried_and_the_sdk_backoff_never_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Three timeouts in a row would put the datadog SDK into a 300 s process-wide backoff; the sink clears
    it, so the fourth attempt goes out and is accepted."""
    unset_proxies(monkeypatch)
    with DatadogIntake(DD_KEY, DD_APP) as intake:
        sink = DatadogSink(api_key=DD_KEY, app_key=DD_APP, api_host=intake.url, host_name="h",  # type: ignore[attr-defined]
                           timeout=0.3)
        intake.script("/api/v1/series", *[Fail(503, delay=1.0)] * 3)
        items = sink.prepare([MetricPoint("apm.x", (), int(time.time()) // 60 * 60, 1.0)]).items
        stats = RetryStats()
        call_with_retry(lambda: sink.send_items(items), RetryPolicy(max_attempts=4, base=0.01, cap=0.01),
                        RetryBudget(30.0), rng=random.Random(0), stats=stats)
        assert stats.attempts == 4 and len(intake.series) == 1  # type: ignore[attr-defined]
