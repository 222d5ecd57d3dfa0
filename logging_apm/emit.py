"""The one way an event leaves the app: ``emit()`` builds a schema-1 dict and hands it to a logger.

The event dict is passed as the log record's ``msg``; the formatters of ``logging_apm.logging_config``
serialise it as one JSON line. The logger is ``logging_apm.events`` so that users can route it like any
other logger. Nothing here touches the disk: the handler configured for that logger is a queue handler
whose listener thread formats and writes.

Cost model (``bench/emit.py`` measures it): the dict is copied from a prepared template and the timestamp's
seconds part is cached, so building an event costs a few microseconds. When the events logger has just the
one ``BackgroundHandler`` that ``build_logging()`` configures (and no filters, no propagation), the
event's parts are queued to it (trace ids read and attributes copied in the caller) and its listener thread
builds the dict; otherwise a ``LogRecord`` is built cheaply from a template (no stack walk) and goes
through ``Logger.handle`` to every handler, so routing, filters and test captures work as with any logger.
The request middleware's event takes the same two paths through ``Emitter.emit_request``, which queues its
values (``REQUEST``) rather than an attribute dict: ``OrjsonFormatter.format_request`` writes its line
without building the dict at all (same bytes).
With ``APM_ENABLED=false`` (or before ``configure``), ``emit`` returns after one attribute read.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Mapping
from typing import Any, Final, TypeAlias

from logging_apm import tracing
from logging_apm.conf import AppSettings
from logging_apm.schema import KIND_FIELD, SCHEMA_FIELD, SCHEMA_VERSION

EVENT_LOGGER: Final = "logging_apm.events"
INTERNAL_LOGGER: Final = "logging_apm.internal"

Event = dict[str, Any]


class _Clock:
    """RFC 3339 timestamps with milliseconds, re-formatting the seconds part only when it changes."""

    __slots__ = ("_cache",)

    def __init__(self) -> None:
        self._cache: tuple[int, str] = (-1, "")

    def format(self, epoch: float) -> str:
        second = _trunc(epoch)  # int(epoch); math.trunc is the same function for numbers, at a third the cost
        cache = self._cache  # one read: (second, prefix) always belong together, whatever other threads do
        if cache[0] != second:
            cache = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
            self._cache = cache
        millis = _trunc((epoch - second) * 1000)
        # A table of the 1000 suffixes: half the cost of formatting one (a negative epoch keeps the f-string).
        return cache[1] + (_MILLIS[millis] if millis >= 0 else f".{millis:03d}Z")


_trunc = math.trunc
_MILLIS: Final = tuple(f".{millis:03d}Z" for millis in range(1000))


class _EventRecord(logging.LogRecord):
    """A ``LogRecord`` built in about a tenth of the stock constructor's time.

    ``LogRecord.__init__`` derives the caller's file, module, thread and process names on every call, and
    ``Logger.info`` first walks the stack to find the caller: together most of the cost of a logged event.
    A timing event needs none of that (its attributes are in the message dict), so the fixed attributes are
    copied from a template made once per logger and only the message and clock are set per event.
    """

    def getMessage(self) -> str:
        return str(self.msg)


def _record_template(logger_name: str) -> dict[str, Any]:
    base = logging.LogRecord(logger_name, logging.INFO, __file__, 0, "", None, None, "emit")
    template = dict(base.__dict__)
    for volatile in ("msg", "created", "msecs", "relativeCreated", "taskName"):
        template.pop(volatile, None)
    template["thread"] = template["threadName"] = None  # the emitting thread is not part of an event
    return template


_TEMPLATES: dict[str, dict[str, Any]] = {}
_START = time.time()  # what logging calls relativeCreated is relative to (approximately)


def event_record(event: Event, logger_name: str = EVENT_LOGGER, created: float | None = None) -> logging.LogRecord:
    """A log record carrying ``event`` as its message, built from a per-logger template (see _EventRecord)."""
    template = _TEMPLATES.get(logger_name)
    if template is None:
        template = _TEMPLATES[logger_name] = _record_template(logger_name)
    now = time.time() if created is None else created
    record = _EventRecord.__new__(_EventRecord)
    record.__dict__.update(template)
    record.msg = event
    record.created = now
    record.msecs = (now - int(now)) * 1000
    record.relativeCreated = (now - _START) * 1000
    return record


_rand64 = random.getrandbits
INFO: Final = logging.INFO
# (trace id, span id, parent span id), or a TraceContext (whose first three items are those).
SpanIds: TypeAlias = "tuple[str, str, str | None] | tracing.TraceContext | None"


class Emitter:
    """Builds events with the service tags and trace context, and logs them."""

    __slots__ = ("_base", "_clock", "_logger", "enabled", "resource", "settings")

    def __init__(self, settings: AppSettings, logger: logging.Logger | None = None) -> None:
        self.settings = settings
        self.enabled = settings.enabled
        self.resource = dict(settings.resource)
        self._logger = logger or logging.getLogger(EVENT_LOGGER)
        self._clock = _Clock()
        self._base: Event = {"timestamp": "", SCHEMA_FIELD: SCHEMA_VERSION, KIND_FIELD: "", "duration_ms": 0.0,
                             "outcome": "", **self.resource}

    def event(
        self,
        kind: str,
        duration_ms: float | None,
        outcome: str,
        attrs: Mapping[str, Any],
        *,
        span: tracing.TraceContext | None = None,
        end_time: float | None = None,
    ) -> Event:
        """The event dict, without logging it.

        ``span`` is the operation's own span; by default a child of the current span (so each DB query in a
        request gets its own span id pointing at the request's span). Outside any trace, no ids are set.
        """
        return build_pending((self, kind, duration_ms, outcome, attrs, _span_ids(span),
                              time.time() if end_time is None else end_time))

    def emit(
        self,
        kind: str,
        duration_ms: float | None,
        outcome: str,
        attrs: Mapping[str, Any],
        *,
        span: tracing.TraceContext | None = None,
        end_time: float | None = None,
    ) -> None:
        if not self.enabled:
            return
        logger = self._logger
        if not logger.isEnabledFor(INFO):  # False too for a disabled logger
            return
        now = time.time() if end_time is None else end_time
        ids = _span_ids(span)  # the trace context is the caller's: read it here, in the caller's context
        handlers = logger.handlers
        if len(handlers) == 1 and not logger.propagate and not logger.filters:
            # The usual production set-up (build_logging): one background handler. Hand it the parts of the
            # event; its listener thread builds the dict and formats it, in batches (warm caches), off the
            # request thread. No record, no logging call chain: a third of an event's cost.
            enqueue = getattr(handlers[0], "enqueue_event", None)
            if enqueue is not None and enqueue((self, kind, duration_ms, outcome, dict(attrs), ids, now)):
                return
        event = build_pending((self, kind, duration_ms, outcome, attrs, ids, now))
        logger.handle(event_record(event, logger.name, now))

    def emit_request(self, duration_ms: float, method: str, route: str, status: int, error: str | None,
                     span: tracing.TraceContext | None, now: float) -> None:
        """The request middleware's ``emit``: the ``request`` event's values, not a dict of them (the
        listener thread builds the line). Same event, same routing as ``emit("request", ...)`` with the
        attributes ``http.request.method``, ``http.route``, ``http.response.status_code`` and, for a failure
        (``error`` not None), ``error.type``. The caller has checked ``enabled``.

        The C sync path of the middleware (``RequestMiddleware`` in logging_apm/_speedups.c) writes out this
        method's plain case (the put below) and calls it for anything else: keep the two in step.
        """
        logger = self._logger
        # logger.isEnabledFor(INFO), without its call when its cache has the answer (a dict Logger keeps per
        # level, emptied by setLevel, logging.disable and dictConfig): most of the cost of the check. A
        # subscript, not .get(): no method call (a miss raises, rarely: after a configuration change).
        try:
            enabled = logger._cache[INFO]  # type: ignore[attr-defined]
        except KeyError:
            enabled = logger.isEnabledFor(INFO)
        if logger.disabled or not enabled:
            return
        handlers = logger.handlers
        if len(handlers) == 1 and not logger.propagate and not logger.filters:
            handler: Any = handlers[0]
            # BackgroundHandler.enqueue_event, inlined for the state it is nearly always in (no filters, level
            # INFO or below, listener started, queue open and not full): a call less per request. Any other
            # state, or a subclass, takes the call, which starts the listener or counts a drop.
            if type(handler) is _background and not handler.filters and handler.level <= INFO \
                    and handler._thread is not None and not handler._closed \
                    and handler._queue.qsize() < handler.max_queue:
                handler._queue.put((REQUEST, self, duration_ms, method, route, status, error, span, now))
                return
            try:
                enqueue = handler.enqueue_event  # type: ignore[attr-defined]
            except AttributeError:  # another handler than BackgroundHandler: the record path below
                pass
            else:
                if enqueue((REQUEST, self, duration_ms, method, route, status, error, span, now)):
                    return
        event = build_request((REQUEST, self, duration_ms, method, route, status, error, span, now))
        logger.handle(event_record(event, logger.name, now))


# logging_apm.handlers.BackgroundHandler, set when that module is imported (it imports this one).
_background: Any = None


PendingEvent = tuple[Emitter, str, "float | None", str, Mapping[str, Any], SpanIds, float]


def build_pending(pending: PendingEvent) -> Event:
    """The event dict of a pending event queued by ``Emitter.emit`` (called in the listener thread, once per
    event: hence one function, with no call to a builder method)."""
    emitter, kind, duration_ms, outcome, attrs, ids, end_time = pending
    # Copying a prepared dict is cheaper than building one key by key, and fixes the key order.
    event: Event = emitter._base.copy()
    event["timestamp"] = emitter._clock.format(end_time)
    event[KIND_FIELD] = kind
    if duration_ms is None:
        del event["duration_ms"]
    else:
        # Microsecond resolution; int() is about three times cheaper than round(x, 3), and math.trunc (int() of
        # a float: the same value, or the same error for nan and inf) three times cheaper than int().
        event["duration_ms"] = _trunc(duration_ms * 1000.0 + 0.5) / 1000.0 if duration_ms >= 0 else 0.0
    event["outcome"] = outcome
    if ids is not None:
        event["trace_id"] = ids[0]
        event["span_id"] = ids[1]
        if ids[2] is not None:
            event["parent_span_id"] = ids[2]
    event.update(attrs)
    return event


# A pending request event: (REQUEST, emitter, duration_ms, method, route, status, error type or None, the
# request's span, end time). Its span comes from the middleware (a generated or a parsed traceparent's ids:
# lowercase hex): OrjsonFormatter.format_request relies on that.
REQUEST: Final = object()
PendingRequest = tuple[object, Emitter, float, str, str, int, "str | None", "tracing.TraceContext | None", float]


def request_attrs(method: str, route: str, status: int, error: str | None) -> dict[str, Any]:
    attrs: dict[str, Any] = {"http.request.method": method, "http.route": route,
                             "http.response.status_code": status}
    if error is not None:
        attrs["error.type"] = error
    return attrs


def build_request(pending: PendingRequest) -> Event:
    """The event dict of a pending request event (see ``REQUEST``)."""
    _, emitter, duration_ms, method, route, status, error, span, end_time = pending
    return build_pending((emitter, "request", duration_ms, "success" if error is None else "failure",
                          request_attrs(method, route, status, error), span, end_time))


def _span_ids(span: tracing.TraceContext | None) -> tuple[str, str, str | None] | None:
    """(trace id, span id, parent span id) of the operation: ``span``, or a new child of the current span."""
    if span is not None:
        return span.trace_id, span.span_id, span.parent_span_id
    parent = _current_span()
    if parent is None:
        return None
    # A child of the current span, without building a TraceContext (hot path).
    return parent[0], (_rand64(64) or 1).to_bytes(8, "big").hex(), parent[1]


_current_span = tracing.current


# The process-wide emitter: disabled until ``configure()`` runs (the Django app config calls it), so that
# importing logging_apm in a process that never configured it costs nothing and writes nothing.
_emitter = Emitter(AppSettings(enabled=False))


def configure(settings: AppSettings | None = None, **overrides: Any) -> Emitter:
    """Set the process-wide emitter from ``settings`` or from the environment plus ``overrides``."""
    global _emitter
    _emitter = Emitter(settings if settings is not None else AppSettings.from_env(**overrides))
    return _emitter


def get_emitter() -> Emitter:
    return _emitter


def emit(
    kind: str,
    duration_ms: float | None,
    outcome: str,
    attrs: Mapping[str, Any],
    *,
    span: tracing.TraceContext | None = None,
    end_time: float | None = None,
) -> None:
    """Emit one timing event through the process-wide emitter (a no-op when disabled)."""
    emitter = _emitter
    if emitter.enabled:
        emitter.emit(kind, duration_ms, outcome, attrs, span=span, end_time=end_time)
