"""``logapm sample``: sample Celery queue depth once, or every N seconds, as schema-1 metric events.

    logapm sample --broker redis://127.0.0.1:6379/0 --queue celery --queue emails
    logapm sample --celery-app myproject.celery:app --every 30 --output /var/log/app/apm.jsonl

Each gauge is one JSON line (``celery.queue.depth``, tag ``queue``) written to stdout or appended to
``--output`` (the app's event log, where the shipper and the aggregator already look). A broker that
cannot be read is reported on stderr; a one-shot run then exits 1, a periodic one keeps sampling.
DB pool utilization is not sampled here: pools live inside the app's processes (see
``logging_apm.samplers.start_background`` and the Celery sampler task).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import threading
from typing import IO, Any

import orjson


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "sample", help="sample Celery queue depth (once or every N seconds) as metric events",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--broker", default=os.environ.get("CELERY_BROKER_URL"),
                        help="broker URL (default: $CELERY_BROKER_URL, or the --celery-app's broker)")
    parser.add_argument("--queue", action="append", default=[], metavar="NAME",
                        help="a queue to sample (repeatable; default: the --celery-app's queues, or 'celery')")
    parser.add_argument("--celery-app", metavar="MODULE:ATTR",
                        help="take broker, queues and transport options from this Celery app")
    parser.add_argument("--every", type=float, default=0.0, metavar="SECONDS",
                        help="sample every N seconds until interrupted (default: once)")
    parser.add_argument("--count", type=int, default=0, metavar="N",
                        help="with --every, stop after N passes (default: run until interrupted)")
    parser.add_argument("--output", default="-", metavar="FILE",
                        help="append the event lines to FILE (default: stdout)")
    parser.set_defaults(func=_run)


class _LineHandler(logging.Handler):
    """Writes each event dict as one JSON line and flushes (a periodic sampler must not sit on lines)."""

    def __init__(self, stream: IO[bytes]) -> None:
        super().__init__(logging.INFO)
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.msg, dict):
            self.stream.write(orjson.dumps(record.msg) + b"\n")
            self.stream.flush()


def _load_app(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr or "app")


def _run(args: argparse.Namespace) -> int:
    from logging_apm import emit as emit_module
    from logging_apm import samplers

    if args.every < 0 or args.count < 0:
        print("logapm sample: --every and --count must not be negative", file=sys.stderr)
        return 2
    app = _load_app(args.celery_app) if args.celery_app else None
    if app is None and not args.broker:
        print("logapm sample: give --broker (or CELERY_BROKER_URL) or --celery-app", file=sys.stderr)
        return 2
    queues = list(args.queue) or (None if app is not None else ["celery"])

    stream: IO[bytes] = sys.stdout.buffer if args.output == "-" else open(args.output, "ab")  # noqa: SIM115
    logger = logging.getLogger(emit_module.EVENT_LOGGER)
    handler = _LineHandler(stream)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    previous = emit_module.get_emitter()
    if not previous.enabled:
        emit_module.configure(enabled=True)
    stop = threading.Event()
    failed = False
    passes = 0
    try:
        while True:
            report = samplers.collect(app=app, broker_url=args.broker, queues=queues, include_pools=False)
            report.emit()
            for error in report.errors:
                print(f"logapm sample: {error}", file=sys.stderr)
            failed = bool(report.errors)
            passes += 1
            if not args.every or (args.count and passes >= args.count):
                break
            if stop.wait(args.every):
                break
    finally:
        logger.removeHandler(handler)
        emit_module._emitter = previous
        if stream is not sys.stdout.buffer:
            stream.close()
    return 1 if failed and not args.every else 0
