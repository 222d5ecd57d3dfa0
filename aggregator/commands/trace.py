"""``logapm trace TRACE_ID``: one request's operations as a waterfall, from the logs still available.

The inputs are scanned with a cheap byte prefilter (only lines that contain the trace id are decoded), then
parsed by the same parsers as a run, so what is shown is exactly what the aggregator would read. Rotated
files compressed with gzip are read too. Nothing is written: the state store is not needed.
"""

from __future__ import annotations

import argparse
import gzip
import io
import re
import shutil
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

CHUNK = 8 << 20
_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "trace",
        help="show one request's operations as a waterfall",
        description="Print the operations of one trace (request, queries, cache and external calls, tasks) "
        "as a waterfall: offsets from the request start, durations, kinds and names, nested by parent span.",
    )
    parser.add_argument("trace_id", metavar="TRACE_ID", help="the 32-hex trace id (from a log line or a report)")
    parser.add_argument("--input", "-i", action="append", default=[], metavar="PATH",
                        help="log file, glob or directory (repeatable; default: run.inputs of the config)")
    parser.add_argument("--config", metavar="FILE", help="config file (for run.inputs)")
    parser.add_argument("--width", type=int, default=None, help="columns to use (default: the terminal's)")
    parser.add_argument("--ascii", action="store_true", help="draw bars with ASCII characters only")
    parser.set_defaults(func=_run)


@dataclass(slots=True)
class ScanResult:
    lines: list[tuple[str, bytes]]  # (file, line) that contain the trace id
    files: int = 0
    bytes: int = 0
    unreadable: list[str] | None = None
    invalid: dict[str, int] | None = None  # reason -> lines that mention the id but are not valid events


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """The files a run would consider for these inputs, rotated siblings included (``app.log.1``,
    ``app.log.2.gz``): a trace view wants every log still available, not only what a run has yet to read.
    Raises ``InputError`` (a clear message) for an input that cannot be read, as ``logapm run`` does."""
    from aggregator.sources import FileSource

    source = FileSource(list(inputs))
    return [Path(path) for path, _companion, _family in sorted(source._expand())]


def _open(path: Path) -> io.BufferedIOBase:
    with open(path, "rb") as probe:
        magic = probe.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rb")
    return open(path, "rb")


def _matching_lines(handle: io.BufferedIOBase, needle: bytes) -> Iterator[tuple[bytes, int]]:
    """Lines containing ``needle``; also yields the bytes read (line == b"" for pure progress)."""
    rest = b""
    while True:
        chunk = handle.read(CHUNK)
        if not chunk:
            break
        data = rest + chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            rest = data
            yield b"", len(chunk)
            continue
        body, rest = data[: cut + 1], data[cut + 1:]
        yield b"", len(chunk)
        if needle not in body:  # the common case: skip the whole chunk without splitting it
            continue
        pos = body.find(needle)
        while pos >= 0:
            start = body.rfind(b"\n", 0, pos) + 1
            end = body.find(b"\n", pos)
            yield body[start: end + 1], 0
            pos = body.find(needle, end + 1)
    if rest and needle in rest:  # a last line without newline (a file still being written)
        yield rest + b"\n", 0


def scan(paths: Sequence[Path], trace_id: str) -> ScanResult:
    needle = trace_id.encode("ascii")
    result = ScanResult(lines=[], unreadable=[])
    for path in paths:
        try:
            with _open(path) as handle:
                result.files += 1
                for line, n in _matching_lines(handle, needle):
                    result.bytes += n
                    if line:
                        result.lines.append((str(path), line))
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            assert result.unreadable is not None
            result.unreadable.append(f"{path}: {getattr(exc, 'strerror', None) or exc}")
    return result


def find_trace(paths: Sequence[Path], trace_id: str) -> tuple[list[object], ScanResult]:
    """The trace's events (parsed ``Event`` objects) in the files, and what the scan read."""
    from parsers import LineParser

    found = scan(paths, trace_id)
    parser = LineParser()
    events: list[object] = []
    by_file: dict[str, list[bytes]] = {}
    for source, line in found.lines:
        by_file.setdefault(source, []).append(line)
    found.invalid = {}
    for source, lines in by_file.items():
        parsed = parser.parse(b"".join(lines), source, 0)
        for reason, n in parsed.invalid.items():
            found.invalid[reason] = found.invalid.get(reason, 0) + n
        # The prefilter also matches the id inside other fields (a message, a parent id): keep the trace's.
        events.extend(e for e in parsed.events if getattr(e, "trace_id", None) == trace_id)
    return events, found


def _run(args: argparse.Namespace) -> int:
    from aggregator.insights.records import to_record
    from aggregator.insights.text import printable
    from aggregator.insights.waterfall import render

    trace_id = args.trace_id.strip().lower()
    if not _TRACE_ID.match(trace_id):
        print(f"logapm trace: {printable(args.trace_id, 80)!s} is not a trace id (32 hex digits)",
              file=sys.stderr)
        return 2
    inputs: list[str] = list(args.input)
    if not inputs:
        from aggregator.config import ConfigError, load_config

        try:
            inputs = list(load_config(args.config)["run.inputs"])
        except ConfigError as exc:
            print(f"logapm trace: {exc}", file=sys.stderr)
            return 2
    if not inputs:
        print("logapm trace: no input: give --input PATH (or set run.inputs / LOGAPM_INPUTS)", file=sys.stderr)
        return 2
    from aggregator.sources import InputError

    try:
        paths = expand_inputs(inputs)
    except InputError as exc:
        print(f"logapm trace: {printable(str(exc))}", file=sys.stderr)
        return 2
    events, found = find_trace(paths, trace_id)
    for problem in found.unreadable or ():
        print(f"logapm trace: cannot read {printable(problem)}", file=sys.stderr)
    if found.invalid:  # say so rather than show a waterfall with silent holes
        reasons = ", ".join(f"{printable(r)} {n}" for r, n in sorted(found.invalid.items()))
        print(f"logapm trace: {sum(found.invalid.values())} line(s) mentioning the trace are not valid "
              f"events and are not shown ({reasons})", file=sys.stderr)
    # A rotated file and its compressed copy (app.log.1 beside app.log.1.gz) hold the same lines: show each
    # operation once.
    records = list(dict.fromkeys(r for r in (to_record(e) for e in events) if r is not None))
    if not records:
        print(f"trace {trace_id} not found in {found.files} file(s) ({found.bytes / 1e6:.1f} MB scanned)",
              file=sys.stderr)
        return 1
    width = args.width or shutil.get_terminal_size((120, 24)).columns
    encoding = _encoding(sys.stdout)
    ascii_only = args.ascii or not _can_encode(encoding, "█▏…")
    text = render(records, width, ascii_only=ascii_only) + "\n"
    if not _can_encode(encoding, text):  # a name the terminal cannot show: escape it rather than crash
        text = text.encode(encoding, "backslashreplace").decode(encoding)
    sys.stdout.write(text)
    return 0


def _encoding(stream: IO[str]) -> str:
    encoding = getattr(stream, "encoding", None) or "ascii"
    try:
        "".encode(encoding)
    except LookupError:
        return "ascii"
    return encoding


def _can_encode(encoding: str, text: str) -> bool:
    try:
        text.encode(encoding)
        return True
    except UnicodeEncodeError:
        return False
