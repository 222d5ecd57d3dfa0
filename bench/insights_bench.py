"""What the trace insights add to a run: extract() in the decoders, feed()+finish() in the parent.

    python bench/insights_bench.py [--requests N] [--repeat R]
    python bench/insights_bench.py --log FILE [--repeat R] [--against REV ...]
    python bench/insights_bench.py --columns [--log FILE] [--repeat R]

Baseline, in the same run and on the same bytes: ``LineParser.parse`` (the decode the run does anyway).
Also measured, for comparison: the design this replaced (one record per event sent to the parent).
Prints medians over R interleaved rounds, events per second, and each step's cost relative to the parse.

With ``--log``: an existing log (e.g. 40 MB of ``aggregator.loggen`` output, one engine part), read in the
engine's chunks, each summarised right after it is parsed and accumulated (as a worker does, while its events
are in cache; each path on its own parse of the chunk, taking turns going first);
the columnar path (``extract``: ``columns.summarize_batch``, batches fed in bulk) against the per-part path
(``partials.summarize`` tuples fed one by one: the tests' reference now, whose feed lost the shortcut for
whole traces it had while the run used it, so its feed measures about twice what it did then), CPU time
(``time.process_time``) per event of each stage, medians of R interleaved rounds. ``--against REV`` adds the columnar path with ``summarize_batch`` as
``aggregator/insights/columns.py`` was at git revision REV (read with ``git show``; its batches are checked to
pickle to the same bytes as this tree's, chunk by chunk), to measure a change of the summary before and after
in the same rounds (REV must have this tree's ``TraceBatch`` fields: 753acbb or later). For the whole trace path
as a run has it (native columns, parts, feed and finish per run, several runs), see ``bench/insights_run.py``.

With ``--columns``: the trace summary from a chunk's ``Event`` objects (``columns.summarize_batch``, after the
engine's windows step, as in a worker) against the same from the chunk's ``parsers.columns.EventColumns``
(``columns.summarize_columns``; the columns are the native scanner's, ``parsers.scan``, outside the timing,
or ``from_events``' where it is not built or gives up), each on its own fresh parse of every chunk, taking turns going first; every chunk's two
batches are checked identical field by field (``TraceBatch.differences``). CPU us per event, medians of R
interleaved rounds. Without ``--log``, on 100,000 events of ``aggregator.loggen`` output (as ``bench/aggregate.py``
writes them).
"""

from __future__ import annotations

import argparse
import pickle
import random
import statistics
import subprocess
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from aggregator.config import load_config
from aggregator.engine import CHUNK_BYTES
from aggregator.insights.columns import TraceBatch, summarize_batch, summarize_columns
from aggregator.insights.partials import summarize
from aggregator.insights.records import extract_records
from aggregator.insights.traces import TraceAnalyzer, extract
from aggregator.store import Store
from aggregator.windows import WindowAccumulator
from parsers import LineParser, scan
from parsers.columns import from_events

BLOCK = CHUNK_BYTES  # the engine's chunk size


def make_log(requests: int, seed: int = 1) -> bytes:
    """Requests of four shapes (an N+1 loop, a cached read, an external call, a bare one), ~14 events
    per request, written in the app's order (operations first, the request when it ends)."""
    rng = random.Random(seed)
    out: list[bytes] = []
    t0 = int(time.time() * 1000) - 3_600_000

    def ev(kind: str, end: int, dur: float, trace: str, span: str, parent: str | None, **f: object) -> None:
        doc = {"timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(end // 1000)) + f".{end % 1000:03d}Z",
               "apm.schema": 1, "apm.kind": kind, "duration_ms": dur, "outcome": "success",
               "service.name": "bench", "trace_id": trace, "span_id": span}
        if parent:
            doc["parent_span_id"] = parent
        doc.update(f)
        out.append(orjson.dumps(doc))

    for i in range(requests):
        trace, root = f"{rng.getrandbits(128):032x}", f"{rng.getrandbits(64):016x}"
        t = t0 + i * 10
        shape = i % 4
        n = 20 if shape == 0 else 3
        for j in range(n):
            t += 1
            ev("db", t, 0.4 + (j % 3) * 0.1, trace, f"{rng.getrandbits(64):016x}", root, **{
                "db.system": "postgresql", "db.operation.name": "SELECT", "db.collection.name": "chapter",
                "db.query.text": 'SELECT "chapter"."id" FROM "chapter" WHERE "chapter"."story_id" = ?',
                "db.query.fingerprint": f"fp{j if shape else 0}"})
        if shape == 1:
            ev("cache", t, 0.2, trace, f"{rng.getrandbits(64):016x}", root,
               **{"cache.name": "default", "cache.operation": "get", "cache.hit": True})
        if shape == 2:
            t += 30
            ev("external", t, 28.0, trace, f"{rng.getrandbits(64):016x}", root,
               **{"peer.service": "s3", "external.operation": "PutObject", "http.response.status_code": 200})
        t += 2
        ev("request", t, float(t - t0 - i * 10), trace, root, None, **{
            "http.request.method": "GET", "http.route": f"api/r{shape}/", "http.response.status_code": 200})
    return b"\n".join(out) + b"\n"


def columns_at(rev: str) -> Callable[[Any], list[Any]]:
    """``extract`` with ``summarize_batch`` as ``aggregator/insights/columns.py`` was at git revision ``rev``; its
    batches are copied into this tree's ``TraceBatch`` (a few attributes) so that the parent's steps take
    them."""
    root = Path(__file__).resolve().parent.parent
    src = subprocess.run(["git", "show", f"{rev}:aggregator/insights/columns.py"], cwd=root, check=True,
                         capture_output=True, text=True).stdout
    module = types.ModuleType(f"columns_at_{rev}")
    exec(compile(src, f"aggregator/insights/columns.py@{rev}", "exec"), module.__dict__)
    summarize_then = module.summarize_batch

    def extract_then(events: Any) -> list[Any]:
        then = summarize_then(events)
        batch = TraceBatch()
        for name in TraceBatch.__slots__:
            setattr(batch, name, getattr(then, name))
        return [] if batch.empty else [batch]

    return extract_then


def same_batches(a: Any, b: Any) -> bool:
    return pickle.dumps(a, protocol=pickle.HIGHEST_PROTOCOL) == pickle.dumps(b, protocol=pickle.HIGHEST_PROTOCOL)


def compare_on_log(path: str, repeat: int, against: list[str] | None = None) -> None:
    """Columnar path against per-part path on one log file (see the module docstring)."""
    import gc

    data = Path(path).read_bytes()
    parser = LineParser(now=time.time() + 86_400)
    paths: dict[str, Callable[[Any], list[Any]]] = {"per-part (summarize)": summarize, "columns (extract)": extract}
    for rev in against or []:
        paths[f"columns @{rev}"] = columns_at(rev)
    cpu: dict[tuple[str, str], list[float]] = {}
    n = requests = 0
    gc.disable()  # as in the engine's workers
    for _ in range(repeat):
        n = 0
        out: dict[str, list[Any]] = {name: [] for name in paths}
        spent = dict.fromkeys(paths, 0.0)
        for chunk, (pos, end) in enumerate(chunk_ends(data)):
            names = list(paths)
            if chunk % 2:  # take turns all the same
                names.reverse()
            got = {}
            for name in names:
                # Each path its own freshly parsed events, as in a worker: on shared events the path that
                # ran first would have computed (and left cached in the str objects) every hash the others
                # need, and brought the events into the cache for them.
                events = parser.parse(data[pos:end], path, pos).events
                WindowAccumulator(60, 500.0, 100.0).add(events)  # the engine's step before extract()
                t = time.process_time()
                got[name] = paths[name](events)
                spent[name] += time.process_time() - t
                out[name].extend(got[name])
            n += len(events)
            for rev in against or []:
                if not same_batches(got["columns (extract)"], got[f"columns @{rev}"]):
                    raise SystemExit(f"chunk {chunk}: the batch of {rev} differs from this tree's")
        for name in paths:
            cpu.setdefault((name, "summarize"), []).append(spent[name])
            t = time.process_time()
            blob = pickle.dumps(out[name], protocol=pickle.HIGHEST_PROTOCOL)
            cpu.setdefault((name, "pickle"), []).append(time.process_time() - t)
            t = time.process_time()
            parts = pickle.loads(blob)
            cpu.setdefault((name, "unpickle"), []).append(time.process_time() - t)
            cpu.setdefault((name, "MB pickled"), []).append(len(blob) / 1e6 * n)  # shown per run, not per event
            with tempfile.TemporaryDirectory() as tmp:
                store = Store(Path(tmp) / "s.db")
                analyzer = TraceAnalyzer(store, load_config(environ={}))
                t = time.process_time()
                analyzer.feed(parts)
                cpu.setdefault((name, "feed"), []).append(time.process_time() - t)
                t = time.process_time()
                with store.transaction():
                    analyzer.finish()
                cpu.setdefault((name, "finish"), []).append(time.process_time() - t)
                requests = analyzer.counts["traces_completed"]
                store.close()
        del out
    print(f"{path}: {n} events, {requests} requests; CPU us/event, medians of {repeat} interleaved rounds")
    stages = ("summarize", "pickle", "unpickle", "feed", "finish")
    width = max(24, *(len(name) + 2 for name in paths))
    print(f"{'path':<{width}}" + "".join(f"{s:>11}" for s in stages) + f"{'total':>9}{'MB pickled':>12}")
    for name in paths:
        med = [statistics.median(cpu[(name, s)]) / n * 1e6 for s in stages]
        mb = statistics.median(cpu[(name, "MB pickled")]) / n
        print(f"{name:<{width}}" + "".join(f"{v:>11.3f}" for v in med) + f"{sum(med):>9.3f}{mb:>12.2f}")


def chunk_ends(data: bytes) -> list[tuple[int, int]]:
    """The engine's chunks of ``data``: (start, end) at the first line end after every ``BLOCK`` bytes."""
    out, pos = [], 0
    while pos < len(data):
        end = data.find(b"\n", min(pos + BLOCK, len(data) - 1)) + 1 or len(data)
        out.append((pos, end))
        pos = end
    return out


def compare_columns(path: str | None, repeat: int) -> None:
    """summarize_batch (events) against summarize_columns (columns) per chunk (see the module docstring)."""
    import gc

    if path is None:
        # the benchmarks' loggen writer (bench/aggregate.py: 60 minutes of events)
        from aggregate import write_log

        with tempfile.TemporaryDirectory() as tmp:
            write_log(Path(tmp) / "loggen.log", 100_000)
            data = (Path(tmp) / "loggen.log").read_bytes()
        path = "loggen output"
    else:
        data = Path(path).read_bytes()
    parser = LineParser(now=time.time() + 86_400)
    names = ("summarize_batch (events)", "summarize_columns (columns)")
    cpu: dict[str, list[float]] = {name: [] for name in names}
    n = chunks = referenced = 0
    gc.disable()  # as in the engine's workers
    for _ in range(repeat):
        spent = dict.fromkeys(names, 0.0)
        n = 0
        for chunks, (pos, end) in enumerate(chunk_ends(data), 1):
            got: dict[str, TraceBatch] = {}
            for name in names if chunks % 2 else names[::-1]:  # taking turns going first
                events = parser.parse(data[pos:end], path, pos).events
                if name == names[0]:
                    WindowAccumulator(60, 500.0, 100.0).add(events)  # the engine's step before extract()
                    t = time.process_time()
                    got[name] = summarize_batch(events)
                else:
                    # (not timed: the scanner's work; past and future limits as the parser's, or wider)
                    scanned = scan.scan(data[pos:end], 0.0, time.time() + 86_400, 1 << 30)
                    if scanned is None or scanned[2].n != len(events):
                        scanned = (0, 0, from_events(events))
                        referenced += 1
                    cols = scanned[2]
                    t = time.process_time()
                    got[name] = summarize_columns(cols)
                spent[name] += time.process_time() - t
            n += len(events)
            if diff := got[names[1]].differences(got[names[0]]):
                raise SystemExit(f"chunk {chunks}: the batches differ in {diff}")
        for name in names:
            cpu[name].append(spent[name])
        gc.collect()
    print(f"{path}: {n} events in {chunks} chunks ({referenced / repeat:.0f} of them columns from_events, the others "
          f"the scanner's), the same batches from both; CPU us/event, medians (min) of {repeat} interleaved rounds")
    for name in names:
        print(f"{name:<32}{statistics.median(cpu[name]) / n * 1e6:>8.3f}  ({min(cpu[name]) / n * 1e6:.3f})")
    ratio = statistics.median(a / b for a, b in zip(cpu[names[1]], cpu[names[0]], strict=True))
    print(f"{'columns / events':<32}{ratio:>8.3f}  (median of the rounds' ratios)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--log", help="compare the columnar and per-part paths on this log file")
    ap.add_argument("--against", action="append", metavar="REV",
                    help="with --log: also the columnar path with columns.py as at this git revision")
    ap.add_argument("--columns", action="store_true",
                    help="summarize_batch on events against summarize_columns on their columns")
    args = ap.parse_args()
    if args.columns:
        compare_columns(args.log, args.repeat)
        return
    if args.log:
        compare_on_log(args.log, args.repeat, args.against)
        return
    data = make_log(args.requests)
    # The run's decoders parse blocks and extract from each block's events while they are hot.
    blocks = [data[pos:end] for pos, end in chunk_ends(data)]
    parser = LineParser()
    parsed = [parser.parse(b, "bench.log", 0).events for b in blocks]
    n = sum(map(len, parsed))
    parts = [p for events in parsed for p in extract(events)]
    per_event = [r for events in parsed for r in extract_records(events)]
    hp = pickle.HIGHEST_PROTOCOL

    def analyse() -> int:
        with tempfile.TemporaryDirectory() as tmp:
            store = Store(Path(tmp) / "s.db")
            analyzer = TraceAnalyzer(store, load_config(environ={}))
            analyzer.feed(parts)
            with store.transaction():
                aggs = analyzer.finish()
            store.close()
            return len(aggs)

    steps: dict[str, Callable[[], object]] = {
        "parse (baseline: LineParser.parse)": lambda: [parser.parse(b, "bench.log", 0) for b in blocks],
        "extract: events -> trace parts": lambda: [extract(events) for events in parsed],
        "transfer: pickle+unpickle the parts": lambda: pickle.loads(pickle.dumps(parts, protocol=hp)),
        "  per-event records instead: extract": lambda: [extract_records(events) for events in parsed],
        "  per-event records instead: transfer": lambda: pickle.loads(pickle.dumps(per_event, protocol=hp)),
        "feed + finish (in the parent)": analyse,
    }
    # Interleaved repeats: a noisy neighbour slows every step of a round alike, so the ratios hold.
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.repeat):
        for name, fn in steps.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    base = med["parse (baseline: LineParser.parse)"]
    print(f"{args.requests} requests, {n} events, {len(data) / 1e6:.1f} MB in {len(blocks)} blocks; "
          f"{len(parts)} trace parts; median of {args.repeat} interleaved rounds")
    print(f"{'step':<40}{'ms':>10}{'events/s':>14}{'x parse':>10}")
    for name, t in med.items():
        print(f"{name:<40}{t * 1000:>10.1f}{n / t:>14,.0f}{t / base:>10.2f}")


if __name__ == "__main__":
    main()
