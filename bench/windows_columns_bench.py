"""CPU cost of the windows stage as the engine's workers run it: ``add_columns`` of each scanned chunk, then
``take``, this version against another (or against itself without the native routine), interleaved.

    python bench/windows_columns_bench.py [--log PATH] [--bytes N] [--repeat R] [--cap N]
                                          [--against FILE.py | --numpy]

Each round splits the log into the engine's parts (``PART_BYTES``) and feeds each a fresh accumulator as
``engine.process_part`` does: every chunk (``CHUNK_BYTES``) is scanned
(``LineParser.parse_columns``, the native scanner: not timed) just before its columns are added (so they are
in the CPU's cache, as in a run); pieces the scanner declines go to ``add`` (timed too, rare). Then the
part's aggregates are taken. Prints, per version, the median CPU time (``time.process_time``) per event over R rounds
(the versions alternate within each round, the cyclic GC off and ``tune_malloc`` applied as in the workers),
feeding and ``take`` apart,
and checks that every version gives the same aggregates (every field, counters in order, sketch bytes, in
``take``'s order) and the same event, kind and folded counts. ``--against`` loads another
``aggregator/windows.py`` (say ``git show main:aggregator/windows.py > /tmp/old.py``); ``--numpy`` times this
version with its native routine (``aggregator._windows``) against the same version without it.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from typing import Any

from aggregator.engine import CHUNK_BYTES, PART_BYTES, tune_malloc
from bench.windows_bench import check_same, chunks_of, fingerprint, load, make_parser


def run(module: Any, parts: list[list[bytes]], cap: int | None, native: bool = True) -> tuple[float, float, int, Any]:
    """CPU seconds of feeding and of take, events, and what each part gave (its aggregates, counts)."""
    parser = make_parser()
    feed = took = 0.0
    n = 0
    out = []
    for chunks in parts:
        acc = module.WindowAccumulator(60, 500.0, 100.0, max_series=cap)
        if not native:
            acc._native = None
        for chunk in chunks:
            for res in parser.parse_columns(chunk):
                cols = res.columns
                t0 = time.process_time()
                if cols is not None:
                    acc.add_columns(cols)
                else:
                    acc.add(res.events)
                feed += time.process_time() - t0
            del res, cols
        n += acc.events
        t0 = time.process_time()
        aggs = acc.take()
        took += time.process_time() - t0
        out.append((fingerprint(aggs), acc.events, acc.by_kind, acc.folded, acc.min_ts, acc.max_ts))
    return feed, took, n, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--log", default="/tmp/lb/300k.log", help="a JSON-lines log")
    ap.add_argument("--bytes", type=int, default=0, help="read only the first N bytes of the log (0: all)")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--cap", type=int, default=None, help="max_series, as run.max_series_per_metric")
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--against", help="another windows.py to time, interleaved")
    group.add_argument("--numpy", action="store_true", help="this version with and without its native routine")
    args = ap.parse_args()
    with open(args.log, "rb") as f:
        data = f.read(args.bytes) if args.bytes else f.read()
    chunks = chunks_of(data[: data.rfind(b"\n") + 1])
    per_part = PART_BYTES // CHUNK_BYTES  # the engine's parts, each a fresh accumulator
    parts = [chunks[i: i + per_part] for i in range(0, len(chunks), per_part)]
    gc.disable()  # as in the engine's workers
    tune_malloc()  # as a run does (its workers inherit it): freed arrays stay in the heap, no page faults
    import aggregator.windows as current

    modes: dict[str, tuple[Any, bool]] = {"current": (current, True)}
    if args.against:
        modes["against"] = (load(args.against), True)
    elif args.numpy:
        modes["numpy"] = (current, False)
    feeds: dict[str, list[float]] = {name: [] for name in modes}
    takes: dict[str, list[float]] = {name: [] for name in modes}
    prints: dict[str, Any] = {}
    n = 0
    for _ in range(args.repeat):
        for name, (mod, native) in modes.items():
            feed, took, n, prints[name] = run(mod, parts, args.cap, native)
            feeds[name].append(feed)
            takes[name].append(took)
    first, *others = modes
    print(f"{n} events in {len(chunks)} chunks, {len(parts)} parts, "
          f"{sum(len(p[0]) for p in prints[first])} aggregates, {args.repeat} rounds")
    for name in modes:
        feed = statistics.median(feeds[name]) / n * 1e6
        took = statistics.median(takes[name]) / n * 1e6
        total = statistics.median(f + t for f, t in zip(feeds[name], takes[name], strict=True)) / n * 1e6
        print(f"{name:8s} add_columns {feed:6.3f}  take {took:6.3f}  both {total:6.3f} CPU us/event")
    check_same(prints, first, others)


if __name__ == "__main__":
    main()
