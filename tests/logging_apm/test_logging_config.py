"""build_logging(): the LOGGING dict writes timing events as JSON lines, in each format, off-thread.

The end-to-end cases run in a child process so that the process's logging configuration is the one under
test and the exit path (queued lines written at exit) is real.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from logging_apm.handlers import BackgroundHandler
from logging_apm.logging_config import build_logging
from logging_apm.testing import read_events

ROOT = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent("""
    import logging, logging.config, sys, json
    from logging_apm.logging_config import build_logging
    from logging_apm import emit, tracing
    kwargs = json.loads(sys.argv[1])
    logging.config.dictConfig(build_logging(**kwargs))
    emit.configure(service_name="svc", environment="test", version="1.2.3")
    with tracing.start_span():
        for i in range(500):
            emit.emit("db", 1.5, "success", {"db.system": "postgresql", "db.response.returned_rows": i})
        emit.emit("request", 12.25, "failure", {"http.request.method": "GET", "http.route": "x/<int:id>/",
                  "http.response.status_code": 500, "error.type": "ValueError"})
    logging.getLogger("app").warning("an ordinary %s line", "app")
    # no explicit flush or close: the exit path must write what is queued
""")


def _run_child(tmp_path: Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("APM_LOG_FILE", None)
    return subprocess.run([sys.executable, "-c", CHILD, json.dumps(kwargs)], capture_output=True, text=True,
                          timeout=120, env=env, cwd=tmp_path, check=True)


@pytest.mark.parametrize("fmt", ["orjson", "json", "structlog"])
def test_each_format_writes_valid_event_lines_to_a_file(tmp_path: Path, fmt: str) -> None:
    """orjson, python-json-logger and structlog's ProcessorFormatter all write schema-1 lines, all of them."""
    path = tmp_path / "logs" / "events.log"
    _run_child(tmp_path, filename=str(path), stdout=False, format=fmt)
    events = read_events(path)
    assert len(events) == 501
    assert [e["db.response.returned_rows"] for e in events[:500]] == list(range(500))
    request = events[-1]
    assert request["service.name"] == "svc" and request["service.version"] == "1.2.3"
    assert request["error.type"] == "ValueError"
    # Exactly what was emitted: no "message", "level" or other keys added to an event.
    assert set(request) == {"timestamp", "apm.schema", "apm.kind", "duration_ms", "outcome", "service.name",
                            "deployment.environment", "service.version", "host.name", "trace_id", "span_id", "parent_span_id",
                            "http.request.method", "http.route", "http.response.status_code", "error.type"}


def test_stdout_output(tmp_path: Path) -> None:
    """Without a file, events go to stdout as JSON lines (containers)."""
    result = _run_child(tmp_path, format="orjson")
    assert len(read_events(result.stdout.splitlines())) == 501


def test_events_logger_is_dedicated_and_does_not_propagate() -> None:
    """The config routes logging_apm.events only, without propagation, and keeps an existing LOGGING."""
    base = {"version": 1, "handlers": {"console": {"class": "logging.StreamHandler"}},
            "root": {"handlers": ["console"]}}
    config = build_logging("/tmp/x.log", base=base, environ={})
    assert config["root"] == {"handlers": ["console"]} and "console" in config["handlers"]
    assert config["loggers"]["logging_apm.events"] == {"handlers": ["logging_apm"], "level": "INFO",
                                                        "propagate": False}
    assert base == {"version": 1, "handlers": {"console": {"class": "logging.StreamHandler"}},
                    "root": {"handlers": ["console"]}}


def test_extra_handler_by_dotted_path_is_not_imported() -> None:
    """A handler named by dotted path (e.g. a Fluent forward handler) is added without importing it."""
    config = build_logging("/tmp/x.log", extra_handlers={"fluent": {
        "class": "logging_apm.not_written_yet.ForwardHandler", "host": "127.0.0.1"}}, environ={})
    assert config["handlers"]["fluent"]["class"] == "logging_apm.not_written_yet.ForwardHandler"
    assert config["loggers"]["logging_apm.events"]["handlers"] == ["logging_apm", "fluent"]
    assert "logging_apm.not_written_yet" not in sys.modules
    listed = build_logging("/tmp/x.log", extra_handlers=["logging.NullHandler"], environ={})
    assert listed["handlers"]["logging_apm_nullhandler"] == {"class": "logging.NullHandler"}


def test_extra_handler_receives_events(tmp_path: Path) -> None:
    """dictConfig resolves the extra handler, and it receives each event record next to the file handler."""
    code = textwrap.dedent("""
        import logging, logging.config, sys
        from logging_apm.logging_config import build_logging
        from logging_apm import emit
        logging.config.dictConfig(build_logging(sys.argv[1], extra_handlers=["logging.StreamHandler"]))
        emit.configure()
        emit.emit("cache", 0.5, "success", {"cache.name": "default", "cache.operation": "get"})
    """)
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "e.log")], capture_output=True,
                            text=True, timeout=60, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert "'cache.operation': 'get'" in result.stderr  # StreamHandler's default str() of the record
    assert len(read_events(tmp_path / "e.log")) == 1


def test_environment_drives_the_defaults() -> None:
    """APM_LOG_FILE, APM_LOG_STDOUT, APM_LOG_FORMAT, APM_LOG_QUEUE_SIZE are read when arguments are absent."""
    config = build_logging(environ={"APM_LOG_FILE": "/var/log/a.log", "APM_LOG_STDOUT": "true",
                                    "APM_LOG_FORMAT": "structlog", "APM_LOG_QUEUE_SIZE": "7"})
    handler = config["handlers"]["logging_apm"]
    assert handler["filename"] == "/var/log/a.log" and handler["stream"] == "ext://sys.stdout"
    assert handler["max_queue"] == 7
    assert config["formatters"]["logging_apm"] == {"()": "logging_apm.formatters.structlog_formatter"}
    with pytest.raises(ValueError, match="unknown log format"):
        build_logging(environ={"APM_LOG_FORMAT": "xml"})
    with pytest.raises(ValueError, match="no output"):
        build_logging(stdout=False, environ={})
    with pytest.raises(ValueError, match="not a boolean"):
        build_logging(environ={"APM_LOG_STDOUT": "maybe"})


def _record(i: int) -> logging.LogRecord:
    event = {"timestamp": "2026-01-01T00:00:00.000Z", "apm.schema": 1, "apm.kind": "cache",
             "duration_ms": 0.1, "cache.name": "default", "cache.operation": "get", "cache.keys": i}
    return logging.LogRecord("logging_apm.events", logging.INFO, "", 0, event, None, None)


def _handler(path: Path, **kwargs: object) -> BackgroundHandler:
    from logging_apm.formatters import OrjsonFormatter

    handler = BackgroundHandler(path, **kwargs)  # type: ignore[arg-type]
    handler.setFormatter(OrjsonFormatter())
    return handler


def test_logrotate_move_and_create_loses_nothing(tmp_path: Path) -> None:
    """After the file is moved away (logrotate), new lines go to a new file at the path; none are lost."""
    path = tmp_path / "events.log"
    handler = _handler(path)
    try:
        for i in range(100):
            handler.handle(_record(i))
        handler.flush()
        path.rename(tmp_path / "events.log.1")
        for i in range(100, 150):
            handler.handle(_record(i))
        handler.flush()
    finally:
        handler.close()
    old = [json.loads(x)["cache.keys"] for x in (tmp_path / "events.log.1").read_text().splitlines()]
    new = [json.loads(x)["cache.keys"] for x in path.read_text().splitlines()]
    assert old == list(range(100)) and new == list(range(100, 150))
    assert handler.stats["written"] == 150 and handler.stats["received"] == 150


def test_full_queue_drops_and_counts(tmp_path: Path) -> None:
    """When the queue is full, records are dropped and counted, never blocking the caller."""
    path = tmp_path / "events.log"
    handler = _handler(path, max_queue=10)
    handler._start = lambda: None  # type: ignore[method-assign]  # no listener: the queue can only fill up
    handler._thread = object()  # type: ignore[assignment]
    for i in range(25):
        handler.handle(_record(i))
    assert handler.stats["dropped.queue_full"] == 15
    handler._thread = None
    handler.close()  # writes what was queued, inline
    assert len(path.read_text().splitlines()) == 10


def test_unserialisable_values_do_not_lose_the_line(tmp_path: Path) -> None:
    """A value orjson cannot encode is written as its str(); the line is still one valid JSON object."""
    path = tmp_path / "events.log"
    handler = _handler(path)
    record = _record(1)
    record.msg["cache.name"] = Path("/x")  # type: ignore[index]
    handler.handle(record)
    handler.close()
    assert json.loads(path.read_text())["cache.name"] == "/x"


def test_unusable_path_fails_at_configuration(tmp_path: Path) -> None:
    """A file that cannot be opened is an error when LOGGING is applied, not a silent loss later."""
    (tmp_path / "dir").mkdir()
    with pytest.raises(OSError):
        BackgroundHandler(tmp_path / "dir")


def test_records_after_close_are_counted_not_lost_silently(tmp_path: Path) -> None:
    """A record arriving after the handler closed (e.g. from another atexit hook) is counted as dropped."""
    handler = _handler(tmp_path / "events.log")
    handler.handle(_record(1))
    handler.close()
    handler.handle(_record(2))
    assert handler.enqueue_event(dict(_record(3).msg)) is True  # type: ignore[call-overload]
    assert handler.stats["dropped.closed"] == 2
    assert len((tmp_path / "events.log").read_text().splitlines()) == 1


def test_fast_path_snapshots_the_event_at_emit_time(tmp_path: Path) -> None:
    """With one background handler the event is built in the listener thread, yet from what was true at
    emit(): the caller's trace context and attributes (a dict the caller changes afterwards does not leak)."""
    from logging_apm import tracing
    from logging_apm.conf import AppSettings
    from logging_apm.emit import Emitter

    logger = logging.getLogger("logging_apm.test_fast_path")
    logger.propagate = False
    handler = _handler(tmp_path / "events.log")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        emitter = Emitter(AppSettings(enabled=True, service_name="svc", resource={"service.name": "svc"}),
                          logger)
        attrs = {"cache.name": "default", "cache.operation": "get", "cache.keys": 1}
        with tracing.start_span() as span:
            emitter.emit("cache", 0.25, "success", attrs)
        attrs["cache.keys"] = 99
        handler.flush()
    finally:
        logger.removeHandler(handler)
        handler.close()
    [event] = read_events(tmp_path / "events.log")
    assert event["cache.keys"] == 1 and event["service.name"] == "svc"
    assert event["trace_id"] == span.trace_id and event["parent_span_id"] == span.span_id
