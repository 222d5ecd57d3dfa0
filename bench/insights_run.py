"""The run's trace path on a log, piece by piece, against an earlier revision: CPU per event and bytes sent.

    python bench/insights_run.py --log FILE [--runs N] [--rounds R] [--against REV] [--parts K]

The log is cut as ``logapm run`` cuts it (``LocalEngine.plan``: ``PART_BYTES`` parts; ``FileSource.read``: 4 MB
chunks; ``LineParser.parse_columns``: the native scanner's columns, declined lines as events) and each stage of the
trace insights is timed in CPU seconds (``time.process_time``) as a worker and the parent run it, in one process:

- worker: ``columns.extract_columns`` per chunk (``traces.extract`` for a piece that came as events);
- pickle / unpickle: of each part's trace records (what crosses the result pipe), and the bytes pickled;
- feed: ``TraceAnalyzer.feed`` per part; finish: ``TraceAnalyzer.finish`` per run, in its transaction.

``--runs N`` splits the parts into N runs over one store (open traces carried from run to run). Each tree (this
one, and ``--against REV``: a copy of this tree with ``aggregator/insights`` as at the revision) runs in its own
process, taking turns, ``--rounds`` times; medians are printed per stage in us per event (finish also
in seconds), and a digest of what the runs leave (every run's trace aggregates, then the findings, open traces
in their order and counters) must be the same for every round and tree.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("worker", "pickle", "unpickle", "feed", "finish")


def child(tree: str, log: str, runs: int, limit: int) -> dict[str, Any]:
    """One round in the tree at ``tree`` (imported from there)."""
    sys.path.insert(0, tree)
    import gc
    import pickle
    import time

    from aggregator.config import load_config
    from aggregator.engine import (
        TRACE_EXTRACT_COLUMNS,
        EngineSettings,
        LocalEngine,
        _make_parser,
        _trace_extractor,
    )
    from aggregator.insights.traces import TraceAnalyzer
    from aggregator.sources import FileSource
    from aggregator.store import Store

    settings = EngineSettings(now=time.time() + 3600, workers=2)
    source = FileSource([log])
    jobs = LocalEngine(source, settings).plan(source.scan({}))
    jobs = jobs[:limit] if limit else jobs
    extract_columns = _trace_extractor(True, TRACE_EXTRACT_COLUMNS)
    extract = _trace_extractor(True)
    assert extract is not None and extract_columns is not None
    gc.disable()  # as in the workers and the run's read phase
    cpu = dict.fromkeys(STAGES, 0.0)
    sent = events = 0
    clock = time.process_time
    per_run = -(-len(jobs) // runs)
    digest = hashlib.sha256()
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(runs):
            store = Store(Path(tmp) / "state.db")
            analyzer = TraceAnalyzer(store, load_config(environ={}))
            with store.transaction():
                for _, _, task in jobs[r * per_run:(r + 1) * per_run]:
                    parser = _make_parser(settings)
                    records: list[Any] = []
                    for chunk in source.read(task, settings.chunk_bytes):
                        for res in parser.parse_columns(chunk.data, chunk.source, chunk.offset):
                            cols = res.columns
                            t = clock()
                            if cols is not None:
                                events += cols.n
                                records.extend(extract_columns(cols))
                            elif res.events:
                                events += len(res.events)
                                records.extend(extract(res.events))
                            cpu["worker"] += clock() - t
                    t = clock()
                    blob = pickle.dumps(records, protocol=pickle.HIGHEST_PROTOCOL)
                    cpu["pickle"] += clock() - t
                    sent += len(blob)
                    del records
                    t = clock()
                    got = pickle.loads(blob)
                    cpu["unpickle"] += clock() - t
                    t = clock()
                    analyzer.feed(got)
                    cpu["feed"] += clock() - t
                    del got, blob
                t = clock()
                aggs = analyzer.finish()
                cpu["finish"] += clock() - t
            for a in aggs:
                digest.update(repr((a.series, a.start, a.width, a.count, a.errors, a.total, a.min, a.max,
                                    sorted((k, repr(v)) for k, v in a.counters.items()),
                                    a.sketch.to_bytes())).encode())
            store.close()
        store = Store(Path(tmp) / "state.db")
        for rows in (store.conn.execute("SELECT * FROM insights_n_plus_one ORDER BY rowid"), _open_traces(store.conn),
                     store.conn.execute("SELECT * FROM insights_counters ORDER BY rowid")):
            for row in rows:
                digest.update(repr(row).encode())
        store.close()
    return {"cpu": cpu, "bytes": sent, "events": events, "parts": len(jobs), "digest": digest.hexdigest()}


def _open_traces(conn: Any) -> list[tuple[Any, ...]]:
    """The stored open traces in their order, each as the row the table had before the rows of columns (the
    fingerprints as their dict), whichever way the tree stores them."""
    import orjson

    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'insights_open_traces'").fetchone():
        return [(*row[:7], orjson.loads(row[7])) for row in conn.execute(
            "SELECT trace_id, newest, events, queries, db_ms, cache_ms, external_ms, fingerprints"
            " FROM insights_open_traces ORDER BY rowid")]
    from aggregator.insights.findings import load_open_traces

    return [(t, o.newest, o.events, o.queries, o.db_ms, o.cache_ms, o.external_ms, o.fingerprints)
            for t, o in load_open_traces(conn)]


def checkout(rev: str, into: Path) -> Path:
    """This tree at ``into`` with ``aggregator/insights`` as at ``rev`` (the rest as here: the same scanner, the
    same columns, so that only the trace path differs)."""
    shutil.copytree(ROOT, into, ignore=shutil.ignore_patterns(".git", "__pycache__", "*.egg-info", "build", "node_modules"))
    insights = into / "aggregator" / "insights"
    shutil.rmtree(insights)
    archive = subprocess.run(["git", "archive", rev, "aggregator/insights"], cwd=ROOT, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--log", required=True)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--parts", type=int, default=0, help="read only the first K parts")
    ap.add_argument("--against", metavar="REV")
    ap.add_argument("--child", metavar="TREE", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.log, args.runs, args.parts)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"this tree": str(ROOT)}
        if args.against:
            trees = {f"@{args.against}": str(checkout(args.against, Path(tmp) / "against")), **trees}
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
        for r in range(args.rounds):
            for name in list(trees) if r % 2 == 0 else list(trees)[::-1]:
                out = subprocess.run([sys.executable, __file__, "--child", trees[name], "--log", args.log,
                                      "--runs", str(args.runs), "--parts", str(args.parts)],
                                     capture_output=True, text=True, check=True)
                results[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    digests = {x["digest"] for xs in results.values() for x in xs}
    first = next(iter(results.values()))[0]
    n = first["events"]
    print(f"{args.log}: {n} events in {first['parts']} parts, {args.runs} run(s); CPU us/event, medians of "
          f"{args.rounds} interleaved rounds; results {'identical' if len(digests) == 1 else 'DIFFER'}")
    width = max(12, *(len(name) + 2 for name in trees))
    print(f"{'tree':<{width}}" + "".join(f"{s:>10}" for s in STAGES) + f"{'total':>9}{'finish s':>10}{'bytes/ev':>10}")
    for name, xs in results.items():
        med = {s: statistics.median(x["cpu"][s] for x in xs) for s in STAGES}
        print(f"{name:<{width}}" + "".join(f"{med[s] / n * 1e6:>10.3f}" for s in STAGES)
              + f"{sum(med.values()) / n * 1e6:>9.3f}{med['finish']:>10.3f}{xs[0]['bytes'] / n:>10.2f}")
    if len(digests) != 1:
        raise SystemExit("the trees' results differ")


if __name__ == "__main__":
    main()
