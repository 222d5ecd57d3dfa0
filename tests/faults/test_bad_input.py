"""Hostile input through the parsers and through ``logapm run``: NaN and infinities, wrong types, absurd
durations and timestamps, unknown kinds and schema versions, deep nesting, NUL bytes, invalid UTF-8, and
a single line of 50 MB (and 200 MB). Every line is classified, nothing invalid is taken for an event, the
run never crashes, and its memory does not grow with the length of a line."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jsonschema
import orjson
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from runhelp import ROOT

from logging_apm.schema import FIELDS_BY_NAME
from parsers import INVALID_REASONS, LineParser

SCHEMA = json.loads((ROOT / "schema" / "event-v1.schema.json").read_text())
NOW = float(int(time.time()) // 60 * 60)
KINDS = ["request", "db", "cache", "external", "task", "metric"]
BASE: dict[str, dict[str, Any]] = {
    "request": {"duration_ms": 182.4, "http.request.method": "GET", "http.route": "api/stories/<int:id>/",
                "http.response.status_code": 200},
    "db": {"duration_ms": 3.2, "db.system": "postgresql", "db.operation.name": "SELECT"},
    "cache": {"duration_ms": 0.4, "cache.name": "default", "cache.operation": "get", "cache.hit": True},
    "external": {"duration_ms": 120.0, "peer.service": "s3", "external.operation": "PutObject"},
    "task": {"duration_ms": 950.5, "task.name": "t", "task.state": "success", "task.queue_wait_ms": 1.0},
    "metric": {"metric.name": "m", "metric.type": "count", "metric.value": 1, "metric.tags": {"a": "b"}},
}

# Raw JSON fragments spliced in as a field's value (json.dumps cannot write some of them).
NUMBERS = ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1e308", "-1", "-0.0", "0", "5e-324",
           "18446744073709551616", "1" + "0" * 400, "0x10", "01", ".5", "1.", "+1", "true", "null"]
TIMESTAMPS = ['"0000-00-00T00:00:00.000Z"', '"9999-12-31T23:59:59.999Z"', '"2026-02-30T10:00:00.000Z"',
              '"2026-11-29T10:15:04.512+99:00"', '"2026-11-29T25:61:61Z"', '""', "1764410104", "null",
              '"999999999-01-01T00:00:00Z"', '"2026-11-29T10:15:04.512"', '"2026-11-29 10:15:04Z"',
              '"\\u0000"', '"1970-01-01T00:00:00.000Z"']
SCHEMAS = ["0", "2", '"1"', "1.0", "true", "-1", "1e999", "NaN", "[1]", "99999999999999999999999"]
STRINGS = st.text(max_size=40) | st.sampled_from(["\x1b[31mred\x1b[0m", "a\nb", '"}\n{"apm.schema":1', "\u2028"])


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth if depth % 2 else '{"a":' * depth + "1" + "}" * depth


@st.composite
def hostile_line(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from([*KINDS, "unknown", "", "REQUEST"]))
    event: dict[str, Any] = {"timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(NOW - 600)),
                             "apm.schema": 1, "apm.kind": kind, "outcome": "success",
                             **BASE.get(kind, BASE["request"])}
    raw: dict[str, str] = {}
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from([*event, "timestamp", "apm.schema", "duration_ms", "metric.value",
                                    "metric.tags", "http.response.status_code", "trace_id", "extra"]))
        how = draw(st.sampled_from(["number", "timestamp", "schema", "string", "nested", "drop", "type"]))
        if how == "drop":
            event.pop(key, None)
            raw.pop(key, None)
        elif how == "string":
            event[key] = draw(STRINGS)
        elif how == "type":
            event[key] = draw(st.sampled_from([[], {}, [1, 2], {"x": 1}, True, None, "12"]))
        else:
            pool = {"number": NUMBERS, "timestamp": TIMESTAMPS, "schema": SCHEMAS}.get(how)
            raw[key] = draw(st.sampled_from(pool)) if pool else _nested(draw(st.integers(1, 3000)))
            event.pop(key, None)
    text = orjson.dumps(event).decode()
    for key, value in raw.items():
        text = text[:-1] + ("," if text != "{}" else "") + json.dumps(key) + ":" + value + "}"
    data = text.encode()
    damage = draw(st.sampled_from(["none", "none", "nul", "utf8", "cut", "bom", "crlf"]))
    if damage == "nul":
        i = draw(st.integers(0, len(data)))
        data = data[:i] + b"\0" + data[i:]
    elif damage == "utf8":
        i = draw(st.integers(0, len(data)))
        data = data[:i] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"])) + data[i:]
    elif damage == "cut":
        data = data[: draw(st.integers(0, len(data)))]
    elif damage == "bom":
        data = b"\xef\xbb\xbf" + data
    elif damage == "crlf":
        data += b"\r"
    return data.replace(b"\n", b" ")


def _strict_json(line: bytes) -> Any:
    def no_constants(name: str) -> Any:
        raise ValueError(name)

    return json.loads(line.decode("utf-8"), parse_constant=no_constants)


# No shrinking: a failing list of hostile lines is readable as it is, and shrinking deep nests is slow.
HOSTILE = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                   phases=[Phase.explicit, Phase.reuse, Phase.generate])


@HOSTILE
@given(st.lists(hostile_line(), min_size=1, max_size=20))
def test_hostile_lines_classified_and_nothing_invalid_accepted(lines: list[bytes]) -> None:
    """Every line is an event, skipped or invalid with a known reason, exactly once; each line taken as an
    event is strict JSON that the published JSON Schema accepts, with finite values."""
    data = b"\n".join(lines) + b"\n"
    result = LineParser(now=NOW).parse(data, "hostile")
    assert result.lines == len(lines) == len(result.events) + result.skipped + result.invalid_total
    assert set(result.invalid) <= set(INVALID_REASONS)
    assert len(result.dead_letters) == result.invalid_total
    invalid_offsets = {d.offset for d in result.dead_letters}
    offset = 0
    accepted = 0
    for line in lines:
        if offset not in invalid_offsets:
            try:
                obj = _strict_json(line.rstrip(b"\r"))
            except (ValueError, UnicodeDecodeError, RecursionError):
                obj = None
            if isinstance(obj, dict) and obj.get("apm.schema") == 1 and type(obj.get("apm.schema")) is int:
                # Not invalid and a timing event: what the parser takes from it must be valid.
                jsonschema.validate(_as_read(obj), SCHEMA)
                accepted += 1
        offset += len(line) + 1
    assert accepted == len(result.events)
    for event in result.events:
        # The value each kind is measured by (a field of another kind is read and ignored, docs/parsing.md):
        # a duration is finite and not negative, a metric value finite (a gauge may be negative).
        if event.kind == "metric":
            assert event.metric_value is not None and math.isfinite(event.metric_value)
        else:
            assert event.duration_ms is not None and math.isfinite(event.duration_ms) and event.duration_ms >= 0


def _as_read(obj: dict[str, Any]) -> dict[str, Any]:
    """The line as the parser reads it, by the documented leniencies of docs/parsing.md: a null is an
    absent optional field, a field of another kind is ignored, and trace/span ids are checked for their
    length only (an id of the right length that is not lowercase hex is kept as it is: the schema's pattern
    is stricter). A key the schema does not name is read past and dropped (its value only has to be valid
    JSON), so it is left out here too: the generator nests such values a thousand deep, and jsonschema's
    messages for the kinds a line is not (oneOf) repr the whole line, past Python's recursion limit."""
    kind = obj.get("apm.kind")
    out = {}
    for key, value in obj.items():
        field = FIELDS_BY_NAME.get(key)
        if value is None or field is None or (field.kinds and kind not in field.kinds):
            continue
        if key in ("trace_id", "span_id", "parent_span_id") and isinstance(value, str):
            value = "0" * (len(value) - 1) + "1" if len(value) in (16, 32) else value
        out[key] = value
    return out


def _run(log: Path, state: Path) -> tuple[subprocess.CompletedProcess[str], int]:
    """``logapm run`` as a child; its exit and its peak RSS in MB (wait4's rusage of that process)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGAPM_")}
    env.update(APM_PROVIDER="", PYTHONPATH=str(ROOT), LOGAPM_WORKERS="1")
    out, err = log.with_name(log.name + ".out"), log.with_name(log.name + ".err")
    with out.open("w") as o, err.open("w") as e:
        proc = subprocess.Popen([sys.executable, "-m", "aggregator.cli", "run", "--input", str(log), "--state",
                                 str(state), "--no-progress"], stdout=o, stderr=e, env=env, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS (kB)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return (subprocess.CompletedProcess(proc.args, proc.returncode, out.read_text(), err.read_text()),
            usage.ru_maxrss // 1024)


def _write_long_line(path: Path, megabytes: int, newline: bool = True) -> None:
    good = orjson.dumps({"timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(NOW - 600)),
                         "apm.schema": 1, "apm.kind": "request", "outcome": "success", **BASE["request"]}) + b"\n"
    block = b"x" * (1 << 20)
    with path.open("wb") as f:
        f.write(good + b'{"apm.schema":1,"junk":"')
        for _ in range(megabytes):
            f.write(block)
        if newline:
            f.write(b'"}\n' + good)


def test_one_huge_line_bounded_memory(tmp_path: Path) -> None:
    """A single 50 MB line and a single 200 MB line: each is one invalid line (too_long) between two good
    events, and the run's peak RSS does not grow with the line (a run that held the line would need at
    least 150 MB more for the longer one); a 200 MB line still being written waits, also in bounded
    memory."""
    peaks = {}
    for mb in (1, 50, 200):
        log = tmp_path / f"long{mb}.log"
        _write_long_line(log, mb)
        proc, peaks[mb] = _run(log, tmp_path / f"s{mb}.db")
        log.unlink()
        assert proc.returncode == 0, proc.stderr
        assert "events: 2" in proc.stdout and "too_long 1" in proc.stdout, proc.stdout
    partial = tmp_path / "partial.log"
    _write_long_line(partial, 200, newline=False)
    proc, peaks[0] = _run(partial, tmp_path / "partial.db")
    assert proc.returncode == 0 and "events: 1" in proc.stdout, proc.stdout
    print("peak RSS MB by line size:", peaks)
    assert peaks[200] - peaks[1] < 100 and peaks[0] - peaks[1] < 100, peaks
