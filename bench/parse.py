"""Micro-benchmark of the parsers: lines/s and MB/s of ``LineParser.parse`` per framing, one core.

    python bench/parse.py [--lines 200000] [--repeats 7] [--block-mb 8]

Generates realistic schema-1 event lines (about 300 bytes, the kinds mixed as a Django app emits them),
wraps them in each accepted framing, and times ``parse()`` on blocks of ``--block-mb`` (as a source hands
them over); then ``FileSource.read`` of the same lines from a file, alone and followed by ``parse()``. Times are the process's CPU time (the machine is shared: wall time would measure the
neighbours too). Prints a table (median and best of the repeats) and one JSON line with the same numbers. Baselines in the same run:
``msgspec decode_lines`` alone into the same typed struct (the floor the parser adds its checks to) and
stdlib ``json.loads`` per line.
"""

from __future__ import annotations

import argparse
import calendar
import gc
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aggregator.sources import FileSource
from parsers import Event, LineParser

NOW = calendar.timegm((2026, 11, 29, 11, 0, 0))
ROUTES = [f"api/stories/<int:story_id>/chapters/{i}/" for i in range(40)]


def event_line(rng: random.Random, t: float) -> bytes:
    """One event line as the app's emitter writes it (key order included)."""
    sec = int(t)
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{int((t - sec) * 1000):03d}Z"
    kind = rng.choices(["request", "db", "cache", "external", "task"], [3, 5, 2, 1, 1])[0]
    ev: dict[str, object] = {"timestamp": ts, "apm.schema": 1, "apm.kind": kind,
                             "duration_ms": round(rng.lognormvariate(3, 1), 3), "outcome": "success",
                             "service.name": "muejam-backend", "deployment.environment": "production",
                             "trace_id": f"{rng.getrandbits(128):032x}", "span_id": f"{rng.getrandbits(64):016x}"}
    if kind == "request":
        ev.update({"http.request.method": "GET", "http.route": rng.choice(ROUTES),
                   "http.response.status_code": 200})
    elif kind == "db":
        ev.update({"db.system": "postgresql", "db.namespace": "default", "db.operation.name": "SELECT",
                   "db.collection.name": "stories_story",
                   "db.query.fingerprint": f"{rng.getrandbits(32):08x}", "db.response.returned_rows": 3})
    elif kind == "cache":
        ev.update({"cache.name": "default", "cache.operation": "get", "cache.hit": rng.random() < 0.8,
                   "cache.keys": 1})
    elif kind == "external":
        ev.update({"peer.service": "s3", "external.operation": "PutObject",
                   "server.address": "s3.amazonaws.com", "http.response.status_code": 200})
    else:
        ev.update({"task.name": "stories.tasks.index", "messaging.destination.name": "default",
                   "task.state": "success", "task.queue_wait_ms": 12.5, "task.retries": 0})
    return orjson.dumps(ev)


def framings(lines: list[bytes]) -> dict[str, bytes]:
    def block(wrap: Callable[[bytes], bytes]) -> bytes:
        return b"".join(wrap(x) + b"\n" for x in lines)

    ordinary = orjson.dumps({"timestamp": "2026-11-29T10:59:00.000Z", "level": "INFO",
                             "logger": "django.request", "message": "GET /api/stories/1/ 200"})
    return {
        "app lines": block(lambda x: x),
        "app + ordinary 1:1": b"".join(x + b"\n" + ordinary + b"\n" for x in lines[: len(lines) // 2]),
        "fluent-bit out_file": block(lambda x: b"app.events: [1795950000.123456, " + x + b"]"),
        "fluent-bit out_file, unparsed": block(
            lambda x: b"app.events: [1795950000.123456, " + orjson.dumps({"log": x.decode()}) + b"]"),
        "fluent-bit plain, unparsed": block(lambda x: orjson.dumps({"log": x.decode()})),
        "docker json-file": block(lambda x: orjson.dumps(
            {"log": x.decode() + "\n", "stream": "stdout", "time": "2026-11-29T10:59:00.123456789Z"})),
        "kubernetes CRI": block(lambda x: b"2026-11-29T10:59:00.123456789Z stdout F " + x),
    }


def blocks_of(data: bytes, size: int) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        end = data.find(b"\n", min(pos + size, len(data) - 1)) + 1 or len(data)
        out.append(data[pos:end])
        pos = end
    return out


def timed(fn: Callable[[], object], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--block-mb", type=float, default=8.0)
    args = ap.parse_args()

    rng = random.Random(7)
    lines = [event_line(rng, NOW - 3600 + i * 3600 / args.lines) for i in range(args.lines)]
    avg = sum(map(len, lines)) / len(lines)
    rows = []

    def run(name: str, data: bytes, fn: Callable[[list[bytes]], object]) -> None:
        blocks = blocks_of(data, int(args.block_mb * (1 << 20)))
        n = data.count(b"\n")
        times = timed(lambda: fn(blocks), args.repeats)
        med, best = statistics.median(times), min(times)
        rows.append({"case": name, "lines": n, "bytes_per_line": round(len(data) / n),
                     "lines_per_s_median": round(n / med), "lines_per_s_best": round(n / best),
                     "mb_per_s_median": round(len(data) / med / 1e6, 1)})

    def parse_all(blocks: list[bytes]) -> None:
        parser = LineParser(now=NOW)
        events = 0
        for b in blocks:
            events += len(parser.parse(b, "bench").events)
        assert events > 0

    data = framings(lines)
    decoder = msgspec.json.Decoder(Event)
    run("baseline: msgspec decode_lines only", data["app lines"],
        lambda bs: [decoder.decode_lines(b) for b in bs])
    app = data["app lines"]
    run("baseline: json.loads per line", app[: app.index(b"\n", len(app) // 10) + 1],
        lambda bs: [[json.loads(x) for x in b.splitlines()] for b in bs])
    for name, block in data.items():
        run(name, block, parse_all)

    # The source around it: FileSource.read of the app lines from a file (page cache), then read + parse.
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "app.log"
        path.write_bytes(data["app lines"])
        source = FileSource([str(path)])
        (task,) = source.scan({})
        chunk_bytes = int(args.block_mb * (1 << 20))

        def read_only(_: list[bytes]) -> None:
            for _chunk in source.read(task, chunk_bytes):
                pass

        def read_parse(_: list[bytes]) -> None:
            parser = LineParser(now=NOW)
            for chunk in source.read(task, chunk_bytes):
                parser.parse(chunk.data, chunk.source, chunk.offset)

        run("FileSource.read only", data["app lines"], read_only)
        run("FileSource.read + parse", data["app lines"], read_parse)

    print(f"LineParser.parse, {args.lines} lines of ~{avg:.0f} bytes, blocks of {args.block_mb} MB, "
          f"{args.repeats} repeats, CPU time of one core")
    print(f"{'case':40s} {'bytes/line':>10s} {'lines/s med':>12s} {'lines/s best':>13s} {'MB/s med':>9s}")
    base = rows[0]["lines_per_s_median"]
    for r in rows:
        print(f"{r['case']:40s} {r['bytes_per_line']:>10d} {r['lines_per_s_median'] / 1e6:>11.2f}M "
              f"{r['lines_per_s_best'] / 1e6:>12.2f}M {r['mb_per_s_median']:>9.1f}"
              f"   ({r['lines_per_s_median'] / base:.2f}x decode-only)")
    print(json.dumps({"bench": "parse", "rows": rows}))


if __name__ == "__main__":
    main()
