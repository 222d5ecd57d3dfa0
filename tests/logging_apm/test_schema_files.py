"""The schema is defined once (logging_apm.schema): the committed JSON Schema and docs page follow it."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from logging_apm import schema
from logging_apm.testing import validate_event

ROOT = Path(__file__).resolve().parents[2]


def test_json_schema_file_matches_the_code() -> None:
    """schema/event-v1.schema.json is exactly what logging_apm.schema generates."""
    committed = (ROOT / "schema" / "event-v1.schema.json").read_text()
    assert committed == schema.json_schema_text(), (
        "schema/event-v1.schema.json is out of step with logging_apm/schema.py; regenerate it with\n"
        "    python -m logging_apm.schema > schema/event-v1.schema.json")


def test_docs_page_matches_the_code() -> None:
    """docs/schema.md is generated from FIELDS and explains every field."""
    committed = (ROOT / "docs" / "schema.md").read_text()
    assert committed == schema.markdown(), (
        "docs/schema.md is out of step with logging_apm/schema.py; regenerate it with\n"
        "    python -m logging_apm.schema --markdown > docs/schema.md")
    for f in schema.FIELDS:
        assert f"`{f.name}`" in committed and f.description in committed


def test_the_schema_is_a_valid_json_schema() -> None:
    """The generated document is itself valid draft 2020-12."""
    jsonschema.Draft202012Validator.check_schema(schema.json_schema())


def test_design_example_validates_and_bad_events_do_not() -> None:
    """The design page's example line is valid; a raw path in a db event or a bad trace id is refused."""
    example = json.loads(
        '{"timestamp":"2026-11-29T10:15:04.512Z","apm.schema":1,"apm.kind":"request","duration_ms":182.4,'
        '"outcome":"success","service.name":"muejam-backend","deployment.environment":"production",'
        '"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"00f067aa0ba902b7",'
        '"http.request.method":"GET","http.route":"api/stories/<int:story_id>/","http.response.status_code":200}')
    validate_event(example)
    with pytest.raises(AssertionError):
        validate_event({**example, "db.system": "sqlite"})  # another kind's field
    with pytest.raises(AssertionError):
        validate_event({**example, "trace_id": "XYZ"})
    with pytest.raises(AssertionError):
        validate_event({k: v for k, v in example.items() if k != "http.route"})
