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


@pytest.mark.parametrize("vendor", ["datadog", "newrelic"])
def test_vendor_replies_become_the_right_errors(vendor: str, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through each real SDK: 429 and 503 are retryable and carry Retry-After, 413 asks for a split, 400
    isolates refused items, 403 is not retried; refused connections are retryable."""
    from intakes import NewRelicIntake, make_cert
    from intakes.kit import NR_LICENSE

    from aggregator.sinks.base import PayloadRejected, PayloadTooLarge
    from aggregator.sinks.newrelic import NewRelicSink

    unset_proxies(monkeypatch)
    if vendor == "datadog":
        intake = DatadogIntake(DD_KEY, DD_APP).start()
        sink = DatadogSink(api_key=DD_KEY, app_key=DD_APP, api_host=intake.url, host_name="h")
        path = "/api/v1/series"
    else:
        cert = make_cert(tmp_path)
        intake = NewRelicIntake(NR_LICENSE, tls=cert).start()
        sink = NewRelicSink(license_key=NR_LICENSE, host="127.0.0.1", port=intake.port,  # type: ignore[assignment]
                            ca_certs=str(cert.cert_file))
        path = "/metric/v1"
    try:
        items = sink.prepare([MetricPoint("apm.x", (), int(time.time()) // 60 * 60, 1.0)]).items
        intake.script(path, Fail(429, retry_after="3"), Fail(503, retry_after="2"), Fail(413), Fail(400),
                      Fail(403))
        for expected_type, retryable, retry_after in (
            (SinkError, True, 3.0), (SinkError, True, 2.0), (PayloadTooLarge, False, None),
            (PayloadRejected, False, None), (SinkError, False, None),
        ):
            with pytest.raises(SinkError) as info:
                sink.send_items(items)
            assert type(info.value) is expected_type and info.value.retryable is retryable
            assert info.value.retry_after == retry_after
        sink.send_items(items)  # the script is used up: accepted
        intake.stop()
        with pytest.raises(SinkError) as info:
            sink.send_items(items)
        assert info.value.retryable and "connection refused" in str(info.value)
    finally:
        intake.stop()
        sink.close()
