"""Test helpers, public API: capture the events an app emits and check them against the schema.

    from logging_apm.testing import capture_events

    with capture_events() as events:
        client.get("/api/stories/1/")
    assert events.of_kind("request")[0]["http.route"] == "api/stories/<int:story_id>/"

Every captured event is validated against the committed JSON Schema when ``jsonschema`` is installed (it
is, with the ``dev`` extra), so a test that emits an invalid event fails where it was emitted.
``read_events(path)`` does the same for the lines a real process wrote to its log file.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from logging_apm.emit import EVENT_LOGGER, Emitter, configure, get_emitter
from logging_apm.schema import KIND_FIELD, SCHEMA_FIELD, json_schema

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "schema" / "event-v1.schema.json"


@functools.cache
def _validator() -> Any:
    try:
        import jsonschema
    except ImportError:  # pragma: no cover - dev extra not installed
        return None
    schema = json.loads(SCHEMA_FILE.read_text()) if SCHEMA_FILE.exists() else json_schema()
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def validate_event(event: dict[str, Any]) -> None:
    """Raise ``AssertionError`` naming the problem when ``event`` does not match schema 1."""
    validator = _validator()
    if validator is None:
        return
    # Round-trip through JSON so that what is checked is what a formatter would write.
    doc = json.loads(json.dumps(event, default=str))
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
    if errors:
        detail = "; ".join(f"{'/'.join(map(str, e.path)) or '<root>'}: {e.message}" for e in errors[:5])
        raise AssertionError(f"event does not match schema 1: {detail}\n{doc}")


def read_events(source: str | Path | list[str]) -> CapturedEvents:
    """The timing events of a JSON-lines file (or of its lines), each validated against schema 1.

    Every line must be one JSON object (ordinary log lines are allowed and skipped); an event that does not
    match the schema raises ``AssertionError``, naming the problem.
    """
    lines = source if isinstance(source, list) else Path(source).read_text().splitlines()
    events = CapturedEvents()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        doc = json.loads(line)
        if not isinstance(doc, dict):
            raise AssertionError(f"line {number} is not a JSON object: {line[:200]}")
        if doc.get(SCHEMA_FIELD) == 1:
            validate_event(doc)
            events.append(doc)
    return events


class CapturedEvents(list[dict[str, Any]]):
    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self if e.get(KIND_FIELD) == kind]


class _CaptureHandler(logging.Handler):
    def __init__(self, sink: CapturedEvents, validate: bool) -> None:
        super().__init__(logging.DEBUG)
        self.sink = sink
        self.validate = validate
        self.lock_ = threading.Lock()
        self.problems: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        event = record.msg
        if not isinstance(event, dict):
            return
        if self.validate:
            try:
                validate_event(event)
            except AssertionError as exc:
                self.problems.append(str(exc))
        with self.lock_:
            self.sink.append(dict(event))


@contextmanager
def capture_events(*, validate: bool = True, enable: bool = True, **settings: Any) -> Iterator[CapturedEvents]:
    """Collect the events emitted inside the block (from any thread), validating each one.

    With ``enable`` (the default) the process-wide emitter is switched on for the block (with ``settings``
    as overrides of the environment) when it is not already; the previous emitter is restored after.
    """
    events = CapturedEvents()
    handler = _CaptureHandler(events, validate)
    logger = logging.getLogger(EVENT_LOGGER)
    previous: Emitter = get_emitter()
    previous_level = logger.level
    if enable and (not previous.enabled or settings):
        configure(**{"enabled": True, **settings})
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield events
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous_level)
        if enable and get_emitter() is not previous:
            import logging_apm.emit as _emit

            _emit._emitter = previous
    if handler.problems:
        raise AssertionError("\n".join(handler.problems))
