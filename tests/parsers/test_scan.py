"""The native scanner (parsers.scan) against the reference it stands in for.

The contract: whenever ``scan_range`` returns ``(lines, skipped, columns, stop)``, ``LineParser.parse`` of
the range ``data[:stop]`` (whole lines; ``stop`` is ``len(data)`` or the start of a declined line, one that
holds ``apm.schema``) finds the same lines and skipped lines, no invalid line, no fragment, and
``columns.from_events`` of its events equals ``columns`` (codes, tables, doubles bit for bit). ``scan`` (the
whole block or None) is ``scan_range`` when ``stop == len(data)``. Either may give up (None) on anything,
but not on the app's own lines (the realistic variants below must be accepted, so that the fast path does
not silently degrade).
"""

from __future__ import annotations

import ast
import calendar
import io
import json
import os
import platform
import random
import shlex
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from aggregator.loggen import generate_events, write_log
from parsers import LineParser, scan
from parsers.columns import KIND_CODES, STRING_FIELDS, from_events
from parsers.event import JSON_NAMES, REQUIRED_BY_KIND
from tests.parsers._parser_lines import BY_KIND, NOW, block, event_dict, event_line

MAX_FUTURE = 600.0
MAX_PAST = 400 * 86400.0
MAX_LINE = 64 * 1024

pytestmark = pytest.mark.skipif(not scan.available, reason="parsers._scan not built, or LOGAPM_NATIVE=0")

FAST = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run_range(data: bytes | memoryview, *, now: float = NOW, max_line: int = MAX_LINE) -> Any:
    """``scan_range(data)``, its range checked against the reference when it is not None."""
    got = scan.scan_range(data, now - MAX_PAST, now + MAX_FUTURE, max_line)
    if got is None:
        return None
    data = bytes(data)
    lines, skipped, cols, stop = got
    assert 0 <= stop <= len(data) and (stop == 0 or data[stop - 1 : stop] == b"\n"), (stop, data[:2000])
    if stop < len(data):  # a declined line: it holds the marker
        assert b"apm.schema" in data[stop : data.index(b"\n", stop)], (stop, data[:2000])
    if stop == 0:
        assert (lines, skipped, cols.n) == (0, 0, 0)
        return got
    ref = LineParser(now=now, max_future_seconds=MAX_FUTURE, max_past_seconds=MAX_PAST,
                     max_line_bytes=max_line).parse(data[:stop])
    assert not ref.invalid and not ref.fragments, (ref.invalid, data[:2000])
    assert (lines, skipped) == (ref.lines, ref.skipped), data[:2000]
    assert cols.n == len(ref.events)
    assert from_events(ref.events).differences(cols) == [], data[:2000]
    return got


def run(data: bytes, *, now: float = NOW, max_line: int = MAX_LINE, accept: bool | None = None) -> Any:
    """``scan(data)`` (the whole block), its range checked against the reference (``run_range``);
    ``accept`` True/False asserts that it took (or did not take) the whole block."""
    ranged = run_range(data, now=now, max_line=max_line)
    got = scan.scan(data, now - MAX_PAST, now + MAX_FUTURE, max_line)
    assert (got is None) == (ranged is None or ranged[3] != len(data))
    if accept is not None:
        assert (got is not None) == accept, (accept, data[:2000])
    return got


def line_of(ev: dict[str, Any], *, spaced: bool = False, ascii_only: bool = False) -> bytes:
    if spaced or ascii_only:
        sep = (", ", ": ") if spaced else (",", ":")
        return json.dumps(ev, separators=sep, ensure_ascii=ascii_only).encode()
    return orjson.dumps(ev)


# --- the C tables are the Python ones ----------------------------------------------------------------------

def test_tables_match_python() -> None:
    from parsers import _scan  # type: ignore[attr-defined]

    assert _scan.STRING_FIELDS == STRING_FIELDS
    expected_keys = {name: attr for attr, name in JSON_NAMES.items()} | {"@logapm.parsed_ts": "ts"}
    assert expected_keys == _scan.KEYS
    assert _scan.REQUIRED_BY_KIND == REQUIRED_BY_KIND
    # dict equality ignores order: the C KINDS order (the kind codes) is the order of its REQUIRED_BY_KIND
    assert list(_scan.REQUIRED_BY_KIND) == list(KIND_CODES)


def test_native_off_by_env() -> None:
    code = "from parsers import scan; print(scan.available, scan.scan(b'{}\\n', 0.0, 1.0, 100))"
    env = {**os.environ, "LOGAPM_NATIVE": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "None"]


# --- the app's own lines: accepted and equal -----------------------------------------------------------------

def _generated(n: int, seed: int) -> bytes:
    out = io.BytesIO()
    write_log(out, generate_events(n, start=NOW - 3720, seconds=3600, seed=seed), ordinary_every=100)
    return out.getvalue()


def _cut(data: bytes, size: int) -> list[bytes]:
    """``data`` (ending with a newline) cut at newlines into blocks of about ``size`` bytes."""
    blocks, i = [], 0
    while i < len(data):
        j = data.rfind(b"\n", i, i + size)
        if j < i:
            j = data.find(b"\n", i)
        blocks.append(data[i : j + 1])
        i = j + 1
    return blocks


def test_generated_log_blocks() -> None:
    data = _generated(30_000, seed=7)
    events = sum(run(b, accept=True)[2].n for b in _cut(data, 2_000_000))
    assert events == 30_000
    head = data[: data.rfind(b"\n", 0, 400_000) + 1]
    for b in _cut(head, 20_000):  # many small blocks: tables and caches start afresh each time
        assert run(b, accept=True)[2].n == b.count(b'"apm.schema"')
    cols = run(data, accept=True)[2]  # one block: every kind, metric tags
    assert set(cols.kind.tolist()) == set(KIND_CODES.values())
    assert any(t for t in cols.metric_tags)


def test_columns_outlive_later_calls() -> None:
    """The columns are views of an arena the module reuses once nothing refers to it: columns still held (all
    of them, or one column alone) keep their values through later calls, and a dropped result's arena is
    used again."""
    from parsers import _scan  # type: ignore[attr-defined]

    data = _generated(3_000, seed=11)
    blocks = _cut(data, 100_000)
    held = [run(b, accept=True) for b in blocks[:4]]  # more results held than the module keeps arenas
    one_column = run(blocks[4], accept=True)[2].ts
    expected_ts = one_column.tobytes()
    for b in blocks[5:] + blocks:
        run(b, accept=True)
    for b, got in zip(blocks, held, strict=False):
        ref = LineParser(now=NOW, max_future_seconds=MAX_FUTURE, max_past_seconds=MAX_PAST,
                         max_line_bytes=MAX_LINE).parse(b)
        assert from_events(ref.events).differences(got[2]) == []
    assert one_column.tobytes() == expected_ts
    first = _scan.scan(blocks[0], NOW - MAX_PAST, NOW + MAX_FUTURE, MAX_LINE)
    arena = id(first[3])
    del first
    assert id(_scan.scan(blocks[1], NOW - MAX_PAST, NOW + MAX_FUTURE, MAX_LINE)[3]) == arena


def _span_lines() -> tuple[bytes, list[str]]:
    """Lines whose span ids are ASCII, non-ASCII raw, escaped (ASCII and not), repeated as parents; and the
    span table the list-making scanner gave (the reference's: each event's span id, then its parent's)."""
    ids = ["00f067aa0ba902b7", "caf\u00e9" + "0" * 12, "\u65e5\u672c" + "1" * 14, "\U0001f600" + "2" * 15,
           "a" * 16]
    lines, table = [], []
    for i, sid in enumerate(ids):
        parent = ids[i - 1] if i else None
        ev = event_dict("request", span_id=sid, parent_span_id=parent if parent else ...)
        lines.append(line_of(ev, ascii_only=i % 2 == 1))  # odd lines: non-ASCII as \u escapes
        table += [x for x in (sid, parent) if x is not None and x not in table]
    lines.append(event_line("request", span_id=ids[0]).replace(b'"00f0', b'"\\u00300f0'))  # escaped, seen
    return block(*lines), table


def test_span_table_reads_as_a_list() -> None:
    """``tables["span_id"]`` is a _scan.Strings (no str per span id until read): it reads as the list the
    scanner made before (the reference's), whatever a consumer does with it."""
    import copy
    import pickle

    from parsers import _scan  # type: ignore[attr-defined]

    data, expected = _span_lines()
    cols = run(data, accept=True)[2]
    t = cols.tables["span_id"]
    assert type(t) is _scan.Strings
    assert len(t) == len(expected) == 5
    assert t == expected and expected == t and (t != expected) is False and t != expected[:-1]
    assert t != [*expected[:-1], "x" * 16] and t != [] and t == t
    assert (t == tuple(expected)) is False  # as a list: never equal to a tuple
    assert list(t) == [*iter(t)] == [t[i] for i in range(len(t))] == expected
    assert [t[-i] for i in range(1, 6)] == expected[::-1]
    assert t[1:4] == expected[1:4] and t[::-2] == expected[::-2] and t[10:] == []
    assert [*t, None][-1] is None
    for bad in (5, -6, 10**20):
        with pytest.raises(IndexError):
            t[bad]
    with pytest.raises(TypeError):
        t["0"]
    with pytest.raises(TypeError):
        hash(t)
    assert repr(t) == repr(expected)
    for back in (pickle.loads(pickle.dumps(t)), copy.deepcopy(t), copy.copy(t)):
        assert type(back) is list and back == expected
    # the codes read through it as through the list (the events' span ids and parents)
    ref = LineParser(now=NOW, max_future_seconds=MAX_FUTURE, max_past_seconds=MAX_PAST,
                     max_line_bytes=MAX_LINE).parse(data)
    table = [*t, None]
    assert [table[c] for c in cols.codes["span_id"].tolist()] == [e.span_id for e in ref.events]
    assert [table[c] for c in cols.codes["parent_span_id"].tolist()] == [e.parent_span_id for e in ref.events]
    empty = run(block(event_line("request", span_id=None, parent_span_id=None)), accept=True)[2]
    assert type(empty.tables["span_id"]) is _scan.Strings and empty.tables["span_id"] == [] and not list(
        empty.tables["span_id"])


def test_span_table_outlives_the_data() -> None:
    """The table copies its values' bytes: it reads the same after the scanned data (bytes, a bytearray
    changed in place, a memoryview's buffer) is gone and the module's buffers were used again."""
    import gc

    data, expected = _span_lines()
    tables = []
    for make in (bytes, bytearray, lambda d: memoryview(bytearray(d))):
        buf = make(data)
        tables.append(scan.scan(buf, NOW - MAX_PAST, NOW + MAX_FUTURE, MAX_LINE)[2].tables["span_id"])
        if isinstance(buf, bytearray):
            buf[:] = b"x" * len(buf)
        del buf
    gc.collect()
    for b in _cut(_generated(2_000, seed=5), 50_000):  # the scratch, tail and arenas reused
        run(b, accept=True)
    assert all(t == expected for t in tables)


def test_trace_table_is_lazy_and_joins_as_its_list() -> None:
    """``tables["trace_id"]`` is a _scan.Strings too (ASCII, non-ASCII raw and escaped ids, an escaped NUL,
    events without one): it reads as the reference's table, and ``join(sep)`` (what a worker sends the parent,
    made from the bytes) is ``sep.join`` of that list for any separator; a separator that is not a str is
    refused as str.join refuses it."""
    from parsers import _scan  # type: ignore[attr-defined]
    from parsers.columns import from_events

    ids = ["4bf92f3577b34da6a3ce929d0e0e4736", "caf\u00e9" + "0" * 28, "\u65e5\u672c" + "1" * 30,
           "\U0001f600" * 32, "a\u0000" + "b" * 30]
    lines = [line_of(event_dict("request", trace_id=tid), ascii_only=i % 2 == 1) for i, tid in enumerate(ids)]
    lines += [event_line("db", trace_id=ids[2]), event_line("request", trace_id=None), event_line("cache")]
    data = block(*lines)
    t = run(data, accept=True)[2].tables["trace_id"]
    ref = LineParser(now=NOW, max_future_seconds=MAX_FUTURE, max_past_seconds=MAX_PAST,
                     max_line_bytes=MAX_LINE).parse(data)
    expected = from_events(ref.events).tables["trace_id"]
    assert type(t) is _scan.Strings and type(expected) is list
    assert t == expected and list(t) == expected and len(set(expected)) == len(expected) == 5
    for sep in ("\x00", ",", "", "--", "\u00e9", "\U0001f600"):
        for table in (t, run(block(event_line("request"), event_line("db", trace_id="f" * 32)), accept=True)[2]
                      .tables["trace_id"]):
            joined = table.join(sep)
            assert type(joined) is str and joined == sep.join(list(table))
    empty = run(block(event_line("request", trace_id=None)), accept=True)[2].tables["trace_id"]
    assert type(empty) is _scan.Strings and empty == [] and empty.join("\x00") == ""
    for bad in (b"\x00", None, 0):
        with pytest.raises(TypeError):
            t.join(bad)


@pytest.mark.parametrize("kind", list(BY_KIND))
def test_each_valid_line(kind: str) -> None:
    run(block(event_line(kind)), accept=True)


def test_all_valid_lines_one_block() -> None:
    lines = [event_line(k) for k in BY_KIND]
    lines += [event_line(k, span_id="a" * 16, parent_span_id="b" * 16) for k in BY_KIND]
    lines += [event_line(k, parent_span_id="00f067aa0ba902b7") for k in BY_KIND]  # parent = a known span
    cols = run(block(*lines), accept=True)[2]
    assert cols.n == len(lines)


# Realistic variants: the app, another formatter, or a shipper may write these; all must stay on the fast path.
VARIANTS: dict[str, bytes] = {
    "escaped quotes": event_line("db", db__query__text='SELECT * FROM "user" WHERE "id" = %s'),
    "escaped backslash and slash": line_of(event_dict("request", http__route="api/a\\b/c"), ascii_only=True)
    .replace(b"a\\\\b/c", b"a\\\\b\\/c"),
    "control escapes": event_line("db", db__query__text="SELECT\n\t*\r\nFROM x\b\f"),
    "u escapes": line_of(event_dict("request", http__route="api/caf\u00e9/\u65e5\u672c/"), ascii_only=True),
    "surrogate pair": line_of(event_dict("request", http__route="api/\U0001f600/"), ascii_only=True),
    "escaped nul": line_of(event_dict("db", db__query__text="a\u0000b"), ascii_only=True),
    "raw utf-8": event_line("request", http__route="api/caf\u00e9/\u65e5\u672c/\U0001f600"),
    "non-ascii ids": event_line("request", span_id="0" * 14 + "\u00e9\u00e9", trace_id="\U0001f600" * 32),
    "raw utf-8 everywhere": event_line("cache", cache__name="k\u00e9sz", service__name="\u00fc" * 4096),
    "whitespace": line_of(event_dict("task"), spaced=True),
    "tabs and returns": b"{ \t" + json.dumps(event_dict("external"), separators=(" ,\t", "\r:\t ")).encode()[1:-1]
    + b"\r }",
    "unknown keys": line_of(event_dict("request", extra={"a": [1, 2.5, -3e-7, {"b": None}], "c": True,
                                                         "d": "x\\y"},
                                       level="info", logger="django.request", n=12345678901234567890123,
                                       f=False, empty_obj={}, empty_list=[], nested=[[[[[[[]]]]]]]),
                            ascii_only=True),
    "odd numbers in unknown keys": event_line("request", x="y").replace(
        b'"x":"y"', b'"x":[1e99999999999999999999,' + b"1" * 500 + b",-0.0e-0,0E+0,-0]"),
    "escaped literals": event_line("task").replace(b'"task"', b'"t\\u0061sk"')
    .replace(b'"success"', b'"succ\\u0065ss"'),
    "odd floats": event_line("metric").replace(b'"metric.value":1', b'"metric.value":1e-999999999999'),
    "many digits": event_line("metric").replace(b'"metric.value":1', b'"metric.value":' + b"1" * 30 + b"e-30"),
    "del and nul escapes": line_of(event_dict("request", http__route="a\x7fb\x00c"), ascii_only=False),
    "null optionals": event_line("request", outcome=None, trace_id=None, span_id=None, parent_span_id=None,
                                 service__name=None, deployment__environment=None,
                                 http__response__status_code=None, error__type=None),
    "metric tags": event_line("metric", metric__tags={"plan": "pro", "caf\u00e9": "\u65e5\u672c", "q": 'a"b'}),
    "metric tags empty": event_line("metric", metric__tags={}),
    "metric tags null": event_line("metric", metric__tags=None),
    "metric gauge negative": event_line("metric", metric__type="gauge", metric__value=-1.5e300,
                                        metric__name="a.b_c.D9"),
    "metric int value": event_line("metric", metric__value=-0),
    "all optionals": event_line("task", service__version="1.2.3", host__name="web-1", error__type="X",
                                task__retries=3, task__state="retry", task__queue_wait_ms=0),
    "db extras": event_line("db", db__response__returned_rows=-1, db__executemany=-5),
    "cache miss": event_line("cache", cache__hit=False, cache__keys=0),
    "edges": event_line("request", duration_ms=0, http__response__status_code=599),
    "max duration": event_line("request", duration_ms=7 * 24 * 3600 * 1000.0),
    "long string": event_line("db", db__query__text="x" * 4096),
    "long unicode string": event_line("db", db__query__text="\u00e9" * 4096),
    "timestamp no fraction": event_line("request", timestamp="2026-11-29T10:15:04Z"),
    "timestamp 9 digits": event_line("request", timestamp="2026-11-29T10:15:04.123456789Z"),
    "timestamp leap second": event_line("request", timestamp="2026-11-29T10:15:60.5Z"),
    "exponent floats": event_line("request").replace(b'"duration_ms":182.4', b'"duration_ms":1.824E+2'),
    "float -0.0": event_line("request", duration_ms=-0.0),
    "float ints": event_line("request").replace(b'"duration_ms":182.4', b'"duration_ms":-0'),
    "long mantissa": event_line("request").replace(b'"duration_ms":182.4',
                                                   b'"duration_ms":182.40000000000000568434188608080149'),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_realistic_variant_accepted(name: str) -> None:
    run(block(VARIANTS[name]), accept=True)


def test_timestamps_over_the_years() -> None:
    # leap days, month ends, the window's edges (inclusive), as the reference reads them
    stamps = ["2024-02-29T23:59:59.999Z", "2000-02-29T00:00:00Z", "2100-02-28T12:00:00.5Z",
              "2024-12-31T23:59:60.999999999Z", "1970-01-01T00:00:00.000000001Z", "2024-01-01T00:00:00.1Z"]
    for stamp in stamps:
        now = float(calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")))
        run(block(event_line("request", timestamp=stamp)), now=now + 1, accept=True)
    line = block(event_line("request", timestamp="2026-11-29T10:15:04.5Z"))
    ts = float(calendar.timegm((2026, 11, 29, 10, 15, 4))) + 0.5
    assert run(line, now=ts - MAX_FUTURE, accept=True)[2].ts[0] == ts  # the future limit itself
    assert run(line, now=ts + MAX_PAST, accept=True)[2].ts[0] == ts  # the past limit itself
    run(line, now=ts - MAX_FUTURE - 0.001, accept=False)
    run(line, now=ts + MAX_PAST + 0.001, accept=False)
    run(block(event_line("request", timestamp="2023-02-29T10:15:04Z")), now=ts, accept=False)
    run(block(event_line("request", timestamp="1969-12-31T23:59:59Z")), now=0.0, accept=False)


def test_interning_near_misses() -> None:
    # values of one length that differ in one byte (first, middle, last), one after another, in every table
    base = "0123456789abcdef" * 3
    lines = []
    for n in (1, 3, 4, 7, 8, 9, 15, 16, 17, 31, 32, 33, 48):
        for pos in sorted({0, n // 2, n - 1}):
            for ch in "xyx":
                value = base[:pos] + ch + base[pos + 1 : n]
                ids = (base[:pos] + ch + base[pos + 1 :])[:32]
                lines.append(event_line("db", db__query__text=value, db__system=value, service__name=value,
                                        span_id=ids[:16], parent_span_id=ids[16:32], trace_id=ids))
    cols = run(block(*lines), accept=True)[2]
    assert len(cols.tables["db_query_text"]) == len(set(cols.strings("db_query_text")))


def test_shuffled_key_orders() -> None:
    rng = random.Random(5)
    lines = []
    for _ in range(60):
        ev = event_dict(rng.choice(list(BY_KIND)), extra={"x": [1]})
        items = list(ev.items())
        rng.shuffle(items)
        lines.append(orjson.dumps(dict(items)))
    run(block(*lines), accept=True)


def test_key_and_colon_spacing() -> None:
    """Keys are predicted with their colon (``"name":``): a key with whitespace before its colon, or after it,
    takes the general path, and the prediction recovers on the next line; the same fields either way."""
    compact = event_line("db")
    forms = [compact, compact.replace(b'":', b'" :'), compact.replace(b'":', b'":\t'), compact.replace(b'":', b'"\r:  '),
             compact.replace(b'"db.system":', b'"db.system" :'), compact]
    cols = run(block(*forms, *forms[::-1]), accept=True)[2]
    assert cols.n == 2 * len(forms) and len(set(cols.strings("db_system"))) == 1


def test_variants_with_ordinary_lines() -> None:
    ordinary = b'{"timestamp":"2026-11-29T10:15:04.512Z","level":"info","message":"caf\xc3\xa9 \\"q\\""}'
    lines = [ordinary, *VARIANTS.values(), ordinary, b'{"msg":"plain"}']
    got = run(block(*lines), accept=True)
    assert got[1] == 3


def test_nothing_but_ordinary_lines() -> None:
    assert run(block(b'{"a":1}', b'{"b":"x"}'), accept=True)[:2] == (2, 2)
    # many short lines (the line table grows), then the app's lines again (buffers kept between calls)
    assert run(b"{}\n" * 100_000 + block(event_line("cache")), accept=True)[:2] == (100_001, 100_000)
    run(block(event_line("db")), accept=True)


# --- given up on: the reference refuses these lines, reads them otherwise, or takes another path ---------

TS = b'"timestamp":"2026-11-29T10:15:04.512Z"'
REFUSED: dict[str, bytes] = {
    "duplicate known key": event_line("request").replace(b'"apm.kind":"request"',
                                                         b'"apm.kind":"db","apm.kind":"request"'),
    "escaped known key": event_line("request").replace(b'"http.route"', b'"http\\u002eroute"'),
    "parsed ts key": event_line("request", **{"@logapm.parsed_ts": 5.0}),
    "lone surrogate": line_of(event_dict("request", http__route="a"), ascii_only=True)
    .replace(b'"http.route":"a"', b'"http.route":"\\ud800"'),
    "lone low surrogate": event_line("request").replace(b'"GET"', b'"\\udc00GET"'),
    # span ids' strings are made only when read (_scan.Strings): an escaped one must still be decoded when scanned
    "lone surrogate span id": event_line("request", span_id="0" * 15 + "Z").replace(b'0Z"', b'0\\ud800"'),
    "lone surrogate parent span id": event_line("request", parent_span_id="0" * 15 + "Z")
    .replace(b'0Z"', b'0\\udc00"'),
    "lone surrogate skipped": event_line("request", x="y").replace(b'"x":"y"', b'"x":["\\udc00"]'),
    "lone high surrogate skipped": event_line("request", x="y").replace(b'"x":"y"', b'"x":"\\ud800\\u0041"'),
    "raw control char": event_line("request").replace(b'"GET"', b'"G\tET"'),
    "raw tab after an escape": event_line("request").replace(b'"GET"', b'"G\\nE\tT"'),
    "raw tab in skipped string": event_line("request", x="y").replace(b'"x":"y"', b'"x":"\\"\t"'),
    "bad escape": event_line("request").replace(b'"GET"', b'"G\\xET"'),
    "int as float": event_line("request", http__response__status_code=200.0),
    "int too big": event_line("db", db__executemany=10**18),
    "negative cache keys": event_line("cache", cache__keys=-1),
    "negative retries": event_line("task", task__retries=-1),
    "rows below -1": event_line("db", db__response__returned_rows=-2),
    "executemany float": event_line("db", db__executemany=1.0),
    "negative queue wait": event_line("task", task__queue_wait_ms=-0.5),
    "metric value too big": event_line("metric", metric__value=1.8e308),
    "metric value too small": event_line("metric", metric__value=-1.8e308),
    "status as string": event_line("request", http__response__status_code="200"),
    "status below range": event_line("request", http__response__status_code=99),
    "form feed as whitespace": event_line("request").replace(b',"outcome"', b',\x0c"outcome"'),
    "status out of range": event_line("request", http__response__status_code=600),
    "negative duration": event_line("request", duration_ms=-0.001),
    "duration too long": event_line("request", duration_ms=7 * 24 * 3600 * 1000.0 + 0.01),
    "inf": event_line("metric").replace(b'"metric.value":1', b'"metric.value":1e999'),
    "schema 2": event_line("request").replace(b'"apm.schema":1', b'"apm.schema":2'),
    "schema 1.0": event_line("request").replace(b'"apm.schema":1', b'"apm.schema":1.0'),
    "schema null": event_line("request").replace(b'"apm.schema":1', b'"apm.schema":null'),
    "kind unknown": event_line("request", **{"apm.kind": "job"}),
    "missing required": event_line("request", http__route=...),
    "null required": event_line("db", db__system=None),
    "bad trace id": event_line("request", trace_id="abc"),
    "bad span id": event_line("request", span_id="0" * 17),
    "span id of 16 bytes, 15 characters": event_line("request", span_id="0" * 14 + "\u00e9"),
    "trace id of 32 bytes, 31 characters": event_line("request", trace_id="0" * 30 + "\u00e9"),
    "string too long": event_line("db", db__query__text="x" * 4097),
    "bad metric name": event_line("metric", metric__name="9lives"),
    "metric name newline": event_line("metric", metric__name="abc\n"),
    "tag not a string": event_line("metric", metric__tags={"a": 1}),
    "tag duplicate": event_line("metric").replace(b'{"plan":"pro"}', b'{"plan":"pro","plan":"free"}'),
    "tag nested": event_line("metric", metric__tags={"a": {"b": "c"}}),
    "bool as int": event_line("cache", cache__hit=1),
    "timestamp future": event_line("request", timestamp="2026-11-29T11:10:00.001Z"),
    "timestamp past": event_line("request", timestamp="2025-10-25T10:59:59.999Z"),
    "timestamp bad day": event_line("request", timestamp="2026-02-29T10:15:04.512Z"),
    "timestamp 10 digits": event_line("request", timestamp="2026-11-29T10:15:04.1234567890Z"),
    "timestamp 61 seconds": event_line("request", timestamp="2026-11-29T10:15:61Z"),
    "timestamp hour 24": event_line("request", timestamp="2026-11-29T24:15:01Z"),
    "timestamp minute 60": event_line("request", timestamp="2026-11-29T10:60:01Z"),
    "timestamp month 13": event_line("request", timestamp="2026-13-29T10:15:01Z"),
    "timestamp day 0": event_line("request", timestamp="2026-11-00T10:15:01Z"),
    "timestamp day 31": event_line("request", timestamp="2026-11-31T10:15:01Z"),
    "timestamp lower z": event_line("request", timestamp="2026-11-29T10:15:01z"),
    "timestamp lower t": event_line("request", timestamp="2026-11-29t10:15:01Z"),
    "timestamp no zone": event_line("request", timestamp="2026-11-29T10:15:01.5"),
    "timestamp empty fraction": event_line("request", timestamp="2026-11-29T10:15:01.Z"),
    "timestamp unicode digit": event_line("request", timestamp="2026-11-29T10:15:0\u0661Z"),
    "timestamp not a string": event_line("request", timestamp=1764411304.5),
    "timestamp escaped": event_line("request").replace(b"T10:15", b"\\u005410:15"),
    "timestamp offset": event_line("request", timestamp="2026-11-29T10:15:04.512+00:00"),
    "marker in a value": b'{"message":"apm.schema"}',
    "marker nested": b'{"x":{' + TS + b',"apm.schema":1,"apm.kind":"metric"}}',
    "trailing comma": event_line("request")[:-1] + b",}",
    "two objects": event_line("request") + b" " + event_line("request"),
    "deep nesting": event_line("request", x=json.loads("[" * 70 + "]" * 70)),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_refused(name: str) -> None:
    run(block(REFUSED[name]), accept=False)
    run(block(event_line("request"), REFUSED[name], b'{"a":1}'), accept=False)


def test_declined_line_ends_the_range() -> None:
    good, bad = event_line("request"), event_line("db", duration_ms="3.2")
    ordinary = b'{"level":"info","message":"hello"}'
    data = block(good, ordinary, good, bad, good, bad)
    lines, skipped, cols, stop = run_range(data)
    assert (lines, skipped, cols.n, stop) == (3, 1, 2, data.index(bad))
    # from the declined line on, as the caller goes on (a memoryview: the same buffer, no copy)
    after = data.index(bad) + len(bad) + 1
    lines, skipped, cols, stop = run_range(memoryview(data)[after:])
    assert (lines, skipped, cols.n, stop) == (1, 0, 1, len(good) + 1)
    lines, skipped, cols, stop = run_range(block(bad, good))
    assert (lines, skipped, cols.n, stop) == (0, 0, 0, 0)
    for name, line in REFUSED.items():  # each declined (or given up), never read past
        got = run_range(block(good, line, good))
        assert got is None or got[3] <= len(good) + 1, name


def test_block_rules_after_a_declined_line() -> None:
    """The block's rules (every line an object, shorter than max_line_bytes, no Docker record) hold for the
    lines after a declined line too when they are in the same segment of the pass as it, the last one (the
    lines after a declined line are checked, not read: test_segments_of_the_pass has them in a later
    segment): each such line gives the block up, as it does with no declined line before it."""
    good, declined = event_line("request"), event_line("db", duration_ms="3.2")
    assert run_range(block(good, declined, good))[3] == len(good) + 1
    for bad in (b"plain text", b'{"log":"x","stream":"stdout"}', b'{"a":"' + b"y" * MAX_LINE + b'"}', b'{"a":1'):
        assert run_range(block(good, bad, good)) is None, bad[:20]
        assert run_range(block(good, declined, good, bad, good)) is None, bad[:20]


def test_block_rules_hold_for_the_range() -> None:
    """The rules that decide for a whole block decide for the range returned: its skipped lines not all
    with a backslash, not `{"log":` records without an event."""
    bad = event_line("db", duration_ms="3.2")
    hidden = event_line("db").replace(b'"apm.schema"', b'"apm\\u002eschema"')
    assert run_range(block(event_line("db"), hidden, bad, b'{"a":1}')) is None
    assert run_range(block(event_line("db"), hidden, b'{"a":1}', bad, b'{"a":1}'))[:2] == (3, 2)
    assert run_range(block(b'{"log": "x"}', b'{"log": "y"}', bad, event_line("db"))) is None
    assert run_range(block(b'{"log": "x"}', event_line("db"), bad))[:2] == (2, 1)


def test_block_preconditions() -> None:
    good = event_line("request")
    run(block(good), max_line=len(good) + 1, accept=True)
    run(block(good), max_line=len(good), accept=False)  # the whole-block path's bound: >= max_line_bytes
    run(good, accept=False)  # no final newline
    run(b"", accept=False)
    run(block(good, b"plain text line"), accept=False)
    run(block(good, b"{}\x00"), accept=False)
    run(block(good, b'{"a":"\xff"}'), accept=False)
    run(block(good, b'{"a":"\xed\xa0\x80"}'), accept=False)  # an encoded surrogate
    run(block(good, b'{"log":"x","stream":"stdout"}'), accept=False)  # Docker records are unwrapped
    run(block(b'{"log": "x"}', b'{"log": "y"}'), accept=False)  # a block of log wrappers without events


def test_newline_pass_around_vector_widths() -> None:
    """The first pass (newlines, NUL, non-ASCII bytes; 64 bytes a step, then a byte at a time):
    lines of every length from 2 to 140 bytes, so that newlines fall on every offset of a step, in blocks
    whose length is and is not a multiple of the step; a NUL, a non-ASCII character and an invalid byte at
    each offset of the first 200 bytes."""
    lines = [b'{"a":"' + b"x" * (n - 8) + b'"}' if n >= 8 else b"{" + b" " * (n - 2) + b"}" for n in range(2, 141)]
    for cut in (len(lines), 63, 64, 65, 1):
        data = block(*lines[:cut], event_line("db"))
        assert run(data, accept=True)[:2] == (cut + 1, cut)
    head = block(*lines[100:110])  # long enough for several 64-byte steps
    for k in range(6, 200):
        i = k if head[k : k + 1] == b"x" else None
        if i is None:
            continue
        run(head[:i] + b"\x00" + head[i + 1 :], accept=False)
        assert run(head[:i] + b"\xc3\xa9" + head[i + 1 :], accept=True)[:2] == (10, 10)
        run(head[:i] + b"\xff" + head[i + 1 :], accept=False)


def _landing(unit: bytes, offset: int, at: int, segments: int = 3) -> bytes:
    """A padding line then ``unit`` (whole lines) repeated, so that byte ``offset`` of one copy of ``unit`` is
    byte ``at`` of the block, which goes on to about ``segments`` segments of the scanner's pass."""
    from parsers import _scan  # type: ignore[attr-defined]

    before = max(0, (at - offset - 100) // len(unit))
    n = at - before * len(unit) - offset - len(b'{"pad":""}\n')
    assert n >= 0
    after = max(1, (segments * _scan.SEGMENT - at) // len(unit))
    return b'{"pad":"' + b"x" * n + b'"}\n' + unit * (before + 1 + after)


def test_segments_of_the_pass() -> None:
    """The first pass runs a segment (``_scan.SEGMENT`` bytes) ahead of the parse: a newline or a two-byte
    character at each offset around a segment's boundary is read as it is inside a segment (the character
    split by the boundary is one character, an invalid byte there gives the block up), and the block's rules
    hold for the whole block, in any segment after the first: a NUL, an invalid byte, a line that is not an
    object, a Docker record give it up, also after a declined line (whose range is otherwise taken)."""
    from parsers import _scan  # type: ignore[attr-defined]

    seg = _scan.SEGMENT
    ev = event_line("db")
    unit = block(ev, b'{"level":"info","message":"' + "\u00e9".encode() * 40 + b'"}')
    newline, accent = len(ev), unit.index(b"\xc3")
    plain = block(ev, b'{"level":"info","message":"plain"}')
    for d in range(-3, 4):
        for at in (seg + d, 2 * seg + d):
            data = _landing(unit, newline, at)
            assert data[at : at + 1] == b"\n"
            assert run(data, accept=True)[:2] == (data.count(b"\n"), data.count(b"\n") - data.count(b"apm.schema"))
            data = _landing(unit, accent, at)
            assert data[at : at + 2] == "\u00e9".encode()
            run(data, accept=True)
            for bad in (b"\xff\xff", b"\x00\x00", b"\xc3\x00", b"\xe9x"):
                run(data[:at] + bad + data[at + 2 :], accept=False)
            # the only non-ASCII bytes of the block, at the boundary
            data = _landing(plain, plain.index(b"plain"), at)
            run(data[:at] + "\u00e9".encode() + data[at + 2 :], accept=True)
            run(data[:at] + b"\xe9" + data[at + 1 :], accept=False)
            run(data[:at] + b"\xe9\x00" + data[at + 2 :], accept=False)
    data = _landing(unit, newline, seg)
    declined = event_line("db", duration_ms="3.2")
    last = len(data) - len(unit) // 2
    cut = data.index(b"\n", last) + 1  # a line in the last segment: the bad line goes after it
    for bad in (b'{"a":"\xff"}', b'{"a":"\x00"}', b"plain text", b'{"log":"x","stream":"stdout"}'):
        assert cut > 2 * seg
        broken = data[:cut] + bad + b"\n" + data[cut:]
        run(broken, accept=False)
        assert run_range(block(ev, declined) + broken) is None
    assert run_range(block(ev, declined) + data)[3] == len(ev) + 1


def test_columns_grow_past_the_first_segment() -> None:
    """The columns are first sized from the lines of the first segment: a block that starts with long lines
    and goes on with many short event lines (or one that starts with short lines) has all its rows, equal to
    the reference's; the id tables grow the same way."""
    from parsers import _scan  # type: ignore[attr-defined]

    long = b'{"level":"info","message":"' + b"y" * 20_000 + b'"}'
    events = [event_line("request", span_id=f"{i:016x}", trace_id=f"{i // 3:032x}") for i in range(6_000)]
    starts = [long] * (2 * _scan.SEGMENT // len(long) + 1)
    got = run(block(*starts, *events), accept=True)
    assert (got[0], got[2].n) == (len(starts) + len(events), len(events))
    got = run(block(*[b"{}"] * 50_000, *events, *starts), accept=True)
    assert got[2].n == len(events)


def test_avx2_pass_where_the_cpu_has_it() -> None:
    """The AVX2 pass is the one used on a CPU that has AVX2 (the kernel's flags in /proc/cpuinfo), unless
    ``LOGAPM_SCAN_NO_AVX2`` is set: a dispatch that never picked it would pass every other test on the SSE2
    pass, the AVX2 code then never run by them. The parse's AVX2 build (compiled with BMI1/2 too) where the
    CPU has all three: one that lacked BMI1/2 would stop at its first shift."""
    from parsers import _scan  # type: ignore[attr-defined]

    if sys.platform != "linux" or platform.machine() not in {"x86_64", "AMD64"}:
        pytest.skip("the check reads the flags of Linux on x86-64")
    flags = {f for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")
             for f in line.split(":", 1)[1].split()}
    expected = "avx2" in flags and "LOGAPM_SCAN_NO_AVX2" not in os.environ
    assert expected == _scan.AVX2
    assert (expected and {"bmi1", "bmi2"} <= flags) == _scan.AVX2_PARSE


def test_pass_without_avx2() -> None:
    """The SSE2 (or byte) pass, as on a CPU without AVX2 (``LOGAPM_SCAN_NO_AVX2=1``), passes the tests of
    the pass: the vector widths, the segments, the generated blocks."""
    env = {**os.environ, "LOGAPM_SCAN_NO_AVX2": "1"}
    code = "from parsers import _scan; print(_scan.AVX2, _scan.AVX2_PARSE)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", "0"]  # the pass and the parse's SSE2 builds
    tests = "vector_widths or segments_of_the_pass or columns_grow or generated_log_blocks"
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k", tests],
                         env=env, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.splitlines()[-1].startswith("4 passed"), out.stdout[-3000:]


def test_pass_in_small_segments(tmp_path: Path) -> None:
    """The scanner built with 100-byte segments (``-DSCAN_SEGMENT=100``, into a copy of the package) passes
    this module's tests (and those of the pass without AVX2): with segments that small, and not a multiple of
    the 64-byte step, every block crosses boundaries everywhere (lines straddling one, lines longer than a
    segment, each segment ending in the byte loop, the columns and id tables grown), where the 128 KB build
    meets a few. test_segments_of_the_pass is left out: it lays its blocks out for segments longer than a
    line."""
    root = Path(__file__).resolve().parents[2]
    copy = tmp_path / "parsers"
    shutil.copytree(root / "parsers", copy, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    cc = shlex.split(sysconfig.get_config_var("CC") or "cc")
    out = copy / ("_scan" + sysconfig.get_config_var("EXT_SUFFIX"))
    subprocess.run([*cc, "-shared", "-fPIC", "-O2", "-DSCAN_SEGMENT=100", "-I" + sysconfig.get_paths()["include"],
                    str(root / "parsers" / "_scan.c"), "-o", str(out)], check=True, capture_output=True)
    # the copy imported before pytest puts the repository first on sys.path: `parsers` stays the copy
    code = (f"import sys; sys.path[:0] = [{str(tmp_path)!r}, {str(root)!r}]; import pytest; "
            "from parsers import _scan; assert _scan.SEGMENT == 100 and _scan.__file__ == sys.argv[1], _scan.__file__; "
            "sys.exit(pytest.main(sys.argv[2:]))")
    skip = "segments_of_the_pass or pass_without_avx2 or small_segments or structured_none or numbers_none"
    the_pass = "vector_widths or columns_grow or generated_log_blocks or mutations_none or declined or block_rules"
    for no_avx2, tests in ((False, f"not ({skip})"), (True, the_pass)):
        env = {k: v for k, v in os.environ.items() if k != "LOGAPM_SCAN_NO_AVX2"}
        env |= {"LOGAPM_SCAN_NO_AVX2": "1"} if no_avx2 else {}
        got = subprocess.run([sys.executable, "-c", code, str(out), "-q", "-p", "no:cacheprovider", __file__, "-k",
                              tests], cwd=root, env=env, capture_output=True, text=True)
        assert got.returncode == 0 and " passed" in got.stdout.splitlines()[-1], (no_avx2, got.stdout[-3000:],
                                                                                   got.stderr[-2000:])


def test_id_codes_across_lines() -> None:
    """Trace and span ids are looked up (their table slot fetched early) only when they differ from the
    field's previous value: ids repeated, alternating, a parent equal to its own span, a span id equal to
    the previous line's parent, and the same value in both span columns across lines."""
    a, b, c = "a" * 16, "b" * 16, "c" * 16
    ta, tb = "1" * 32, "2" * 32
    pattern = [(ta, a, None), (ta, a, None), (ta, b, a), (tb, a, b), (ta, a, a), (ta, c, a), (tb, a, c),
               (tb, b, b), (ta, b, None), (ta, c, b), (ta, a, c)]
    lines = [event_line("db", trace_id=t, span_id=s, parent_span_id=p) for t, s, p in pattern]
    cols = run(block(*lines), accept=True)[2]
    assert cols.strings("span_id") == [s for _, s, _ in pattern]
    assert cols.strings("parent_span_id") == [p for _, _, p in pattern]
    assert cols.strings("trace_id") == [t for t, _, _ in pattern]
    rng = random.Random(5)
    for _ in range(50):
        picked = [(rng.choice([ta, tb]), rng.choice([a, b, c]), rng.choice([a, b, c, None])) for _ in range(12)]
        run(block(*(event_line("request", trace_id=t, span_id=s, parent_span_id=p) for t, s, p in picked)),
            accept=True)


def test_escaped_marker_in_unmarked_lines() -> None:
    # msgspec reads "apm\u002eschema" as the marker key: when every line decodes as an event, the reference
    # counts the unmarked line as an event, so the scanner cannot call it skipped...
    hidden = event_line("request").replace(b'"apm.schema"', b'"apm\\u002eschema"')
    run(block(event_line("db"), hidden), accept=False)
    # ... unless some other skipped line is plainly no event (then the reference skips it too).
    assert run(block(event_line("db"), hidden, b'{"a":1}'), accept=True)[:2] == (3, 2)


# --- mutations: None or exactly the reference ------------------------------------------------------------

VALUES = [b"0", b"-0", b"-0.0", b"1", b"1.0", b"-1", b"99", b"100", b"599", b"600", b"1e2", b"1E+2", b"1e999",
          b"-1e999", b"1.7e308", b"1.7000000000000001e308", b"-1.7e308", b"5e-324", b"1e-400", b"604800000",
          b"604800000.0000001", b"604800000.00000001", b"999999999999999999", b"1000000000000000000",
          b"-999999999999999999", b"123456789012345678901234567890", b"0.1", b"00", b"01", b"1.", b".5", b"-",
          b"+1", b"1e", b"NaN", b"Infinity", b"true", b"false", b"null", b'""', b'"x"', b'"success"',
          b'"failure"', b'"retry"', b'"gauge"', b'"count"', b'"a.b"', b"[]", b"{}", b'{"a":"b"}', b"[1,2]",
          b'"00f067aa0ba902b7"', b'"4bf92f3577b34da6a3ce929d0e0e4736"', b'"\\u00e9"', b'"\\ud83d\\ude00"',
          b'"2026-11-29T10:15:04.512Z"', b'"2026-11-29T10:15:04Z"', b'"2026-11-29T10:59:60.999999999Z"',
          b'"2026-11-29T11:10:00Z"', b"1.5", b"-2.25e-3", b"3.14159265358979323846", b"2.2250738585072011e-308"]
KEYS = [k.encode() for k in JSON_NAMES.values()] + [b"@logapm.parsed_ts", b"x"]
JUNK = [b'"', b"\\", b",", b":", b"{", b"}", b"[", b"]", b" ", b"\t", b"\r", b"0", b"-", b"e", b".", b"a",
        b"\xc3\xa9", b"\\u", b"\\n", b"null", b"\x01", b"\n"]


def _utf8_text(ev: dict[str, Any]) -> bool:
    try:
        json.dumps(ev, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return False
    return True


@st.composite
def mutated_line(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(list(BY_KIND)))
    variant = draw(st.sampled_from([event_line(kind), line_of(event_dict(kind), spaced=True),
                                    line_of(event_dict(kind), ascii_only=True), *VARIANTS.values()]))
    line = bytearray(variant)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["flip", "delete", "insert", "value", "dup", "key"]))
        if op == "flip" and len(line) > 2:
            i = draw(st.integers(1, len(line) - 2))
            line[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "delete" and len(line) > 2:
            i = draw(st.integers(1, len(line) - 2))
            del line[i : i + draw(st.integers(1, 4))]
        elif op == "insert":
            i = draw(st.integers(1, len(line) - 1))
            line[i:i] = draw(st.sampled_from(JUNK))
        elif op in ("value", "dup", "key"):
            ev = json.loads(bytes(line)) if _is_json(bytes(line)) else None
            if not isinstance(ev, dict) or not ev or not _utf8_text(ev):
                continue  # (a flip can make a \\ud800 escape: a lone surrogate no UTF-8 text can hold)
            key = draw(st.sampled_from(sorted(ev)))
            text = json.dumps(ev, ensure_ascii=False, separators=(",", ":")).encode()
            if op == "value":
                pattern = json.dumps({key: ev[key]}, ensure_ascii=False, separators=(",", ":")).encode()[1:-1]
                name = pattern.split(b":", 1)[0]
                text = text.replace(pattern, name + b":" + draw(st.sampled_from(VALUES)), 1)
            elif op == "dup":
                extra = json.dumps({key: ev[key]}, ensure_ascii=False, separators=(",", ":")).encode()[1:-1]
                text = text[:-1] + b"," + extra + b"}"
            else:
                text = text[:-1] + b',"' + draw(st.sampled_from(KEYS)) + b'":' + draw(st.sampled_from(VALUES)) + b"}"
            line = bytearray(text)
    return bytes(line)


def _is_json(b: bytes) -> bool:
    try:
        json.loads(b)
    except ValueError:
        return False
    return True


@FAST
@given(mutated_line(), st.booleans())
def test_mutations_none_or_equal(line: bytes, with_neighbours: bool) -> None:
    assume(b"\n" not in line)
    if with_neighbours:
        run(block(event_line("request"), line, b'{"level":"info"}', event_line("metric")))
    else:
        run(block(line))


JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False, allow_infinity=False),
                     st.text(max_size=8))
ANY_JSON = st.recursive(JSON_LEAF, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                        max_leaves=8)
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=20)
FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "duration_ms": st.one_of(st.floats(-1, 7e8), st.integers(-5, 10**12), st.sampled_from([0, 0.0, -0.0])),
    "outcome": st.sampled_from(["success", "failure", "Success", ""]),
    "trace_id": st.text("0123456789abcdef\u00e9", min_size=31, max_size=33),
    "span_id": st.text("0123456789abcdef\u00e9", min_size=15, max_size=17),
    "parent_span_id": st.text("0123456789abcdef", min_size=15, max_size=17),
    "http.response.status_code": st.integers(90, 610),
    "db.response.returned_rows": st.integers(-3, 3),
    "db.executemany": st.integers(-(2**63), 2**63),
    "cache.hit": st.sampled_from([True, False, 0, 1, "true"]),
    "cache.keys": st.integers(-2, 2),
    "task.state": st.sampled_from(["success", "failure", "retry", "retried"]),
    "task.queue_wait_ms": st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-2, 2)),
    "task.retries": st.integers(-2, 2),
    "metric.name": st.from_regex(r"\A[A-Za-z0-9_.]{0,6}\Z", fullmatch=True),
    "metric.type": st.sampled_from(["count", "gauge", "histogram"]),
    "metric.value": st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**64), 2**64)),
    "metric.tags": st.one_of(st.dictionaries(TEXT, TEXT, max_size=3), st.dictionaries(TEXT, ANY_JSON, max_size=2)),
}


@st.composite
def structured_line(draw: st.DrawFn) -> bytes:
    """An event line from typed pools (edges and wrong types included), optionals and required fields
    dropped or nulled at random, unknown keys with any JSON, in any order and spacing."""
    kind = draw(st.sampled_from(list(BY_KIND)))
    ev = event_dict(kind)
    for name in draw(st.lists(st.sampled_from(sorted(FIELD_VALUES)), max_size=4)):
        ev[name] = draw(FIELD_VALUES[name])
    for name in draw(st.lists(st.sampled_from(sorted(ev)), max_size=2)):
        if draw(st.booleans()):
            ev[name] = None
        else:
            ev.pop(name, None)
    for name in draw(st.lists(st.sampled_from(["x", "level", "msg", "a.b", ""]), max_size=2)):
        ev[name] = draw(ANY_JSON)
    for name in draw(st.lists(st.sampled_from(sorted(JSON_NAMES.values())), max_size=3)):
        ev.setdefault(name, draw(TEXT))
    items = list(ev.items())
    random.Random(draw(st.integers(0, 1000))).shuffle(items)
    sep = draw(st.sampled_from([(",", ":"), (", ", ": "), (" ,\t", "\r:")]))
    return json.dumps(dict(items), separators=sep, ensure_ascii=draw(st.booleans())).encode()


@FAST
@given(st.lists(structured_line(), min_size=1, max_size=4))
def test_structured_none_or_equal(lines: list[bytes]) -> None:
    run(block(*lines))


@FAST
@given(st.sampled_from(["duration_ms", "task.queue_wait_ms", "metric.value"]),
       st.one_of(st.floats(allow_nan=False, allow_infinity=False).map(repr),
                 st.from_regex(r"\A-?(0|[1-9][0-9]{0,25})(\.[0-9]{1,25})?([eE][-+]?[0-9]{1,3})?\Z", fullmatch=True)))
def test_numbers_none_or_equal(field: str, number: str) -> None:
    kind = "metric" if field == "metric.value" else "task"
    line = event_line(kind, **{field.replace(".", "__"): 0.5}).replace(
        f'"{field}":0.5'.encode(), f'"{field}":{number}'.encode())
    got = run(block(line))
    if got is None:
        return
    col = {"duration_ms": "duration_ms", "task.queue_wait_ms": "queue_wait_ms", "metric.value": "metric_value"}
    value = getattr(got[2], col[field])[0]
    assert value == float(number) or (number.lstrip("-").isdigit() and value == int(number))


def test_float_reprs() -> None:
    # shortest reprs have up to 17 significant digits: past the exact fast path, correctly rounded
    rng = random.Random(11)
    values = [rng.uniform(0, 6e8) for _ in range(1000)] + [rng.random() for _ in range(1000)]
    values += [rng.uniform(-1, 1) * 10.0 ** rng.randint(-320, 307) for _ in range(2000)]
    values += [0.1 + 0.2, 1 / 3, 2.0**53 + 2, 9007199254740993.0, 5e-324, 2.2250738585072014e-308, 1.7e308]
    lines = [event_line("metric", metric__value=v) for v in values]
    lines += [event_line("task", duration_ms=abs(v) % 6e8, task__queue_wait_ms=abs(v)) for v in values]
    for text in ("0.30000000000000004", "9007199254740993", "9007199254740993.0", "1.00000000000000011102230246251565",
                 "123456789012345678e-10", "0.000000000000000000000000000001", "1e22", "1e23", "-1e-22"):
        lines.append(event_line("metric", metric__value=0.5).replace(b":0.5", b":" + text.encode()))
    cols = run(block(*lines), accept=True)[2]
    assert cols.metric_value[: len(values)].tolist() == values


def test_numbers_at_the_fast_path_bounds() -> None:
    """The exact fast path (at most 19 digits making an integer up to 2^53, a power of ten up to 22) and what
    lies just past it (2^53 + 1, 20 digits with leading zeros, 2^64 + 1 (digits that overflow 64 bits),
    10^23, six exponent digits, 19-digit integers): every token the reference reads is read to the same double, each checked against float()
    too."""
    texts = ["123456789012345", "123456789012345.0", "1234567890123456", "12345678901234.5", "1234567890123.45e1",
             "0.123456789012345", "0.1234567890123456", "0.000000000000000000001", "0.0000000000000000000001",
             "1e22", "1e23", "1e-22", "1e-23", "123456789012345e7", "123456789012345e8", "1.5e-0005", "1.5e-00005",
             "1.5e+000001", "9.999999999999999e22", "999999999999999", "9999999999999999", "999999999999999999",
             "9999999999999999999", "100000000000000000000", "-0", "-0.0", "0e5", "-0e-5", "0.0000", "1.000000000000000",
             "10.00000000000000000000", "7e-22", "4.35", "86.383", "2.017", "0.1", "-1.5e-7", "5e-324", "1.7e308",
             "604800000", "604800000.0000001", "9007199254740992e-1", "9007199254740993e-1", "900719925474099.2",
             "900719925474099.3", "9007199254740992.0", "0.000000000000000001", "0.0000000000000000001",
             "0.000000000000000001e-3", "1234567890123456789e-5", "12345678901234567.0e-3", "4503599627370497.5",
             "0.9007199254740992", "0.9007199254740993", "1.8014398509481985e-3",
             "18446744073709551617e-5", "1844674407370955161.7", "36893488147419103233e-20"]  # 2^64 + 1, 2^65 + 1
    lines = [event_line("metric", metric__value=0.5).replace(b":0.5", b":" + t.encode()) for t in texts]
    got = [run(block(line)) for line in lines]
    for text, g in zip(texts, got, strict=True):
        if g is None:  # given up (the reference decides): only past the exact ranges
            assert len(text.lstrip("-").replace(".", "")) > 15 or "e" in text, text
            continue
        value = g[2].metric_value[0]
        expected = float(int(text)) if text.lstrip("-").isdigit() else float(text)
        assert value.tobytes() == np.float64(expected).tobytes(), (text, value, expected)


def test_strings_with_many_escapes() -> None:
    rng = random.Random(3)
    alphabet = ["a", "\u00e9", "\u65e5", "\U0001f600", '"', "\\", "/", "\n", "\t", "\u0001", "\u2028", " "]
    lines = []
    for _ in range(200):
        route = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        tags = {"".join(rng.choice(alphabet) for _ in range(3)): route}
        lines.append(line_of(event_dict("request", http__route=route or "x"), ascii_only=rng.random() < 0.5))
        lines.append(line_of(event_dict("metric", metric__tags=tags), ascii_only=rng.random() < 0.5))
    run(block(*lines), accept=True)


@FAST
@given(st.binary(max_size=40).filter(lambda b: not set(b) & set(b"\n\0\\") and b"apm.schema" not in b))
def test_utf8_as_python_reads_it(raw: bytes) -> None:
    try:
        raw.decode("utf-8")
        valid = True
    except UnicodeDecodeError:
        valid = False
    got = run(block(event_line("request"), b'{"a":"' + raw + b'"}'))
    assert (got is not None) == valid


@FAST
@given(st.binary(max_size=300))
def test_never_raises(data: bytes) -> None:
    scan.scan(data, 0.0, 1e10, 1000)
    scan.scan(b"{" + data + b"}\n", 0.0, 1e10, 1000)


@pytest.mark.parametrize("shape", ["metric tags", "many routes"])
def test_out_of_memory_is_a_memory_error_not_a_verdict(shape: str) -> None:
    """An allocation that fails anywhere inside the C function raises MemoryError (the wrapper then lets the
    reference decide), never a SystemError (an exception set while returning a value, or NULL returned with
    none set) and never a line wrongly skipped: found by the review's out-of-memory sweep (metric tags built
    as a dict; the intern tables growing)."""
    _testcapi = pytest.importorskip("_testcapi")
    from parsers import _scan  # type: ignore[attr-defined]

    head = b'{"timestamp":"2026-11-29T10:15:04.512Z","apm.schema":1,'
    if shape == "metric tags":
        data = head + (b'"apm.kind":"metric","metric.name":"a.b","metric.type":"count","metric.value":1,'
                       b'"metric.tags":{"plan":"pro","region":"eu-west-1"}}\n')
    else:
        data = b"".join(head + b'"apm.kind":"request","duration_ms":1,"http.request.method":"GET",'
                        b'"http.route":"r%d"}\n' % i for i in range(40))
    whole = _scan.scan(data, 0.0, 2e9, 65536)
    outcomes = set()
    for k in range(200):  # fail the k-th allocation
        _testcapi.set_nomemory(k, k + 1)
        try:
            got = _scan.scan(data, 0.0, 2e9, 65536)
        except MemoryError:
            got = MemoryError
        finally:
            _testcapi.remove_mem_hooks()
        if got is not MemoryError:
            # untouched by the failure (it hit after the call's allocations): the same verdict
            assert got[:3] == whole[:3] and got[-1] == whole[-1], (k, got[:3])
        outcomes.add(got is MemoryError)
    assert outcomes == {True, False}  # the sweep reached the function's allocations and went past them


# --- the parse's fast paths at their edges --------------------------------------------------------------------

@pytest.mark.parametrize("field", ["trace_id", "span_id", "parent_span_id"])
def test_ids_with_an_odd_byte_at_each_position(field: str) -> None:
    """An id whose bytes are all printable ASCII but '"' and '\\\\', followed by its closing quote, is taken in
    one vector step; anything else at any of its positions (a non-hex letter, an escape, a two-byte character,
    a quote, a control character, a backslash) and ids one too short or too long go the general way, with the
    reference's verdict."""
    want = 32 if field == "trace_id" else 16
    base = "0123456789abcdef" * (want // 16)
    line = event_line("db", **{"trace_id": "f" * 32, "span_id": "e" * 16, "parent_span_id": "d" * 16, field: base})
    quoted = f'"{field}":"{base}"'.encode()
    assert quoted in line
    odd = [b"g", b"G", b"\\u0041", b"\\\"", b"\xc3\xa9", b"\xe6\x97\xa5", b'"', b"\x01", b"\x7f", b"\\", b"\\n", b" "]
    for i in range(want):
        for o in odd:
            raw = base.encode()[:i] + o + base.encode()[i + 1 :]
            changed = line.replace(quoted, f'"{field}":"'.encode() + raw + b'"')
            got = run(block(event_line("request"), changed, line))
            if o in (b"g", b"G", b"\\u0041", b"\xc3\xa9", b"\xe6\x97\xa5", b"\x7f", b" "):
                assert got is not None and got[2].n == 3, (i, o)  # still want code points: an event
    for raw in (base[:-1], base + "0", base[:-1] + "\u00e9", ""):
        run(block(line.replace(quoted, f'"{field}":"{raw}"'.encode(), 1), line))


def test_predicted_keys_near_misses() -> None:
    """A key is compared in place with the one that followed the previous key last time, with the
    separator before it (`,"name":`): lines that train that prediction, then one whose key differs from it
    in any byte (an unknown key then, or a required one missing), whose separator has whitespace, or that
    repeats a key where the prediction expects it, each with the reference's verdict."""
    base = event_line("db")
    names = [k.encode() for k in event_dict("db")]
    for name in names:
        entry = b',"' + name + b'":'
        if entry not in base:
            continue  # the first key: no separator before it
        for j in range(len(entry)):
            for c in (b"X", b" ", b"\t"):
                changed = base.replace(entry, entry[:j] + c + entry[j + 1 :], 1)
                run(block(base, base, changed, base))
                changed = base.replace(entry, entry[:j] + c + entry[j:], 1)
                run(block(base, base, changed, base))
    # a repeated key where its successor is predicted: `"a":1,"b":2,"a":1` after lines `"a":1,"b":2,...`
    for i in range(1, len(names)):
        first = json.loads(base)
        dup = base[:-1] + b',"' + names[i - 1] + b'":' + orjson.dumps(first[names[i - 1].decode()]) + b"}"
        run(block(base, base, dup, base), accept=False)
        got = run_range(block(base, dup, base))
        assert got is not None and got[3] == len(base) + 1  # the duplicate declined, as before


def test_escapes_at_vector_boundaries() -> None:
    """Strings are scanned 16 bytes a step: an escape (each kind) and a closing quote at every offset of the
    first three steps of a value, in keys' and values' places the writers use."""
    lines = []
    for offset in range(0, 50):
        for esc in (b'\\"', b"\\\\", b"\\/", b"\\n", b"\\u00e9", b"\\ud83d\\ude00"):
            text = b"a" * offset + esc + b"b" * (offset % 17)
            lines.append(event_line("db").replace(b'"db.query.text":"SELECT * FROM stories_story WHERE id = %s"',
                                                  b'"db.query.text":"' + text + b'"'))
        lines.append(event_line("request", http__route="r" * offset))
    got = run(block(*lines), accept=True)
    assert got[2].n == len(lines)


_GUARDED = r'''
import ast, ctypes, mmap, sys
from parsers import scan
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
PAGE = mmap.PAGESIZE
out = []
for data in ast.literal_eval(sys.stdin.read()):
    pages = (len(data) + PAGE - 1) // PAGE + 1
    base = libc.mmap(None, pages * PAGE, 3, 0x22, -1, 0)  # read/write, private anonymous
    guard = base + (pages - 1) * PAGE
    assert libc.mprotect(guard, PAGE, 0) == 0  # the page after the block: any read of it faults
    buf = (ctypes.c_ubyte * len(data)).from_address(guard - len(data))
    ctypes.memmove(buf, data, len(data))
    got = scan.scan_range(memoryview(buf).cast("B"), 0.0, 2e9, 65536)
    out.append(None if got is None else (got[0], got[1], got[2].n, got[3]))
print(repr(out))
'''


def test_reads_no_byte_past_the_block() -> None:
    """The parse reads up to LINE_PAD bytes past a line's newline (its vector steps need no bound checks):
    the lines near the block's end are read from a padded copy. Blocks placed right before a page that
    faults when read (in a child process), ending with every kind of line (an event whose last value is an
    id, a string, a number; short lines; one line alone; lines cut short), give the results they give in
    ordinary memory."""
    ev = event_line("request")
    ends = [event_line("db", parent_span_id="00f067aa0ba902b7"), event_line("request"), event_line("metric"),
            b"{}", b'{"a":"x"}', b'{"a":1}', ev[:40] + b"}", ev[:-1] + b',"trace_id":"' + b"a" * 32 + b'"}']
    blocks = [block(e) for e in ends] + [block(ev, ev, e) for e in ends] + [block(ev, b"{}", b"{}", b"{}")]
    blocks += [block(ev, ev[:n] + b"}") for n in range(1, len(ev), 3)]
    blocks += [block(ev, ev[:n] + b'"}') for n in range(1, len(ev), 5)]
    root = Path(__file__).resolve().parents[2]
    got = subprocess.run([sys.executable, "-c", _GUARDED], input=repr(blocks), cwd=root, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(root)})
    assert got.returncode == 0, (got.returncode, got.stderr[-2000:])
    results = ast.literal_eval(got.stdout)
    for data, res in zip(blocks, results, strict=True):
        ref = run_range(data)
        assert res == (None if ref is None else (ref[0], ref[1], ref[2].n, ref[3])), data


def test_timestamps_in_a_cached_minute() -> None:
    """Milliseconds in a minute already read are read inline (the writers' form): every byte of the seconds
    and the fraction replaced by a non-digit, seconds 00 to 61, other fraction lengths and no fraction, a
    minute that changes, each after a line that cached the minute, with the reference's verdict and value."""
    first = event_line("request", timestamp="2026-11-29T10:15:04.512Z")
    stamps = [f"2026-11-29T10:15:{s:02d}.{ms:03d}Z" for s in (0, 9, 10, 59, 60, 61, 99) for ms in (0, 1, 999)]
    stamps += ["2026-11-29T10:15:04Z", "2026-11-29T10:15:04.5Z", "2026-11-29T10:15:04.51Z",
               "2026-11-29T10:15:04.5120Z", "2026-11-29T10:16:04.512Z", "2026-11-29T10:14:59.999Z",
               "2026-11-29T10:15:04.512z", "2026-11-29T10:15:04.512 ", "2026-11-29T10:15:04,512Z"]
    base = "2026-11-29T10:15:04.512Z"
    for i in (16, 17, 18, 19, 20, 21, 22, 23):
        for c in ":/.aZ 0":
            stamps.append(base[:i] + c + base[i + 1 :])
    for stamp in stamps:
        run(block(first, event_line("db", timestamp=stamp), first))
    for stamp in ("2026-11-29T10:15:00.000Z", "2026-11-29T10:15:60.999Z", "2026-11-29T10:15:59.001Z"):
        got = run(block(first, event_line("db", timestamp=stamp)), accept=True)
        whole = float(calendar.timegm((2026, 11, 29, 10, 15, 0))) + int(stamp[17:19])
        assert got[2].ts[1] == whole + int(stamp[20:23]) / 1000


def test_key_orders_per_kind() -> None:
    """Keys are predicted per kind (each kind's keys follow the common ones in the writers' lines): kinds
    interleaved, a kind whose order changes halfway, a line without its kind or with the kind last, each
    block read as the reference reads it."""
    rng = random.Random(8)
    lines = [event_line(rng.choice(list(BY_KIND))) for _ in range(200)]
    assert run(block(*lines), accept=True)[2].n == 200
    ev = event_dict("db")
    swapped = dict(reversed(list(ev.items())))
    kindless = {k: v for k, v in ev.items() if k != "apm.kind"}
    last = {**kindless, "apm.kind": "db"}
    mixed = [event_line("db"), orjson.dumps(swapped), event_line("request"), orjson.dumps(swapped),
             orjson.dumps(kindless), orjson.dumps(last), event_line("db"), event_line("cache"), orjson.dumps(last)]
    for n in range(1, len(mixed) + 1):
        run(block(*mixed[:n]))


def test_parent_is_the_previous_span() -> None:
    """A parent equal to the span id of the event line before it takes that span's code without a look-up:
    chains of such lines, with ordinary lines and events without a span id between them, the parent before
    the span in its line, escaped, equal to its own span, and parents that only resemble the previous span
    (one byte off, a prefix), each coded as the reference codes them."""
    ids = [f"{i:016x}" for i in range(1, 9)]
    chain = [event_line("db", span_id=ids[0], parent_span_id=...)]
    chain += [event_line("db", span_id=ids[i], parent_span_id=ids[i - 1]) for i in range(1, 5)]
    nospan = event_line("request", span_id=..., parent_span_id=...)
    first = orjson.dumps({"parent_span_id": ids[4], **event_dict("db", span_id=ids[5])})
    escaped = event_line("db", span_id=ids[6], parent_span_id=ids[5]).replace(
        f'"parent_span_id":"{ids[5]}"'.encode(), b'"parent_span_id":"\\u0030' + ids[5][1:].encode() + b'"')
    own = event_line("db", span_id=ids[7], parent_span_id=ids[7])
    near = [event_line("db", span_id=ids[1], parent_span_id=ids[0][:-1] + "f"),
            event_line("db", span_id=ids[2], parent_span_id=ids[1][:15] + "\u00e9")]
    got = run(block(*chain, b'{"level":"info"}', event_line("db", span_id=ids[5], parent_span_id=ids[4]), nospan,
                    first, escaped, own, *near), accept=True)
    assert got[2].strings("parent_span_id")[1:5] == ids[:4]
    for n in range(1, len(chain) + 1):
        run(block(*chain[:n], nospan, *chain[:n]), accept=True)
