"""CPU cost per line of the native scanner (``parsers.scan``) against the reference it replaces
(``LineParser.parse`` then ``columns.from_events``), on 2 MB blocks of a generated log.

    python bench/scan_bench.py [--events 100000] [--rounds 5]

Each round times every block through both paths (interleaved, CPU time of this process), and the table
gives the medians over the rounds, in microseconds per line. The results are checked equal once first.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time

from aggregator.loggen import generate_events, write_log
from parsers import LineParser, scan
from parsers.columns import from_events

BLOCK = 2_000_000


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    if not scan.available:
        print("parsers._scan is not available (not built, or LOGAPM_NATIVE=0)")
        return 1
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

    ref_us: list[float] = []
    scan_us: list[float] = []
    for _ in range(args.rounds):
        t0 = time.process_time()
        for b in blocks:
            from_events(parser.parse(b).events)
        t1 = time.process_time()
        for b in blocks:
            scan.scan(b, past, future, parser.max_line_bytes)
        t2 = time.process_time()
        ref_us.append((t1 - t0) / lines * 1e6)
        scan_us.append((t2 - t1) / lines * 1e6)
    r, s = statistics.median(ref_us), statistics.median(scan_us)
    print(f"{args.events:,} events, {lines:,} lines, {len(blocks)} blocks of ~2 MB, "
          f"CPU us/line, medians of {args.rounds} interleaved rounds")
    print(f"{'path':<42}{'us/line':>10}")
    print(f"{'LineParser.parse + columns.from_events':<42}{r:>10.3f}")
    print(f"{'scan.scan (native)':<42}{s:>10.3f}")
    print(f"{'ratio':<42}{r / s:>10.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
