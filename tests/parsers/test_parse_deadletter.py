"""The dead-letter file: JSON lines with source, offset, reason and the line (exact bytes via base64
when they are not text), appended batch by batch, readable back."""

from __future__ import annotations

from pathlib import Path

import orjson
from _parser_lines import NOW, block, event_line

from parsers import DeadLetter, DeadLetterWriter, LineParser, read_dead_letters


def test_written_records_round_trip(tmp_path: Path) -> None:
    """Text lines are stored as text; binary ones also as base64; both read back byte for byte."""
    letters = [
        DeadLetter("app.log", 0, "bad_json", b'{"apm.schema":1,'),
        DeadLetter("app.log", 17, "invalid_utf8", b"\xff\xfe apm.schema"),
        DeadLetter("pod.log", 99, "nul_byte", b"a\x00b"),
    ]
    path = tmp_path / "dl" / "dead.jsonl"
    with DeadLetterWriter(path) as w:
        assert w.append(letters) == 3
    records = [orjson.loads(x) for x in path.read_bytes().splitlines()]
    assert records[0] == {"source": "app.log", "offset": 0, "reason": "bad_json", "line": '{"apm.schema":1,'}
    assert "line_base64" in records[1] and "line_base64" in records[2]
    assert read_dead_letters(path) == letters


def test_appends_across_writers_and_repairs_a_torn_last_line(tmp_path: Path) -> None:
    """A second writer appends; a file left without its final newline (a killed writer) is ended first,
    so every record stays on a line of its own."""
    path = tmp_path / "dead.jsonl"
    with DeadLetterWriter(path) as w:
        w.append([DeadLetter("a", 1, "bad_json", b"x")])
    with open(path, "ab") as f:
        f.write(b'{"source":"a","off')  # torn record
    with DeadLetterWriter(path) as w:
        w.append([DeadLetter("a", 2, "bad_json", b"y")])
    lines = path.read_bytes().splitlines()
    assert len(lines) == 3 and orjson.loads(lines[2])["offset"] == 2


def test_parser_output_to_file(tmp_path: Path) -> None:
    """Dead letters of a parse land in the file with their offsets; long lines are truncated and flagged."""
    bad = event_line(duration_ms=-1)
    long_line = b'{"apm.schema":1,"x":"' + b"y" * 70_000 + b'"}'
    data = block(event_line(), bad, long_line)
    result = LineParser(now=NOW).parse(data, "app.log", 500)
    path = tmp_path / "dead.jsonl"
    with DeadLetterWriter(path) as w:
        w.append(result.dead_letters)
    recs = [orjson.loads(x) for x in path.read_bytes().splitlines()]
    assert [(r["reason"], r["offset"]) for r in recs] == [
        ("bad_duration", 500 + len(event_line()) + 1),
        ("too_long", 500 + len(event_line()) + 1 + len(bad) + 1),
    ]
    assert recs[1]["truncated"] is True and len(recs[1]["line"]) == 4096


def test_empty_batch_writes_nothing(tmp_path: Path) -> None:
    """No dead letters: no file is made."""
    path = tmp_path / "dead.jsonl"
    with DeadLetterWriter(path) as w:
        assert w.append([]) == 0
    assert not path.exists() or path.read_bytes() == b""
