"""The event line, schema 1: the one definition that emitters, parsers, docs and tests share.

Every field of a timing event is declared once below, with its JSON type, the kinds that carry it and a
description. From this table come: the JSON Schema file committed at ``schema/event-v1.schema.json``
(``python -m logging_apm.schema > schema/event-v1.schema.json``; a test fails when the file and this module
disagree), the docs page ``docs/schema.md``, and the parsers' typed decoder (a test checks that the decoder
declares exactly these fields).

Attribute names follow OpenTelemetry semantic conventions where one exists; ``apm.*`` marks our own.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Final, Literal

SCHEMA_VERSION: Final = 1
SCHEMA_FIELD: Final = "apm.schema"
KIND_FIELD: Final = "apm.kind"

Kind = Literal["request", "db", "cache", "external", "task", "metric"]
KINDS: Final[tuple[str, ...]] = ("request", "db", "cache", "external", "task", "metric")
OUTCOMES: Final[tuple[str, ...]] = ("success", "failure")
TASK_STATES: Final[tuple[str, ...]] = ("success", "failure", "retry")
METRIC_TYPES: Final[tuple[str, ...]] = ("count", "gauge")

# Bounds a well-formed event never exceeds; the parsers reject anything outside them as invalid.
MAX_DURATION_MS: Final = 7 * 24 * 3600 * 1000.0  # a week: longer than any timed operation can be
MAX_STRING_LENGTH: Final = 4096


@dataclass(frozen=True, slots=True)
class Field:
    """One attribute of the event line."""

    name: str
    type: Literal["string", "integer", "number", "boolean", "object"]
    kinds: tuple[str, ...]  # the kinds that may carry it; () means every kind
    description: str
    required: bool = False  # required for every kind in ``kinds`` (or every kind when empty)
    enum: tuple[str, ...] | tuple[int, ...] | None = None
    pattern: str | None = None
    minimum: float | None = None
    maximum: float | None = None


_HEX32 = "^[0-9a-f]{32}$"
_HEX16 = "^[0-9a-f]{16}$"
_RFC3339_MS_Z = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$"

FIELDS: Final[tuple[Field, ...]] = (
    # Common to every kind.
    Field("timestamp", "string", (), "When the operation ended: RFC 3339 UTC with milliseconds and `Z`.",
          required=True, pattern=_RFC3339_MS_Z),
    Field(SCHEMA_FIELD, "integer", (), "Marks a timing event; always 1 for this schema.", required=True,
          enum=(SCHEMA_VERSION,)),
    Field(KIND_FIELD, "string", (), "What was timed.", required=True, enum=KINDS),
    Field("duration_ms", "number", ("request", "db", "cache", "external", "task"),
          "Wall time of the operation in milliseconds (absent for `metric`).", required=True,
          minimum=0, maximum=MAX_DURATION_MS),
    Field("outcome", "string", (), "`success` or `failure`.", enum=OUTCOMES),
    Field("service.name", "string", (), "Unified service tag: the service's name."),
    Field("deployment.environment", "string", (), "Unified service tag: production, staging, ..."),
    Field("service.version", "string", (), "Unified service tag: the deployed version."),
    Field("host.name", "string", (), "Unified service tag: the host (or pod) that emitted the event."),
    Field("trace_id", "string", (), "W3C trace id of the operation (32 lowercase hex).", pattern=_HEX32),
    Field("span_id", "string", (), "W3C span id of the operation (16 lowercase hex).", pattern=_HEX16),
    Field("parent_span_id", "string", (), "Span id of the operation's parent (16 lowercase hex).",
          pattern=_HEX16),
    Field("error.type", "string", (), "Exception class on failure."),
    # request
    Field("http.request.method", "string", ("request",),
          "HTTP method, normalised (unknown verbs become `_OTHER`).", required=True),
    Field("http.route", "string", ("request",),
          "The URL pattern that matched (Django route template), never the raw path.", required=True),
    Field("http.response.status_code", "integer", ("request", "external"),
          "HTTP status code of the response.", minimum=100, maximum=599),
    # db
    Field("db.system", "string", ("db",), "postgresql, sqlite, mysql, ...", required=True),
    Field("db.namespace", "string", ("db",), "The Django database alias."),
    Field("db.operation.name", "string", ("db",), "SELECT, INSERT, UPDATE, DELETE, ..."),
    Field("db.collection.name", "string", ("db",), "The main table of the statement."),
    Field("db.query.text", "string", ("db",), "The statement, obfuscated: no literal ever."),
    Field("db.query.fingerprint", "string", ("db",), "Stable hash of the obfuscated statement."),
    Field("db.response.returned_rows", "integer", ("db",), "Rows returned or affected.", minimum=-1),
    Field("db.executemany", "integer", ("db",), "Number of parameter sets of an executemany call."),
    # cache
    Field("cache.name", "string", ("cache",), "The Django cache alias.", required=True),
    Field("cache.operation", "string", ("cache",), "get, set, delete, get_many, ...", required=True),
    Field("cache.hit", "boolean", ("cache",), "Whether a read found its key(s); reads only."),
    Field("cache.keys", "integer", ("cache",), "Number of keys the call touched.", minimum=0),
    # external
    Field("peer.service", "string", ("external",), "s3, clerk, resend, rekognition, ...", required=True),
    Field("external.operation", "string", ("external",), "PutObject, send_email, GET, ..."),
    Field("server.address", "string", ("external",), "Host name of the remote service."),
    # task
    Field("task.name", "string", ("task",), "The Celery task name.", required=True),
    Field("messaging.destination.name", "string", ("task",), "The queue the task came from."),
    Field("task.state", "string", ("task",), "success, failure or retry.", enum=TASK_STATES),
    Field("task.queue_wait_ms", "number", ("task",), "Milliseconds from publish to start.", minimum=0),
    Field("task.retries", "integer", ("task",), "How many times the task had been retried.", minimum=0),
    # metric
    Field("metric.name", "string", ("metric",), "Name of a business metric or sampled gauge.",
          required=True, pattern=r"^[A-Za-z][A-Za-z0-9_.]{0,199}$"),
    Field("metric.type", "string", ("metric",), "`count` or `gauge`.", required=True, enum=METRIC_TYPES),
    Field("metric.value", "number", ("metric",), "The value.", required=True),
    Field("metric.tags", "object", ("metric",), "Tags of the metric: string to string."),
)

FIELDS_BY_NAME: Final[dict[str, Field]] = {f.name: f for f in FIELDS}


def fields_for(kind: str) -> tuple[Field, ...]:
    """The fields a kind may carry, common ones first."""
    return tuple(f for f in FIELDS if not f.kinds or kind in f.kinds)


def required_for(kind: str) -> tuple[str, ...]:
    return tuple(f.name for f in fields_for(kind) if f.required)


def _property(f: Field) -> dict[str, object]:
    prop: dict[str, object] = {"type": f.type, "description": f.description}
    if f.enum is not None:
        prop["enum"] = list(f.enum)
    if f.pattern is not None:
        prop["pattern"] = f.pattern
    if f.minimum is not None:
        prop["minimum"] = f.minimum
    if f.maximum is not None:
        prop["maximum"] = f.maximum
    if f.type == "string" and f.enum is None:
        prop["maxLength"] = MAX_STRING_LENGTH
    if f.type == "object":
        prop["additionalProperties"] = {"type": "string", "maxLength": MAX_STRING_LENGTH}
    return prop


def json_schema() -> dict[str, object]:
    """The JSON Schema (draft 2020-12) of a schema-1 event line.

    One branch per kind (``oneOf`` keyed on ``apm.kind``) so that each kind's required fields are checked and
    a field of another kind is refused. Extra fields outside the ``apm.``/known namespaces are allowed: an
    app may add its own attributes to its log lines.
    """
    branches = []
    for kind in KINDS:
        own = fields_for(kind)
        props = {f.name: _property(f) for f in own}
        props[KIND_FIELD] = {"const": kind}
        foreign = [f.name for f in FIELDS if f.kinds and kind not in f.kinds]
        branches.append({
            "title": kind,
            "properties": props,
            "required": list(required_for(kind)),
            "not": {"anyOf": [{"required": [name]} for name in foreign]} if foreign else {},
        })
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://github.com/logging-apm/logging-apm/schema/event-v1.schema.json",
        "title": "logging-apm timing event, schema 1",
        "type": "object",
        "required": [SCHEMA_FIELD, KIND_FIELD, "timestamp"],
        "oneOf": branches,
    }


def json_schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=False) + "\n"


def _markdown_type(f: Field) -> str:
    text: str = f.type
    if f.enum is not None:
        text += ": " + ", ".join(f"`{v}`" for v in f.enum)
    if f.pattern is not None:
        text += f" matching `{f.pattern}`"
    bounds = []
    if f.minimum is not None:
        bounds.append(f">= {f.minimum:g}")
    if f.maximum is not None:
        bounds.append(f"<= {f.maximum:g}")
    if bounds:
        text += " (" + ", ".join(bounds) + ")"
    return text.replace("|", "\\|")


def markdown() -> str:
    """The docs page ``docs/schema.md``, generated from ``FIELDS`` (a test checks the file is in step).

    Regenerate with ``python -m logging_apm.schema --markdown > docs/schema.md``.
    """
    out = [
        "# The event line, schema 1",
        "",
        "<!-- Generated from logging_apm/schema.py (FIELDS): do not edit by hand. Regenerate with",
        "     python -m logging_apm.schema --markdown > docs/schema.md -->",
        "",
        "One JSON object per line, UTF-8, no embedded newline. A line is a timing event when it carries",
        f'`"{SCHEMA_FIELD}": {SCHEMA_VERSION}`; other lines in the same stream (the app\'s ordinary logs) are',
        "counted and skipped by the aggregator. The machine-readable form is the JSON Schema",
        "`schema/event-v1.schema.json` (draft 2020-12), generated from the same table.",
        "",
        f"Kinds: {', '.join(f'`{k}`' for k in KINDS)}. Strings are at most {MAX_STRING_LENGTH} characters.",
        "A field listed for some kinds only is refused on the others; fields outside these names are allowed",
        "(an app may add its own attributes).",
        "",
    ]
    groups: list[tuple[str, tuple[Field, ...]]] = [("Every kind", tuple(f for f in FIELDS if not f.kinds))]
    for kind in KINDS:
        own = tuple(f for f in FIELDS if f.kinds and kind in f.kinds)
        groups.append((f"`{kind}`", own))
    for title, fields in groups:
        out += [f"## {title}", "", "| field | type | required | meaning |", "|---|---|---|---|"]
        for f in fields:
            required = "yes" if f.required else "no"
            description = f.description.replace("|", "\\|")
            out.append(f"| `{f.name}` | {_markdown_type(f)} | {required} | {description} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    sys.stdout.write(markdown() if sys.argv[1:] == ["--markdown"] else json_schema_text())
