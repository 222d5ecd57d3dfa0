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


def _random_value(rng: Any, *, texts: int, width: int, odd: list[Any], depth: int = 0) -> Any:
    """A value of an event field for the formatters' equivalence tests: floats of any size, ints past 64 bits,
    odd text (``texts`` times as likely as one other kind), dicts and lists of ``width`` values (two levels
    deep at most) with non-str keys, infinities, NaN, -0.0, None, booleans, and the ``odd`` types only a
    default hook can write."""
    pick = rng.randrange(9 + texts)
    if pick == 0:
        return rng.random() * 10 ** rng.randrange(-8, 20)
    if pick == 1:
        return rng.randrange(-2**66, 2**66)
    pick -= texts - 1
    if pick < 3:
        return _random_text(rng)
    if pick in (3, 4) and depth < 2:
        def inner() -> Any:
            return _random_value(rng, texts=texts, width=width, odd=odd, depth=depth + 1)

        if pick == 3:
            return {rng.choice(["a", "b.c", "é", 1, 2.5, None, True]): inner() for _ in range(width)}
        return [inner() for _ in range(width)]
    if pick == 5:
        return rng.choice([float("inf"), float("nan"), -0.0, None, True, False])
    if pick == 6:
        return rng.choice(odd)
    return rng.randrange(1000)


def _odd_emitters(resource: dict[str, Any]) -> list[Any]:
    """Emitters whose resource values need escaping, and one with the given resource attributes (named like
    event fields: in the event dict they replace those fields' values, the schema's excepted)."""
    from logging_apm import emit
    from logging_apm.conf import AppSettings

    emitters = [emit.Emitter(AppSettings(enabled=True, service_name=name, environment=env, host_name=host))
                for name, env, host in (("shop", "prod", "web-1"), ('we"ird{}', "é\n", "h\\o"),
                                        ("s", "", "%s{0}"))]
    emitters.append(emit.Emitter(AppSettings(enabled=True, service_name="x", resource=resource)))
    return emitters


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
    # A resource attribute named like a leading field replaces its value in the dict (the schema's stays).
    emitters = _odd_emitters({"apm.schema": 2, "timestamp": "t", "service.name": "x"})
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

    def value() -> Any:
        return _random_value(rng, texts=1, width=3, odd=[{1, 2}, b"x", 1j, Path("/tmp")])

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


def _pjl_record_line(formatter: logging.Formatter, build: Any, pending: Any) -> Any:
    """What BackgroundHandler wrote for a pending event through a formatter without format_pending,
    format_request or format_event: its dict (``build(pending)``) in a record (the line, or the class of the
    error, which the handler counts as a format error)."""
    from logging_apm.emit import event_record

    try:
        line = formatter.format(event_record(build(pending))).encode()
    except Exception as exc:
        return type(exc)
    return line.replace(b"\n", b"\\n") + b"\n" if b"\n" in line else line + b"\n"


def _pjl_formatters() -> list[Any]:
    import datetime

    class Hooked(EventJsonFormatter):  # type: ignore[misc]
        def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
            log_data["hooked"] = True
            return log_data

    class OwnFormat(EventJsonFormatter):  # type: ignore[misc]
        def format(self, record: logging.LogRecord) -> str:
            return "own:" + super().format(record)

    class Compact(json.JSONEncoder):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**{**kwargs, "separators": (",", ":")})

    class Sorted(json.JSONEncoder):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**{**kwargs, "sort_keys": True})

    class OwnEncode(json.JSONEncoder):
        def encode(self, o: Any) -> str:
            return super().encode(o).replace("e", "E")

    def dates(value: Any) -> Any:
        if isinstance(value, datetime.date):
            return value.isoformat()
        raise TypeError("no")

    return [EventJsonFormatter(), EventJsonFormatter(json_ensure_ascii=False, prefix="@"),
            EventJsonFormatter(prefix="a\nb"), EventJsonFormatter(json_indent=2), Hooked(), OwnFormat(),
            EventJsonFormatter(json_encoder=Compact), EventJsonFormatter(json_encoder=Sorted),
            EventJsonFormatter(json_encoder=OwnEncode), EventJsonFormatter(json_default=dates),
            EventJsonFormatter(json_serializer=lambda obj, **kw: json.dumps(obj, default=str))]


def test_python_json_logger_shortcuts_write_the_bytes_of_the_record_path() -> None:
    """EventJsonFormatter's format_pending / format_request (no event dict) and format_event (no record)
    give BackgroundHandler exactly the bytes (or the failure) of the record path it took before, for random
    events: kinds, outcomes, durations (None, negative, nan, inf, huge), spans, attributes of every JSON type,
    unencodable ones, non-str keys, keys that collide with the event's own fields; emitters with odd
    resources; formatters with options, hooks, encoders and serializers of their own."""
    import datetime
    import random

    from logging_apm import emit, tracing
    from logging_apm.conf import AppSettings

    rng = random.Random(20261129)
    emitters = _odd_emitters({"apm.schema": 2, "timestamp": "t", "duration_ms": "d"})
    colliding = emit.Emitter(AppSettings(enabled=True, service_name="shop"))
    colliding._base["span_id"] = "resource value"
    emitters.append(colliding)

    def value() -> Any:
        return _random_value(rng, texts=3, width=2, odd=[datetime.date(2026, 1, 2), b"x", 1j, Path("/tmp")])

    formatters = _pjl_formatters()
    shortcut = 0
    for case in range(6_000):
        formatter = formatters[case % len(formatters)]
        emitter = rng.choice(emitters)
        root = tracing.new_root()
        ids = rng.choice([None, root, root.child(), (root.trace_id, root.span_id, None),
                          ("t\"x", "é", 5) if case % 40 == 0 else root])
        duration = rng.choice([None, rng.random() * 10 ** rng.randrange(-7, 14), 0.0, -1.5, 0.0005,
                               999.9995, 1e12, float("nan"), float("inf"), 3])
        attrs: dict[Any, Any] = {rng.choice(["db.system", "db.query.text", "rows", "é", "cache.hit"]): value()
                 for _ in range(rng.randrange(0, 6))}
        if case % 30 == 0:
            attrs[rng.choice(["outcome", "trace_id", "parent_span_id", "service.name", "apm.kind", 7])] = value()
        kind = rng.choice(["db", "cache", "external", _random_text(rng)])
        outcome = rng.choice(["success", "failure", _random_text(rng)])
        end = rng.choice([time.time(), 1.9999999, 0.0, 1_700_000_000.9995])
        pending: Any = (emitter, kind, duration, outcome, attrs, ids, end)
        expected = _pjl_record_line(formatter, emit.build_pending, pending)
        try:
            line = formatter.format_pending(pending)
        except Exception as exc:
            line = type(exc)
        if line is not None:
            shortcut += 1
            assert line == expected, (pending, formatter)
        try:
            via_event = formatter.format_event(emit.build_pending(pending)) + b"\n"
        except Exception as exc:
            via_event = type(exc)
        assert via_event == expected, (pending, formatter)
        if case % 3 == 0:
            error = rng.choice([None, "RuntimeError", _random_text(rng)])
            request = (emit.REQUEST, emitter, duration if duration is not None else 1.0,
                       rng.choice(["GET", "_OTHER", _random_text(rng)]), rng.choice(["ping/", _random_text(rng)]),
                       rng.choice([200, 404, 500, True]), error, ids, end)
            expected = _pjl_record_line(formatter, emit.build_request, request)
            try:
                line = formatter.format_request(request)
            except Exception as exc:
                line = type(exc)
            assert line is None or line == expected, (request, formatter)
    assert shortcut > 1_000


def test_python_json_logger_encoder_recovers_after_a_failure() -> None:
    """The reused C encoder: after an event it cannot write (a circular attribute) the next one is written
    as before; and a call while its markers are in use (another thread inside it) is written right too."""
    from logging_apm import emit
    from logging_apm.conf import AppSettings

    def refuse(value: Any) -> Any:
        raise TypeError(f"not JSON: {value!r}")

    formatter = EventJsonFormatter(json_default=refuse)
    emitter = emit.Emitter(AppSettings(enabled=True, service_name="shop"))
    loop: list[Any] = []
    loop.append(loop)
    good = {"rows": [1, 2], "db.system": "sqlite"}
    expected = _pjl_record_line(formatter, emit.build_pending, (emitter, "db", 1.0, "success", good, None, 5.0))
    for bad in ({"rows": loop}, {"rows": [{"a": 1j}]}):
        with pytest.raises((ValueError, TypeError)):
            formatter.format_pending((emitter, "db", 1.0, "success", bad, None, 5.0))
        assert not formatter.__dict__["_apm_scan"].markers
        assert formatter.format_pending((emitter, "db", 1.0, "success", good, None, 5.0)) == expected
    scan: Any = formatter._apm_scan
    scan.markers[1] = object()  # as while another thread is inside it
    assert formatter.format_pending((emitter, "db", 1.0, "success", good, None, 5.0)) == expected


def test_request_line_in_c_writes_the_bytes_of_the_python_method() -> None:
    """logging_apm._speedups.RequestLine (installed as OrjsonFormatter's format_request when built) returns
    exactly what the Python method returns (bytes, None or the error) for random request events, ordinary
    and odd (error types, spans of other types or with surrogates, negative or huge end times, int and nan
    durations, float statuses, str subclasses); it writes most ordinary lines itself (its fallback, the
    method, is not called)."""
    import math
    import random

    from logging_apm import emit, tracing
    from logging_apm import formatters as fm

    if fm._RequestLine is None:
        pytest.skip("logging_apm._speedups is not built (or LOGAPM_NATIVE=0)")

    class Text(str):
        pass

    rng = random.Random(97)
    emitters = _odd_emitters({"http.route": "r"})  # the last one has no template: None
    formatter = OrjsonFormatter()
    assert type(formatter.format_request) is fm._RequestLine
    fallbacks: list[Any] = []

    def reference(self: OrjsonFormatter, pending: Any) -> Any:
        fallbacks.append(pending)
        return OrjsonFormatter.format_request(self, pending)

    make: Any = fm._RequestLine
    native = make(formatter, reference, fm._request_tails, fm._MILLIS, fm._FRACTIONS)

    def outcome(call: Any, *args: Any) -> Any:
        try:
            return call(*args)
        except Exception as exc:
            return type(exc)

    written = 0
    for case in range(20_000):
        emitter = emitters[0] if case % 3 else rng.choice(emitters)
        root = tracing.new_root()
        span = rng.choice([root, root, root.child(), (root.trace_id, root.span_id, None),
                           (Text(root.trace_id), root.span_id, None), ("\ud800", "é", None), (1, 2, 3),
                           (root.trace_id, root.span_id), None, [root.trace_id, root.span_id, None]])
        duration = rng.choice([rng.random() * 10 ** rng.randrange(-7, 14), 0.0, -0.0, -1.5, 0.0005, 999.9995,
                               1e12, math.nan, math.inf, 3, True])
        end = rng.choice([time.time(), time.time(), 1.9999999, 0.0, -1.5, 1e17, math.nan, 1_700_000_000.9995, 7])
        pending = (emit.REQUEST, emitter, duration, rng.choice(["GET", "POST", _random_text(rng)]),
                   rng.choice(["ping/", "api/<int:id>/", "<unmatched>"]), rng.choice([200, 404, 500, 200.0]),
                   rng.choice([None, None, None, "RuntimeError", _random_text(rng)]), span, end)
        expected = outcome(OrjsonFormatter.format_request, formatter, pending)  # warms the caches it reads
        fallbacks.clear()
        assert outcome(native, pending) == expected, pending
        written += not fallbacks
    assert written > 1_000
    assert outcome(native, pending, pending) is TypeError


def test_request_line_in_c_reuses_the_last_tail_only_for_the_same_kind() -> None:
    """The C request line keeps the last (method, route, status) and its tail: consecutive requests of the
    same method and route objects with the same status (the same int object, or an equal one made anew), a
    different status, a different but equal route or method (as Django makes them: anew per request), a str
    subclass of the same text, other texts of the same length, and an unknown kind in between all give the
    Python method's bytes."""

    class Text(str):
        pass

    from logging_apm import emit, tracing
    from logging_apm import formatters as fm

    if fm._RequestLine is None:
        pytest.skip("logging_apm._speedups is not built (or LOGAPM_NATIVE=0)")

    formatter = OrjsonFormatter()
    emitter = _odd_emitters({})[0]
    root = tracing.new_root()
    route = "api/<int:id>/"
    kinds = [("GET", route, 200), ("GET", route, 200), ("GET", route, int("503")), ("GET", route, int("503")),
             ("GET", route, 404), ("GET", "".join(["api/", "<int:id>/"]), 404), ("POST", route, 404),
             ("GET", "never/seen/", 200), ("GET", route, 200), ("BREW", route, 200), ("GET", route, 200),
             ("get".upper(), route, 200), ("".join(["G", "ET"]), "".join(["api/", "<int:id>/"]), 200),
             ("PUT", route, 200), (Text("GET"), route, 200), ("GET", "api/<int:ix>/", 200), ("GET", route, 200),
             ("GET", "api/<int:íd>/", 200), ("GET", "".join(["api/", "<int:íd>/"]), 200)]
    for method, path, status in kinds * 3:
        pending = (emit.REQUEST, emitter, 2.5, method, path, status, None, root, time.time())
        expected = OrjsonFormatter.format_request(formatter, pending)  # fills the tails the C line reads
        assert formatter.format_request(pending) == expected


def test_request_line_in_c_with_request_parts_made_on_each_read() -> None:
    """A subclass whose _request_parts is made anew on each read (a property) still gets the Python method's
    lines from the C request line: the template it reads is its own reference (it read a freed tuple, which
    the key tuple it builds next took over: the method and route in place of the template)."""
    from logging_apm import emit, tracing
    from logging_apm import formatters as fm

    if fm._RequestLine is None:
        pytest.skip("logging_apm._speedups is not built (or LOGAPM_NATIVE=0)")

    class Fresh(OrjsonFormatter):
        @property  # type: ignore[override]
        def _request_parts(self) -> Any:
            parts = self.__dict__.get("_parts")
            return None if parts is None else (parts[0], None if parts[1] is None else tuple(list(parts[1])))

        @_request_parts.setter
        def _request_parts(self, parts: Any) -> None:
            self.__dict__["_parts"] = parts

    formatter = Fresh()
    assert type(formatter.format_request) is fm._RequestLine
    emitter = _odd_emitters({})[0]
    root = tracing.new_root()
    for case in range(200):
        pending = (emit.REQUEST, emitter, case / 7, "GET", "ping/", 200, None, root, time.time())
        assert formatter.format_request(pending) == OrjsonFormatter.format_request(formatter, pending)


def test_request_line_in_c_reads_a_span_as_python_indexes_it() -> None:
    """A span of a tuple subclass with its own __getitem__ gives the ids that indexing gives (the Python
    method reads span[0], span[1], span[2]); the C request line read the tuple's items past it."""
    from logging_apm import emit, tracing
    from logging_apm import formatters as fm

    if fm._RequestLine is None:
        pytest.skip("logging_apm._speedups is not built (or LOGAPM_NATIVE=0)")

    root = tracing.new_root()

    class Span(tuple):  # type: ignore[type-arg]
        def __getitem__(self, index: Any) -> Any:
            return (root.trace_id, root.span_id, None)[index]

    formatter = OrjsonFormatter()
    emitter = _odd_emitters({})[0]
    for span in (Span(("x", "y", "z")), root, root.child(), (root.trace_id, root.span_id, None)):
        pending = (emit.REQUEST, emitter, 1.5, "GET", "ping/", 200, None, span, time.time())
        expected = OrjsonFormatter.format_request(formatter, pending)  # fills the caches the C line reads
        assert formatter.format_request(pending) == expected


def test_request_line_in_c_not_installed_over_a_subclass_method() -> None:
    """A subclass that overrides format_request keeps its own."""

    class Own(OrjsonFormatter):
        def format_request(self, pending: tuple[Any, ...]) -> bytes | None:
            return b"own\n"

    assert Own().format_request(()) == b"own\n"


@pytest.mark.parametrize("make", [OrjsonFormatter, EventJsonFormatter], ids=["orjson", "python-json-logger"])
def test_formatters_copy_and_pickle_after_use(make: Any) -> None:
    """A used formatter (its caches and, for orjson, the C request line filled) deep-copies and pickles as
    before; the copy writes the same lines and keeps its own request line."""
    import copy
    import pickle

    from logging_apm import emit, tracing
    from logging_apm.conf import AppSettings

    emitter = emit.Emitter(AppSettings(enabled=True, service_name="shop"))
    request = (emit.REQUEST, emitter, 1.5, "GET", "ping/", 200, None, tracing.new_root(), 1_700_000_000.5)
    pending = (emitter, "db", 2.0, "success", {"db.system": "sqlite"}, None, 1_700_000_000.5)
    formatter = make()
    lines = [formatter.format_request(request), formatter.format_request(request),
             formatter.format_event(emit.build_pending(pending))]
    for other in (copy.deepcopy(formatter), copy.copy(formatter), pickle.loads(pickle.dumps(formatter))):
        assert [other.format_request(request), other.format_request(request),
                other.format_event(emit.build_pending(pending))] == lines
        assert type(other.format_request) is type(formatter.format_request)
        if "format_request" in vars(other):
            assert vars(other)["format_request"] is not vars(formatter)["format_request"]
