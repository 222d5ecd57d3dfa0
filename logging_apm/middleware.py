"""The request middleware: one ``request`` event per HTTP request, and the request's trace context.

Add ``"logging_apm.middleware.APMMiddleware"`` first in ``MIDDLEWARE`` so that its duration covers the other
middleware and every event emitted while the request runs (queries, cache calls, outgoing calls) is a child
span of the request's span.

What is recorded, and what is not:

- ``http.route`` is the URL pattern that matched (``resolver_match.route``, as django-prometheus labels
  it), never the raw path; requests no pattern matched get ``<unmatched>``. Query strings, headers and
  bodies are never read into an event.
- ``http.request.method`` is one of the standard methods; anything else becomes ``_OTHER`` (an attacker
  cannot create series by inventing verbs).
- ``outcome`` is ``failure`` for a 5xx response or an exception that escapes (a view's ``Http404`` or
  ``PermissionDenied`` answered with a 4xx is not), with ``error.type`` set to the exception's
  class, or to the status code when there was no exception (OpenTelemetry's convention).
- An incoming W3C ``traceparent`` is continued (the request's span is its child); otherwise a new trace
  starts. The response carries the request's ``traceparent`` back.

A failure inside this middleware is counted and logged once (``logging_apm.errors``); the request itself
always proceeds. Works for sync and async stacks (Django picks the matching call path).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

from logging_apm import emit as _emit
from logging_apm import tracing
from logging_apm.errors import instrumentation_failed

__all__ = ["KNOWN_METHODS", "UNMATCHED_ROUTE", "APMMiddleware", "normalise_method"]

KNOWN_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE",
                                  "PATCH"})
UNMATCHED_ROUTE: Final = "<unmatched>"
OTHER_METHOD: Final = "_OTHER"
_ERROR_ATTR: Final = "_logging_apm_error"
_perf = time.perf_counter


def normalise_method(method: str | None) -> str:
    return method if method in KNOWN_METHODS else OTHER_METHOD  # type: ignore[return-value]


def route_of(request: Any) -> str:
    """The route template of the resolved view (full, across ``include()``), or ``<unmatched>``."""
    match = getattr(request, "resolver_match", None)
    if match is None:
        return UNMATCHED_ROUTE
    route = match.route
    return str(route) if route else UNMATCHED_ROUTE


class APMMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        if self._async:
            return self.__acall__(request)
        if not _emit._emitter.enabled:
            return self.get_response(request)
        start, ctx, token = self._begin(request)
        response = exc = None
        try:
            response = self.get_response(request)
            return response
        except BaseException as error:
            exc = error
            raise
        finally:
            self._finish(request, response, start, ctx, exc)
            tracing._current.reset(token)

    async def __acall__(self, request: Any) -> Any:
        get_response: Callable[[Any], Awaitable[Any]] = self.get_response
        if not _emit._emitter.enabled:
            return await get_response(request)
        start, ctx, token = self._begin(request)
        response = exc = None
        try:
            response = await get_response(request)
            return response
        except BaseException as error:
            exc = error
            raise
        finally:
            self._finish(request, response, start, ctx, exc)
            tracing._current.reset(token)

    def process_exception(self, request: Any, exception: BaseException) -> None:
        # Django turns a view's exception into a 500 response before it reaches __call__; remember its class.
        try:
            setattr(request, _ERROR_ATTR, type(exception).__name__)
        except Exception as exc:  # pragma: no cover - a request object that refuses attributes
            instrumentation_failed("middleware.process_exception", exc)

    @staticmethod
    def _begin(request: Any) -> tuple[float, tracing.TraceContext | None, Any]:
        ctx: tracing.TraceContext | None = None
        try:
            header = request.META.get("HTTP_TRACEPARENT")
            parent = tracing.parse_traceparent(header) if header else None
            ctx = parent.child() if parent is not None else tracing.TraceContext(
                tracing.new_trace_id(), tracing.new_span_id())
        except Exception as exc:
            instrumentation_failed("middleware.begin", exc)
        token = tracing._current.set(ctx)
        return _perf(), ctx, token

    @staticmethod
    def _finish(request: Any, response: Any, start: float, ctx: tracing.TraceContext | None,
                exc: BaseException | None) -> None:
        duration_ms = (_perf() - start) * 1000.0
        try:
            status = response.status_code if response is not None else 500
            # A view exception Django answered with a 4xx (Http404, PermissionDenied) is not a failure.
            error = getattr(request, _ERROR_ATTR, None) if status >= 500 else None
            if exc is not None:
                error = type(exc).__name__
            attrs: dict[str, Any] = {
                "http.request.method": normalise_method(request.method),
                "http.route": route_of(request),
                "http.response.status_code": status,
            }
            failed = status >= 500 or error is not None
            if failed:
                attrs["error.type"] = error or str(status)
            _emit._emitter.emit("request", duration_ms, "failure" if failed else "success", attrs, span=ctx)
            if response is not None and ctx is not None:
                _set_header(response, "traceparent", ctx.traceparent)
        except Exception as err:
            instrumentation_failed("middleware.finish", err)


def _set_header(response: Any, name: str, value: str) -> None:
    """Set a response header we know to be ASCII without Django's per-call charset checks (a few us).

    ``ResponseHeaders`` keeps ``{lowercased name: (name, value)}`` in ``_store``; when that is not there
    (another response class, a future Django), the public way is used.
    """
    store = getattr(getattr(response, "headers", None), "_store", None)
    if type(store) is dict:
        store[name] = (name, value)
    else:
        response[name] = value
