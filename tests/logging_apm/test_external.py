"""The external-call decorator and context manager, sync and async."""

from __future__ import annotations

import asyncio

import pytest

from logging_apm import tracing
from logging_apm.errors import failures
from logging_apm.external import external, external_call
from logging_apm.testing import capture_events


def test_context_manager_times_a_call_with_status() -> None:
    """One external event with peer.service, operation, status, duration, and a span under the current one."""
    with capture_events() as events, tracing.start_span() as request_span:
        with external_call("clerk", "get_user", server_address="api.clerk.com") as call:
            call.status_code = 200
    (event,) = events.of_kind("external")
    assert event["peer.service"] == "clerk"
    assert event["external.operation"] == "get_user"
    assert event["server.address"] == "api.clerk.com"
    assert event["http.response.status_code"] == 200
    assert event["outcome"] == "success"
    assert event["duration_ms"] >= 0
    assert event["trace_id"] == request_span.trace_id
    assert event["parent_span_id"] == request_span.span_id


def test_exception_and_4xx_are_failures() -> None:
    """A raising block is a failure with error.type, and the exception propagates; a 4xx is a failure."""
    with capture_events() as events:
        with pytest.raises(TimeoutError):
            with external_call("resend", "send_email"):
                raise TimeoutError("slow")
        with external_call("resend", "send_email") as call:
            call.status_code = 422
    failed, rejected = events
    assert failed["outcome"] == "failure" and failed["error.type"] == "TimeoutError"
    assert rejected["outcome"] == "failure" and rejected["http.response.status_code"] == 422


def test_decorator_sync_uses_function_name_and_restores_context() -> None:
    """The decorator times each call, names the operation after the function, and leaves the current span
    as it found it."""

    @external("rekognition")
    def detect_labels(x: int) -> int:
        assert tracing.current() is not None
        return x * 2

    with capture_events() as events:
        assert detect_labels(21) == 42
        assert tracing.current() is None
    (event,) = events
    assert event["external.operation"] == "detect_labels" and event["peer.service"] == "rekognition"
    assert "parent_span_id" not in event  # outside any trace the call roots its own


def test_async_context_manager_and_decorator() -> None:
    """async with and async functions are timed too; concurrent calls keep their own spans."""

    @external("s3", "GetObject")
    async def fetch(delay: float) -> float:
        await asyncio.sleep(delay)
        return delay

    async def main() -> None:
        with tracing.start_span():
            async with external_call("clerk", "verify") as call:
                await asyncio.sleep(0.01)
                call.status_code = 204
            await asyncio.gather(fetch(0.02), fetch(0.01))

    with capture_events() as events:
        asyncio.run(main())
    ops = sorted(e["external.operation"] for e in events)
    assert ops == ["GetObject", "GetObject", "verify"]
    verify = next(e for e in events if e["external.operation"] == "verify")
    assert verify["duration_ms"] >= 9 and verify["http.response.status_code"] == 204
    assert len({e["span_id"] for e in events}) == 3
    assert len({e["trace_id"] for e in events}) == 1


def test_a_failing_emitter_never_breaks_the_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """If building the event fails, the call still returns its result and the failure is counted."""
    import logging_apm.external as ext

    def boom(*a: object, **k: object) -> None:
        raise RuntimeError("bug in logging_apm")

    monkeypatch.setattr(ext, "record", boom)
    before = failures["external.call"]
    with capture_events():
        with external_call("clerk", "x"):
            value = 5
    assert value == 5
    assert failures["external.call"] == before + 1
