"""Coverage-guided differential fuzzing of the native scanner (``parsers._scan``) with atheris (libFuzzer).

Each input is a block of lines (a newline is added when it does not end with one). The contract of
``parsers/scan.py``, checked on every input: the C function never raises (MemoryError aside) and returns
None or its 8-tuple; whenever ``scan_range`` returns ``(lines, skipped, columns, stop)``, ``stop`` is
``len(data)`` or the start of a line holding the marker, and ``LineParser.parse`` of ``data[:stop]`` finds
the same lines and skipped lines, no invalid line, no fragment, and ``columns.from_events`` of its events
equals ``columns`` (codes, tables, doubles bit for bit). And ``LineParser.parse_columns``, which scans on
after each declined line, gives in its pieces what ``parse`` of the block gives (counts, reasons, dead
letters, events in order: ``tests/parsers/test_parse_columns.py``'s check).

Run: ``python tests/fuzz/fuzz_scan.py CORPUS_DIR -runs=200000`` (libFuzzer flags apply; an empty corpus
directory is filled with valid lines of every kind first, and a dictionary of the event keys and JSON
tokens is passed unless ``-dict=`` is given). Progress lines ``scan-fuzz: <runs> runs, <accepted> accepted,
<events> events`` go to stderr. ``tests/fuzz/test_fuzz_scan.py`` runs a short bounded session. To fuzz a
sanitizer build, put an ASan/UBSan copy of the package first on PYTHONPATH (see the test's docstring).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import atheris
import numpy as np

with atheris.instrument_imports(include=["parsers"]):  # the reference's Python, not numpy's
    from parsers import LineParser, scan
    from parsers.columns import NUMERIC_FIELDS, STRING_FIELDS, from_events

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: tests.parsers
from tests.parsers._parser_lines import BY_KIND, NOW, event_dict, event_line  # the parser tests' lines
from tests.parsers.test_parse_columns import check as check_pieces  # parse_columns vs parse, one definition

MAX_FUTURE = 600.0
MAX_PAST = 400 * 86400.0
MAX_LINE = 64 * 1024
PARSER = LineParser(now=NOW, max_future_seconds=MAX_FUTURE, max_past_seconds=MAX_PAST, max_line_bytes=MAX_LINE)
PAST, FUTURE = NOW - MAX_PAST, NOW + MAX_FUTURE
NATIVE = scan._native  # the C module itself: the wrapper would turn a raised exception into None
REPORT_EVERY = 2000

_stats = {"runs": 0, "accepted": 0, "events": 0}


def _line_at(data: bytes, start: int) -> bytes:
    return data[start : data.index(b"\n", start)]


def _used(raw: tuple[Any, ...] | None) -> tuple[Any, ...] | None:
    """What the C function's result says, without the arena's unused bytes (they hold earlier calls'
    columns): the counts, each column's n values (bytes), the tables, the tags and stop."""
    if raw is None:
        return None
    lines, skipped, n, arena, offsets, tables, tags, stop = raw
    sizes = [np.dtype(t).itemsize for t in NUMERIC_FIELDS.values()] + [4] * len(STRING_FIELDS)
    columns = [bytes(arena[off : off + n * size]) for off, size in zip(offsets, sizes, strict=True)]
    return lines, skipped, n, columns, tables, tags, stop


def check_block(data: bytes) -> None:
    """The differential contract on one block (an AssertionError names the first difference)."""
    assert NATIVE is not None and scan.available, "parsers._scan is not built (or LOGAPM_NATIVE=0): nothing to fuzz"
    try:
        raw = NATIVE.scan(data, PAST, FUTURE, MAX_LINE)
        # A bytes object has a NUL after its end, which hides a read past the block. The same bytes in a
        # buffer allocated to their exact size (under ASan, a read one byte past it is reported), and in a
        # view followed by 0xff bytes (a read past the end changes the result, whatever the build).
        exact = NATIVE.scan(np.frombuffer(data, np.uint8).copy(), PAST, FUTURE, MAX_LINE)
        tail = NATIVE.scan(memoryview(data + b"\xff" * 64)[: len(data)], PAST, FUTURE, MAX_LINE)
    except MemoryError:
        return
    assert raw is None or (type(raw) is tuple and len(raw) == 8), type(raw)
    assert _used(exact) == _used(raw) and _used(tail) == _used(raw), ("a read past the end of the buffer", raw is None, exact is None,
                                          tail is None, data[-100:])
    check_pieces(data, PARSER)  # the pieces of parse_columns (scanned ranges, declined lines) are parse(data)
    got = scan.scan_range(data, PAST, FUTURE, MAX_LINE)
    assert (got is None) == (raw is None), "the wrapper failed on the C function's result"
    if got is None:
        return
    stop = got[3]  # data[:stop] read; stop: len(data), or the start of a declined line (with the marker)
    assert stop == len(data) or (0 <= stop < len(data) and (stop == 0 or data[stop - 1] == 0x0A)
                                 and b"apm.schema" in _line_at(data, stop)), (stop, data[:500])
    data = data[:stop]
    lines, skipped, cols, _ = got
    if not data:
        assert (lines, skipped, cols.n) == (0, 0, 0), (lines, skipped, cols.n)
        return
    ref = PARSER.parse(data)
    assert not ref.invalid and not ref.fragments, (ref.invalid, ref.fragments, data[:500])
    assert (lines, skipped) == (ref.lines, ref.skipped), ((lines, skipped), (ref.lines, ref.skipped), data[:500])
    differences = from_events(ref.events).differences(cols)
    assert not differences, (differences, data[:500])
    _stats["accepted"] += 1
    _stats["events"] += cols.n


def check(data: bytes) -> None:
    check_block(data if data.endswith(b"\n") else data + b"\n")
    _stats["runs"] += 1
    if _stats["runs"] % REPORT_EVERY == 0:
        print("scan-fuzz: {runs} runs, {accepted} accepted, {events} events".format(**_stats), file=sys.stderr,
              flush=True)


def seeds() -> dict[str, bytes]:
    """Blocks the scanner takes: each kind's valid line (compact, spaced, ASCII-escaped), all of them with
    ordinary log lines in one block, and lines with escapes, metric tags and optional fields."""
    out: dict[str, bytes] = {}
    for kind in BY_KIND:
        ev = event_dict(kind)
        out[kind] = event_line(kind) + b"\n"
        out[f"{kind}-spaced"] = json.dumps(ev, separators=(", ", ": ")).encode() + b"\n"
        out[f"{kind}-ascii"] = json.dumps(event_dict(kind, service__name="caf\u00e9 \U0001f600 \"q\"\t"),
                                          separators=(",", ":")).encode() + b"\n"
    ordinary = b'{"timestamp":"2026-11-29T10:15:04.512Z","level":"info","message":"caf\xc3\xa9 \\"q\\""}'
    out["mixed"] = b"".join(line + b"\n" for line in (
        ordinary, *(event_line(k) for k in BY_KIND), b'{"msg":"plain"}',
        event_line("metric", metric__tags={"plan": "pro", "q": 'a"b'}, metric__type="gauge", metric__value=-1.5e-7),
        event_line("task", task__state="retry", task__queue_wait_ms=0, service__version="1.2", host__name="h"),
        event_line("db", db__response__returned_rows=-1, db__executemany=3, parent_span_id="a" * 16),
        event_line("cache", cache__hit=False, cache__keys=0, timestamp="2026-11-29T10:15:60.123456789Z"),
        event_line("request", duration_ms=0, http__response__status_code=599, outcome=None,
                   timestamp="2026-11-29T10:59:59Z", extra={"a": [1, 2.5e-3, None, True, {}]}),
    ))
    # Corners the reference reads in a particular way (checked, not required to be taken): "-0" into a float
    # field is 0.0 but "-0.0" is -0.0, exponents, the nearest double past 15 digits, subnormals, a leap
    # second, nine fraction digits, escapes (NUL, a surrogate pair, U+2028 raw), tabs and returns between
    # tokens, escaped enum literals, unknown nested values.
    request = event_line("request")
    corners = [
        request.replace(b'"duration_ms":182.4', b'"duration_ms":-0'),
        request.replace(b'"duration_ms":182.4', b'"duration_ms":-0.0'),
        request.replace(b'"duration_ms":182.4', b'"duration_ms":1.824E+2'),
        request.replace(b'"duration_ms":182.4', b'"duration_ms":0.1e1'),
        request.replace(b'"duration_ms":182.4', b'"duration_ms":182.40000000000000568434188608080149'),
        event_line("metric").replace(b'"metric.value":1', b'"metric.value":4.9406564584124654e-324'),
        event_line("metric").replace(b'"metric.value":1', b'"metric.value":-1e-400'),
        event_line("metric").replace(b'"metric.value":1', b'"metric.value":999999999999999999'),
        event_line("task").replace(b'"task.queue_wait_ms":12.5', b'"task.queue_wait_ms":1.7e308'),
        event_line("request", timestamp="2026-11-29T10:59:60.123456789Z"),
        event_line("request", timestamp="2026-11-29T10:15:04Z"),
        json.dumps(event_dict("db", db__query__text="a\u0000\"\\/\b\f\n\r\t\u2028\U0001f600"),
                   separators=(",", ":")).encode(),
        event_line("db", db__query__text="raw \u2028 \u00e9 \U0001f600"),
        b"{\t" + request[1:-1].replace(b'","', b'",\r\t"').replace(b'":', b'"\t: ') + b" }",
        event_line("task").replace(b'"task"', b'"t\\u0061sk"').replace(b'"success"', b'"succ\\u0065ss"'),
        event_line("request", x={"a": [1, -2.5e-3, None, True, False, {}, [], "\\"]}, y=[[[[]]]]),
    ]
    for i, line in enumerate(corners):
        out[f"corner-{i}"] = line + b"\n"
    return out


DICTIONARY: list[bytes] = [
    *sorted({k.encode() for kind in BY_KIND for k in event_dict(kind)}),
    b"@logapm.parsed_ts", b"service.version", b"host.name", b"error.type", b"parent_span_id",
    b"task.retries", b"db.executemany",
    *(k.encode() for k in BY_KIND), b"success", b"failure", b"retry", b"count", b"gauge", b"true", b"false",
    b"null", b"2026-11-29T10:59:60.999999999Z", b"2026-11-29T11:10:00Z", b"2025-10-25T11:00:00Z",
    b"2024-02-29T", b"1970-01-01T00:00:00Z", b"\\u0000", b"\\ud83d\\ude00", b"\\ud800", b"\\udc00",
    b"\\u2028", b'\\"', b"\\\\", b"\xe2\x80\xa8", b"\xef\xbb\xbf", b"\xed\xa0\x80", b"\xc0\x80",
    b"\xf4\x90\x80\x80", b"-0", b"-0.0", b"1e-400", b"1E5", b"0.1e1", b"1e999", b"1.7e308", b"604800000",
    b"999999999999999999", b"1000000000000000000", b"00", b"1.", b".5", b"\r", b"\x0c", b"\t", b", ", b": ",
]


def _dictionary_file() -> str:
    """DICTIONARY in libFuzzer's -dict format (every byte outside printable ASCII, and quote and backslash,
    hex-escaped)."""
    text = "".join('"' + "".join(chr(b) if 32 <= b < 127 and b not in b'"\\' else f"\\x{b:02x}" for b in token)
                   + '"\n' for token in DICTIONARY)
    # named by its content: one file in the temp directory however many runs (and runs in parallel agree)
    path = Path(tempfile.gettempdir()) / f"fuzz_scan-{hashlib.sha1(text.encode()).hexdigest()[:12]}.dict"
    if not path.exists():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text, encoding="ascii")
        tmp.replace(path)
    return str(path)


def main() -> None:
    argv = list(sys.argv)
    for arg in argv[1:]:
        corpus = Path(arg)
        if not arg.startswith("-") and corpus.is_dir() and not any(corpus.iterdir()):
            for name, data in seeds().items():
                (corpus / name).write_bytes(data)
    for name, data in seeds().items():  # the seeds themselves must hold (the valid lines also be taken)
        before = _stats["accepted"]
        check_block(data)
        assert name.startswith("corner") or _stats["accepted"] == before + 1, data[:500]
    if not any(a.startswith("-dict=") for a in argv):
        argv.append(f"-dict={_dictionary_file()}")
    atheris.Setup(argv, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
