"""What the trace insights add to a run: extract() in the decoders, feed()+finish() in the parent.

    python bench/insights_bench.py [--requests N] [--repeat R]

Baseline, in the same run and on the same bytes: ``LineParser.parse`` (the decode the run does anyway).
Prints medians over R repeats, events per second, and each step's cost relative to the parse.
"""

from __future__ import annotations

import argparse
import pickle
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from aggregator.config import load_config
from aggregator.insights.records import extract_records
from aggregator.insights.traces import TraceAnalyzer, extract
from aggregator.store import Store
from parsers import LineParser

BLOCK = 8 << 20


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


def timed(fn, repeat: int) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    times, result = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    data = make_log(args.requests)
    # The run's decoders parse 8 MB blocks and extract from each block's events while they are hot.
    blocks, pos = [], 0
    while pos < len(data):
        end = data.find(b"\n", min(pos + BLOCK, len(data) - 1)) + 1 or len(data)
        blocks.append(data[pos:end])
        pos = end
    parser = LineParser()

    def parse_only() -> int:
        return sum(len(parser.parse(b, "bench.log", 0).events) for b in blocks)

    def parse_and_extract() -> list[Any]:
        out: list[Any] = []
        for b in blocks:
            out.extend(extract(parser.parse(b, "bench.log", 0).events))
        return out

    t_parse, n = timed(parse_only, args.repeat)
    t_both, records = timed(parse_and_extract, args.repeat)
    t_extract = t_both - t_parse
    assert isinstance(records, list)
    # What crosses from a decoder to the parent (multiprocessing pickles results), and for comparison
    # what one record per event would have cost (the design extract() replaced).
    t_transfer, _ = timed(lambda: pickle.loads(pickle.dumps(records, protocol=pickle.HIGHEST_PROTOCOL)),
                          args.repeat)
    per_event: list[Any] = []
    for b in blocks:
        per_event.extend(extract_records(parser.parse(b, "bench.log", 0).events))
    t_named, _ = timed(lambda: pickle.loads(pickle.dumps(per_event, protocol=pickle.HIGHEST_PROTOCOL)),
                       args.repeat)

    def analyse() -> int:
        with tempfile.TemporaryDirectory() as tmp:
            store = Store(Path(tmp) / "s.db")
            analyzer = TraceAnalyzer(store, load_config(environ={}))
            analyzer.feed(records)  # type: ignore[arg-type]
            with store.transaction():
                aggs = analyzer.finish()
            store.close()
            return len(aggs)

    t_analyse, _ = timed(analyse, args.repeat)
    assert isinstance(n, int)
    print(f"{len(records)} parts")
    print(f"{args.requests} requests, {n} events, {len(data) / 1e6:.1f} MB, median of {args.repeat}")
    print(f"{'step':<36}{'ms':>10}{'events/s':>14}{'x parse':>10}")
    for name, t in (("parse (baseline: LineParser.parse)", t_parse), ("extract (parse+extract - parse)", t_extract),
                    ("transfer: pickle+unpickle the parts", t_transfer),
                    ("  one record per event instead", t_named),
                    ("feed + finish (in the parent)", t_analyse)):
        print(f"{name:<36}{t * 1000:>10.1f}{n / t:>14,.0f}{t / t_parse:>10.2f}")


if __name__ == "__main__":
    main()
