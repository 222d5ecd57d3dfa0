"""``LineParser.parse_columns`` against ``LineParser.parse``: the pieces of a block, in order, are the block.

The native scanner stops at a line it declines (an invalid event line, typically), ``parse_columns`` has
``parse`` read that line alone at its own offset, and scans on after it. Whatever the block, the pieces
together must be ``parse(block)``: the same lines, skipped lines, fragments, invalid reasons and dead
letters (source, offset, reason, bytes), and the same events in the same order (each columns piece equal to
``columns.from_events`` of the reference's events at its place, bit for bit; each events piece equal to
them).
"""

from __future__ import annotations

import io
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregator.loggen import generate_events, write_log
from parsers import LineParser, ParseResult, scan
from parsers.columns import from_events
from parsers.lines import _DECLINED_FEW, _DECLINED_RATE
from tests.parsers._parser_lines import BY_KIND, NOW, block, event_line

pytestmark = pytest.mark.skipif(not scan.available, reason="parsers._scan not built, or LOGAPM_NATIVE=0")

SOURCE = "app.log"
BASE = 7_000_000  # the block's offset in its source: dead letters carry base + their offset in the block


def parser() -> LineParser:
    return LineParser(now=NOW)


def check(data: bytes, p: LineParser | None = None) -> list[ParseResult]:
    """``parse_columns(data)`` equals ``parse(data)`` piece by piece (see the module docstring), and so does
    ``parse_columns`` of a memoryview of the same bytes (a mapped file's chunk: scanned in place)."""
    p = p or parser()
    check_pieces(p, memoryview(data), p.parse(data, SOURCE, BASE))
    return check_pieces(p, data, p.parse(data, SOURCE, BASE))


def check_pieces(p: LineParser, data: bytes | memoryview, ref: ParseResult) -> list[ParseResult]:
    pieces = p.parse_columns(data, SOURCE, BASE)
    assert pieces and all(isinstance(r, ParseResult) for r in pieces)
    assert sum(r.lines for r in pieces) == ref.lines
    assert sum(r.skipped for r in pieces) == ref.skipped
    assert sum(r.fragments for r in pieces) == ref.fragments
    invalid: Counter[str] = Counter()
    for r in pieces:
        invalid.update(r.invalid)
    assert dict(invalid) == ref.invalid
    assert [d for r in pieces for d in r.dead_letters] == ref.dead_letters
    at = 0
    for r in pieces:
        if r.columns is not None:
            assert not r.events and not r.invalid
            assert from_events(ref.events[at : at + r.columns.n]).differences(r.columns) == [], at
            at += r.columns.n
        else:
            assert r.events == ref.events[at : at + len(r.events)], at
            at += len(r.events)
    assert at == len(ref.events)
    return pieces


def columns_events(pieces: list[ParseResult]) -> int:
    return sum(r.columns.n for r in pieces if r.columns is not None)


GOOD = [event_line(kind) for kind in BY_KIND]
ORDINARY = b'{"timestamp":"2026-11-29T10:15:04.512Z","level":"info","message":"GET /health 200"}'
BAD: dict[str, bytes] = {  # invalid lines, each with its reason
    "wrong_type": event_line("request", http__response__status_code="200"),
    "bad_duration": event_line("request", duration_ms="182.4"),
    "missing_field": event_line("db", db__system=...),
    "past_timestamp": event_line("request", timestamp="2025-10-25T10:59:59.999Z"),
    "future_timestamp": event_line("request", timestamp="2026-11-29T11:10:00.001Z"),
    "bad_timestamp": event_line("request", timestamp="2026-11-29 10:15:04Z"),
    "unknown_kind": event_line("request", apm__kind="job"),
    "unknown_schema": event_line("request", apm__schema=2),
    "bad_duration_negative": event_line("request", duration_ms=-1),
    "bad_json": event_line("request")[:-1] + b',"x":}',
}
# Lines the scanner declines that the reference reads as an event (msgspec: the last duplicated key wins; the
# scanner is not sure) or skips (the marker only in a value).
EVENT_DECLINED = event_line("cache").replace(b'"cache.hit":true', b'"cache.hit":false,"cache.hit":true')
SKIPPED_DECLINED = b'{"message":"the apm.schema key","level":"debug"}'


def wrap(line: bytes) -> bytes:
    """``line`` as the string of a ``{"log": ...}`` record (unparsed Fluent Bit)."""
    return b'{"log": "' + line.replace(b'"', b'\\"') + b'"}'


def lines_of(n: int, seed: int = 3) -> list[bytes]:
    out = io.BytesIO()
    write_log(out, generate_events(n, start=NOW - 3000, seconds=2400, seed=seed), ordinary_every=25)
    return out.getvalue().splitlines()


def test_clean_block_is_one_columns_piece() -> None:
    data = block(*lines_of(2000))
    pieces = check(data)
    assert len(pieces) == 1 and pieces[0].columns is not None and pieces[0].columns.n == 2000


@pytest.mark.parametrize("reason", list(BAD))
@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_one_invalid_line(reason: str, where: str) -> None:
    good = lines_of(600)
    at = {"start": 0, "middle": 300, "end": len(good)}[where]
    data = block(*good[:at], BAD[reason], *good[at:])
    pieces = check(data)
    assert [r.invalid for r in pieces if r.invalid] == [{reason.removesuffix("_negative"): 1}]
    dead = [d for r in pieces for d in r.dead_letters]
    assert [(d.offset, d.line) for d in dead] == [(BASE + data.index(BAD[reason]), BAD[reason])]
    assert columns_events(pieces) == 600  # every valid line still as columns
    assert len(pieces) == (2 if where != "middle" else 3)


def test_adjacent_and_spread_invalid_lines() -> None:
    good = lines_of(1500, seed=5)
    bad = list(BAD.values())
    lines = [*bad[:2], *good[:400], *bad[2:5], *good[400:401], bad[5], *good[401:1200], bad[6], bad[7],
             *good[1200:], *bad[8:]]
    pieces = check(block(*lines))
    assert sum(r.invalid_total for r in pieces) == len(bad)
    assert columns_events(pieces) == 1500


@pytest.mark.parametrize("line", [EVENT_DECLINED, SKIPPED_DECLINED], ids=["event", "skipped"])
def test_declined_lines_the_reference_takes(line: bytes) -> None:
    good = lines_of(300, seed=9)
    pieces = check(block(*good[:100], line, *good[100:200], line, line, *good[200:]))
    assert columns_events(pieces) == 300
    assert sum(r.invalid_total for r in pieces) == 0


@pytest.mark.parametrize("clean", [0, 1000])
def test_many_invalid_lines_go_to_parse_in_one_call(clean: int) -> None:
    """One line in 10 invalid (after ``clean`` good lines): a few are read alone, then the rest of the block
    in one call, once the declined lines pass one in _DECLINED_RATE of the lines read."""
    good = lines_of(2000, seed=11)
    bad = BAD["wrong_type"]
    lines = good[:clean] + [x for i in range(clean, 2000) for x in ((good[i], bad) if i % 10 == 0 else (good[i],))]
    pieces = check(block(*lines))
    alone = [r for r in pieces if r.columns is None and r.lines == 1]
    # declined k times after about clean + 10 k lines: more than one in _DECLINED_RATE from k = expected
    expected = max(_DECLINED_FEW + 1, clean // (_DECLINED_RATE - 10) + 1)
    assert abs(len(alone) - expected) <= 1, (len(alone), expected)
    assert pieces[-1].columns is None and pieces[-1].lines > 1500 - clean
    assert pieces[0].columns is not None and pieces[0].lines >= clean


def test_block_level_give_up_after_pieces() -> None:
    """A range the scanner gives up on after a declined line (its skipped lines all with backslashes): the
    rest to the reference (the whole block when the rest could read differently alone)."""
    good = lines_of(200, seed=13)
    hidden = event_line("db").replace(b'"apm.schema"', b'"apm\\u002eschema"')
    check(block(*good[:100], BAD["wrong_type"], hidden, *good[100:]))
    check(block(*good[:100], BAD["wrong_type"], b'{"log": "x"}', b'{"log": "y"}', BAD["missing_field"]))
    check(block(good[0], hidden, BAD["past_timestamp"], hidden))
    check(block(BAD["past_timestamp"], hidden, BAD["past_timestamp"], *good[:10]))
    # Every line an Event to msgspec: the reference decodes the whole block at once, the escaped key too (an
    # event), which the rest of the block alone (starting with that line, unmarked) would not.
    pieces = check(block(event_line("db"), BAD["past_timestamp"], hidden, event_line("request")))
    assert sum(r.event_count for r in pieces) == 3


def test_framed_events_among_app_lines() -> None:
    """Log wrappers holding event lines (the marker escaped inside a string) are declined and unwrapped by
    the reference, alone or in the rest of the block."""
    good = lines_of(100, seed=17)
    wrapped = wrap(event_line("db"))
    wrapped_bad = wrap(BAD["missing_field"])
    check(block(*good[:50], wrapped, *good[50:], wrapped_bad))
    check(block(wrapped, wrapped_bad, *good))
    check(block(*(wrapped for _ in range(20))))
    check(block(b'{"log": "x"}', *(wrapped for _ in range(20)), *good))


def test_not_bytes_and_not_native() -> None:
    data = block(*lines_of(50), BAD["wrong_type"])
    p = parser()
    assert len(p.parse_columns(data)) == 2
    one = p.parse_columns(bytearray(data))  # type: ignore[arg-type]  # bytes only: parse reads it
    assert len(one) == 1 and one[0].columns is None and one[0].lines == data.count(b"\n")
    p._scan_range = None
    assert len(check(data, p)) == 1


POOL = [*GOOD, ORDINARY, b'{"a":1}', *BAD.values(), EVENT_DECLINED, SKIPPED_DECLINED,
        event_line("db").replace(b'"apm.schema"', b'"apm\\u002eschema"'),
        b'{"log": "x"}', b'{"msg":"a \\"quoted\\" word"}',
        wrap(event_line("task"))]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(range(len(POOL))), min_size=1, max_size=40),
       st.lists(st.integers(0, 400), min_size=1, max_size=4))
def test_random_blocks(picks: list[int], runs: list[int]) -> None:
    """Lines from the pool, with runs of the generated log's lines between them."""
    good = lines_of(400, seed=19)
    lines: list[bytes] = []
    for i, pick in enumerate(picks):
        n = runs[i % len(runs)] if i % 3 == 0 else 0
        lines.extend(good[:n])
        lines.append(POOL[pick])
    check(block(*lines))
