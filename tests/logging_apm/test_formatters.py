"""The formatters: events unchanged in each; an app's own records (stdlib or structlog) still formatted."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
import structlog

from logging_apm import middleware as mw
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


def _random_text(rng: Any, alphabet: str = 'abz/<>:_-.{}%"\\\n\t\x00\x1féø€😀\u2028 ') -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 12)))


def test_request_line_shortcut_writes_the_bytes_of_the_dict_path() -> None:
    """OrjsonFormatter.format_request (the request event's line without its dict) gives exactly the bytes of
    the dict path (build_request + format_event) for every event it accepts, over random routes, statuses,
    errors, durations, spans and resources; and it accepts every ordinary request event."""
    import math
    import random
    from http import HTTPStatus

    from logging_apm import emit, tracing
    from logging_apm.conf import AppSettings

    rng = random.Random(20261129)
    emitters = [emit.Emitter(AppSettings(enabled=True, service_name=name, environment=env, host_name=host))
                for name, env, host in (("shop", "prod", "web-1"), ('we"ird{}', "é\n", "h\\o"),
                                        ("s", "", "%s{0}"))]
    # A resource attribute named like a leading field replaces its value in the dict (the schema's stays).
    emitters.append(emit.Emitter(AppSettings(enabled=True, service_name="x",
                                             resource={"apm.schema": 2,  # type: ignore[dict-item]
                                                       "timestamp": "t", "service.name": "x"})))
    colliding = emit.Emitter(AppSettings(enabled=True, service_name="shop"))
    colliding._base["http.route"] = "resource value"  # the dict would keep this key where the resource is
    formatter = OrjsonFormatter()
    accepted = 0
    for case in range(20_000):
        emitter = colliding if case % 97 == 0 else rng.choice(emitters)
        root = tracing.new_root()
        span = rng.choice([root, root.child(), tracing.TraceContext(root.trace_id, root.span_id, None, False),
                           None if case % 50 == 0 else root])
        duration = rng.choice([rng.random() * 10 ** rng.randrange(-7, 14), 0.0, -1.5, 0.0004999, 0.0005,
                               999.9995, 1e12, float("nan"), 123.456])
        status = rng.choice([200, 201, 204, 301, 404, 500, 503, 599, 0, 999, 1000, -1, True, HTTPStatus.OK])
        error = rng.choice([None, None, "RuntimeError", str(status), _random_text(rng)])
        route = rng.choice(["ping/", "api/stories/<int:story_id>/", "<unmatched>", _random_text(rng)])
        method = rng.choice([*sorted(mw.KNOWN_METHODS), mw.OTHER_METHOD, _random_text(rng)])
        end = rng.choice([time.time(), 1.9999999, 0.0, 1_700_000_000.9995])
        pending = (emit.REQUEST, emitter, duration, method, route, status, error, span, end)
        line = formatter.format_request(pending)
        ordinary = emitter is not colliding and span is not None and type(status) is int \
            and 0 <= status < 1000 and not math.isnan(duration) and duration < 1e12
        assert (line is not None) == ordinary, pending
        if line is not None:
            accepted += 1
            assert line == formatter.format_event(emit.build_request(pending)) + b"\n", pending
    assert accepted > 10_000


def test_format_event_same_bytes_as_the_full_orjson_call() -> None:
    """format_event tries orjson without options first: the same bytes, or the same error, as the full
    call with the default and OPT_NON_STR_KEYS, whatever the event holds."""
    import random

    import orjson

    from logging_apm.formatters import _OPTIONS, _default

    rng = random.Random(7)

    def value(depth: int = 0) -> Any:
        pick = rng.randrange(10)
        if pick == 0:
            return rng.random() * 10 ** rng.randrange(-8, 20)
        if pick == 1:
            return rng.randrange(-2**66, 2**66)
        if pick == 2:
            return _random_text(rng)
        if pick == 3 and depth < 2:
            return {rng.choice(["a", "b.c", "é", 1, 2.5, None, True]): value(depth + 1) for _ in range(3)}
        if pick == 4 and depth < 2:
            return [value(depth + 1) for _ in range(3)]
        if pick == 5:
            return rng.choice([float("inf"), float("nan"), -0.0, None, True, False])
        if pick == 6:
            return rng.choice([{1, 2}, b"x", 1j, Path("/tmp")])
        return rng.randrange(1000)

    def outcome(call: Any, event: dict[str, Any], **options: Any) -> Any:
        try:
            return call(event, **options)
        except Exception as exc:
            return type(exc)

    formatter = OrjsonFormatter()
    for _ in range(20_000):
        event = {f"k{i}": value() for i in range(4)}
        assert outcome(formatter.format_event, event) == \
            outcome(orjson.dumps, event, default=_default, option=_OPTIONS), event
