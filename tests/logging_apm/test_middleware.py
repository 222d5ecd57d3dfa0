"""The request middleware against the real test project (tests/djangoapp), sync and async."""

from __future__ import annotations

import asyncio

import pytest
from django.test import AsyncClient, Client

from logging_apm import errors, tracing
from logging_apm.testing import capture_events

INCOMING = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_one_request_event_with_route_template_not_path(seeded: None) -> None:
    """A request gives exactly one request event whose route is the URL pattern (across include())."""
    from djangoapp.models import Story

    story = Story.objects.first()
    assert story is not None
    with capture_events() as events:
        response = Client().get(f"/api/stories/{story.id}/?secret=hunter2")
    assert response.status_code == 200
    [event] = events.of_kind("request")
    assert event["http.route"] == "api/stories/<int:story_id>/"
    assert event["http.request.method"] == "GET"
    assert event["http.response.status_code"] == 200
    assert event["outcome"] == "success"
    assert event["duration_ms"] > 0
    assert event["service.name"] == "djangoapp"
    assert "hunter2" not in str(events) and str(story.id) not in event["http.route"]


def test_unknown_method_is_normalised_and_unmatched_route() -> None:
    """An invented HTTP verb becomes _OTHER; a path no pattern matches is reported as <unmatched>."""
    with capture_events() as events:
        Client().generic("BREW", "/ping/")
        Client().get("/no/such/page/12345/")
    brew, missing = events.of_kind("request")
    assert brew["http.request.method"] == "_OTHER"
    assert brew["http.route"] == "ping/"
    assert missing["http.route"] == "<unmatched>"
    assert missing["http.response.status_code"] == 404
    assert missing["outcome"] == "success"  # a 404 is the client's problem, not a failure


def test_exception_is_a_failure_with_error_type() -> None:
    """A view raising gives a 500 and a failure event naming the exception class."""
    with capture_events() as events:
        response = Client(raise_request_exception=False).get("/fail/")
    assert response.status_code == 500
    [event] = events.of_kind("request")
    assert event["outcome"] == "failure"
    assert event["error.type"] == "RuntimeError"
    assert event["http.route"] == "fail/"


def test_exception_propagating_through_the_middleware_is_a_failure() -> None:
    """When the exception escapes (test client re-raises it), the event is still emitted, as a failure."""
    with capture_events() as events, pytest.raises(RuntimeError):
        Client(raise_request_exception=True).get("/fail/")
    [event] = events.of_kind("request")
    assert event["outcome"] == "failure" and event["error.type"] == "RuntimeError"


def test_5xx_without_exception_is_a_failure() -> None:
    """A 503 returned by a view is a failure whose error.type is the status code; re_path routes work."""
    with capture_events() as events:
        Client().get("/unavailable/7/")
    [event] = events.of_kind("request")
    assert event["outcome"] == "failure"
    assert event["error.type"] == "503"
    assert event["http.route"] == "^unavailable/(?P<code>[0-9]+)/$"


def test_incoming_traceparent_is_continued_and_returned(seeded: None) -> None:
    """The request's span is a child of the caller's; the response carries it; inner events are its children."""
    with capture_events() as events:
        response = Client().get("/api/stories/n-plus-one/", HTTP_TRACEPARENT=INCOMING)
    [request] = events.of_kind("request")
    assert request["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert request["parent_span_id"] == "b7ad6b7169203331"
    back = tracing.parse_traceparent(response["traceparent"])
    assert back is not None and back.trace_id == request["trace_id"] and back.span_id == request["span_id"]
    db = events.of_kind("db")
    assert len(db) == 6  # the N+1: one for the stories, one per story's author
    for event in db:
        assert event["trace_id"] == request["trace_id"]
        assert event["parent_span_id"] == request["span_id"]
    assert len({e["span_id"] for e in db} | {request["span_id"]}) == 7


def test_invalid_traceparent_starts_a_new_trace() -> None:
    """A malformed header is ignored: a fresh trace, no parent."""
    with capture_events() as events:
        response = Client().get("/ping/", HTTP_TRACEPARENT="00-zzzz-not-valid")
    [event] = events.of_kind("request")
    assert "parent_span_id" not in event
    assert len(event["trace_id"]) == 32
    assert response["traceparent"] == f"00-{event['trace_id']}-{event['span_id']}-01"


def test_async_view_through_async_client(seeded: None) -> None:
    """An async view (async ORM, async cache) gets its request event, and its db/cache events join its trace."""

    async def call() -> int:
        response = await AsyncClient().get("/api/stories/async/")
        return response.status_code  # type: ignore[no-any-return]

    with capture_events() as events:
        assert asyncio.run(call()) == 200
    [request] = events.of_kind("request")
    assert request["http.route"] == "api/stories/async/"
    inner = events.of_kind("db") + events.of_kind("cache")
    assert events.of_kind("db") and len(events.of_kind("cache")) == 2
    assert all(e["trace_id"] == request["trace_id"] for e in inner)
    assert all(e["parent_span_id"] == request["span_id"] for e in inner)


def test_disabled_emitter_emits_nothing() -> None:
    """With APM_ENABLED=false nothing is emitted and no trace header is added."""
    with capture_events(enable=False) as events:
        import logging_apm.emit as emit

        previous = emit.get_emitter()
        emit.configure(enabled=False)
        try:
            response = Client().get("/ping/")
        finally:
            emit._emitter = previous
    assert events == []
    assert "traceparent" not in response


def test_failure_inside_instrumentation_never_breaks_the_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """If building the event raises, the request still succeeds and the failure is counted."""
    import logging_apm.middleware as mw

    def broken(*args: object, **kwargs: object) -> None:
        raise KeyError("bug in logging_apm")

    before = errors.failures["middleware.finish"]
    with capture_events():
        monkeypatch.setattr(mw, "route_of", broken)
        response = Client().get("/ping/")
    assert response.status_code == 200
    assert errors.failures["middleware.finish"] == before + 1
