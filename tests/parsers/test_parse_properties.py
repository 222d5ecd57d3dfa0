"""Properties over arbitrary input: parse never raises, classifies every line exactly once, and the
whole-block path agrees with the line-by-line path (the same lines, one per parse call)."""

from __future__ import annotations

import calendar

import orjson
from _parser_lines import NOW, event_dict, event_line
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parsers import INVALID_REASONS, LineParser, ParseResult
from parsers.event import to_json_dict

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check_invariant(result: ParseResult, data: bytes) -> None:
    assert result.lines == len(result.events) + result.skipped + sum(result.invalid.values())
    assert set(result.invalid) <= set(INVALID_REASONS)
    assert len(result.dead_letters) == sum(result.invalid.values())
    physical = data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)
    assert result.lines + result.fragments == physical
    for dl in result.dead_letters:
        assert data[dl.offset :].startswith(dl.line)


@FAST
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    """Random bytes: no exception, every line classified, dead letters point into the data."""
    check_invariant(LineParser(now=NOW).parse(data, "fuzz"), data)


def _mutations() -> st.SearchStrategy[bytes]:
    """Lines near the valid ones: events with a field changed to a random JSON value, cut, or spliced."""
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
        max_leaves=5,
    )
    kinds = st.sampled_from(["request", "db", "cache", "external", "task", "metric"])

    @st.composite
    def changed(draw: st.DrawFn) -> bytes:
        ev = event_dict(draw(kinds))
        key = draw(st.sampled_from([*ev, "extra", "duration_ms", "timestamp"]))
        if draw(st.booleans()):
            ev[key] = draw(json_values)
        else:
            ev.pop(key, None)
        return orjson.dumps(ev)

    @st.composite
    def cut(draw: st.DrawFn) -> bytes:
        line = event_line(draw(kinds))
        i = draw(st.integers(0, len(line)))
        j = draw(st.integers(i, len(line)))
        return line[:i] + draw(st.binary(max_size=5)).replace(b"\n", b"") + line[j:]

    plain = st.sampled_from([b'{"level":"INFO"}', b"text", b"", b'{"x":', b"}{", b'{"apm.schema":1}'])
    good = kinds.map(lambda k: event_line(k))
    return st.one_of(good, good, changed(), cut(), plain)


@FAST
@given(st.lists(_mutations(), min_size=1, max_size=12))
def test_block_path_agrees_with_line_by_line(lines: list[bytes]) -> None:
    """Parsing a block gives the same events and reasons as parsing each line on its own."""
    data = b"".join(x + b"\n" for x in lines)
    parser = LineParser(now=NOW)
    whole = parser.parse(data, "s")
    check_invariant(whole, data)
    single = ParseResult()
    for x in lines:
        single.merge(parser.parse(x + b"\n", "s"))
    assert [to_json_dict(e) for e in whole.events] == [to_json_dict(e) for e in single.events]
    assert whole.invalid == single.invalid
    assert whole.skipped == single.skipped


@FAST
@given(st.integers(calendar.timegm((2025, 11, 1, 0, 0, 0)), int(NOW) + 500), st.integers(0, 999),
       st.sampled_from([0, 1, 3, 6, 9]))
def test_timestamp_fast_path_is_exact(sec: int, millis: int, digits: int) -> None:
    """ts equals the timestamp's epoch for any time in the window and any fraction precision."""
    import time

    frac = "" if digits == 0 else "." + f"{millis:03d}".ljust(digits, "7")[:digits]
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + frac + "Z"
    result = LineParser(now=NOW).parse(event_line(timestamp=ts) + b"\n")
    (ev,) = result.events
    expected = sec + (float("0" + frac) if frac else 0.0)
    assert abs(ev.ts - expected) < 1e-6
