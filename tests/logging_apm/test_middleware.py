"""The request middleware against the real test project (tests/djangoapp), sync and async."""

from __future__ import annotations

import asyncio
from typing import Any

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


class _BrokenMethods:
    """KNOWN_METHODS whose membership test raises: a bug while building the event (the sync path inlines
    route_of and the rest of _finish, so the bug is put in the method check both paths make)."""

    def __contains__(self, item: object) -> bool:
        raise KeyError("bug in logging_apm")


def test_failure_inside_instrumentation_never_breaks_the_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """If building the event raises, the request still succeeds and the failure is counted."""
    import logging_apm.middleware as mw

    before = errors.failures["middleware.finish"]
    with capture_events():
        monkeypatch.setattr(mw, "KNOWN_METHODS", _BrokenMethods())
        response = Client().get("/ping/")
    assert response.status_code == 200
    assert errors.failures["middleware.finish"] == before + 1


class _Request:
    """A request as the middleware sees it: META, method, resolver_match (absent when ``match`` is ...)."""

    def __init__(self, method: str, header: str | None, match: object = ...) -> None:
        self.META = {"HTTP_TRACEPARENT": header} if header is not None else {}
        self.method = method
        if match is not ...:
            self.resolver_match = match


class _BareResponse:
    """A response class without Django's header store: the header goes through __setitem__."""

    def __init__(self, status: int) -> None:
        self.status_code = status
        self.set: dict[str, str] = {}

    def __setitem__(self, name: str, value: str) -> None:
        self.set[name] = value


def _middleware_cases() -> list[tuple[str, str | None, object, object]]:
    from types import SimpleNamespace

    from django.http import HttpResponse

    def response(status: int) -> object:
        return HttpResponse(b"x", status=status)

    matches: list[object] = [..., None, SimpleNamespace(route=""), SimpleNamespace(route="api/<int:id>/"),
                             SimpleNamespace(route=_LazyRoute())]
    cases: list[tuple[str, str | None, object, object]] = []
    for header in (None, "", INCOMING, INCOMING.replace("-01", "-00"), "00-zzzz-not-valid", f"  {INCOMING} "):
        for method in ("GET", "BREW"):
            for match in matches:
                for outcome in (lambda: response(200), lambda: response(404), lambda: response(503),
                                lambda: _BareResponse(200), "raise", "process_exception"):
                    cases.append((method, header, match, outcome))
    return cases


class _LazyRoute:
    """A route that is not a str (a lazily translated pattern): written as its str()."""

    def __bool__(self) -> bool:
        return True

    def __str__(self) -> str:
        return "lazy/route/"


class _PythonPathMiddleware:
    """APMMiddleware with the Python sync path (middleware._python_call), whether or not the C one is built."""

    def __new__(cls, get_response: Any) -> Any:
        from logging_apm import middleware

        python = type("PythonAPMMiddleware", (middleware.APMMiddleware,), {"__call__": middleware._python_call})
        return python(get_response)


def _run_case(path: str, method: str, header: str | None, match: object, outcome: object,
              recorded: list[tuple[Any, ...]]) -> tuple[object, ...]:
    """One request through APMMiddleware's sync path (``native``: the class as installed, C when built;
    ``python``: middleware._python_call) or its async path: what it emitted, returned and left current."""
    from django.http import HttpResponse

    from logging_apm.middleware import APMMiddleware

    async_path = path == "async"

    request = _Request(method, header, match)
    seen: list[object] = []

    def view(req: object) -> object:
        seen.append(tracing.current())
        if outcome == "raise":
            raise ValueError("escapes")
        if outcome == "process_exception":
            mw.process_exception(req, KeyError("answered"))
            return HttpResponse(b"x", status=500)
        return outcome()  # type: ignore[operator]

    async def async_view(req: object) -> object:
        return view(req)

    mw = (_PythonPathMiddleware if path == "python" else APMMiddleware)(async_view if async_path else view)
    before = tracing.current()
    recorded.clear()
    try:
        response = asyncio.run(mw(request)) if async_path else mw(request)
    except ValueError:
        response = None
    assert tracing.current() is before  # the request's span is reset either way
    [(duration, ev_method, route, status, error, span, end)] = recorded
    assert duration >= 0 and end > 0 and seen == [span]
    incoming = tracing.parse_traceparent(header)
    assert span.parent_span_id == (incoming.span_id if incoming else None)
    assert span.trace_id == incoming.trace_id if incoming else len(span.trace_id) == 32
    if response is None:
        sent = None
    elif isinstance(response, _BareResponse):
        sent = response.set
    else:
        sent = {k: v for k, v in response.items() if k == "traceparent"}
    if sent is not None:
        assert sent == {"traceparent": tracing.format_traceparent(span)}
    return (ev_method, route, status, error, span.sampled, response is None, type(response).__name__)


def test_sync_and_async_paths_give_the_same_event_and_header(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sync path is written out in one function (in C when the extension is built, else
    middleware._python_call, begin, finish and route inlined); the async path calls the helpers. Over every
    kind of request (traceparent valid, unsampled, padded, invalid, absent; method known or not;
    resolver_match absent, None, empty, a str, a lazy object; 2xx, 4xx, 5xx, a view exception answered with a
    500 or escaping; a response without Django's header store) the three give the same request event, the
    same response header, the same current span in the view and none after."""
    import logging_apm.emit as emit
    from logging_apm.conf import AppSettings

    recorded: list[tuple[Any, ...]] = []
    monkeypatch.setattr(emit, "_emitter", emit.Emitter(AppSettings(enabled=True, service_name="t")))
    monkeypatch.setattr(emit.Emitter, "emit_request", lambda self, *values: recorded.append(values))
    results = []
    for case in _middleware_cases():
        method, header, match, outcome = case
        native = _run_case("native", method, header, match, outcome, recorded)
        assert native == _run_case("python", method, header, match, outcome, recorded), case
        assert native == _run_case("async", method, header, match, outcome, recorded), case
        results.append(native)
    # The cases do reach every branch: both methods, every route kind, each outcome.
    assert {r[0] for r in results} == {"GET", "_OTHER"}
    assert {r[1] for r in results} == {"<unmatched>", "api/<int:id>/", "lazy/route/"}
    assert {r[3] for r in results} == {None, "503", "KeyError", "ValueError"}
    assert {r[4] for r in results} == {True, False}


def test_a_failing_finish_is_counted_on_both_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug while building the event (here: the method check) never reaches the view's caller, on the sync
    path (inlined) and the async path (the helper) alike; each failure is counted."""
    from django.http import HttpResponse

    import logging_apm.middleware as mw
    from logging_apm.middleware import APMMiddleware

    async def async_view(req: object) -> object:
        return HttpResponse(b"x")

    monkeypatch.setattr(mw, "KNOWN_METHODS", _BrokenMethods())
    before = errors.failures["middleware.finish"]
    with capture_events():
        assert APMMiddleware(lambda req: HttpResponse(b"x"))(_Request("GET", None)).status_code == 200
        assert _PythonPathMiddleware(lambda req: HttpResponse(b"x"))(_Request("GET", None)).status_code == 200
        assert asyncio.run(APMMiddleware(async_view)(_Request("GET", None))).status_code == 200
    assert errors.failures["middleware.finish"] == before + 3


def test_the_c_sync_path_is_installed_when_built(skip_or_fail: Any) -> None:
    """With logging_apm._speedups built, APMMiddleware's call is the C one (RequestMiddleware's), not
    _python_call; the tests comparing the paths would otherwise compare Python with itself."""
    from logging_apm import middleware
    from logging_apm._native import speedups

    if speedups is None:
        skip_or_fail("logging_apm._speedups is not built (or LOGAPM_NATIVE=0)")
    assert issubclass(middleware.APMMiddleware, speedups.RequestMiddleware)
    assert middleware.APMMiddleware.__call__ is speedups.RequestMiddleware.__call__


class _RecordingQueue:
    """A BackgroundHandler queue that keeps what is put on it (qsize 0: never full)."""

    def __init__(self) -> None:
        self.items: list[tuple[Any, ...]] = []

    def qsize(self) -> int:
        return 0

    def put(self, item: tuple[Any, ...]) -> None:
        self.items.append(item)


def _queued_emitter(path: Any, name: str, max_queue: int) -> tuple[Any, Any, Any]:
    """An Emitter on logger ``logging_apm.tests.<name>`` (INFO, not propagating) whose one handler is a
    BackgroundHandler writing orjson lines to ``path`` with a queue of ``max_queue``: the state in which
    Emitter.emit_request and the C sync path put on the queue themselves. Returns (handler, logger, emitter);
    the caller closes and removes the handler."""
    import logging

    from logging_apm import emit
    from logging_apm.conf import AppSettings
    from logging_apm.formatters import OrjsonFormatter
    from logging_apm.handlers import BackgroundHandler

    handler = BackgroundHandler(path, max_queue=max_queue)
    handler.setFormatter(OrjsonFormatter())
    logger = logging.getLogger(f"logging_apm.tests.{name}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    return handler, logger, emit.Emitter(AppSettings(enabled=True, service_name="t"), logger)


def test_both_sync_paths_queue_the_same_event_in_every_handler_state(tmp_path: Any,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The C sync path puts the pending request on a plain BackgroundHandler's queue itself (the tuple
    Emitter.emit_request puts, untracked by the garbage collector: it holds no container but the emitter),
    and in every other state of the logger or handler does what the Python path does (the emit_request call):
    a level or filter stops it, a full queue drops and counts it, a second handler gets a record, an emitter
    with its own emit_request is called."""
    import gc
    import logging
    from types import SimpleNamespace

    from django.http import HttpResponse

    from logging_apm import emit
    from logging_apm._native import speedups
    from logging_apm.conf import AppSettings
    from logging_apm.middleware import APMMiddleware

    handler, logger, emitter = _queued_emitter(tmp_path / "events.log", "sync_paths", 5)
    monkeypatch.setattr(emit, "_emitter", emitter)
    native = APMMiddleware(lambda req: HttpResponse(b"x", status=201))
    python = _PythonPathMiddleware(lambda req: HttpResponse(b"x", status=201))
    enqueued: list[object] = []
    enqueue = handler.enqueue_event

    def counted(event: Any) -> bool:
        enqueued.append(event)
        return enqueue(event)

    def request() -> _Request:
        return _Request("PUT", None, SimpleNamespace(route="r/<int:id>/"))

    def outcome(mw: Any) -> tuple[object, ...]:
        """What one request through ``mw`` queued (values but the timings and span), wrote, dropped."""
        recording = _RecordingQueue()
        real, handler._queue = handler._queue, recording  # type: ignore[assignment]
        enqueued.clear()
        dropped = handler.stats["dropped.queue_full"]
        try:
            mw(request())
        finally:
            handler._queue = real
        queued = [(item[0], item[1], *item[3:7], type(item[2]), type(item[8])) if type(item) is tuple
                  else ("record", item.msg["http.route"]) for item in recording.items]  # type: ignore[attr-defined]
        return queued, len(enqueued), handler.stats["dropped.queue_full"] - dropped

    handler.enqueue_event = counted  # type: ignore[method-assign]
    try:
        enqueue((emit.REQUEST, emitter, 1.0, "GET", "start/", 200, None, tracing.new_root(), 1.0))  # the listener
        plain = outcome(native)
        assert plain == outcome(python)
        assert plain == ([(emit.REQUEST, emitter, "PUT", "r/<int:id>/", 201, None, float, float)], 0, 0)
        recording = _RecordingQueue()
        real, handler._queue = handler._queue, recording  # type: ignore[assignment]
        native(request())
        handler._queue = real
        [pending] = recording.items
        if speedups is not None:
            assert not gc.is_tracked(pending)  # the C path's tuple: no collection walks or promotes it
        states: list[tuple[Any, Any]] = [
            (lambda: handler.setLevel(logging.WARNING), lambda: handler.setLevel(logging.NOTSET)),
            (lambda: handler.addFilter(lambda r: False), lambda: handler.filters.clear()),
            (lambda: logger.setLevel(logging.WARNING), lambda: logger.setLevel(logging.INFO)),
            (lambda: setattr(logger, "disabled", True), lambda: setattr(logger, "disabled", False)),
            (lambda: logging.disable(logging.INFO), lambda: logging.disable(logging.NOTSET)),
            (lambda: setattr(logger, "propagate", True), lambda: setattr(logger, "propagate", False)),
            (lambda: setattr(handler, "max_queue", 0), lambda: setattr(handler, "max_queue", 5)),
        ]
        for enter, leave in states:
            enter()
            try:
                assert outcome(native) == outcome(python)
            finally:
                leave()
        assert outcome(native) == plain  # every state left as it was
        second: list[logging.LogRecord] = []
        other = logging.Handler()
        other.emit = second.append  # type: ignore[method-assign]
        logger.addHandler(other)
        try:
            assert outcome(native) == outcome(python) == ([("record", "r/<int:id>/")], 0, 0)  # Logger.handle
        finally:
            logger.removeHandler(other)
        assert [r.msg["http.route"] for r in second] == ["r/<int:id>/"] * 2  # type: ignore[index]

        class Own(emit.Emitter):
            __slots__ = ()

            def emit_request(self, *values: Any) -> None:
                second.append(values)  # type: ignore[arg-type]

        monkeypatch.setattr(emit, "_emitter", Own(AppSettings(enabled=True, service_name="t"), logger))
        second.clear()
        assert outcome(native) == outcome(python) == ([], 0, 0)
        assert [v[1:4] for v in second] == [("PUT", "r/<int:id>/", 201)] * 2  # type: ignore[index]
    finally:
        handler.close()
        logger.removeHandler(handler)


def test_emit_request_follows_the_loggers_level_and_switches() -> None:
    """Emitter.emit_request reads Logger.isEnabledFor's cache instead of calling it: a level above INFO,
    a disabled logger and logging.disable() still stop the event, and lifting them lets it through."""
    import logging

    from logging_apm import emit
    from logging_apm.conf import AppSettings

    queued: list[tuple[object, ...]] = []

    class Sink(logging.Handler):
        def enqueue_event(self, event: tuple[object, ...]) -> bool:
            queued.append(event)
            return True

    logger = logging.getLogger("logging_apm.tests.emit_request")
    logger.propagate = False
    logger.addHandler(Sink())
    emitter = emit.Emitter(AppSettings(enabled=True, service_name="t"), logger)
    span = tracing.new_root()

    def sent() -> int:
        queued.clear()
        emitter.emit_request(1.0, "GET", "r/", 200, None, span, 1.0)
        return len(queued)

    logger.setLevel(logging.INFO)
    assert sent() == 1 and sent() == 1  # the second one from the cache
    logger.setLevel(logging.WARNING)
    assert sent() == 0
    logger.setLevel(logging.INFO)
    logger.disabled = True
    assert sent() == 0
    logger.disabled = False
    logging.disable(logging.INFO)
    try:
        assert sent() == 0
    finally:
        logging.disable(logging.NOTSET)
    assert sent() == 1


def test_emit_request_fast_put_keeps_the_handlers_rules(tmp_path: Any) -> None:
    """Emitter.emit_request puts on a BackgroundHandler's queue itself only in its plain state: the line is
    the one enqueue_event gives; a handler level above INFO or a filter stops it, a full queue drops and
    counts it, a closed handler drops it, a listener not started yet is started."""
    import logging

    from logging_apm import emit
    from logging_apm.formatters import OrjsonFormatter

    path = tmp_path / "events.log"
    handler, logger, emitter = _queued_emitter(path, "fast_put", 3)
    span = tracing.new_root()

    def send(route: str) -> None:
        emitter.emit_request(1.5, "GET", route, 200, None, span, 1_700_000_000.25)

    def lines() -> list[str]:
        handler.flush()
        return path.read_text().splitlines()

    try:
        send("first/")  # the listener is not running yet: enqueue_event starts it
        assert handler._thread is not None
        calls: list[object] = []  # enqueue_event calls from here on (the inlined put makes none)
        enqueue = handler.enqueue_event

        def counted(event: Any) -> bool:
            calls.append(event)
            return enqueue(event)

        handler.enqueue_event = counted  # type: ignore[method-assign]
        send("fast/")  # the inlined put
        assert calls == []  # fails if the inlined put is never taken (its state check gone wrong)
        pending = (emit.REQUEST, emitter, 1.5, "GET", "fast/", 200, None, span, 1_700_000_000.25)
        assert lines()[-1].encode() + b"\n" == OrjsonFormatter().format_event(emit.build_request(pending)) + b"\n"
        assert len(lines()) == 2
        handler.setLevel(logging.WARNING)
        send("level/")
        assert len(calls) == 1  # a handler level above INFO takes the call
        handler.setLevel(logging.NOTSET)
        handler.addFilter(lambda record: False)
        send("filtered/")
        handler.filters.clear()
        assert len(lines()) == 2
        queue = handler._queue
        handler._queue = type(queue)()
        for item in range(3):
            handler._queue.put(item)  # full: max_queue=3
        send("full/")
        assert handler.stats["dropped.queue_full"] == 1 and handler._queue.qsize() == 3
        handler._queue = queue
        send("after/")
        assert lines()[-1].count('"after/"') == 1
    finally:
        handler.close()
        logger.removeHandler(handler)
    send("closed/")
    assert handler.stats["dropped.closed"] == 0  # no longer the logger's handler: nothing reaches it
    logger.addHandler(handler)
    try:
        send("closed/")
        assert handler.stats["dropped.closed"] == 1
    finally:
        logger.removeHandler(handler)
