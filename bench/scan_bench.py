"""CPU cost per line of the native scanner (``parsers.scan``) against the reference it replaces
(``LineParser.parse`` then ``columns.from_events``), on 2 MB blocks of a generated log.

    python bench/scan_bench.py [--events 100000] [--rounds 5] [--corrupt-every 2000]
    python bench/scan_bench.py --against REF_TREE [--log PATH --mb 200] [--rounds 7]

Each round times every block through both paths (interleaved, CPU time of this process), and the table
gives the medians over the rounds, in microseconds per line. The results are checked equal once first.

Then ``LineParser.parse_columns`` (what the engine's workers call) on the same log with one event line in
``--corrupt-every`` made invalid (its ``duration_ms`` a string), against ``parse`` + ``from_events`` on it:
the scanner stops at each invalid line and goes on after it, so a few bad lines keep the native speed.

``--against REF_TREE`` compares two versions of the scanner instead (REF_TREE: a copy of the repository at
another commit with its extension built in place, e.g. ``git archive HEAD | tar -x -C /tmp/ref`` then
``python setup.py build_ext --inplace`` there): each round runs one child process per tree, alternating
(ref, new, ref, new, ...), the child importing ``parsers`` from its tree (PYTHONPATH first). A child reads
the blocks (``--log``: the first ``--mb`` MB of a log cut into 4 MB chunks as the engine's workers read
them; else the generated log), takes one warm-up pass, then times ``--passes`` passes of ``scan.scan`` and
of ``LineParser.parse_columns`` (CPU time of the child, the median of its passes; each result held until
the next call returns, as in the engine); the table gives the medians over the rounds, in CPU
microseconds per event, and their ratio.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aggregator.loggen import generate_events, write_log
from parsers import LineParser, scan
from parsers.columns import from_events
from parsers.lines import ParseResult

BLOCK = 2_000_000
_DURATION = re.compile(rb'"duration_ms":([0-9.eE+-]+)')


def corrupt(data: bytes, every: int) -> tuple[bytes, int]:
    """``data`` with the ``duration_ms`` of one event line in ``every`` made a string (an invalid
    ``wrong_type`` line); and how many lines were changed."""
    lines = data.split(b"\n")
    changed = 0
    for i in range(every // 2, len(lines), every):
        new = _DURATION.sub(rb'"duration_ms":"\1"', lines[i], count=1)
        changed += new != lines[i]
        lines[i] = new
    return b"\n".join(lines), changed


def _pieces(got: Any) -> list[ParseResult]:
    return got if isinstance(got, list) else [got]


def interleaved(ref: Callable[[bytes], object], new: Callable[[bytes], object], blocks: list[bytes], lines: int,
                rounds: int) -> tuple[float, float]:
    """Medians of ``rounds`` interleaved rounds, CPU us/line: ``ref`` then ``new`` over every block."""
    ref_us: list[float] = []
    new_us: list[float] = []
    for _ in range(rounds):
        t0 = time.process_time()
        for b in blocks:
            ref(b)
        t1 = time.process_time()
        for b in blocks:
            new(b)
        t2 = time.process_time()
        ref_us.append((t1 - t0) / lines * 1e6)
        new_us.append((t2 - t1) / lines * 1e6)
    return statistics.median(ref_us), statistics.median(new_us)


def _reference(parser: LineParser) -> Callable[[bytes], object]:
    """The path the scanner replaces: ``parse`` then ``from_events``."""
    return lambda b: from_events(parser.parse(b).events)


def parse_columns_rounds(parser: LineParser, blocks: list[bytes], lines: int, rounds: int) -> tuple[float, float, float]:
    """Medians of ``rounds`` interleaved rounds (us/line): parse + from_events, parse_columns; and the share of
    events that came as columns."""
    ref, col = interleaved(_reference(parser), parser.parse_columns, blocks, lines, rounds)
    pieces = [r for b in blocks for r in _pieces(parser.parse_columns(b))]
    total = sum(r.event_count for r in pieces)
    as_columns = sum(r.event_count for r in pieces if r.columns is not None)
    return ref, col, as_columns / max(1, total)


def blocks_of(data: bytes, size: int = BLOCK) -> list[bytes]:
    """``data`` cut at newlines into blocks of about ``size`` bytes, as a source reads them."""
    out, i = [], 0
    while i < len(data):
        j = data.rfind(b"\n", i, i + size)
        if j < i:
            j = data.find(b"\n", i)
            if j < 0:
                j = len(data) - 1
        out.append(data[i : j + 1])
        i = j + 1
    return out


CHUNK = 4 << 20  # the engine's chunk (aggregator.engine.CHUNK_BYTES)


def log_blocks(path: str, mb: int) -> list[bytes]:
    """The first ``mb`` MB of the log at ``path`` (whole lines), in chunks of ``CHUNK`` bytes."""
    with open(path, "rb") as f:
        data = f.read(mb << 20)
    return blocks_of(data[: data.rfind(b"\n") + 1], CHUNK)


def child(args: argparse.Namespace) -> int:
    """One round of ``--against`` in this process (``parsers`` from PYTHONPATH): a JSON line of CPU
    us/event for scan.scan and parse_columns after a warm-up pass."""
    now = time.time()
    if args.log:
        blocks = log_blocks(args.log, args.mb)
    else:
        out = io.BytesIO()
        write_log(out, generate_events(args.events, start=now - 3720, seconds=3600, seed=1000), ordinary_every=100)
        blocks = blocks_of(out.getvalue())
    parser = LineParser(now=now)
    past, future = now - 400 * 86400, now + 600
    events = 0
    for b in blocks:  # warm: the kept buffers, the caches, the pages
        events += sum(r.event_count for r in parser.parse_columns(b))
        scan.scan(b, past, future, parser.max_line_bytes)
    # each result held until the next call returns, as the engine's loop holds the previous chunk's pieces
    scans, parses = [], []
    for _ in range(args.passes):
        t0 = time.process_time()
        for b in blocks:
            held: object = scan.scan(b, past, future, parser.max_line_bytes)
        t1 = time.process_time()
        for b in blocks:
            held = parser.parse_columns(b)
        t2 = time.process_time()
        del held
        scans.append((t1 - t0) / events * 1e6)
        parses.append((t2 - t1) / events * 1e6)
    print(json.dumps({"scan": statistics.median(scans), "parse_columns": statistics.median(parses),
                      "events": events, "parsers": str(Path(scan.__file__).resolve().parent)}))
    return 0


def against(args: argparse.Namespace) -> int:
    """``--against``: alternate child rounds of the reference tree and this one; medians, us/event."""
    trees = {"ref": Path(args.against).resolve(), "new": Path(__file__).resolve().parents[1]}
    got: dict[str, list[dict[str, float]]] = {"ref": [], "new": []}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--events", str(args.events),
           "--mb", str(args.mb), "--passes", str(args.passes)] + (["--log", args.log] if args.log else [])
    for _ in range(args.rounds):
        for name, tree in trees.items():
            env = dict(os.environ, PYTHONPATH=str(tree))
            out = subprocess.run(cmd, env=env, cwd=tree, check=True, capture_output=True, text=True).stdout
            row = json.loads(out.strip().splitlines()[-1])
            if Path(row["parsers"]) != tree / "parsers":
                print(f"the {name} child imported parsers from {row['parsers']}, not {tree}")
                return 1
            got[name].append(row)
    events = got["new"][0]["events"]
    print(f"{events:,} events ({args.log or 'generated log'}), CPU us/event, medians of {args.rounds} "
          f"interleaved rounds (child processes, one warm-up pass each)")
    print(f"{'path':<28}{'ref':>10}{'new':>10}{'new/ref':>10}")
    for key in ("scan", "parse_columns"):
        r = statistics.median(row[key] for row in got["ref"])
        n = statistics.median(row[key] for row in got["new"])
        print(f"{key:<28}{r:>10.3f}{n:>10.3f}{n / r:>10.2f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--corrupt-every", type=int, default=2000, help="one invalid event line in N (0: none)")
    ap.add_argument("--against", metavar="REF_TREE", help="compare with the scanner of another tree (see above)")
    ap.add_argument("--log", help="with --against: read this log instead of generating one")
    ap.add_argument("--mb", type=int, default=200, help="with --log: how many MB of it")
    ap.add_argument("--passes", type=int, default=3, help="with --against: timed passes per child (median)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if not scan.available:
        print("parsers._scan is not available (not built, or LOGAPM_NATIVE=0)")
        return 1
    if args.child:
        return child(args)
    if args.against:
        return against(args)
    now = time.time()
    out = io.BytesIO()  # as bench/aggregate.py writes its log: the last hour, an ordinary line every 100
    write_log(out, generate_events(args.events, start=now - 3720, seconds=3600, seed=1000), ordinary_every=100)
    data = out.getvalue()
    blocks = blocks_of(data)
    lines = data.count(b"\n")
    parser = LineParser(now=now)
    past, future = now - 400 * 86400, now + 600
    for b in blocks:  # the same results, and the caches warm
        got = scan.scan(b, past, future, parser.max_line_bytes)
        if got is None:
            print("the scanner gave up on a block of the generated log")
            return 1
        ref = parser.parse(b)
        if (got[0], got[1]) != (ref.lines, ref.skipped) or not from_events(ref.events).equal(got[2]):
            print("the scanner's columns differ from the reference's")
            return 1

    r, s = interleaved(_reference(parser), lambda b: scan.scan(b, past, future, parser.max_line_bytes), blocks,
                       lines, args.rounds)
    print(f"{args.events:,} events, {lines:,} lines, {len(blocks)} blocks of ~2 MB, "
          f"CPU us/line, medians of {args.rounds} interleaved rounds")
    print(f"{'path':<42}{'us/line':>10}")
    print(f"{'LineParser.parse + columns.from_events':<42}{r:>10.3f}")
    print(f"{'scan.scan (native)':<42}{s:>10.3f}")
    print(f"{'ratio':<42}{r / s:>10.1f}x")
    if args.corrupt_every:
        bad, changed = corrupt(data, args.corrupt_every)
        bad_blocks = blocks_of(bad)
        r, c, share = parse_columns_rounds(parser, bad_blocks, lines, args.rounds)
        print(f"\nthe same log with {changed} invalid lines (one in {args.corrupt_every}), CPU us/line, medians of "
              f"{args.rounds} interleaved rounds; {share:.1%} of the events came as columns")
        print(f"{'LineParser.parse + columns.from_events':<42}{r:>10.3f}")
        print(f"{'LineParser.parse_columns':<42}{c:>10.3f}")
        print(f"{'ratio':<42}{r / c:>10.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
