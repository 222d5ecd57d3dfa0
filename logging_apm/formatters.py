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

from logging_apm.schema import SCHEMA_FIELD

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

    def format_event(self, event: dict[str, Any]) -> bytes:
        """One event dict as JSON bytes (no record needed: ``BackgroundHandler``'s fast path)."""
        # Without keyword arguments orjson skips their parsing and its non-str-key path: about 30% less per
        # event. An event it cannot write that way (a non-str key, a value only ``_default`` can render)
        # raises TypeError and is written by the full call: the same bytes (or error) as before, always.
        try:
            return _dumps(event)
        except TypeError:
            return _dumps(event, default=_default, option=_OPTIONS)

    def format_bytes(self, record: logging.LogRecord) -> bytes:
        event = event_of(record)
        return orjson.dumps(event if event is not None else _plain(record, self), default=_default,
                            option=_OPTIONS)

    def format(self, record: logging.LogRecord) -> str:
        return self.format_bytes(record).decode()


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
