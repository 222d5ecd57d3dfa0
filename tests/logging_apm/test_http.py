"""Outgoing requests/httpx calls (sync and async) against a local HTTP server that really answers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
import requests
from _b_servers import RecordingHTTPServer

from logging_apm import http, tracing
from logging_apm.external import external_call
from logging_apm.testing import capture_events


@pytest.fixture
def server() -> Iterator[RecordingHTTPServer]:
    srv = RecordingHTTPServer().start()
    yield srv
    srv.stop()


@pytest.fixture
def instrumented(server: RecordingHTTPServer) -> Iterator[None]:
    http.install(services={f"127.0.0.1:{server.port}": "clerk"})
    yield
    http.uninstall()


def _check(event: dict, server: RecordingHTTPServer, span: tracing.TraceContext, status: int) -> None:
    assert event["peer.service"] == "clerk"
    assert event["server.address"] == "127.0.0.1"
    assert event["http.response.status_code"] == status
    assert event["trace_id"] == span.trace_id
    assert event["parent_span_id"] == span.span_id
    # the server saw a traceparent naming the call's own span
    sent = tracing.parse_traceparent(server.received[-1].headers["traceparent"])
    assert sent is not None and sent.trace_id == span.trace_id and sent.span_id == event["span_id"]


def test_requests_call_is_timed_and_carries_traceparent(server: RecordingHTTPServer, instrumented: None) -> None:
    """requests: one event per call, mapped service, status, and the traceparent header at the server."""
    with capture_events() as events, tracing.start_span() as span:
        assert requests.post(f"{server.url}/v1/users", json={"a": 1}, timeout=5).status_code == 200
    (event,) = events.of_kind("external")
    assert event["external.operation"] == "POST" and event["outcome"] == "success"
    _check(event, server, span, 200)


def test_httpx_sync_and_async(server: RecordingHTTPServer, instrumented: None) -> None:
    """httpx.Client and httpx.AsyncClient are both timed; a 404 is a failure."""

    async def call_async() -> int:
        async with httpx.AsyncClient() as client:
            return (await client.get(f"{server.url}/status/404")).status_code

    with capture_events() as events, tracing.start_span() as span:
        with httpx.Client() as client:
            assert client.get(f"{server.url}/ok").status_code == 200
        _check(events[-1], server, span, 200)
        assert asyncio.run(call_async()) == 404
        _check(events[-1], server, span, 404)
    assert [e["outcome"] for e in events] == ["success", "failure"]


def test_connection_error_is_a_failure_and_propagates(instrumented: None) -> None:
    """A refused connection is a failure event with the exception type; the caller still gets the error."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with capture_events() as events:
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/", timeout=2)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
    assert [e["outcome"] for e in events] == ["failure", "failure"]
    assert events[0]["error.type"] == "ConnectionError" and events[1]["error.type"] == "ConnectError"
    assert events[0]["peer.service"] == "127.0.0.1"  # unmapped host: the host itself


def test_inside_external_call_no_double_event(server: RecordingHTTPServer, instrumented: None) -> None:
    """Inside an explicit external_call the HTTP call adds no second event; the status goes to the outer
    call and the header names the outer call's span."""
    with capture_events() as events:
        with external_call("resend", "send_email") as call:
            requests.get(f"{server.url}/status/202", timeout=5)
    (event,) = events
    assert event["peer.service"] == "resend" and event["http.response.status_code"] == 202
    sent = tracing.parse_traceparent(server.received[-1].headers["traceparent"])
    assert sent is not None and sent.span_id == call.span.span_id  # type: ignore[union-attr]


def test_install_twice_and_uninstall(server: RecordingHTTPServer) -> None:
    """install() twice wraps once (one event per call); uninstall() twice restores the libraries."""
    original = requests.Session.send
    http.install()
    http.install(services={f"127.0.0.1:{server.port}": "resend"})
    try:
        with capture_events() as events:
            requests.get(server.url, timeout=5)
        assert len(events) == 1 and events[0]["peer.service"] == "resend"
    finally:
        http.uninstall()
        http.uninstall()
    assert requests.Session.send is original
    with capture_events() as events:
        requests.get(server.url, timeout=5)
    assert events == []
    assert "traceparent" not in server.received[-1].headers


def test_caller_traceparent_is_kept(server: RecordingHTTPServer, instrumented: None) -> None:
    """A traceparent header the caller set is sent as is."""
    mine = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
    with capture_events():
        requests.get(server.url, headers={"traceparent": mine}, timeout=5)
    assert server.received[-1].headers["traceparent"] == mine


def test_service_map_lookup_and_env() -> None:
    """The map is matched by host:port, host, then parent domains; APM_EXTERNAL_SERVICES adds entries and
    a malformed entry is a clear error."""
    http.install(services={"example.test:8443": "special"}, environ={"APM_EXTERNAL_SERVICES": "a.test=alpha"})
    try:
        assert http.service_for("api.clerk.com") == "clerk"
        assert http.service_for("API.RESEND.COM") == "resend"
        assert http.service_for("s3.eu-west-1.amazonaws.com") == "aws"
        assert http.service_for("example.test", 8443) == "special"
        assert http.service_for("example.test", 80) == "example.test"
        assert http.service_for("a.test") == "alpha"
    finally:
        http.uninstall()
    with pytest.raises(ValueError, match="host=service"):
        http.parse_services("nonsense")
