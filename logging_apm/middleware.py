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

The sync path (every WSGI request) runs in C when the optional extension is built
(``_speedups.RequestMiddleware``, APMMiddleware's base class): the same steps as ``_python_call``, the path
without it, about 1 us less a minimal request (docs/emission.md, seventh pass).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

from logging_apm import emit as _emit
from logging_apm import tracing
from logging_apm._native import speedups
from logging_apm.errors import instrumentation_failed

__all__ = ["KNOWN_METHODS", "UNMATCHED_ROUTE", "APMMiddleware", "normalise_method"]

KNOWN_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE",
                                  "PATCH"})
UNMATCHED_ROUTE: Final = "<unmatched>"
OTHER_METHOD: Final = "_OTHER"
_ERROR_ATTR: Final = "_logging_apm_error"
_perf = time.perf_counter


# The C sync path (logging_apm/_speedups.c): APMMiddleware's base class, whose call is _python_call's steps
# in C. None without the extension (or with LOGAPM_NATIVE=0): then APMMiddleware.__call__ is _python_call.
_NativeMiddleware: Any = getattr(speedups, "RequestMiddleware", None)
_Base: Any = object if _NativeMiddleware is None else _NativeMiddleware


def normalise_method(method: str | None) -> str:
    return method if method in KNOWN_METHODS else OTHER_METHOD  # type: ignore[return-value]


def route_of(request: Any) -> str:
    """The route template of the resolved view (full, across ``include()``), or ``<unmatched>``."""
    match = getattr(request, "resolver_match", None)
    if match is None:
        return UNMATCHED_ROUTE
    route = match.route
    return str(route) if route else UNMATCHED_ROUTE


# The sync path (every WSGI request) in Python: APMMiddleware's __call__ when the C extension is not built
# (or LOGAPM_NATIVE=0), and the reference for the C one (_speedups.RequestMiddleware), which does the same
# steps in one C function. It is written out in one frame: _begin, tracing.new_root, _finish and route_of
# inlined, as measured with callgrind on /ping/ (see docs/emission.md): each Python call costs a frame, and
# on a view that does nothing this middleware is most of the cost. The async path calls the helpers;
# tests/logging_apm/test_middleware.py checks that the three give the same events and headers.
def _python_call(self: Any, request: Any) -> Any:
    if self._async:
        return self.__acall__(request)
    emitter = _emit._emitter
    if not emitter.enabled:
        return self.get_response(request)
    try:
        header = request.META.get("HTTP_TRACEPARENT")
        if header:
            ctx = _continued(header)
        else:
            try:
                ctx = _pop_root()
            except IndexError:
                ctx = _new_root()
    except Exception as exc:
        instrumentation_failed("middleware.begin", exc)
        ctx = None
    token = _set_current(ctx)
    start = _perf()
    try:
        response = self.get_response(request)
    except BaseException as failure:
        _finish(request, None, start, ctx, failure)
        _reset_current(token)
        raise
    end = _perf()
    now = _time()
    try:
        status = response.status_code
        method = request.method
        if method not in KNOWN_METHODS:
            method = OTHER_METHOD
        try:  # getattr(request, "resolver_match", None), without the builtin's call
            match = request.resolver_match
        except AttributeError:
            match = None
        if match is None:
            route = UNMATCHED_ROUTE
        else:
            route = match.route
            if not route:
                route = UNMATCHED_ROUTE
            elif type(route) is not str:
                route = str(route)
        # A 5xx is a failure, named by process_exception when a view raised (see _finish).
        error = (getattr(request, _ERROR_ATTR, None) or str(status)) if status >= 500 else None
        emitter = _emit._emitter  # read again, as _finish does: it may have been reconfigured meanwhile
        if emitter.enabled:
            emitter.emit_request((end - start) * 1000.0, method, route, status, error, ctx, now)
        if ctx is not None:
            _set_traceparent(response, ctx)
    except Exception as err:
        instrumentation_failed("middleware.finish", err)
    _reset_current(token)
    return response


class APMMiddleware(_Base):
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    if _NativeMiddleware is None:  # without the C extension the sync path is _python_call
        __call__ = _python_call

    async def __acall__(self, request: Any) -> Any:
        get_response: Callable[[Any], Awaitable[Any]] = self.get_response
        if not _emit._emitter.enabled:
            return await get_response(request)
        ctx = _begin(request)
        token = _set_current(ctx)
        start = _perf()
        response = exc = None
        try:
            response = await get_response(request)
            return response
        except BaseException as error:
            exc = error
            raise
        finally:
            _finish(request, response, start, ctx, exc)
            _reset_current(token)

    def process_exception(self, request: Any, exception: BaseException) -> None:
        # Django turns a view's exception into a 500 response before it reaches __call__; remember its class.
        try:
            setattr(request, _ERROR_ATTR, type(exception).__name__)
        except Exception as exc:  # pragma: no cover - a request object that refuses attributes
            instrumentation_failed("middleware.process_exception", exc)


_set_current = tracing._current.set
_reset_current = tracing._current.reset


def _begin(request: Any) -> tracing.TraceContext | None:
    """The request's span: a child of a valid incoming ``traceparent``, else the root of a new trace (None,
    counted, when that fails: the request then runs without one)."""
    try:
        header = request.META.get("HTTP_TRACEPARENT")
        return _continued(header) if header else _new_root()
    except Exception as exc:
        instrumentation_failed("middleware.begin", exc)
        return None


def _continued(header: str) -> tracing.TraceContext:
    """The request's span for an incoming ``traceparent``: its child, or a new root when it is not valid."""
    parent = tracing.parse_traceparent(header)
    return parent.child() if parent is not None else _new_root()


_new_root = tracing.new_root
_pop_root = tracing._roots.pop  # the list is never replaced (cleared in a forked child): new_root's fast path


def _finish(request: Any, response: Any, start: float, ctx: tracing.TraceContext | None,
            exc: BaseException | None) -> None:
    end = _perf()
    now = _time()
    try:
        status = response.status_code if response is not None else 500
        method = request.method
        if method not in KNOWN_METHODS:
            method = OTHER_METHOD
        route = route_of(request)
        error = None
        if status >= 500 or exc is not None:
            # A failure. A view exception Django answered with a 4xx (Http404, PermissionDenied) is not one;
            # one answered with a 5xx is named by process_exception; one that escapes, here.
            error = type(exc).__name__ if exc is not None else getattr(request, _ERROR_ATTR, None)
            error = error or str(status)
        emitter = _emit._emitter
        if emitter.enabled:
            emitter.emit_request((end - start) * 1000.0, method, route, status, error, ctx, now)
        if response is not None and ctx is not None:
            _set_traceparent(response, ctx)
    except Exception as err:
        instrumentation_failed("middleware.finish", err)


def _set_traceparent(response: Any, ctx: tracing.TraceContext) -> None:
    """The response's ``traceparent`` header: the request's span."""
    # tracing.format_traceparent, inlined. The header is set in ResponseHeaders' {lowercased name: (name,
    # value)} store, without Django's per-call charset checks (a few us): we know it is ASCII. Another
    # response class (or a future Django without _store) gets it the public way.
    value = f"00-{ctx[0]}-{ctx[1]}-{'01' if ctx[3] else '00'}"
    try:
        store = response.headers._store
    except AttributeError:
        store = None
    if type(store) is dict:
        store["traceparent"] = ("traceparent", value)
    else:
        response["traceparent"] = value


_time = time.time


if speedups is not None and _NativeMiddleware is not None:
    # What the C call reads at each request (this module's globals, emit's), and what it compares with.
    speedups.middleware_setup(globals(), vars(_emit), _emit.Emitter, _emit.Emitter.emit_request, tracing._roots,
                              tracing._current)
