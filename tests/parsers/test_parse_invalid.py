"""Every invalid reason: a line that should get it gets it, as a counted dead letter with its offset,
whether it arrives alone, among good event lines (the whole-block path) or among ordinary logs."""

from __future__ import annotations

import pytest
from _parser_lines import NOW, block, event_line

from parsers import INVALID_REASONS, LineParser

GOOD = event_line("request")
LONG_ROUTE = "r" * 70_000

CASES: list[tuple[str, bytes]] = [
    ("bad_json", GOOD[:-1]),  # truncated
    ("bad_json", b'{"timestamp":"2026-11-29T10:15:04.512Z","apm.schema":1,,}'),
    ("bad_json", b'garbage before {"apm.schema":1}'),
    ("bad_json", b'{"log":"{\\"apm.schema\\":1, broken'),
    ("unknown_schema", event_line(apm__schema=2)),
    ("unknown_schema", event_line(apm__schema="1")),
    ("unknown_kind", event_line(apm__kind="span")),
    ("missing_field", event_line(http__route=...)),
    ("missing_field", event_line(http__route=None)),
    ("missing_field", event_line("db", db__system=...)),
    ("missing_field", event_line("metric", metric__value=...)),
    ("missing_field", event_line(timestamp=...)),
    ("missing_field", event_line(duration_ms=...)),
    ("missing_field", event_line(apm__kind=...)),
    ("wrong_type", event_line(http__response__status_code="200")),
    ("wrong_type", event_line(http__response__status_code=99)),
    ("wrong_type", event_line(http__request__method=1)),
    ("wrong_type", event_line("cache", cache__hit="yes")),
    ("wrong_type", event_line("metric", metric__tags={"a": 1})),
    ("wrong_type", event_line("metric", metric__name="1bad name")),
    ("wrong_type", event_line(trace_id="abc")),
    ("wrong_type", event_line(outcome="ok")),
    ("wrong_type", event_line(service__name="s" * 5000)),
    ("bad_json", b'[{"apm.schema":1}]'),  # JSON, but not an object
    ("bad_duration", event_line(duration_ms=-0.5)),
    ("bad_duration", event_line(duration_ms=7 * 24 * 3600 * 1000.0 + 1)),
    ("bad_duration", event_line(duration_ms="12")),
    ("bad_duration", GOOD.replace(b'"duration_ms":182.4', b'"duration_ms":1e999')),
    ("bad_timestamp", event_line(timestamp="2026-11-29 10:15:04.512Z")),
    ("bad_timestamp", event_line(timestamp="2026-11-29T10:15:04.512+01:00")),
    ("bad_timestamp", event_line(timestamp="2026-02-30T10:15:04.512Z")),
    ("bad_timestamp", event_line(timestamp="2026-11-29T10:15:61.000Z")),
    ("bad_timestamp", event_line(timestamp="2026-11-29T10:15:1e+01Z")),
    ("bad_timestamp", event_line(timestamp="2026-11-29T10:15:04.Z")),
    ("bad_timestamp", event_line(timestamp="２０２６-11-29T10:15:04.512Z")),
    ("bad_timestamp", event_line(timestamp=1764411304.5)),
    ("future_timestamp", event_line(timestamp="2026-11-29T11:10:00.001Z")),
    ("future_timestamp", event_line(timestamp="2099-01-01T00:00:00.000Z")),
    ("past_timestamp", event_line(timestamp="2025-01-01T00:00:00.000Z")),
    ("past_timestamp", event_line(timestamp="1970-01-01T00:00:00.000Z")),
    ("invalid_utf8", GOOD.replace(b"muejam", b"mu\xffjam")),
    ("invalid_utf8", b"\xc3(plain text, not an event)"),
    ("nul_byte", GOOD.replace(b"muejam", b"mu\x00jam")),
    ("nul_byte", b"\x00" * 100),
    ("too_long", event_line(http__route=LONG_ROUTE)),
    ("too_long", b"x" * 70_000),
]


def test_every_reason_has_a_case() -> None:
    """The table above covers every documented reason (except the never-expected parser_error)."""
    assert {reason for reason, _ in CASES} == set(INVALID_REASONS) - {"parser_error"}


@pytest.mark.parametrize(("reason", "line"), CASES, ids=[f"{r}-{i}" for i, (r, _) in enumerate(CASES)])
def test_reason_alone_and_among_others(reason: str, line: bytes) -> None:
    """The line is invalid for ``reason`` alone, among good events, and among ordinary logs; the dead
    letter has the source, the exact byte offset and the line (up to 4 KiB)."""
    parser = LineParser(now=NOW)
    contexts = {
        "alone": ([], []),
        "events": ([GOOD, GOOD], [GOOD]),
        "ordinary": ([b'{"level":"INFO","message":"hello"}', b"plain"], [GOOD]),
    }
    for name, (before, after) in contexts.items():
        data = block(*before, line, *after)
        result = parser.parse(data, source="app.log", base_offset=1000)
        assert result.invalid == {reason: 1}, (name, result.invalid)
        assert len(result.events) == before.count(GOOD) + after.count(GOOD), name
        assert result.lines == len(before) + 1 + len(after)
        (dl,) = result.dead_letters
        assert (dl.source, dl.reason) == ("app.log", reason)
        assert dl.offset == 1000 + sum(len(x) + 1 for x in before)
        assert dl.line == line[:4096]


def test_many_invalid_in_one_block_keep_their_offsets() -> None:
    """Several refused lines in a block of events: each dead letter points at its own line."""
    lines = [GOOD, event_line(duration_ms=-1), GOOD, event_line(apm__kind="x"), event_line(timestamp="2099-01-01T00:00:00Z")]
    data = block(*lines)
    result = LineParser(now=NOW).parse(data, "s", 7)
    assert len(result.events) == 2
    for dl in result.dead_letters:
        assert data[dl.offset - 7 :].startswith(dl.line)
    assert [d.reason for d in result.dead_letters] == ["bad_duration", "unknown_kind", "future_timestamp"]


def test_marker_not_at_top_level_is_skipped() -> None:
    """A JSON line mentioning apm.schema but not carrying it as a top-level key is an ordinary line."""
    lines = [b'{"message":"configured","keys":{"apm.schema":1}}', b'{"field":"apm.schema"}',
             b"INFO loaded apm.schema docs", b'{"log":"the apm.schema page"}']
    result = LineParser(now=NOW).parse(block(*lines))
    assert (result.skipped, result.invalid, result.events) == (4, {}, [])


def test_ordinary_lines_are_skipped_not_invalid() -> None:
    """Django's own JSON logs, text logs, blank lines and CRLF lines are skipped, never errors."""
    lines = [b'{"level":"INFO","logger":"django.request","message":"GET / 200"}', b"", b"   ",
             b"Traceback (most recent call last):", b'{"a":1}\r', "ünïcödé".encode()]
    result = LineParser(now=NOW).parse(block(*lines))
    assert (result.lines, result.skipped, result.invalid) == (6, 6, {})


def test_future_and_past_limits_are_configurable() -> None:
    """max_future_seconds / max_past_seconds move the plausibility window, exactly at the edge."""
    edge = event_line(timestamp="2026-11-29T11:00:10.000Z")  # NOW + 10 s
    assert LineParser(now=NOW, max_future_seconds=10).parse(block(edge)).invalid == {}
    assert LineParser(now=NOW, max_future_seconds=9.999).parse(block(edge)).invalid == {"future_timestamp": 1}
    old = event_line(timestamp="2026-11-29T10:00:00.000Z")  # NOW - 3600 s
    assert LineParser(now=NOW, max_past_seconds=3600).parse(block(old)).invalid == {}
    assert LineParser(now=NOW, max_past_seconds=3599).parse(block(old)).invalid == {"past_timestamp": 1}


def test_crlf_event_lines_parse() -> None:
    """Event lines written with CRLF endings still decode (the CR is JSON whitespace)."""
    result = LineParser(now=NOW).parse(GOOD + b"\r\n" + GOOD + b"\r\n")
    assert len(result.events) == 2 and result.invalid == {}


def test_last_line_without_newline_counts() -> None:
    """A block whose last line lacks its newline still classifies that line."""
    result = LineParser(now=NOW).parse(GOOD + b"\n" + GOOD)
    assert (result.lines, len(result.events)) == (2, 2)


def test_an_object_spread_over_lines_is_not_taken_for_events() -> None:
    """JSON values may span lines, so a crafted pair (an event cut open, continued on the next line) plus
    a line with two events would decode to as many events as lines; the parser still classifies each
    line on its own: two broken lines and one line with trailing data."""
    opened = GOOD[:-1] + b',"x":'
    closing = b'{"apm.schema":1}}'
    two = GOOD + GOOD
    result = LineParser(now=NOW).parse(block(opened, closing, two))
    assert result.events == [] and sum(result.invalid.values()) == 3
