"""The waterfall of one trace (``aggregator.insights.waterfall``) on constructed traces."""

from __future__ import annotations

import re

from aggregator.insights.records import TraceRecord
from aggregator.insights.text import printable
from aggregator.insights.waterfall import order, render

T = 1_764_400_000.0
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
ROOT, EXT, NESTED = "00f067aa0ba902b7", "1111111111111111", "2222222222222222"


def r(kind: str, end_ms: float, dur: float, name: str, detail: str = "", *, span: str = "", parent: str = ROOT,
      extra: object = None, status: int = 0, failed: bool = False) -> TraceRecord:
    return TraceRecord(TRACE, span or f"{int(end_ms * 1000):016x}", parent or None, kind, T + end_ms / 1000, dur,
                       "failure" if failed else "success", name, detail, None if extra == "" else extra, status or None)


def sample() -> list[TraceRecord]:
    """A 200 ms request: two queries, a cache miss, an external call with a nested query, in log order."""
    return [
        r("db", 12.0, 10.0, "fp1", 'SELECT "story"."id" FROM "story" WHERE "story"."id" = ?', extra="story"),
        r("db", 30.0, 15.0, "fp2", 'SELECT "chapter"."id" FROM "chapter" LIMIT ?', extra="chapter"),
        r("cache", 32.0, 1.0, "get", "default", extra=False),
        r("db", 140.0, 20.0, "fp3", 'UPDATE "s3_log" SET ?', parent=EXT, span=NESTED),
        r("external", 150.0, 100.0, "s3", "PutObject", span=EXT, status=200),
        r("request", 200.0, 200.0, "api/stories/<int:story_id>/", "GET", span=ROOT, parent="", status=200),
    ]


def rows_of(text: str) -> list[str]:
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.lstrip().startswith("offset ms"))
    return lines[header + 1:]


def test_rows_are_nested_by_parent_and_ordered_by_start() -> None:
    """The request comes first, its children by start time, the query made inside the external call is
    nested under it."""
    rows = order(sample())
    assert [(row.record.kind, row.depth) for row in rows] == [
        ("request", 0), ("db", 1), ("db", 1), ("cache", 1), ("external", 1), ("db", 2)]


def test_offsets_durations_kinds_names_and_bars() -> None:
    """Each row shows its offset from the request start, its duration, kind, name, and a bar whose
    position and length are proportional to them."""
    text = render(sample(), width=120)
    head = text.splitlines()
    assert head[0].startswith("trace 4bf92f3577b34da6a3ce929d0e0e4736  started ")
    assert head[1] == "200.0 ms  GET api/stories/<int:story_id>/ 200"
    rows = rows_of(text)
    assert len(rows) == 6
    parsed = [re.match(r"\s*(-?[\d.]+)\s+([\d.]+)\s+(\w+)\s+(.*?)\s{2,}", row + "  ") for row in rows]
    assert all(parsed), rows
    cells = [(float(m[1]), float(m[2]), m[3]) for m in parsed if m]
    assert cells == [(0.0, 200.0, "request"), (2.0, 10.0, "db"), (15.0, 15.0, "db"), (31.0, 1.0, "cache"),
                     (50.0, 100.0, "external"), (120.0, 20.0, "db")]
    assert '  SELECT "story"."id"' in rows[1]
    assert "    UPDATE \"s3_log\"" in rows[5]  # depth 2
    assert "get default miss" in rows[3] and "s3 PutObject 200" in rows[4]
    bars = [row[row.index("█") if "█" in row else row.index("▏"):] for row in rows]
    req_len, ext_len = bars[0].count("█"), bars[4].count("█")
    assert 0.45 <= ext_len / req_len <= 0.55  # 100 ms of 200 ms
    starts = [row.find("█") if "█" in row else row.find("▏") for row in rows]
    assert starts[0] <= starts[1] < starts[2] < starts[3] < starts[4] < starts[5]
    assert all(len(row) <= 120 for row in text.splitlines())


def test_bars_fit_narrow_terminals_and_ascii_mode() -> None:
    """At 60 columns every line still fits (names are cut) and --ascii draws with # and | only."""
    text = render(sample(), width=60, ascii_only=True)
    assert all(ord(ch) < 128 for ch in text)
    assert "#" in text
    assert all(len(line) <= 60 for line in text.splitlines()[1:])  # the first line keeps the whole id


def test_injected_ansi_escape_is_shown_harmlessly() -> None:
    """Control characters from the logs (an ANSI colour sequence, an OSC title, a bell, a bidi override)
    appear escaped as text; no raw control character reaches the terminal."""
    records = sample()
    records[0] = records[0]._replace(detail="SELECT 1 \x1b[2J\x1b]0;owned\x07")
    records[-1] = records[-1]._replace(name="api/\x1b[31mred/\u202e")
    text = render(records, width=160)
    assert not any(ch in text for ch in "\x1b\x07\u202e")
    assert "\\x1b[2J\\x1b]0;owned\\x07" in text
    assert "api/\\x1b[31mred/\\u202e" in text


def test_children_of_unknown_parents_hang_under_the_request() -> None:
    """An operation whose parent span was never logged is shown under the request, not lost."""
    records = [*sample(), r("cache", 60.0, 2.0, "set", "default", parent="9999999999999999")]
    rows = order(records)
    assert (rows[-3].record.name, rows[-3].depth) == ("set", 1) or any(
        row.record.name == "set" and row.depth == 1 for row in rows)
    assert len(rows) == 7


def test_trace_without_request_event() -> None:
    """When the request event is not in the logs (still running, or rotated away) the operations found are
    shown from the earliest start, saying so."""
    text = render(sample()[:3], width=100)
    assert text.splitlines()[1] == "(no request event found)"
    assert rows_of(text)[0].split()[0] == "0.0"


def test_printable_leaves_ordinary_text_alone() -> None:
    """Ordinary Unicode (accents, CJK, spaces) is untouched; cutting adds an ellipsis."""
    assert printable("café 東京 <int:id>/") == "café 東京 <int:id>/"
    assert printable("abcdef", 4) == "abc…"
    assert printable("a\tb\nc") == "a\\x09b\\x0ac"
