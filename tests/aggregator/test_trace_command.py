"""``logapm trace TRACE_ID``: the waterfall of one request from log files, through the real parsers."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from test_insights_logs import N_PLUS_ONE_ROUTE, T0, Traffic

from aggregator.cli import main


def write_logs(tmp_path: Path) -> tuple[Path, Traffic, str]:
    traffic = Traffic(seed=11)
    traffic.mixed(40)
    tid = traffic.request(int(T0 * 1000) + 50_000, N_PLUS_ONE_ROUTE, loop=7, cache=True, external=True)
    traffic.mixed(10)
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_bytes(traffic.data())
    return logs, traffic, tid


def rows(out: str) -> list[str]:
    lines = out.splitlines()
    i = next(i for i, line in enumerate(lines) if line.lstrip().startswith("offset ms"))
    return lines[i + 1:]


def test_trace_shows_the_requests_operations(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The waterfall of a generated request lists its request, 8 queries, cache and external call, with
    offsets from the request start and the query text; other traces are left out."""
    logs, _, tid = write_logs(tmp_path)
    assert main(["trace", tid, "--input", str(logs), "--width", "140"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith(f"trace {tid}  started ")
    assert out.splitlines()[1].endswith(f"ms  GET {N_PLUS_ONE_ROUTE} 200")
    body = rows(out)
    kinds = [line.split()[2] for line in body]
    assert kinds == ["request"] + ["db"] * 8 + ["cache", "external"]
    offsets = [float(line.split()[0]) for line in body]
    assert offsets[0] == 0.0 and offsets == sorted(offsets)
    # The first query ends 2 ms after the start and takes 1 ms: it starts at offset 1.0.
    assert body[1].split()[:2] == ["1.0", "1.0"]
    assert sum('SELECT "chapter"."id"' in line for line in body) == 7
    assert all(len(line) <= 140 for line in body)


def test_trace_reads_rotated_gzip_files_and_a_glob(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A trace whose first events were rotated into a gzip file is shown whole from both files."""
    logs, _, tid = write_logs(tmp_path)
    data = (logs / "app.log").read_bytes()
    first = data.index(tid.encode())
    cut = data.index(b"\n", first + 1) + 1  # after the trace's first line
    (logs / "app.log.1.gz").write_bytes(gzip.compress(data[:cut]))
    (logs / "app.log").write_bytes(data[cut:])
    assert main(["trace", tid, "--input", str(logs / "app.log*"), "--width", "120"]) == 0
    assert len(rows(capsys.readouterr().out)) == 11


def test_trace_escapes_control_characters(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A route and a query carrying ANSI escapes (as JSON \\u001b) are shown as harmless text."""
    tid = "0123456789abcdef0123456789abcdef"
    lines = [
        {"timestamp": "2025-11-29T07:06:00.010Z", "apm.schema": 1, "apm.kind": "db", "duration_ms": 2.0,
         "trace_id": tid, "span_id": "1" * 16, "parent_span_id": "2" * 16, "db.system": "sqlite",
         "db.query.text": "SELECT \x1b]0;owned\x07 FROM x", "db.query.fingerprint": "f"},
        {"timestamp": "2025-11-29T07:06:00.020Z", "apm.schema": 1, "apm.kind": "request", "duration_ms": 20.0,
         "trace_id": tid, "span_id": "2" * 16, "http.request.method": "GET",
         "http.route": "api/\x1b[31mred\x1b[0m/", "http.response.status_code": 200},
    ]
    log = tmp_path / "app.log"
    log.write_bytes(b"".join(orjson.dumps(doc) + b"\n" for doc in lines))
    assert b"\\u001b" in log.read_bytes()
    assert main(["trace", tid, "--input", str(log)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "api/\\x1b[31mred\\x1b[0m/" in out and "SELECT \\x1b]0;owned\\x07 FROM x" in out


def test_trace_prefilter_keeps_only_the_trace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A line that only mentions the id (in a message, or an ordinary log line) is not part of the trace;
    an invalid event line with the id is reported, not shown; an unknown id exits 1 saying how much was
    scanned; a malformed id exits 2."""
    logs, _, tid = write_logs(tmp_path)
    with open(logs / "app.log", "ab") as f:
        f.write(orjson.dumps({"level": "info", "message": f"retrying trace {tid}"}) + b"\n")
        f.write(b'{"apm.schema": 1, "apm.kind": "db", "trace_id": "' + tid.encode() + b'", "duration_ms": -1}\n')
    assert main(["trace", tid, "--input", str(logs)]) == 0
    captured = capsys.readouterr()
    assert len(rows(captured.out)) == 11
    assert "1 line(s) mentioning the trace are not valid events" in captured.err
    assert main(["trace", "f" * 32, "--input", str(logs)]) == 1
    assert "not found in 1 file(s)" in capsys.readouterr().err
    assert main(["trace", "not-a-trace-\x1b[2J", "--input", str(logs)]) == 2
    err = capsys.readouterr().err
    assert "is not a trace id" in err and "\x1b" not in err


def test_logapm_trace_command_line(tmp_path: Path) -> None:
    """The installed entry point runs the command (as a user would), ASCII bars on request."""
    logs, _, tid = write_logs(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "aggregator.cli", "trace", tid, "-i", str(logs / "app.log"),
                           "--ascii", "--width", "100"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "#" in proc.stdout and "█" not in proc.stdout
    assert len(rows(proc.stdout)) == 11


def test_trace_reads_rotated_siblings_once_and_refuses_bad_inputs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Naming app.log also reads its rotated siblings (app.log.1 and its gzip copy hold the same lines:
    each operation is shown once); a missing input exits 2 with the reason."""
    logs, _, tid = write_logs(tmp_path)
    data = (logs / "app.log").read_bytes()
    (logs / "app.log.1").write_bytes(data)
    (logs / "app.log.1.gz").write_bytes(gzip.compress(data))
    (logs / "app.log").write_bytes(b"")
    assert main(["trace", tid, "--input", str(logs / "app.log")]) == 0
    assert len(rows(capsys.readouterr().out)) == 11
    assert main(["trace", tid, "--input", str(tmp_path / "nope.log")]) == 2
    assert "no such file" in capsys.readouterr().err
