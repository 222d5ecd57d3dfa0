"""The formatters: events unchanged in each; an app's own records (stdlib or structlog) still formatted."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import structlog

from logging_apm.formatters import EventJsonFormatter, OrjsonFormatter, structlog_formatter

EVENT = {"timestamp": "2026-01-01T00:00:00.000Z", "apm.schema": 1, "apm.kind": "cache", "duration_ms": 0.5,
         "outcome": "success", "cache.name": "default", "cache.operation": "get", "cache.hit": True,
         "cache.keys": 1}


def _record(msg: Any, *args: Any, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            import sys

            exc_info = sys.exc_info()
    return logging.LogRecord("app.views", logging.WARNING, __file__, 1, msg, args or None, exc_info)


@pytest.mark.parametrize("formatter", [OrjsonFormatter(), EventJsonFormatter(), structlog_formatter()],
                         ids=["orjson", "python-json-logger", "structlog"])
def test_event_written_exactly_as_emitted(formatter: logging.Formatter) -> None:
    """The formatted line decodes to the event dict itself: same keys, same values, nothing added."""
    assert json.loads(formatter.format(_record(dict(EVENT)))) == EVENT


@pytest.mark.parametrize("formatter", [OrjsonFormatter(), EventJsonFormatter(), structlog_formatter()],
                         ids=["orjson", "python-json-logger", "structlog"])
def test_ordinary_record_is_one_json_object(formatter: logging.Formatter) -> None:
    """An app log line with args and a traceback sent to the same handler is one JSON object, no newline."""
    line = formatter.format(_record("user %s failed", "bob", exc=True))
    assert "\n" not in line
    doc = json.loads(line)
    assert "apm.schema" not in doc
    text = json.dumps(doc)
    assert "user bob failed" in text and "ValueError" in text


def test_structlog_app_logs_through_the_same_formatter() -> None:
    """In an app on structlog (stdlib integration), its own log entries render through our formatter too."""
    formatter = structlog_formatter()
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Collect()
    handler.setFormatter(formatter)
    logger = logging.getLogger("structlog_app_test")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    log = structlog.wrap_logger(logger, processors=[
        structlog.stdlib.add_log_level, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.stdlib.BoundLogger)
    log.info("order placed", order_id=7)
    logger.info(dict(EVENT))
    first, second = (json.loads(x) for x in lines)
    assert first["event"] == "order placed" and first["order_id"] == 7 and first["level"] == "info"
    assert second == EVENT


def test_python_json_logger_options_are_honoured_for_events() -> None:
    """The reused encoder keeps python-json-logger's options: ensure_ascii, its default for odd types,
    prefix; a custom serializer is still called."""
    import datetime

    event = {**EVENT, "cache.name": "café", "extra": datetime.date(2026, 1, 2)}
    line = EventJsonFormatter().format(_record(dict(event)))
    assert "caf\\u00e9" in line and json.loads(line)["extra"] == "2026-01-02"
    unicode_line = EventJsonFormatter(json_ensure_ascii=False, prefix="@").format(_record(dict(event)))
    assert unicode_line.startswith("@") and "café" in unicode_line
    calls: list[Any] = []

    def serializer(obj: Any, **kwargs: Any) -> str:
        calls.append(obj)
        return json.dumps(obj, default=str)

    EventJsonFormatter(json_serializer=serializer).format(_record(dict(EVENT)))
    assert calls == [EVENT]
