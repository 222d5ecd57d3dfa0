"""Benchmark: what engineer B's instrumentation costs the app, each beside its baseline, in one run.

    python bench/instrumentation_bench.py            # defaults: 20k calls per case, 5 repeats
    python bench/instrumentation_bench.py --calls 5000 --repeats 3

Cases (microseconds per call, median of the repeats; ratio = case / baseline):

- ``metrics.count`` with two tags (name check, cardinality bound) vs a plain ``emit`` of the same event;
- an empty ``external_call`` block vs an empty block (span, timing, event);
- ``requests.get`` to a local HTTP server with ``logging_apm.http`` installed vs not installed;
- ``FluentForwardHandler.handle`` with the forward input up (Message mode and acknowledged chunks), and down (every event spooled to disk),
  vs fluent-logger's ``FluentSender.emit`` to the same input (up) / to a closed port (down).

The event logger's handler is a no-op except for the fluent cases, so that what is measured is the
instrumentation, not a disk.
"""

from __future__ import annotations

import argparse
import logging
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "logging_apm")]


def timed(fn: Callable[[], None], calls: int, repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        runs.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(runs)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    n, r = args.calls, args.repeats

    import requests
    from _b_forward_receiver import ForwardReceiver
    from _b_servers import RecordingHTTPServer
    from fluent.sender import FluentSender

    from logging_apm import http, metrics
    from logging_apm.emit import EVENT_LOGGER, configure, emit
    from logging_apm.external import external_call
    from logging_apm.fluent import FluentForwardHandler

    configure(enabled=True, service_name="bench")
    events = logging.getLogger(EVENT_LOGGER)
    events.propagate = False
    events.setLevel(logging.INFO)
    events.addHandler(logging.NullHandler())
    rows: list[tuple[str, float, str, float]] = []

    attrs = {"metric.name": "stories.published", "metric.type": "count", "metric.value": 1,
             "metric.tags": {"kind": "short", "plan": "free"}}
    rows.append(("metrics.count, 2 tags", timed(lambda: metrics.count("stories.published", kind="short",
                                                                        plan="free"), n, r),
                 "emit() of the same event", timed(lambda: emit("metric", None, "success", attrs), n, r)))

    def empty_call() -> None:
        with external_call("clerk", "get_user"):
            pass

    def empty_block() -> None:
        with _Null():
            pass

    rows.append(("external_call, empty block", timed(empty_call, n, r),
                 "empty with-block", timed(empty_block, n, r)))

    server = RecordingHTTPServer().start()
    session = requests.Session()
    url = server.url + "/x"
    http_calls = max(200, n // 20)
    # Interleaved, one repeat at a time, so that the machine's noise falls on both alike.
    bases, insts = [], []
    for _ in range(r):
        bases.append(timed(lambda: session.get(url, timeout=5), http_calls, 1))
        http.install()
        insts.append(timed(lambda: session.get(url, timeout=5), http_calls, 1))
        http.uninstall()
    base, inst = statistics.median(bases), statistics.median(insts)
    server.stop()
    rows.append(("requests.get, instrumented", inst, "requests.get, not instrumented", base))

    record = logging.LogRecord(EVENT_LOGGER, logging.INFO, __file__, 1, attrs, None, None)
    with tempfile.TemporaryDirectory() as tmp:
        receiver = ForwardReceiver().start()
        handler = FluentForwardHandler("127.0.0.1", receiver.port, "bench", Path(tmp) / "up",
                                       retry_interval=3600)
        up = timed(lambda: handler.handle(record), n, r)
        handler.flush(60)
        handler.close()
        sender = FluentSender("bench", host="127.0.0.1", port=receiver.port)
        direct = timed(lambda: sender.emit("x", attrs), n, r)
        sender.close()
        receiver.stop()
        rows.append(("FluentForwardHandler.handle, input up", up, "FluentSender.emit, input up", direct))

        receiver = ForwardReceiver().start()
        handler = FluentForwardHandler("127.0.0.1", receiver.port, "bench", Path(tmp) / "ack",
                                       retry_interval=3600, require_ack=True)
        start = time.perf_counter()
        acked = timed(lambda: handler.handle(record), n, r)
        handler.flush(120)
        acked_total = (time.perf_counter() - start) / (n * r) * 1e6
        handler.close()
        receiver.stop()
        rows.append(("FluentForwardHandler.handle, require_ack", acked, "FluentSender.emit, input up", direct))
        rows.append(("  (incl. acknowledged delivery, per event)", acked_total, "", float("nan")))

        port = free_port()
        handler = FluentForwardHandler("127.0.0.1", port, "bench", Path(tmp) / "down", retry_interval=3600)
        start = time.perf_counter()
        down = timed(lambda: handler.handle(record), n, r)
        handler.flush(120)
        drained = (time.perf_counter() - start) / (n * r) * 1e6
        spooled = handler.stats.spooled
        handler.close()
        sender = FluentSender("bench", host="127.0.0.1", port=port, bufmax=0)
        closed = timed(lambda: sender.emit("x", attrs), max(200, n // 20), r)
        sender.close()
        rows.append(("FluentForwardHandler.handle, input down", down, "FluentSender.emit, closed port", closed))
        rows.append(("  (incl. spooling to disk, per event)", drained, "", float("nan")))

    print(f"{'case':44} {'us/call':>9}   {'baseline':34} {'us/call':>9} {'ratio':>7}")
    for name, value, base_name, base_value in rows:
        ratio = value / base_value if base_value == base_value and base_value else float("nan")
        print(f"{name:44} {value:9.2f}   {base_name:34} {base_value:9.2f} {ratio:7.2f}")
    print(f"events spooled while the input was down: {spooled}")


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


if __name__ == "__main__":
    main()
