"""The typed schema-1 event, as the parsers decode it.

``Event`` declares every field of ``logging_apm.schema.FIELDS`` (a test keeps them in step), in the schema's
order, which is also the order the emitter writes them: msgspec decodes fastest when the keys arrive in
declaration order. Python names are the JSON names with dots replaced by underscores, except ``apm.schema``
-> ``schema`` and ``apm.kind`` -> ``kind``.

What msgspec checks here, in C, while decoding (no per-line Python): JSON types, the enums (schema version,
kind, outcome, task state, metric type), numeric ranges (durations 0..MAX_DURATION_MS, status codes,
non-negative counts, finite numbers) and string lengths. Two schema rules are checked differently, to keep
regular expressions off the hot path: trace and span ids are checked for their length (32 / 16) but not
for being lowercase hex, and ``timestamp`` is checked by the parser's cached timestamp reader (which is
as strict as the schema's pattern). ``metric.name`` keeps its pattern: it becomes part of a metric name,
and metric events are rare. Per-kind required fields are checked by the parser (``REQUIRED_BY_KIND``).
"""

from __future__ import annotations

from operator import attrgetter
from typing import Annotated, Final, Literal

import msgspec
from msgspec import Meta, field

from logging_apm.schema import (
    KIND_FIELD,
    KINDS,
    MAX_DURATION_MS,
    MAX_STRING_LENGTH,
    SCHEMA_FIELD,
    required_for,
)

# Finite bounds: JSON has no NaN/Infinity literal, but 1e999 decodes to inf; these ranges refuse it.
_FINITE = 1.7e308

Str = Annotated[str, Meta(max_length=MAX_STRING_LENGTH)]
Duration = Annotated[float, Meta(ge=0.0, le=MAX_DURATION_MS)]
NonNegative = Annotated[float, Meta(ge=0.0, le=_FINITE)]
Finite = Annotated[float, Meta(ge=-_FINITE, le=_FINITE)]
TraceId = Annotated[str, Meta(min_length=32, max_length=32)]
SpanId = Annotated[str, Meta(min_length=16, max_length=16)]
StatusCode = Annotated[int, Meta(ge=100, le=599)]
Count = Annotated[int, Meta(ge=0)]
MetricName = Annotated[str, Meta(pattern=r"^[A-Za-z][A-Za-z0-9_.]{0,199}$")]
TagValue = Annotated[str, Meta(max_length=MAX_STRING_LENGTH)]

Kind = Literal["request", "db", "cache", "external", "task", "metric"]

# ``ts`` is filled in by the parser, never read from the line: its JSON name is one no log line carries,
# so an app attribute called "ts" cannot land in it.
_TS_NAME: Final = "@logapm.parsed_ts"


class Event(msgspec.Struct, kw_only=True, gc=False):
    """One schema-1 timing event. ``ts`` is ``timestamp`` as epoch seconds (set by ``LineParser``).

    ``gc=False``: events hold only strings, numbers and a str->str dict, never cycles, and keeping a few
    hundred thousand of them out of the cyclic GC's sight makes decoding markedly faster.
    """

    timestamp: str
    schema: Literal[1] = field(name=SCHEMA_FIELD)
    kind: Kind = field(name=KIND_FIELD)
    duration_ms: Duration | None = None
    outcome: Literal["success", "failure"] | None = None
    service_name: Str | None = field(default=None, name="service.name")
    deployment_environment: Str | None = field(default=None, name="deployment.environment")
    service_version: Str | None = field(default=None, name="service.version")
    host_name: Str | None = field(default=None, name="host.name")
    trace_id: TraceId | None = None
    span_id: SpanId | None = None
    parent_span_id: SpanId | None = None
    error_type: Str | None = field(default=None, name="error.type")
    # request
    http_request_method: Str | None = field(default=None, name="http.request.method")
    http_route: Str | None = field(default=None, name="http.route")
    http_response_status_code: StatusCode | None = field(default=None, name="http.response.status_code")
    # db
    db_system: Str | None = field(default=None, name="db.system")
    db_namespace: Str | None = field(default=None, name="db.namespace")
    db_operation_name: Str | None = field(default=None, name="db.operation.name")
    db_collection_name: Str | None = field(default=None, name="db.collection.name")
    db_query_text: Str | None = field(default=None, name="db.query.text")
    db_query_fingerprint: Str | None = field(default=None, name="db.query.fingerprint")
    db_response_returned_rows: Annotated[int, Meta(ge=-1)] | None = field(
        default=None, name="db.response.returned_rows"
    )
    db_executemany: int | None = field(default=None, name="db.executemany")
    # cache
    cache_name: Str | None = field(default=None, name="cache.name")
    cache_operation: Str | None = field(default=None, name="cache.operation")
    cache_hit: bool | None = field(default=None, name="cache.hit")
    cache_keys: Count | None = field(default=None, name="cache.keys")
    # external
    peer_service: Str | None = field(default=None, name="peer.service")
    external_operation: Str | None = field(default=None, name="external.operation")
    server_address: Str | None = field(default=None, name="server.address")
    # task
    task_name: Str | None = field(default=None, name="task.name")
    messaging_destination_name: Str | None = field(default=None, name="messaging.destination.name")
    task_state: Literal["success", "failure", "retry"] | None = field(default=None, name="task.state")
    task_queue_wait_ms: NonNegative | None = field(default=None, name="task.queue_wait_ms")
    task_retries: Count | None = field(default=None, name="task.retries")
    # metric
    metric_name: MetricName | None = field(default=None, name="metric.name")
    metric_type: Literal["count", "gauge"] | None = field(default=None, name="metric.type")
    metric_value: Finite | None = field(default=None, name="metric.value")
    metric_tags: dict[str, TagValue] | None = field(default=None, name="metric.tags")
    # not a JSON field
    ts: float = field(default=0.0, name=_TS_NAME)


# Python attribute name -> JSON name, for every schema field (``ts`` excluded).
JSON_NAMES: Final[dict[str, str]] = {
    attr: name
    for attr, name in zip(Event.__struct_fields__, Event.__struct_encode_fields__, strict=True)
    if attr != "ts"
}
ATTR_NAMES: Final[dict[str, str]] = {name: attr for attr, name in JSON_NAMES.items()}

# The fields msgspec cannot require (they depend on the kind), per kind, as attribute getters: the parser
# checks ``None in getter(event)``, one C call per event.
_ALWAYS: Final = frozenset({"timestamp", SCHEMA_FIELD, KIND_FIELD})
REQUIRED_BY_KIND: Final[dict[str, tuple[str, ...]]] = {
    kind: tuple(ATTR_NAMES[n] for n in required_for(kind) if n not in _ALWAYS) for kind in KINDS
}


def _getter(names: tuple[str, ...]) -> attrgetter[tuple[object, ...]]:
    # attrgetter of one name returns the value itself; of two or more, a tuple. Always ask for a tuple.
    return attrgetter(*names) if len(names) > 1 else attrgetter(names[0], names[0])


REQUIRED_GETTERS: Final[dict[str, attrgetter[tuple[object, ...]]]] = {
    kind: _getter(names) for kind, names in REQUIRED_BY_KIND.items()
}


def to_json_dict(event: Event) -> dict[str, object]:
    """The event as its JSON object (schema names, absent fields left out): for tests and debugging."""
    out: dict[str, object] = {}
    for attr, name in JSON_NAMES.items():
        value = getattr(event, attr)
        if value is not None:
            out[name] = value
    return out
