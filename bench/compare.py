"""Benchmark: ``logapm run`` beside the tools a user would otherwise reach for, in ONE run, on ONE file.

    python bench/compare.py                              # 5M events, 3 rounds, memory at 1M/10M, incremental
    python bench/compare.py --events 500000 --repeats 1 --memory-sizes --no-incremental
    python bench/compare.py --dir /tmp/logapm-bench      # keep (and reuse) the generated log
    python bench/compare.py --baseline previous.json     # ratios to an earlier run's JSON line
    python bench/compare.py --against a6c988f            # and an earlier commit, timed in the same rounds

The question every tool answers on the same generated log (``aggregator.loggen`` through
``bench/aggregate.py``'s writer: six kinds of events with trace context, ordinary lines mixed in): per
minute and series (kind x route/table/operation/peer/task/metric), the count, the errors, p50/p95/p99 and
the max of the durations.

- ``logapm``: ``logapm run`` end to end (decode, windows, sketches, trace insights, store commit) into a
  fresh state store, default workers (one per core); ``logapm-dask`` with ``--engine dask`` (optional);
- ``duckdb``: ``read_ndjson`` with the needed columns declared, exact ``quantile_cont`` (all threads);
- ``polars``: ``scan_ndjson`` with a schema, the streaming engine, exact linear quantiles;
- ``pandas``: the naive way (``orjson`` per line into a list of dicts, a DataFrame, ``groupby().quantile``)
  on the first ``--pandas-max`` events only (it needs about 2 GB per million): its rate is per event of
  its slice, its memory is not comparable;
- ``mtail`` (when installed: ``apt-get install mtail``): a program that histograms the durations per
  kind and name (fixed buckets, no per-minute windows in one-shot mode, no exact quantiles).

Each tool runs in its own subprocess with the file in the page cache; rounds are interleaved (one run of
each tool per round) so a noisy neighbour hurts all tools alike. Reported per tool: the median wall time,
events/s and MB/s, the median CPU seconds of the process tree (``getrusage(RUSAGE_CHILDREN)``, which a
busy machine distorts less than the wall time), the peak RSS and PSS of the process tree (``/proc`` every
20 ms, in one more round of its own: sampling slows what it samples, so the timed rounds are not observed),
and the ratio of its events/s to ``logapm``'s. Then:

- memory: ``logapm run``'s peak RSS on the first 1M events and on the file twice over (10M), fresh state;
- incremental: a checkpointed run over the whole file, 1% new lines appended, the next run timed beside a
  fresh run over a file holding only those new lines (the cost of a run over N new bytes should not depend
  on how big the file already is); the appended lines are cut off again afterwards.

Last line: the whole result as JSON (the ``--baseline`` format).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from aggregate import Sample, _pss, measure, prepare_tree  # noqa: E402 - the benchmarks' one way to time a process tree

NAME_FIELDS = ("http.route", "db.collection.name", "cache.operation", "peer.service", "task.name", "metric.name")
COLUMNS = {"timestamp": "VARCHAR", "apm.schema": "INTEGER", "apm.kind": "VARCHAR", "duration_ms": "DOUBLE",
           "outcome": "VARCHAR", "http.response.status_code": "INTEGER", "metric.value": "DOUBLE",
           **dict.fromkeys(NAME_FIELDS, "VARCHAR")}

# Each tool prints "<events> <series>" on its last line: the bench checks they agree on the event count.
DUCKDB = r"""
import sys, duckdb
path, columns, names = sys.argv[1], sys.argv[2], sys.argv[3]
rows = duckdb.connect().execute(f'''
SELECT substr(timestamp, 1, 16) AS minute, "apm.kind" AS kind, coalesce({names}) AS name, count(*) AS n,
       count(*) FILTER (WHERE outcome = 'failure' OR "http.response.status_code" >= 500) AS errors,
       quantile_cont(coalesce(duration_ms, "metric.value"), [0.5, 0.95, 0.99]) AS q,
       max(coalesce(duration_ms, "metric.value")) AS mx
FROM read_ndjson('{path}', columns = {columns}, format = 'newline_delimited')
WHERE "apm.schema" = 1 GROUP BY ALL''').fetchall()
print(sum(r[3] for r in rows), len(rows))
"""

POLARS = r"""
import sys, json, polars as pl
path, names = sys.argv[1], json.loads(sys.argv[2])
types = {"VARCHAR": pl.String, "INTEGER": pl.Int64, "DOUBLE": pl.Float64}
schema = {k: types[v] for k, v in json.loads(sys.argv[3]).items()}
v = pl.coalesce("duration_ms", "metric.value")
out = (pl.scan_ndjson(path, schema=schema).filter(pl.col("apm.schema") == 1)
       .group_by(pl.col("timestamp").str.slice(0, 16).alias("minute"), pl.col("apm.kind"),
                 pl.coalesce(*names).alias("name"))
       .agg(pl.len().alias("n"),
            ((pl.col("outcome") == "failure") | (pl.col("http.response.status_code") >= 500)).sum().alias("errors"),
            v.quantile(0.5, "linear").alias("p50"), v.quantile(0.95, "linear").alias("p95"),
            v.quantile(0.99, "linear").alias("p99"), v.max().alias("max"))
       .collect(engine="streaming"))
print(out["n"].sum(), len(out))
"""

PANDAS = r"""
import sys, json, orjson, pandas as pd
path, names, limit = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
rows = []
with open(path, "rb") as f:
    for line in f:
        try:
            d = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if d.get("apm.schema") != 1:
            continue
        if len(rows) >= limit:
            break
        status = d.get("http.response.status_code") or 0
        rows.append({"timestamp": d["timestamp"], "kind": d["apm.kind"],
                     "name": next((d[k] for k in names if d.get(k) is not None), None),
                     "value": d.get("duration_ms", d.get("metric.value")),
                     "error": d.get("outcome") == "failure" or status >= 500})
df = pd.DataFrame(rows)
df["minute"] = pd.to_datetime(df["timestamp"]).dt.floor("60s")
g = df.groupby(["minute", "kind", "name"])
out = g["value"].quantile([0.5, 0.95, 0.99]).unstack()
out["count"] = g["value"].size()
out["errors"] = g["error"].sum()
out["max"] = g["value"].max()
print(int(out["count"].sum()), len(out))
"""

MTAIL_PROGRAM = r"""
histogram apm_duration_ms by kind, name buckets 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000, 60000
counter apm_events by kind, name
counter apm_errors by kind, name

/"apm\.kind":"(?P<kind>[a-z]+)","duration_ms":(?P<d>[0-9.]+),"outcome":"(?P<outcome>[a-z]+)".*?"(?:http\.route|db\.collection\.name|cache\.operation|peer\.service|task\.name)":"(?P<name>[^"]*)"/ {
  apm_duration_ms[$kind][$name] = float($d)
  apm_events[$kind][$name]++
  $outcome == "failure" {
    apm_errors[$kind][$name]++
  }
}
"""


# --- inputs --------------------------------------------------------------------------------------------


def generated(workdir: Path, events: int, seed: int = 1) -> tuple[Path, int, int]:
    """The generated log of ``events`` events (reused from ``workdir`` when there). -> (path, events, bytes)."""
    from aggregate import write_log  # the project's benchmark writer (aggregator.loggen, 60 min of events)

    log, meta = workdir / f"bench-{events}-s{seed}.log", workdir / f"bench-{events}-s{seed}.json"
    if log.exists() and meta.exists():
        m = json.loads(meta.read_text())
        if m["bytes"] == log.stat().st_size:
            return log, m["events"], m["bytes"]
    t = time.perf_counter()
    n, size = write_log(log, events, seed=seed)
    meta.write_text(json.dumps({"events": n, "bytes": size, "generate_s": round(time.perf_counter() - t, 1)}))
    return log, n, size


def warm(path: Path) -> None:
    """Into the page cache, as a run right after the app wrote would find it."""
    with open(path, "rb") as f:
        while f.read(16 << 20):
            pass


def head_events(src: Path, dst: Path, events: int) -> tuple[int, int]:
    """The first ``events`` event lines of ``src`` (and the ordinary lines among them) into ``dst``."""
    n = size = 0
    with open(src, "rb") as f, open(dst, "wb") as out:
        for line in f:
            if b'"apm.schema":1' in line:
                if n >= events:
                    break
                n += 1
            out.write(line)
            size += len(line)
    return n, size


# --- tools ---------------------------------------------------------------------------------------------


def _env(root: Path = ROOT) -> dict[str, str]:
    return dict(os.environ, APM_PROVIDER="", PERFORMANCE_ALERT_EMAIL_ENABLED="false",
                PERFORMANCE_ALERT_SLACK_ENABLED="false", PYTHONPATH=str(root))


def checkout(rev: str, work: Path) -> tuple[str, Path]:
    """The source tree of git revision ``rev`` (``git archive``, kept in ``work``): ``python -m
    aggregator.cli`` run from it (cwd and PYTHONPATH) runs that revision's code with this environment's
    packages. -> (short name, directory)."""
    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", f"{rev}^{{commit}}"], check=True,
                         capture_output=True, text=True).stdout.strip()
    where = work / f"rev-{sha[:12]}"
    if not (where / "aggregator" / "cli.py").exists():
        where.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", sha], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(where)], input=archive, check=True)
    prepare_tree(where)
    return f"logapm@{sha[:7]}", where


def logapm_cmd(log: Path, state: Path, args: argparse.Namespace, extra: list[str] = ()) -> list[str]:  # type: ignore[assignment]
    cmd = [sys.executable, "-m", "aggregator.cli", "run", "--input", str(log), "--state", str(state),
           "--no-progress", "-q", *extra]
    return cmd + (["--workers", str(args.workers)] if args.workers else [])


def stored_events(state: Path) -> int:
    conn = sqlite3.connect(state)
    try:
        return sum(json.loads(s)["events"] for (s,) in conn.execute("SELECT summary FROM runs"))
    finally:
        conn.close()


def drop_state(state: Path) -> None:
    for p in state.parent.glob(state.name + "*"):
        p.unlink()


def tool_commands(log: Path, work: Path, args: argparse.Namespace) -> dict[str, list[str] | None]:
    names = ", ".join(f'"{n}"' for n in NAME_FIELDS)
    columns = "{" + ", ".join(f"'{k}': '{v}'" for k, v in COLUMNS.items()) + "}"
    cmds: dict[str, list[str] | None] = {
        "logapm": logapm_cmd(log, work / "state.db", args),
        "duckdb": [sys.executable, "-c", DUCKDB, str(log), columns, names],
        "polars": [sys.executable, "-c", POLARS, str(log), json.dumps(NAME_FIELDS), json.dumps(COLUMNS)],
        "pandas": [sys.executable, "-c", PANDAS, str(log), json.dumps(NAME_FIELDS), str(args.pandas_max)],
        "mtail": None,
    }
    if args.dask:
        cmds["logapm-dask"] = logapm_cmd(log, work / "state.db", args, ["--engine", "dask"])
    for name in args.tool_roots:
        cmds[name] = logapm_cmd(log, work / "state.db", args)
    mtail = shutil.which("mtail")
    if mtail:
        progs = work / "mtail-progs"
        progs.mkdir(exist_ok=True)
        (progs / "apm.mtail").write_text(MTAIL_PROGRAM)
        cmds["mtail"] = [mtail, "--one_shot", "--one_shot_format=json", "--progs", str(progs), "--logs", str(log),
                         "--logtostderr=false", "--alsologtostderr=false", "--stderrthreshold=FATAL"]
    return {k: v for k, v in cmds.items()
            if k in args.tools or (k == "logapm-dask" and args.dask) or k in args.tool_roots}


def _events_of(tool: str, sample: Sample, state: Path) -> int | None:
    if tool.startswith("logapm"):
        return stored_events(state)
    if tool == "mtail":
        try:
            doc = json.loads(sample.out[sample.out.index("{"):]) if "{" in sample.out else {}
        except ValueError:
            return None
        return sum(int(lv["Value"]["Value"]) for m in doc.get("apm_events", []) for lv in m["LabelValues"])
    try:
        return int(sample.out.strip().splitlines()[-1].split()[0])
    except (IndexError, ValueError):
        return None


def side_by_side(log: Path, events: int, size: int, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    cmds = tool_commands(log, work, args)
    samples: dict[str, list[Sample]] = {t: [] for t, c in cmds.items() if c}
    counted: dict[str, int | None] = {}
    peaks: dict[str, Sample] = {}
    # The timed rounds are not observed (measure's docstring: sampling slows what it samples); one more
    # round, sampled, gives each tool's peak memory.
    for r in range(args.repeats + 1):
        sample = r == args.repeats
        for tool, cmd in cmds.items():
            if not cmd:
                continue
            # mtail's one-shot JSON is large: read whole, not as a tail
            root = args.tool_roots.get(tool, ROOT)
            s = _mtail(cmd, sample) if tool == "mtail" else measure(cmd, _env(root), cwd=root, sample=sample)
            if s.rc != 0:
                raise SystemExit(f"{tool} failed ({s.rc}):\n{s.out}")
            counted[tool] = _events_of(tool, s, work / "state.db")
            drop_state(work / "state.db")
            if sample:
                peaks[tool] = s
                print(f"  {tool:<16} peak RSS {s.peak_rss / 1e6:6.0f} MB  PSS {s.peak_pss / 1e6:6.0f} MB "
                      f"({s.wall:.2f} s observed)", file=sys.stderr, flush=True)
                continue
            samples[tool].append(s)
            print(f"  {tool:<16} {s.wall:8.2f} s  cpu {s.cpu:7.1f} s", file=sys.stderr, flush=True)
    rows: dict[str, Any] = {}
    for tool, ss in samples.items():
        n_in = min(events, args.pandas_max) if tool == "pandas" else events
        bytes_in = size * n_in / events
        wall = statistics.median(s.wall for s in ss)
        rows[tool] = {"events": n_in, "seconds": round(wall, 3), "cpu_s": round(statistics.median(s.cpu for s in ss), 2),
                      "events_per_s": round(n_in / wall), "mb_per_s": round(bytes_in / wall / 1e6, 1),
                      "events_per_cpu_s": round(n_in / max(1e-9, statistics.median(s.cpu for s in ss))),
                      "peak_rss_mb": round(peaks[tool].peak_rss / 1e6, 1),
                      "peak_pss_mb": round(peaks[tool].peak_pss / 1e6, 1), "counted": counted.get(tool)}
    # The ratios are to `logapm` (this tree), else to the first revision timed with --against.
    ref = rows.get("logapm") or next((r for t, r in rows.items() if t.startswith("logapm@")), None)
    for r in rows.values():
        r["ratio"] = round(r["events_per_s"] / ref["events_per_s"], 2) if ref else None
    return rows


def _mtail(cmd: list[str], sample: bool = True) -> Sample:
    with tempfile.TemporaryFile() as out:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL)
        root = psutil.Process(proc.pid)
        peak = peak_pss = 0
        if not sample:
            proc.wait()
        while proc.poll() is None:
            try:
                peak = max(peak, root.memory_info().rss)
                peak_pss = max(peak_pss, _pss(proc.pid))
            except psutil.Error:
                pass
            time.sleep(0.02)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        out.seek(0)
        text = out.read().decode(errors="replace")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Sample(wall, cpu, peak, proc.returncode, text, peak_pss)


# --- memory and incremental ----------------------------------------------------------------------------


def memory_at(log: Path, events: int, sizes: list[int], work: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Peak RSS of ``logapm run`` at each size: a prefix of the file below its size, the file repeated above."""
    out = []
    for n in sizes:
        path = work / f"memory-{n}.log"
        if n <= events:
            got, size = head_events(log, path, n)
        else:
            copies = -(-n // events)
            with open(path, "wb") as dst:
                for _ in range(copies):
                    with open(log, "rb") as src:
                        shutil.copyfileobj(src, dst, 16 << 20)
            got, size = events * copies, path.stat().st_size
        warm(path)
        runs = []
        for sample in (True, False):  # the peaks, then the time unobserved; each into a fresh state
            run = measure(logapm_cmd(path, work / "mem.db", args), _env(args.subject), cwd=args.subject,
                          sample=sample)
            drop_state(work / "mem.db")
            if run.rc != 0:
                raise SystemExit(f"logapm run failed ({run.rc}):\n{run.out}")
            runs.append(run)
        s, timed = runs
        path.unlink()
        out.append({"events": got, "bytes": size, "seconds": round(timed.wall, 2),
                    "events_per_s": round(got / timed.wall),
                    "peak_rss_mb": round(s.peak_rss / 1e6, 1), "peak_pss_mb": round(s.peak_pss / 1e6, 1)})
        print(f"  memory {got:>11,} events: RSS {s.peak_rss / 1e6:6.0f} MB, PSS {s.peak_pss / 1e6:6.0f} MB, "
              f"{timed.wall:6.1f} s", file=sys.stderr)
    return out


def incremental(log: Path, events: int, size: int, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Checkpoint the whole file, append 1% new lines, time the next run beside a fresh run over just them."""
    from aggregator.loggen import generate_events, write_log

    state = work / "incr.db"
    first = measure(logapm_cmd(log, state, args), _env(args.subject), cwd=args.subject)
    if first.rc != 0:
        raise SystemExit(f"logapm run failed ({first.rc}):\n{first.out}")
    n_new = max(1, events // 100)
    new = generate_events(n_new, start=time.time() - 240, seconds=120, seed=99)
    only_new = work / "new-only.log"
    only_new.unlink(missing_ok=True)
    written = write_log(only_new, new, ordinary_every=100)
    try:
        with open(log, "ab") as dst, open(only_new, "rb") as src:
            shutil.copyfileobj(src, dst)
        warm(log)
        second = measure(logapm_cmd(log, state, args), _env(args.subject), cwd=args.subject)
        fresh = measure(logapm_cmd(only_new, work / "fresh.db", args), _env(args.subject), cwd=args.subject)
    finally:
        os.truncate(log, size)  # the file as it was, for the next tool and the next bench
    for s in (second, fresh):
        if s.rc != 0:
            raise SystemExit(f"logapm run failed ({s.rc}):\n{s.out}")
    counted = stored_events(state)
    for p in (state, work / "fresh.db"):
        drop_state(p)
    only_new.unlink()
    return {"file_bytes": size, "new_bytes": written.bytes, "new_events": n_new,
            "full_run_s": round(first.wall, 2), "incremental_run_s": round(second.wall, 2),
            "fresh_run_over_new_lines_s": round(fresh.wall, 2),
            "incremental_over_full": round(second.wall / first.wall, 3),
            "incremental_over_fresh_new": round(second.wall / fresh.wall, 2),
            "bytes_ratio": round(written.bytes / size, 3), "events_counted": counted,
            "peak_rss_mb": round(second.peak_rss / 1e6, 1)}


# --- profile -------------------------------------------------------------------------------------------

STAGES = (  # (stage, what a function's file path contains), first match wins
    ("decode (parsers/, msgspec)", ("parsers/", "msgspec")),
    ("trace insights (aggregator/insights/)", ("aggregator/insights/",)),
    ("sketch (aggregator/sketch.py)", ("aggregator/sketch.py",)),
    ("windows (aggregator/windows.py, catalog.py)", ("aggregator/windows.py", "aggregator/catalog.py")),
    ("commit (store, windows_store, outbox, checkpoints, dead letters)",
     ("windows_store.py", "aggregator/store.py", "outbox.py", "checkpoints.py", "dead_letters.py", "sqlite3")),
    ("read (sources.py, file reads)", ("aggregator/sources.py", "BufferedReader")),
    ("post-commit stages (delivery, alerting)", ("alerting/", "delivery.py")),
    ("imports", ("importlib", "<frozen importlib")),
)


def _stage(path: str, caller_stage: str | None) -> str:
    for stage, marks in STAGES:
        if any(m in path for m in marks):
            return stage
    return caller_stage or "other (run, engine, numpy calls not attributed)"


def profile_run(log: Path, events: int, work: Path, traces: bool = True) -> dict[str, float]:
    """CPU seconds per stage of one in-process ``logapm run`` (one worker) under cProfile's CPU clock.

    Self time of each function goes to the stage of its module; a builtin or numpy call goes to the stage
    of the function that called it (its most expensive caller), so ``np.bincount`` in the sketch counts as
    sketch and ``decode_lines`` as decode."""
    import cProfile
    import pstats

    from aggregator.config import load_config
    from aggregator.run import execute

    path = work / f"profile-{events}.log"
    n, _ = head_events(log, path, events)
    state = work / "profile.db"
    drop_state(state)
    config = load_config(environ={}, overrides={"run.workers": 1, "run.trace_insights": traces})
    prof = cProfile.Profile(time.process_time)
    prof.enable()
    execute(config, inputs=[str(path)], state_path=state, warn=lambda _m: None)
    prof.disable()
    drop_state(state)
    path.unlink()
    stats: Any = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    out: dict[str, float] = {}
    for (fn, _line, name), (_cc, _nc, tt, _ct, callers) in stats.items():
        where = f"{fn}:{name}"
        caller_stage = None
        if fn == "~" and callers:
            top = max(callers.items(), key=lambda kv: kv[1][3])[0]
            caller_stage = _stage(f"{top[0]}:{top[2]}", None)
            if caller_stage.startswith("other"):
                caller_stage = None
        stage = _stage(where, caller_stage)
        out[stage] = out.get(stage, 0.0) + tt
    total = sum(out.values())
    print(f"\nprofile: one in-process logapm run (1 worker, trace insights {'on' if traces else 'off'}) over "
          f"{n:,} events: {total:.2f} CPU s, {total / n * 1e6:.1f} us per event")
    for stage, sec in sorted(out.items(), key=lambda kv: -kv[1]):
        print(f"  {stage:<66} {sec:7.2f} s {sec / total:6.1%}  {sec / n * 1e6:6.2f} us/event")
    return {k: round(v, 3) for k, v in out.items()}


# --- report --------------------------------------------------------------------------------------------


def print_table(result: dict[str, Any], baseline: dict[str, Any] | None) -> None:
    rows, base = result["tools"], (baseline or {}).get("tools", {})
    print(f"\n{result['events']:,} events, {result['bytes'] / 1e6:,.0f} MB ({result['bytes'] / result['events']:.0f} "
          f"bytes/event), {result['cpus']} CPUs, load average {result['load_before']:.1f} before, "
          f"median of {result['repeats']}")
    head = (f"{'tool':<16} {'events':>10} {'seconds':>8} {'events/s':>11} {'MB/s':>7} {'CPU s':>7} "
            f"{'ev/CPU-s':>10} {'peak RSS MB':>11} {'PSS MB':>7} {'vs logapm':>9}")
    print(head + ("  vs baseline" if base else ""))
    for tool, r in rows.items():
        line = (f"{tool:<16} {r['events']:>10,} {r['seconds']:>8.2f} {r['events_per_s']:>11,} {r['mb_per_s']:>7.1f} "
                f"{r['cpu_s']:>7.1f} {r['events_per_cpu_s']:>10,} {r['peak_rss_mb']:>11,.0f} {r['peak_pss_mb']:>7,.0f} {r['ratio']:>8.2f}x")
        if tool in base:
            line += f"  x{r['events_per_s'] / base[tool]['events_per_s']:.2f} speed"
        if r["counted"] is not None and r["counted"] != r["events"] and tool != "mtail":
            line += f"  (counted {r['counted']:,})"
        print(line)
    if "mtail" in rows:
        print("mtail: fixed histogram buckets, totals per series (no minute windows in one-shot mode), "
              "events without a duration not matched")
    if "pandas" in rows and rows["pandas"]["events"] < result["events"]:
        print(f"pandas: on the first {rows['pandas']['events']:,} events only (about 2 GB per million)")
    for tool, r in rows.items():
        if tool.startswith("logapm@") and "logapm" in rows:
            lg = rows["logapm"]
            print(f"logapm vs {tool} (same rounds): x{lg['events_per_s'] / r['events_per_s']:.2f} events/s, "
                  f"x{lg['events_per_cpu_s'] / r['events_per_cpu_s']:.2f} events per CPU second, "
                  f"peak PSS {lg['peak_pss_mb']:,.0f} MB vs {r['peak_pss_mb']:,.0f} MB")
    fastest = max((t for t in rows if not t.startswith("logapm")), key=lambda t: rows[t]["events_per_s"], default=None)
    ours = "logapm" if "logapm" in rows else next((t for t in rows if t.startswith("logapm@")), None)
    if fastest and ours:
        lg, fa = rows[ours], rows[fastest]
        print(f"{ours} vs the fastest other ({fastest}): x{lg['events_per_s'] / fa['events_per_s']:.2f} events/s; "
              f"target 2,000,000 events/s: {'met' if lg['events_per_s'] >= 2e6 else 'NOT met'} "
              f"({lg['events_per_s']:,})")
    for m in result.get("memory", []):
        print(f"memory: logapm run over {m['events']:>11,} events: peak RSS {m['peak_rss_mb']:,.0f} MB, "
              f"PSS {m['peak_pss_mb']:,.0f} MB "
              f"({m['events_per_s']:,} events/s)")
    inc = result.get("incremental")
    if inc:
        print(f"incremental: {inc['new_bytes'] / 1e6:.1f} MB appended to {inc['file_bytes'] / 1e6:,.0f} MB "
              f"({inc['bytes_ratio']:.1%}): full run {inc['full_run_s']} s, next run {inc['incremental_run_s']} s "
              f"(x{inc['incremental_over_full']:.3f} of the full run; a fresh run over only the new lines "
              f"{inc['fresh_run_over_new_lines_s']} s)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=5_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tools", default="logapm,duckdb,polars,pandas,mtail",
                    help="comma-separated subset of logapm,duckdb,polars,pandas,mtail")
    ap.add_argument("--dask", action="store_true", help="also time logapm run --engine dask (a LocalCluster)")
    ap.add_argument("--pandas-max", type=int, default=1_000_000, help="events the naive pandas baseline reads")
    ap.add_argument("--memory-sizes", type=int, nargs="*", default=[1_000_000, 10_000_000])
    ap.add_argument("--no-incremental", action="store_true")
    ap.add_argument("--workers", type=int, default=None, help="logapm run --workers (default: one per core)")
    ap.add_argument("--dir", type=Path, default=None, help="work directory; the generated log is kept and reused")
    ap.add_argument("--baseline", type=Path, help="a file whose last line is an earlier run's JSON line")
    ap.add_argument("--against", metavar="REV", action="append", default=[],
                    help="also time `logapm run` of git revision REV in the same interleaved rounds (a baseline "
                         "under the same load; repeatable)")
    ap.add_argument("--profile", type=int, metavar="EVENTS", default=0,
                    help="only profile one in-process run over the first EVENTS events (CPU per stage)")
    args = ap.parse_args(argv)
    args.tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    if "logapm" not in args.tools and not args.against:
        args.tools.insert(0, "logapm")  # every ratio is to logapm run: the table needs it
    work = args.dir or Path(tempfile.mkdtemp(prefix="logapm-compare-"))
    work.mkdir(parents=True, exist_ok=True)
    prepare_tree(ROOT)
    args.tool_roots = dict(checkout(rev, work) for rev in args.against)
    # memory and incremental runs measure this tree, or the first --against revision when this tree's
    # logapm is not among the tools (a committed snapshot while the tree is being edited)
    args.subject = ROOT if "logapm" in args.tools or not args.tool_roots else next(iter(args.tool_roots.values()))
    try:
        log, events, size = generated(work, args.events)
        warm(log)
        if args.profile:
            prof = {"traces_on": profile_run(log, args.profile, work, True),
                    "traces_off": profile_run(log, args.profile, work, False)}
            print(json.dumps({"bench": "compare-profile", "events": args.profile, "cpu_s_by_stage": prof}))
            return 0
        result: dict[str, Any] = {"bench": "compare", "cpus": os.cpu_count(), "repeats": args.repeats,
                                  "events": events, "bytes": size, "load_before": os.getloadavg()[0],
                                  "mtail": bool(shutil.which("mtail"))}
        result["tools"] = side_by_side(log, events, size, work, args)
        result["memory"] = memory_at(log, events, args.memory_sizes, work, args)
        if not args.no_incremental:
            result["incremental"] = incremental(log, events, size, work, args)
        result["load_after"] = os.getloadavg()[0]
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)
    baseline = json.loads(args.baseline.read_text().strip().splitlines()[-1]) if args.baseline else None
    print_table(result, baseline)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
