"""What emitting costs the app: CPU per event, and the time instrumentation adds to a minimal request.

    python bench/emit.py [--events 20000] [--requests 3000] [--runs 5] [--baseline FILE] [--json-out FILE]

1. CPU per event, for each formatter of ``build_logging()`` (orjson, python-json-logger, structlog) and for
   a disabled emitter: ``emit()`` called N times inside a trace, then the handler flushed; the process CPU
   time (``time.process_time``: every thread, so the listener thread that formats and writes is included)
   divided by N. Median of ``--runs`` runs. Target: under 10 microseconds.
2. A minimal request (``/ping/`` of tests/djangoapp: no query, no cache) through Django's WSGI handler,
   with the APM middleware and the events written to a file, against the same handler without it, in the
   same process, in many short interleaved rounds (30 by default, spread over five processes run in turn);
   CPU per request (listener thread included), medians, and the ratio; the fastest rounds' ratio is shown
   too (least disturbed by other load). Target: under 10% added.
3. SQL obfuscation + fingerprint + operation/table of a typical Django SELECT, for a text never seen
   (cache miss) and for a text seen before (Django reuses its SQL strings: the usual case).
4. The same request over real HTTP: the test project under gunicorn (one sync worker) with logging_apm, and
   without it at all (``DJANGOAPP_APM=off``), driven alternately in bursts of 25 requests, 40 short rounds
   over eight pairs of server processes started in turn; the worker's CPU
   per request: the scheduler's nanosecond runtime of each of its threads (``/proc/<pid>/task/<tid>/
   schedstat``, user and system, the listener thread that writes the events included), each round waiting
   for the listener to write its events before it is read; medians of rounds, and the ratio. This is the
   request as an app serves it (HTTP parsing, WSGI); item 2 is the strictest possible baseline.

Items 2 and 4 also show the paired figure: the median over rounds of what each instrumented round added to
the plain round run beside it.

Prints a table, then one JSON line (``--json-out`` also writes it to a file). With ``--baseline FILE`` (a
JSON line from an earlier run) each figure is compared with the baseline's.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import logging.config
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

FORMATS = ("orjson", "json", "structlog")
TARGET_EVENT_US = 10.0
TARGET_REQUEST_PCT = 10.0
BURST = 25  # requests in a row to one server over HTTP (see bench_server)
SERVER_SETS = 8  # pairs of gunicorn servers started in turn in a run (see bench_server)
REQUEST_PROCESSES = 5  # processes the in-process item's rounds are spread over (see bench_request)


DJANGO_SELECT = ('SELECT "djangoapp_story"."id", "djangoapp_story"."title", "djangoapp_story"."author_id", '
                 '"djangoapp_author"."id", "djangoapp_author"."name" FROM "djangoapp_story" INNER JOIN '
                 '"djangoapp_author" ON ("djangoapp_story"."author_id" = "djangoapp_author"."id") WHERE '
                 '("djangoapp_story"."title" = %s AND "djangoapp_story"."id" > 12345) ORDER BY '
                 '"djangoapp_story"."id" ASC LIMIT 21')


def bench_sql(n: int, runs: int) -> dict[str, float]:
    """Microseconds to obfuscate + fingerprint + find operation/table for one Django SELECT: uncached (a
    new text every time) and cached (Django reuses its texts: the usual case)."""
    from logging_apm import sql

    def once(text: str) -> None:
        obfuscated = sql.obfuscate(text, "postgres")
        sql.fingerprint(text, "postgres")
        sql.operation_and_table(obfuscated)

    uncached, cached = [], []
    for run in range(runs + 1):
        texts = [f"{DJANGO_SELECT} /* {run}-{i} */" for i in range(n)]
        for cache in (sql.obfuscate, sql.fingerprint, sql.operation_and_table):
            cache.cache_clear()
        t0 = time.process_time()
        for text in texts:
            once(text)
        t1 = time.process_time()
        for _ in range(n):
            once(DJANGO_SELECT)
        t2 = time.process_time()
        if run:
            uncached.append((t1 - t0) / n * 1e6)
            cached.append((t2 - t1) / n * 1e6)
    return {"sql_uncached_us": statistics.median(uncached), "sql_cached_us": statistics.median(cached)}


def _events_handler() -> Any:
    return logging.getLogger("logging_apm.events").handlers[0]


def bench_event(fmt: Any, n: int, runs: int, workdir: Path) -> float:
    """Median CPU microseconds per emitted event with format ``fmt`` (None: emitter disabled)."""
    from logging_apm import emit, tracing
    from logging_apm.logging_config import build_logging

    path = workdir / f"events-{fmt}.log"
    logging.config.dictConfig(build_logging(path, stdout=False, format=fmt or "orjson"))
    emit.configure(enabled=fmt is not None, service_name="bench", environment="bench")
    handler = _events_handler()
    attrs = {"db.system": "postgresql", "db.namespace": "default", "db.operation.name": "SELECT",
             "db.collection.name": "stories", "db.query.text": 'SELECT "id" FROM "stories" WHERE "id" = %s',
             "db.query.fingerprint": "0123456789abcdef", "db.response.returned_rows": 1}
    samples = []
    with tracing.start_span():
        for run in range(runs + 1):
            t0 = time.process_time()
            for _ in range(n):
                emit.emit("db", 1.25, "success", attrs)
            handler.flush()
            elapsed = time.process_time() - t0
            if run:  # the first run warms caches and starts the listener thread
                samples.append(elapsed / n * 1e6)
            path.write_bytes(b"")  # keep the file small; the handler appends (O_APPEND)
    handler.close()
    return statistics.median(samples)


def _environ(path: str) -> dict[str, Any]:
    return {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": "", "SERVER_NAME": "bench",
            "SERVER_PORT": "80", "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(b""),
            "wsgi.errors": sys.stderr, "SERVER_PROTOCOL": "HTTP/1.1"}


def _paired_pct(instrumented: list[float], plain: list[float]) -> float:
    """The median over rounds of what the instrumented round added to the plain round run beside it (the two
    of one pass of the interleaved loop: the same moment's load), in %."""
    return statistics.median((i - p) / p * 100.0 for i, p in zip(instrumented, plain, strict=True))


def _request_rounds(n: int, rounds: int, workdir: Path) -> dict[str, list[float]]:
    """CPU microseconds per minimal request of each round, with and without the instrumentation, in this
    process."""
    os.environ["APM_LOG_FILE"] = str(workdir / "requests.log")
    os.environ["APM_LOG_STDOUT"] = "false"
    os.environ["DJANGOAPP_SQLITE"] = str(workdir / "bench.sqlite3")
    os.environ["DJANGO_SETTINGS_MODULE"] = "djangoapp.settings"
    import django

    django.setup()
    from django.conf import settings
    from django.core.handlers.wsgi import WSGIHandler
    from django.test import override_settings

    from logging_apm import emit
    from logging_apm.logging_config import build_logging

    logging.config.dictConfig(settings.LOGGING)
    instrumented_emitter = emit.configure(service_name="bench")
    disabled_emitter = emit.configure(enabled=False)
    with_apm = WSGIHandler()
    plain_middleware = [m for m in settings.MIDDLEWARE if not m.startswith("logging_apm.")]
    with override_settings(MIDDLEWARE=plain_middleware):
        without = WSGIHandler()
    del build_logging

    def drive(handler: WSGIHandler, count: int) -> None:
        for _ in range(count):
            response = handler(_environ("/ping/"), lambda status, headers: None)
            response.close()

    flush = _events_handler().flush
    # Many short rounds, the two variants interleaved: on a shared, noisy machine a burst of load then
    # hits both alike, and the medians compare like with like.
    per_round = max(50, n // 6)
    results: dict[str, list[float]] = {"instrumented": [], "plain": []}
    for run in range(rounds + 1):
        for name in ("plain", "instrumented") if run % 2 else ("instrumented", "plain"):
            emit._emitter = instrumented_emitter if name == "instrumented" else disabled_emitter
            t0 = time.process_time()
            drive(with_apm if name == "instrumented" else without, per_round)
            flush()
            if run:
                results[name].append((time.process_time() - t0) / per_round * 1e6)
    lines = (workdir / "requests.log").read_text().splitlines()
    expected = per_round * (rounds + 1)
    assert len(lines) == expected, f"expected {expected} request events, found {len(lines)}"
    return results


def bench_request(n: int, runs: int, workdir: Path) -> dict[str, float]:
    """Median CPU microseconds per minimal request, with and without the instrumentation: the rounds of
    REQUEST_PROCESSES processes run one after the other (each process's memory layout moves its figures by
    a few per cent for its whole life, as over HTTP)."""
    results: dict[str, list[float]] = {"instrumented": [], "plain": []}
    for index in range(REQUEST_PROCESSES):
        out = workdir / f"request-rounds-{index}.json"
        subprocess.run([sys.executable, __file__, "--request-rounds", str(runs * 6 // REQUEST_PROCESSES),
                        "--requests", str(n), "--json-out", str(out)], check=True)
        for name, values in json.loads(out.read_text()).items():
            results[name] += values
    plain = statistics.median(results["plain"])
    instrumented = statistics.median(results["instrumented"])
    return {"request_plain_us": plain, "request_instrumented_us": instrumented,
            "request_added_pct": (instrumented - plain) / plain * 100.0,
            "request_added_pct_min": (min(results["instrumented"]) - min(results["plain"]))
            / min(results["plain"]) * 100.0,
            "request_added_pct_paired": _paired_pct(results["instrumented"], results["plain"])}


def _worker_threads_cpu_ns(master: int) -> dict[tuple[int, int], int]:
    """CPU nanoseconds of each thread of a gunicorn master's worker processes ((pid, tid): ns), from
    /proc/<pid>/task/<tid>/schedstat (the scheduler's own runtime, user and system; /proc/<pid>/stat counts
    in 10 ms clock ticks, which a round of a few hundred requests cannot resolve)."""
    cpu: dict[tuple[int, int], int] = {}
    for pid in Path(f"/proc/{master}/task/{master}/children").read_text().split():
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                cpu[int(pid), int(task.name)] = int((task / "schedstat").read_text().split()[0])
            except FileNotFoundError:  # a thread that ended while the directory was read
                continue
    return cpu


def _cpu_between(before: dict[tuple[int, int], int], after: dict[tuple[int, int], int]) -> float:
    """Seconds of CPU the worker's threads used between two readings. A thread that ended in between took
    its CPU with it: that round cannot be measured, and saying so beats reporting less than was used."""
    ended = before.keys() - after.keys()
    if ended:
        raise RuntimeError(f"gunicorn worker threads ended during a round: {sorted(ended)}")
    return sum(ns - before.get(key, 0) for key, ns in after.items()) / 1e9


def _http_get(port: int, path: str) -> None:
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(f"GET {path} HTTP/1.0\r\nHost: bench\r\n\r\n".encode())
        while conn.recv(65536):
            pass


def _pin_to_first_cpu() -> None:
    # Both servers on one CPU: they then share the same neighbours, which halves the noise between them.
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def _gunicorn_options() -> list[str]:
    """``--no-control-socket`` when the installed gunicorn has a control socket (27 and later): both servers
    would otherwise race for the same default path, and one prints "Control server error: File exists"."""
    from gunicorn.config import KNOWN_SETTINGS

    return ["--no-control-socket"] if any("--no-control-socket" in setting.cli for setting in KNOWN_SETTINGS
                                          if setting.cli) else []


@contextlib.contextmanager
def _servers(workdir: Path, tag: str) -> Iterator[dict[str, tuple[subprocess.Popen[bytes], int]]]:
    """The two gunicorn servers (one sync worker each), started, answering, and stopped on the way out."""
    servers: dict[str, tuple[subprocess.Popen[bytes], int, socket.socket]] = {}
    try:
        for name in ("plain", "instrumented"):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sock.listen(128)
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)]),
                   "DJANGO_SETTINGS_MODULE": "djangoapp.settings", "APM_LOG_STDOUT": "false",
                   "APM_LOG_FILE": str(workdir / f"server-{name}-{tag}.log"),
                   "DJANGOAPP_SQLITE": str(workdir / "server.sqlite3"),
                   "DJANGOAPP_APM": "on" if name == "instrumented" else "off"}
            proc = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "--bind", f"fd://{sock.fileno()}", "--workers", "1",
                 "--log-level", "warning", *_gunicorn_options(), "djangoapp.wsgi:application"],
                env=env, pass_fds=(sock.fileno(),), cwd=workdir, preexec_fn=_pin_to_first_cpu)
            servers[name] = (proc, sock.getsockname()[1], sock)
        for name, (proc, port, _) in servers.items():
            deadline = time.monotonic() + 60
            while True:
                try:
                    _http_get(port, "/ping/")
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError(f"gunicorn ({name}) did not start") from None
                    time.sleep(0.2)
        yield {name: (proc, port) for name, (proc, port, _) in servers.items()}
    finally:
        for proc, _, sock in servers.values():
            proc.terminate()
            proc.wait(30)
            sock.close()


def bench_server(n: int, runs: int, workdir: Path) -> dict[str, float]:
    """Server-side CPU per minimal request over real HTTP: gunicorn (one sync worker) with logging_apm
    against the same project without it (``DJANGOAPP_APM=off``), driven alternately by a socket client."""
    # The worker's CPU in nanoseconds (schedstat, every thread: the listener that writes the events included).
    # Within a round the two servers take bursts of BURST requests in turn (A B B A ...), so both see the same
    # moments of the machine's other load; /proc/<pid>/stat's 10 ms ticks could not resolve such short
    # rounds, nor a difference of a few microseconds a request. And the rounds are spread over SERVER_SETS
    # pairs of server processes started one after the other: each process's memory layout (ASLR, hash
    # seed) moves its cost for its whole life (three identical plain servers measured side by side: 338,
    # 342 and 351 us a request; three instrumented ones 328, 358 and 363), which one pair per run would
    # carry whole into the run's figure.
    rounds = runs * 8 // SERVER_SETS
    per_round = max(BURST * 4, n // 5 // BURST * BURST)
    results: dict[str, list[float]] = {"instrumented": [], "plain": []}
    for tag in range(SERVER_SETS):
        with _servers(workdir, str(tag)) as servers:
            order = [servers["plain"], servers["instrumented"]]
            for run in range(rounds + 1):
                before = {name: _worker_threads_cpu_ns(proc.pid) for name, (proc, _) in servers.items()}
                for burst in range(per_round // BURST):
                    for _, port in order if burst % 2 else order[::-1]:
                        for _ in range(BURST):
                            _http_get(port, "/ping/")
                # The listener writes the round's last events within its interval (50 ms): wait for it, so
                # that each round holds its own writes.
                time.sleep(0.1)
                if run:
                    for name, (proc, _) in servers.items():
                        cpu = _cpu_between(before[name], _worker_threads_cpu_ns(proc.pid))
                        results[name].append(cpu / per_round * 1e6)
        events = (workdir / f"server-instrumented-{tag}.log").read_text().count('"apm.kind":"request"')
        assert events == per_round * (rounds + 1) + 1, f"instrumented server wrote {events} request events"
    plain = statistics.median(results["plain"])
    instrumented = statistics.median(results["instrumented"])
    fastest = min(results["plain"])
    return {"server_plain_us": plain, "server_instrumented_us": instrumented,
            "server_added_pct": (instrumented - plain) / plain * 100.0,
            "server_added_pct_min": (min(results["instrumented"]) - fastest) / fastest * 100.0,
            "server_added_pct_paired": _paired_pct(results["instrumented"], results["plain"])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20000, help="events per run (default 20000)")
    parser.add_argument("--requests", type=int, default=2000, help="requests per run (default 2000)")
    parser.add_argument("--runs", type=int, default=5, help="measured runs; the median is reported")
    parser.add_argument("--baseline", type=Path, help="a JSON line from an earlier run to compare with")
    parser.add_argument("--json-out", type=Path, help="also write the JSON line to this file")
    parser.add_argument("--request-rounds", type=int, help=argparse.SUPPRESS)  # bench_request's processes
    args = parser.parse_args(argv)
    if args.request_rounds:
        with tempfile.TemporaryDirectory(prefix="bench-emit-request-") as tmp:
            rounds = _request_rounds(args.requests, args.request_rounds, Path(tmp))
        args.json_out.write_text(json.dumps(rounds))
        return 0

    result: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-emit-") as tmp:
        work = Path(tmp)
        for fmt in FORMATS:
            result[f"event_{fmt}_us"] = bench_event(fmt, args.events, args.runs, work)
        result["event_disabled_us"] = bench_event(None, args.events * 5, args.runs, work)
        result.update(bench_sql(min(args.events, 4000), args.runs))
        result.update(bench_server(args.requests, args.runs, work))
        result.update(bench_request(args.requests, args.runs, work))

    baseline: dict[str, float] = json.loads(args.baseline.read_text().strip().splitlines()[-1]) \
        if args.baseline else {}
    rows: list[tuple[str, str, float | None]] = [(f"event, {fmt} formatter (CPU us, all threads)", f"event_{fmt}_us", TARGET_EVENT_US)
            for fmt in FORMATS]
    rows += [("event, emitter disabled (CPU us)", "event_disabled_us", None),
             ("SQL obfuscate+fingerprint, new text (CPU us)", "sql_uncached_us", None),
             ("SQL obfuscate+fingerprint, cached text (CPU us)", "sql_cached_us", None),
             ("minimal request, not instrumented (CPU us)", "request_plain_us", None),
             ("minimal request, instrumented (CPU us)", "request_instrumented_us", None),
             ("added by instrumentation (%, medians)", "request_added_pct", TARGET_REQUEST_PCT),
             ("added by instrumentation (%, fastest rounds)", "request_added_pct_min", None),
             ("added by instrumentation (%, paired rounds)", "request_added_pct_paired", None),
             ("over HTTP (gunicorn): not instrumented (CPU us)", "server_plain_us", None),
             ("over HTTP (gunicorn): instrumented (CPU us)", "server_instrumented_us", None),
             ("over HTTP: added by instrumentation (%, medians)", "server_added_pct", TARGET_REQUEST_PCT),
             ("over HTTP: added (%, fastest rounds)", "server_added_pct_min", None),
             ("over HTTP: added (%, paired rounds)", "server_added_pct_paired", None)]
    header = f"{'measure':<50} {'median':>9} {'target':>8} {'ok':>4}"
    if baseline:
        header += f" {'baseline':>9} {'ratio':>6}"
    print(header)
    print("-" * len(header))
    for label, key, target in rows:
        value = result[key]
        line = f"{label:<50} {value:>9.2f} {target if target else '':>8} " \
               f"{('yes' if value < target else 'NO') if target else '':>4}"
        if baseline and key in baseline:
            line += f" {baseline[key]:>9.2f} {value / baseline[key] if baseline[key] else float('nan'):>6.2f}"
        print(line)
    print(f"(medians of {args.runs} runs; {args.events} events and {args.requests} requests per run; "
          f"{os.cpu_count()} CPUs)")
    doc = json.dumps({k: round(v, 3) for k, v in result.items()})
    print(doc)
    if args.json_out:
        args.json_out.write_text(doc + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
