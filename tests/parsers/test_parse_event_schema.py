"""The typed Event stays in step with the schema-1 definition, and decodes what the app emits."""

from __future__ import annotations

import typing

import msgspec
import orjson
import pytest
from _parser_lines import NOW, TS_EPOCH, block, event_dict, event_line

from logging_apm.conf import AppSettings
from logging_apm.emit import Emitter
from logging_apm.schema import FIELDS, KINDS, required_for
from parsers import Event, LineParser
from parsers.event import ATTR_NAMES, JSON_NAMES, REQUIRED_BY_KIND, to_json_dict

_JSON_TYPES = {"string": str, "integer": int, "number": float, "boolean": bool, "object": dict}


def test_event_declares_exactly_the_schema_fields() -> None:
    """Every field of logging_apm.schema.FIELDS is on Event (by its JSON name), in the same order, and
    Event has no other JSON field: adding a field to the schema without the parser fails here."""
    assert list(JSON_NAMES.values()) == [f.name for f in FIELDS]


def test_python_names_follow_the_rule() -> None:
    """Attribute names are the JSON names with dots as underscores (apm.schema/apm.kind -> schema/kind)."""
    for name, attr in ATTR_NAMES.items():
        expected = {"apm.schema": "schema", "apm.kind": "kind"}.get(name, name.replace(".", "_"))
        assert attr == expected


def test_field_types_match_the_schema() -> None:
    """Each attribute's declared Python type is the schema's JSON type (optional unless always required)."""
    hints = typing.get_type_hints(Event, include_extras=True)
    always = {f.name for f in FIELDS if f.required and not f.kinds}
    for f in FIELDS:
        hint = hints[ATTR_NAMES[f.name]]
        args = typing.get_args(hint)
        if f.name in always:
            assert type(None) not in args, f.name
        else:
            assert type(None) in args, f.name
        flat = repr(hint)
        if f.enum is None:
            assert _JSON_TYPES[f.type].__name__ in flat, (f.name, flat)


def test_required_by_kind_comes_from_the_schema() -> None:
    """The per-kind required fields the parser checks are the schema's, minus the always-required three."""
    for kind in KINDS:
        names = {JSON_NAMES[a] for a in REQUIRED_BY_KIND[kind]}
        assert names == set(required_for(kind)) - {"timestamp", "apm.schema", "apm.kind"}


@pytest.mark.parametrize("kind", KINDS)
def test_valid_event_of_each_kind_round_trips(kind: str) -> None:
    """A valid line of each kind decodes to an Event whose JSON form is the line's object, with ts set."""
    result = LineParser(now=NOW).parse(block(event_line(kind)))
    assert (result.lines, len(result.events), result.invalid) == (1, 1, {})
    ev = result.events[0]
    assert to_json_dict(ev) == orjson.loads(orjson.dumps(event_dict(kind)))
    assert ev.ts == pytest.approx(TS_EPOCH)
    assert ev.kind == kind


def test_decodes_what_the_emitter_writes() -> None:
    """Events built by logging_apm's Emitter (the app side), serialised as a formatter does, parse back."""
    emitter = Emitter(AppSettings(enabled=True, service_name="svc", resource={"service.name": "svc"}))
    ev = emitter.event("request", 12.3456, "success",
                       {"http.request.method": "GET", "http.route": "a/<int:id>/",
                        "http.response.status_code": 200}, end_time=NOW - 30.25)
    line = orjson.dumps(ev)
    result = LineParser(now=NOW).parse(line + b"\n")
    assert len(result.events) == 1, result
    got = result.events[0]
    assert got.ts == pytest.approx(NOW - 30.25, abs=1e-3)
    assert got.http_route == "a/<int:id>/" and got.duration_ms == 12.346 and got.service_name == "svc"


def test_event_can_be_built_in_code() -> None:
    """Downstream tests may construct events directly; ts is a plain field then."""
    ev = Event(timestamp="2026-11-29T10:15:04.512Z", schema=1, kind="request", duration_ms=1.0,
               http_route="r", http_request_method="GET", ts=5.0)
    assert ev.ts == 5.0 and ev.metric_tags is None
    assert msgspec.json.decode(msgspec.json.encode(ev), type=Event) == ev
