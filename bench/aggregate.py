"""Benchmark: ``logapm run`` end to end beside a naive baseline, on generated logs of 1M and 5M events.

    python bench/aggregate.py                       # 1M and 5M events, naive baseline at 1M
    python bench/aggregate.py --events 200000 --repeats 1
    python bench/aggregate.py --baseline previous.json   # also print the ratios to an earlier run

For each size it writes a realistic log (``aggregator.loggen``: requests, queries, cache, external calls,
tasks and business metrics with trace context, ~300-400 bytes a line, over 60 minutes of event time), then
times, as subprocesses with the file in the page cache:

- ``logapm run``: a fresh state store, the default workers, everything a run does (parse, windows,
  sketches, trace insights, commit; no sinks configured);
- ``naive``: every line through ``orjson.loads`` into a list of dicts, a pandas DataFrame, then
  ``groupby([minute, kind, name]).quantile`` for p50/p95/p99 and count (exact, the obvious way).

It reports events/s, MB/s and CPU seconds, medians over ``--repeats`` rounds that run unobserved, and the peak
RSS of the whole process tree from one more round, sampled every 20 ms (sampling slows what it samples: see
``measure``), as a table and as one JSON line (the ``--baseline`` format).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NAIVE = r"""
import sys, orjson, pandas as pd
rows = []
with open(sys.argv[1], "rb") as f:
    for line in f:
        try:
            d = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if d.get("apm.schema") != 1:
            continue
        kind = d["apm.kind"]
        name = (d.get("http.route") or d.get("db.collection.name") or d.get("cache.operation")
                or d.get("peer.service") or d.get("task.name") or d.get("metric.name"))
        value = d.get("duration_ms", d.get("metric.value"))
        rows.append({"timestamp": d["timestamp"], "kind": kind, "name": name, "value": value})
df = pd.DataFrame(rows)
df["minute"] = pd.to_datetime(df["timestamp"]).dt.floor("60s")
g = df.groupby(["minute", "kind", "name"])["value"]
out = g.quantile([0.5, 0.95, 0.99]).unstack()
out["count"] = g.count()
print(len(df), len(out))
"""


def write_log(path: Path, events: int, seed: int = 1) -> tuple[int, int]:
    """Write ``events`` events over 60 minutes ending now, in batches (bounded memory). -> (events, bytes)."""
    from aggregator.loggen import generate_events
    from aggregator.loggen import write_log as append

    span = 3600.0
    start = time.time() - span - 120
    batch = 200_000
    written = size = 0
    path.unlink(missing_ok=True)
    nb = max(1, -(-events // batch))
    for i in range(nb):
        n = min(batch, events - written)
        sub = span / nb
        evs = generate_events(n, start=start + i * sub, seconds=sub, seed=seed * 1000 + i)
        w = append(path, evs, ordinary_every=100)
        written += n
        size += w.bytes
    return written, size


@dataclass
class Sample:
    wall: float
    cpu: float
    peak_rss: int  # sum over the tree: forked workers' shared pages counted once per process
    rc: int
    out: str
    peak_pss: int = 0  # proportional set size: shared pages split between the processes that map them


def _pss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


PACKAGES = ("aggregator", "parsers", "alerting", "logging_apm")


def prepare_tree(root: Path) -> None:
    """Make a source tree run as an installed one: its bytecode compiled (a wheel install compiles it; with
    PYTHONDONTWRITEBYTECODE set, as in some sandboxes and containers, every run would otherwise compile its
    modules again, about 0.14 s) and, for a bare tree of a revision (``compare.py --against``), the native
    scanner built in place when the revision has one."""
    if (root / "parsers" / "_scan.c").exists() and not any((root / "parsers").glob("_scan*.so")):
        subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=root, check=True,
                       capture_output=True)
    subprocess.run([sys.executable, "-m", "compileall", "-q", *[str(root / p) for p in PACKAGES
                                                                if (root / p).is_dir()]],
                   check=True, capture_output=True)


def measure(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None,
            sample: bool = True) -> Sample:
    """Wall and CPU seconds, peak RSS of the process tree (bytes), exit code, the output's tail.

    ``sample=False``: not observed while it runs (peaks 0). Sampling reads every process's smaps every 20
    ms, which walks its page tables under its memory lock: on the 2-core machine that slowed a 5M-event
    ``logapm run`` (three processes) by about 11% (medians of 3, 5.02 against 4.51 s). Timings are taken
    unobserved, peaks in runs of their own."""
    # The output goes to a file, not a pipe: the sampling loop reads nothing until the child exits, and a
    # child writing more than a pipe holds (64 KB) would block on it forever.
    with tempfile.TemporaryFile() as out_file:
        return _measured(cmd, env, cwd, sample, out_file)


def _measured(cmd: list[str], env: dict[str, str] | None, cwd: Path | None, sample: bool,
              out_file: IO[bytes]) -> Sample:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=out_file, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    root = psutil.Process(proc.pid)
    peak = peak_pss = 0
    while sample and proc.poll() is None:
        rss = pss = 0
        try:
            for p in (root, *root.children(recursive=True)):
                try:
                    rss += p.memory_info().rss
                    pss += _pss(p.pid)
                except psutil.Error:
                    pass
        except psutil.Error:
            pass
        peak, peak_pss = max(peak, rss), max(peak_pss, pss)
        time.sleep(0.02)
    proc.wait()  # unsampled: waits for it here
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    out_file.seek(max(0, out_file.seek(0, os.SEEK_END) - 3000))
    out = out_file.read().decode(errors="replace")
    return Sample(wall, cpu, peak, proc.returncode, out, peak_pss)


def _figures(runs: list[Sample], n: int, size: int, peak: Sample | None = None) -> dict[str, float]:
    """Medians of the timed ``runs``; the peak RSS from ``peak``, a sampled run of its own, when given."""
    wall = statistics.median(r.wall for r in runs)
    cpu = statistics.median(r.cpu for r in runs)
    peak_rss = peak.peak_rss if peak is not None else max(r.peak_rss for r in runs)
    return {"seconds": round(wall, 3), "events_per_s": round(n / wall), "mb_per_s": round(size / wall / 1e6, 1),
            "peak_rss_mb": round(peak_rss / 1e6, 1), "cpu_s": round(cpu, 2),
            "events_per_cpu_s": round(n / cpu) if cpu > 0 else 0, "load": round(os.getloadavg()[0], 1)}


def _logapm(log: Path, state: Path, workers: int | None, extra: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "aggregator.cli", "run", "--input", str(log), "--state", str(state),
           "--no-progress", "-q", *extra]
    return cmd + (["--workers", str(workers)] if workers else [])


VARIANTS = {"logapm": [], "logapm-no-insights": ["--no-trace-insights"]}


def bench_size(events: int, repeats: int, workdir: Path, naive_max: int, workers: int | None) -> dict[str, object]:
    log = workdir / f"bench-{events}.log"
    t = time.perf_counter()
    n, size = write_log(log, events)
    gen_s = time.perf_counter() - t
    with open(log, "rb") as f:  # into the page cache, as a run right after the app wrote would find it
        while f.read(16 << 20):
            pass
    row: dict[str, object] = {"events": n, "bytes": size, "generate_s": round(gen_s, 1)}
    env = dict(os.environ, APM_PROVIDER="", PERFORMANCE_ALERT_EMAIL_ENABLED="false",
               PERFORMANCE_ALERT_SLACK_ENABLED="false")
    for name, extra in VARIANTS.items():
        runs = []
        for r in range(repeats + 1):  # the last round, sampled, only for the peak
            state = workdir / f"state-{events}-{r}.db"
            s = measure(_logapm(log, state, workers, extra), env, sample=r == repeats)
            if s.rc != 0:
                raise SystemExit(f"logapm run failed ({s.rc}):\n{s.out}")
            runs.append(s)
            for p in workdir.glob(f"state-{events}-{r}.db*"):
                p.unlink()
        row[name] = _figures(runs[:-1], n, size, peak=runs[-1])
    if events <= naive_max:
        runs = []
        for r in range(repeats + 1):
            s = measure([sys.executable, "-c", NAIVE, str(log)], sample=r == repeats)
            if s.rc != 0:
                raise SystemExit(f"naive baseline failed ({s.rc}):\n{s.out}")
            runs.append(s)
        row["naive"] = _figures(runs[:-1], n, size, peak=runs[-1])
    log.unlink()
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, nargs="+", default=[1_000_000, 5_000_000])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--naive-max", type=int, default=1_000_000,
                    help="run the naive baseline only up to this many events (it needs ~2 GB per million)")
    ap.add_argument("--workers", type=int, default=None, help="logapm run --workers (default: one per core)")
    ap.add_argument("--dir", type=Path, default=None, help="work directory (default: a temporary one)")
    ap.add_argument("--baseline", type=Path, help="JSON line of an earlier run to compare with")
    args = ap.parse_args(argv)
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="logapm-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    prepare_tree(ROOT)
    try:
        rows = [bench_size(n, args.repeats, workdir, args.naive_max, args.workers) for n in args.events]
    finally:
        if args.dir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    result = {"bench": "aggregate", "cpus": os.cpu_count(), "repeats": args.repeats, "rows": rows}
    baseline = json.loads(args.baseline.read_text().strip().splitlines()[-1]) if args.baseline else None
    base_rows = {r["events"]: r for r in baseline["rows"]} if baseline else {}
    print(f"{'events':>10} {'MB':>7}  {'engine':<18} {'seconds':>8} {'events/s':>11} {'MB/s':>7} {'peak RSS MB':>12}"
          f" {'CPU s':>8} {'events/CPU s':>13} {'load':>5}"
          + ("  vs baseline" if baseline else ""))
    for row in rows:
        for name in (*VARIANTS, "naive"):
            m = row.get(name)
            if not isinstance(m, dict):
                continue
            line = (f"{row['events']:>10,} {int(row['bytes']) / 1e6:>7,.0f}  {name:<18} {m['seconds']:>8.2f} "  # type: ignore[call-overload]
                    f"{m['events_per_s']:>11,} {m['mb_per_s']:>7.1f} {m['peak_rss_mb']:>12,.0f} {m['cpu_s']:>8.1f} "
                    f"{m['events_per_cpu_s']:>13,} {m['load']:>5.1f}")
            old = base_rows.get(row["events"], {}).get(name)
            if old:
                line += f"  x{m['events_per_s'] / old['events_per_s']:.2f} speed, x{m['peak_rss_mb'] / old['peak_rss_mb']:.2f} memory"
            print(line)
        if isinstance(row.get("naive"), dict):
            lg, nv = row["logapm"], row["naive"]
            print(f"{'':>10} {'':>7}  logapm/naive: x{lg['events_per_s'] / nv['events_per_s']:.1f} events/s, "  # type: ignore[index]
                  f"x{lg['events_per_cpu_s'] / nv['events_per_cpu_s']:.1f} events per CPU second, "  # type: ignore[index]
                  f"x{nv['peak_rss_mb'] / lg['peak_rss_mb']:.1f} less memory")  # type: ignore[index]
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
