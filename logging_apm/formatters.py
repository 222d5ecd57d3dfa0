"""Formatters that turn a log record into one JSON line.

A timing event reaches the handlers as a record whose ``msg`` is the event dict (see ``logging_apm.emit``);
it is written exactly as built, nothing added, so that the line is a schema-1 event. Any other record (the
app's ordinary logs routed to the same handler) becomes a small JSON object with ``timestamp``, ``level``,
``logger`` and ``message``, which the aggregator counts and skips.

Three interchangeable formatters, all usable from ``LOGGING`` by dotted path:

- ``OrjsonFormatter`` (default): orjson, about 1 microsecond per event. It also offers ``format_bytes`` which
  ``logging_apm.handlers.BackgroundHandler`` uses to skip a decode/encode round trip.
- ``EventJsonFormatter``: python-json-logger's ``JsonFormatter``, for teams that already configure it.
- ``structlog_formatter()``: structlog's ``ProcessorFormatter`` for apps on structlog.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from typing import Any

import orjson

from logging_apm.emit import _MILLIS, _trunc
from logging_apm.schema import KIND_FIELD, SCHEMA_FIELD

__all__ = ["EventJsonFormatter", "OrjsonFormatter", "event_of", "structlog_event", "structlog_formatter"]

_OPTIONS = orjson.OPT_NON_STR_KEYS
_dumps = orjson.dumps


def event_of(record: logging.LogRecord) -> dict[str, Any] | None:
    """The timing event a record carries, or ``None`` for an ordinary log record."""
    msg = record.msg
    if type(msg) is dict and SCHEMA_FIELD in msg:
        return msg
    return None


def _utc_timestamp(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


def _plain(record: logging.LogRecord, formatter: logging.Formatter) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "timestamp": _utc_timestamp(record.created),
        "level": record.levelname,
        "logger": record.name,
        "message": record.getMessage(),
    }
    if record.exc_info:
        doc["exc_info"] = formatter.formatException(record.exc_info)
    elif record.exc_text:
        doc["exc_info"] = record.exc_text
    return doc


def _default(value: object) -> str:
    # Anything orjson cannot encode is written as its str(): a log line must never fail to serialise.
    return str(value)


class OrjsonFormatter(logging.Formatter):
    """The fast formatter: a timing event is ``orjson.dumps(event)``, nothing else."""

    # (emitter, its request-line template or None): see format_request.
    _request_parts: tuple[Any, tuple[str, str, str] | None] | None = None

    def format_event(self, event: dict[str, Any]) -> bytes:
        """One event dict as JSON bytes (no record needed: ``BackgroundHandler``'s fast path)."""
        # Without keyword arguments orjson skips their parsing and its non-str-key path: about 30% less per
        # event. An event it cannot write that way (a non-str key, a value only ``_default`` can render)
        # raises TypeError and is written by the full call: the same bytes (or error) as before, always.
        try:
            return _dumps(event)
        except TypeError:
            return _dumps(event, default=_default, option=_OPTIONS)

    def format_request(self, pending: tuple[Any, ...]) -> bytes | None:
        """The line (newline included) of a pending request event (``logging_apm.emit.REQUEST``), written
        without building its dict: the same bytes as ``format_event(build_request(pending)) + b"\\n"``
        (tests/logging_apm/test_formatters.py compares them), or None when this event is not one this
        shortcut is sure of; the caller then takes the dict path.
        """
        _, emitter, duration_ms, method, route, status, error, span, end_time = pending
        parts = self._request_parts
        if parts is None or parts[0] is not emitter:
            parts = self._request_parts = (emitter, _request_template(emitter))
        template = parts[1]
        if template is None or span is None or type(status) is not int or not duration_ms < 1e12:
            return None
        # Method, route and status end the line: a few hundred distinct combinations, written once each.
        tail = _request_tails.get((method, route, status))
        if tail is None:
            if type(method) is not str or type(route) is not str or not 0 <= status < 1000:
                return None
            tail = f',"http.request.method":{_dumps(method).decode()},"http.route":{_dumps(route).decode()},' \
                   f'"http.response.status_code":{status}'
            if len(_request_tails) < 10_000:
                _request_tails[method, route, status] = tail
        # The duration as emit writes it (int(ms * 1000 + 0.5) / 1000, 0 when negative) and as repr()/orjson
        # print that float below 1e12 ms: integer part, then the shortest 3-decimal fraction. math.trunc is
        # int() for a float, at a third of its cost.
        micros = _trunc(duration_ms * 1000.0 + 0.5) if duration_ms >= 0 else 0
        parent = span[2]
        # The timestamp: emitter._clock.format(end_time), inlined for the usual case (a second already
        # formatted, a positive time).
        second = _trunc(end_time)
        cached = emitter._clock._cache
        millis = _trunc((end_time - second) * 1000)
        stamp = cached[1] + _MILLIS[millis] if cached[0] == second and millis >= 0 \
            else emitter._clock.format(end_time)
        # One f-string (str.format with a template cost five times as much): 12.4k instructions a line against
        # 19.4k for the dict and orjson (callgrind, 50k lines).
        # The fixed runs between the values are joined once per emitter (_request_template).
        return (f'{{"timestamp":"{stamp}{template[0]}{micros // 1000}{_FRACTIONS[micros % 1000]}'
                f'{template[1] if error is None else template[2]}{span[0]}","span_id":"{span[1]}"'
                f'{"" if parent is None else _parent_member(parent)}{tail}'
                f'{"" if error is None else _error_member(error)}}}\n').encode()

    def format_bytes(self, record: logging.LogRecord) -> bytes:
        event = event_of(record)
        return orjson.dumps(event if event is not None else _plain(record, self), default=_default,
                            option=_OPTIONS)

    def format(self, record: logging.LogRecord) -> str:
        return self.format_bytes(record).decode()


# (method, route, status) -> the line's last members (format_request); at most 10,000 kept.
_request_tails: dict[tuple[str, str, int], str] = {}


def _parent_member(parent: str) -> str:
    return f',"parent_span_id":"{parent}"'


def _error_member(error: str) -> str:
    return f',"error.type":{_dumps(error).decode()}'


_FRACTIONS = tuple(f".{m:03d}".rstrip("0") if m else ".0" for m in range(1000))


def _request_template(emitter: Any) -> tuple[str, str, str] | None:
    """The fixed parts of an emitter's request lines, joined with the keys around them: after the
    timestamp, the schema and kind members up to the duration's key; after the duration, the outcome
    (success, or failure), the resource attributes' members and the trace id's key. None when a line could
    not be written that way: a resource attribute that shares a name with another field (the dict keeps one
    of them).
    """
    leading = ["timestamp", SCHEMA_FIELD, KIND_FIELD, "duration_ms", "outcome"]
    base = emitter._base
    resource = {k: v for k, v in base.items() if k not in leading}
    fields = {*leading, "trace_id", "span_id", "parent_span_id", "http.request.method", "http.route",
              "http.response.status_code", "error.type"}
    if list(base)[:5] != leading or fields & set(resource):
        return None
    try:
        members = _dumps(resource, default=_default, option=_OPTIONS)[1:-1].decode()
        # The schema value as the dict has it: a resource attribute of that name replaces it there.
        head = _dumps({SCHEMA_FIELD: base[SCHEMA_FIELD], KIND_FIELD: "request"}, default=_default,
                      option=_OPTIONS)[1:-1].decode()
    except Exception:
        return None
    resource_members = f",{members}" if members else ""
    # What comes between the timestamp and the duration, and between the duration and the trace id (for
    # a success, and for a failure).
    return (f'",{head},"duration_ms":', f',"outcome":"success"{resource_members},"trace_id":"',
            f',"outcome":"failure"{resource_members},"trace_id":"')


def _pjl_base() -> type[logging.Formatter]:
    try:
        from pythonjsonlogger.json import JsonFormatter
    except ImportError:  # python-json-logger < 3
        from pythonjsonlogger.jsonlogger import JsonFormatter  # type: ignore[no-redef]
    return JsonFormatter  # type: ignore[no-any-return]


class EventJsonFormatter(_pjl_base()):  # type: ignore[misc]
    """python-json-logger's ``JsonFormatter``, writing a timing event as built (no ``message`` key added).

    Ordinary records keep python-json-logger's behaviour (its ``fmt``, renames, static fields).
    """

    def format(self, record: logging.LogRecord) -> str:
        event = event_of(record)
        if event is None:
            return super().format(record)  # type: ignore[no-any-return]
        # The event is the whole line: skip the record machinery, keep python-json-logger's hooks.
        data = self.process_log_record(dict(event))
        if self.json_serializer is not json.dumps:
            return self.serialize_log_record(data)  # type: ignore[no-any-return]
        # json.dumps(cls=...) builds a new encoder per call; one encoder with the same options is reused.
        encoder = self.__dict__.get("_apm_encoder")
        if encoder is None:
            encoder = self._apm_encoder = (self.json_encoder or json.JSONEncoder)(
                default=self.json_default, indent=self.json_indent, ensure_ascii=self.json_ensure_ascii)
        return self.prefix + encoder.encode(data)  # type: ignore[no-any-return]


def structlog_event(logger: Any, method_name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """A structlog ``foreign_pre_chain`` processor: a stdlib record carrying a timing event becomes that event.

    Other records pass through unchanged, so the app's own structlog processors still apply to them.
    """
    record = event_dict.get("_record")
    if record is not None:
        event = event_of(record)
        if event is not None:
            return {**event, "_record": record, "_from_structlog": False}
    return event_dict


def structlog_formatter(**kwargs: Any) -> logging.Formatter:
    """structlog's ``ProcessorFormatter`` rendering timing events unchanged as JSON.

    Use as ``{"()": "logging_apm.formatters.structlog_formatter"}`` in ``LOGGING``; keyword arguments
    (``processors``, ``foreign_pre_chain``) replace the defaults, with ``structlog_event`` always first in
    the pre-chain. Ordinary records get ``timestamp``, ``level`` and ``logger`` added.
    """
    import structlog

    foreign = kwargs.pop("foreign_pre_chain", [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
    ])
    pre_chain = [structlog_event, *(_skip_for_events(p) for p in foreign)]
    processors = kwargs.pop("processors", [
        structlog.stdlib.ProcessorFormatter.remove_processors_meta,
        structlog.processors.JSONRenderer(serializer=_orjson_str),
    ])
    return _event_processor_formatter()(foreign_pre_chain=pre_chain, processors=processors, **kwargs)


@functools.cache
def _event_processor_formatter() -> Any:
    import structlog

    class EventProcessorFormatter(structlog.stdlib.ProcessorFormatter):
        """``ProcessorFormatter`` that hands a timing event straight to ``processors``.

        The stock ``format`` copies the record (``makeLogRecord``) and renders ``str(record.msg)`` before the
        pre-chain replaces it: about 8 microseconds wasted per event. Other records take the stock path.
        """

        def format(self, record: logging.LogRecord) -> str:
            event = event_of(record)
            if event is None or self._style._fmt != "%(message)s":
                return super().format(record)  # type: ignore[no-any-return]
            ed: Any = {**event, "_record": record, "_from_structlog": False}
            method = record.levelname.lower()
            for proc in self.processors:
                ed = proc(self.logger, method, ed)
            return ed  # type: ignore[no-any-return]

    return EventProcessorFormatter


def _orjson_str(obj: Any, **_kw: Any) -> str:
    return orjson.dumps(obj, default=_default, option=_OPTIONS).decode()


def _skip_for_events(processor: Any) -> Any:
    """Run ``processor`` on ordinary records only: a timing event must stay exactly as emitted."""

    def wrapped(logger: Any, method_name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        if SCHEMA_FIELD in event_dict:
            return event_dict
        return processor(logger, method_name, event_dict)  # type: ignore[no-any-return]

    return wrapped
