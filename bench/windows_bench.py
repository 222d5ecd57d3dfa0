"""CPU cost of the windows stage: ``WindowAccumulator.add`` over a part's chunks, then ``take``.

    python bench/windows_bench.py [--log PATH] [--repeat R] [--cap N] [--against FILE.py] [--columns]

Each round feeds a fresh accumulator as ``process_part`` does: every chunk (the engine's ``CHUNK_BYTES``) is
decoded (``LineParser``, not timed) and its events are added at once, while they are still in the CPU's
cache, as in a run; then the aggregates are taken. Prints the median CPU time (``time.process_time``) per event over R rounds, with the
cyclic GC off as in the workers. ``--against`` loads another version of ``aggregator/windows.py`` (a copy
of an older one, say) and times both, interleaved, checking that both give the same aggregates (every
field, counters in order, sketch bytes, in ``take``'s order) and the same event, kind and folded counts.
Without ``--log`` a generated hour of 100k events (``aggregator.loggen``) is used. ``--columns`` times
``add`` against ``add_columns`` (``WindowAccumulator``) on the same chunks, interleaved, each chunk's
``EventColumns`` built (``parsers.columns.from_events``, not timed) just before it is added, and checks the
same things; it prints the feeding (add) and ``take`` parts apart too. Both: ``add_columns`` of this
version against the other's, interleaved (as the engine's workers feed it).

The events' memory decides much of the cost (each field read is mostly a cache miss), hence the decode of
each chunk just before its ``add``, as in a run, rather than all chunks first: the two orders measure
differently here.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from aggregator import loggen
from aggregator.engine import CHUNK_BYTES
from parsers import LineParser
from parsers.columns import from_events

BLOCK = CHUNK_BYTES  # the engine's chunk size


def chunks_of(data: bytes, block: int = BLOCK) -> list[bytes]:
    out: list[bytes] = []
    pos = 0
    while pos < len(data):
        end = data.find(b"\n", min(pos + block, len(data)) - 1)
        end = len(data) if end < 0 else end + 1
        out.append(data[pos:end])
        pos = end
    return out


def make_parser() -> LineParser:
    return LineParser(now=time.time() + 86400, max_past_seconds=10 * 365 * 86400)


def run(module: Any, chunks: list[bytes], cap: int | None, columns: bool = False,
        ) -> tuple[float, int, list[Any], Any, float]:
    """CPU seconds of add (``add_columns`` with ``columns``) + take, events, aggregates, the accumulator, CPU
    seconds of take alone."""
    parser = make_parser()
    acc = module.WindowAccumulator(60, 500.0, 100.0, max_series=cap)
    cpu = 0.0
    n = 0
    for chunk in chunks:
        events = parser.parse(chunk).events
        n += len(events)
        if columns:
            cols = from_events(events)
            t0 = time.process_time()
            acc.add_columns(cols)
            cpu += time.process_time() - t0
            del cols
        else:
            t0 = time.process_time()
            acc.add(events)
            cpu += time.process_time() - t0
        del events
    t0 = time.process_time()
    aggs = acc.take()
    took = time.process_time() - t0
    return cpu + took, n, aggs, acc, took


def fingerprint(aggs: list[Any]) -> list[tuple[Any, ...]]:
    """Everything of every aggregate, in the order ``take`` gave them (the counters' order included)."""
    return [(a.series.family, a.series.tags, a.start, a.count, a.errors, a.total.hex(), a.min, a.max,
             list(a.counters.items()), a.sketch.to_bytes()) for a in aggs]


def load(path: str) -> Any:
    spec = importlib.util.spec_from_file_location("windows_against", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--log", help="a JSON-lines log (default: 100k generated events)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--cap", type=int, default=None, help="max_series, as run.max_series_per_metric")
    ap.add_argument("--against", help="another windows.py to time, interleaved")
    ap.add_argument("--columns", action="store_true", help="time add against add_columns, interleaved (with --against: add_columns of both)")
    args = ap.parse_args()
    if args.log:
        data = Path(args.log).read_bytes()
    else:
        events = loggen.generate_events(100_000, start=time.time() - 7200, seconds=3600)
        data = b"".join(loggen.lines_of(events))
    chunks = chunks_of(data)
    gc.disable()  # as in the engine's workers
    import aggregator.windows as current

    modes = {"current": (current, args.columns)}
    if args.against:
        modes["against"] = (load(args.against), args.columns)
    elif args.columns:
        modes = {"add": (current, False), "columns": (current, True)}
    times: dict[str, list[float]] = {name: [] for name in modes}
    takes: dict[str, list[float]] = {name: [] for name in modes}
    prints: dict[str, Any] = {}
    for _ in range(args.repeat):
        for name, (mod, columns) in modes.items():
            cpu, n, aggs, acc, took = run(mod, chunks, args.cap, columns)
            times[name].append(cpu)
            takes[name].append(took)
            prints[name] = (fingerprint(aggs), acc.events, acc.by_kind, acc.folded, acc.min_ts, acc.max_ts)
    first, *others = modes
    print(f"{n} events in {len(chunks)} chunks, {len(prints[first][0])} aggregates")
    for name, ts in times.items():
        med = statistics.median(ts)
        took = statistics.median(takes[name])
        print(f"{name:8s} median {med * 1e3:8.1f} ms  {med / n * 1e6:6.3f} us/event  (take {took / n * 1e6:.3f}, "
              f"add {statistics.median(t - k for t, k in zip(ts, takes[name], strict=True)) / n * 1e6:.3f}; "
              f"runs: {', '.join(f'{t * 1e3:.0f}' for t in ts)})")
    check_same(prints, first, others)


def check_same(prints: dict[str, Any], first: str, others: list[str]) -> None:
    """Print whether every other version gave what the first did; exit 1 if not."""
    if others:
        same = all(prints[first] == prints[name] for name in others)
        print("identical aggregates:", same)
        if not same:
            sys.exit(1)


if __name__ == "__main__":
    main()
