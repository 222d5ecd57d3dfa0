"""Properties over arbitrary input: parse never raises, classifies every line exactly once, and the
whole-block path agrees with the line-by-line path (the same lines, one per parse call)."""

from __future__ import annotations

import calendar

import orjson
import pytest
from _parser_lines import NOW, check_invariant, event_dict, event_line
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from parsers import LineParser, ParseResult
from parsers.event import to_json_dict

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])



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


def agrees_with_the_line_by_line_pass(data: bytes) -> ParseResult:
    """Parse ``data`` and check the result is the line-by-line pass's: events (with their times), reasons,
    skipped, and each dead letter's offset and bytes."""
    parser = LineParser(now=NOW)
    whole = parser.parse(data, "s")
    reference = parser._parse_lines(data, "s", 0)
    check_invariant(whole, data)
    assert [to_json_dict(e) for e in whole.events] == [to_json_dict(e) for e in reference.events]
    assert [e.ts for e in whole.events] == [e.ts for e in reference.events]
    assert (whole.invalid, whole.skipped, whole.lines) == (reference.invalid, reference.skipped, reference.lines)
    assert whole.dead_letters == reference.dead_letters
    return whole


_ORDINARY_JSON = st.sampled_from([
    b'{"level":"info","logger":"django.request","message":"GET /api/health/ 200"}',
    b'{"message":"a line that mentions \\"apm.schema\\" in its text"}',
    b'{"message":"talks about apm.schema without quotes"}',
    b'{"log":"not a docker record"}',
    b'{"broken": }',
])


@FAST
@given(st.lists(st.one_of(_mutations(), _ORDINARY_JSON, _ORDINARY_JSON), min_size=1, max_size=16))
def test_mixed_json_block_agrees_with_the_line_by_line_pass(lines: list[bytes]) -> None:
    """A block of app events among other JSON log lines, which the whole-block path decodes in one call
    when it can, gives exactly what the line-by-line pass gives: events, reasons, skipped, and each dead
    letter's offset and bytes."""
    lines = [x for x in lines if x[:1] == b"{" and x[-1:] == b"}" and b"\n" not in x] or [event_line()]
    agrees_with_the_line_by_line_pass(b"".join(x + b"\n" for x in lines))


def _reordered(line: bytes) -> bytes:
    """The same event with its keys in another order (the key no longer where the app's formatters put it)."""
    return orjson.dumps(dict(reversed(list(orjson.loads(line).items()))))


@pytest.mark.parametrize("shape", ["app order", "other order", "half and half", "short lines", "docker record"])
def test_mixed_block_shapes_agree_with_the_line_by_line_pass(shape: str) -> None:
    """Every way the mixed path can find the marked lines (the fixed-place probe, the per-line search for
    the lines it misses, the mapped search when most lines miss) gives the line-by-line pass's answer,
    dead letters included; a Docker record sends the block to the line-by-line pass."""
    events = [event_line(k) for k in ["request", "db", "cache", "external", "task", "metric"] * 4]
    events[5] = event_line("request", http__route=...)  # refused after the decode: a dead letter, its offset
    events[7] = event_line("db", timestamp="2026-11-29T10:15:04Z")  # a valid event, its key elsewhere
    ordinary = [b'{"level":"info","message":"m"}', b"{}"]
    if shape == "other order":
        events = [_reordered(x) for x in events]
    elif shape == "half and half":
        events = [_reordered(x) if i % 2 else x for i, x in enumerate(events)]
    lines: list[bytes] = []
    for i, x in enumerate(events):
        lines.append(x)
        if i % 5 == 0:
            lines.append(ordinary[i % 2])
    if shape == "short lines":
        lines += [b"{}", b'{"a":1}']
    if shape == "docker record":
        lines.insert(3, b'{"log":"GET /health\\n","stream":"stdout","time":"2026-11-29T10:15:04.512Z"}')
    data = b"".join(x + b"\n" for x in lines)
    whole = agrees_with_the_line_by_line_pass(data)
    assert whole.invalid == {"missing_field": 1}
    took_block_path = LineParser(now=NOW)._parse_block(data, "s", 0) is not None
    assert took_block_path == (shape != "docker record")


def test_mixed_json_block_takes_the_one_call_path() -> None:
    """The common production block (events with Django's JSON lines between them) is decoded in one call,
    not line by line: what makes the mixed case as cheap as a pure one."""
    data = b"".join(event_line(k) + b"\n" + b'{"level":"info","message":"m"}\n'
                    for k in ["request", "db", "cache"] * 5)
    parser = LineParser(now=NOW)
    assert parser._parse_block(data, "s", 0) is not None
    result = parser.parse(data, "s")
    assert (len(result.events), result.skipped, result.invalid) == (15, 15, {})


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


@FAST
@given(st.lists(st.tuples(_mutations(), st.sampled_from([b"stdout", b"stderr"])), min_size=1, max_size=12))
def test_cri_wrapped_block_agrees_with_the_bare_lines(items: list[tuple[bytes, bytes]]) -> None:
    """The same lines wrapped as CRI `F` lines give the same events, reasons and skipped count as bare
    (whichever path the block takes: the vectorised prefix strip, or line by line)."""
    bare = b"".join(x + b"\n" for x, _ in items)
    wrapped = b"".join(b"2026-11-29T10:15:04.512345678Z " + s + b" F " + x + b"\n" for x, s in items)
    parser = LineParser(now=NOW)
    a, b = parser.parse(bare, "s"), parser.parse(wrapped, "s")
    check_invariant(b, wrapped)
    assert [to_json_dict(e) for e in a.events] == [to_json_dict(e) for e in b.events]
    assert (a.invalid, a.skipped, a.lines) == (b.invalid, b.skipped, b.lines)


@FAST
@given(st.lists(_mutations(), min_size=1, max_size=12), st.booleans())
def test_out_file_wrapped_block_agrees_with_the_bare_lines(lines: list[bytes], unparsed: bool) -> None:
    """The same JSON lines as Fluent Bit out_file records (parsed, or unparsed as {"log": ...}) give the
    same events, reasons and skipped count as bare."""
    lines = [x for x in lines if x[:1] == b"{" and x[-1:] == b"}"] or [event_line()]
    bare = b"".join(x + b"\n" for x in lines)

    def record(x: bytes) -> bytes:
        return orjson.dumps({"log": x.decode("utf-8", "surrogateescape")}) if unparsed else x

    try:
        wrapped = b"".join(b"app.events: [1764411304.512345, " + record(x) + b"]\n" for x in lines)
    except (UnicodeError, TypeError):
        return  # not text: it could not have been a Fluent Bit record string
    parser = LineParser(now=NOW)
    a, b = parser.parse(bare, "s"), parser.parse(wrapped, "s")
    check_invariant(b, wrapped)
    assert [to_json_dict(e) for e in a.events] == [to_json_dict(e) for e in b.events]
    assert (a.lines, len(a.events)) == (b.lines, len(b.events))
    if not unparsed:
        assert (a.invalid, a.skipped) == (b.invalid, b.skipped)


@FAST
@given(st.lists(_mutations(), min_size=1, max_size=12), st.booleans())
@example([b"\0" + event_line()[60:], event_line()], False)  # (found by hypothesis: the NUL the wrapper hides)
@example([b"\0" + event_line()], True)
def test_log_wrapped_block_agrees_with_the_bare_lines(lines: list[bytes], docker: bool) -> None:
    """The same lines in {"log": ...} records (Docker json-file, or unparsed Fluent Bit plain) give the
    same events, skipped and invalid counts as bare (the reason may differ for a line damaged in two
    ways, as the wrapper's JSON escaping hides a NUL byte from the byte checks). The one line that moves:
    a NUL without the event marker is damage in a bare file (nul_byte) but, escaped as \\u0000 in a
    wrapper's string, an ordinary line to skip (finding it would mean decoding every ordinary record)."""
    try:
        texts = [x.decode() for x in lines]
    except UnicodeDecodeError:
        return  # not text: a shipper could not have written it into a JSON string
    extra = {"stream": "stdout", "time": "2026-11-29T10:15:04.512345678Z"} if docker else {}
    bare = b"".join(x + b"\n" for x in lines)
    wrapped = b"".join(orjson.dumps({"log": t + ("\n" if docker else ""), **extra}) + b"\n" for t in texts)
    parser = LineParser(now=NOW)
    a, b = parser.parse(bare, "s"), parser.parse(wrapped, "s")
    check_invariant(b, wrapped)
    assert [to_json_dict(e) for e in a.events] == [to_json_dict(e) for e in b.events]
    hidden = sum(b"\0" in x and b"apm.schema" not in x for x in lines)
    assert (a.lines, a.skipped + hidden, sum(a.invalid.values()) - hidden) == (
        b.lines, b.skipped, sum(b.invalid.values()))
