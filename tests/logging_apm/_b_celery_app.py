"""A small Celery app for the worker tests (imported by the test process and by the worker subprocess).

Configured from the environment: ``APM_TEST_BROKER`` (broker URL), ``APM_TEST_QUEUE`` and
``APM_TEST_QUEUE2`` (unique queue names per test run), ``APM_TEST_EVENTS`` (the file the worker appends its
events to, one JSON line each), ``APM_TEST_SAMPLE_EVERY`` (seconds between beat-run samples; 0 = none), ``APM_TEST_WORKER`` (set in the
worker subprocess only).
"""

from __future__ import annotations

import json
import logging
import os

from celery import Celery
from kombu import Queue

from logging_apm import celery as apm_celery
from logging_apm import metrics
from logging_apm.emit import EVENT_LOGGER, configure

QUEUE = os.environ.get("APM_TEST_QUEUE", "apm-test")
QUEUE2 = os.environ.get("APM_TEST_QUEUE2", "apm-test-2")

app = Celery("apmtest", broker=os.environ.get("APM_TEST_BROKER", "memory://"))
app.conf.update(
    task_default_queue=QUEUE,
    task_queues=[Queue(QUEUE), Queue(QUEUE2)],
    task_ignore_result=True,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    worker_prefetch_multiplier=1,
)

apm_celery.install()
_every = float(os.environ.get("APM_TEST_SAMPLE_EVERY", "0") or 0)
apm_celery.register_sampler_task(app, every=_every or None)

# Only the worker subprocess writes events to the file; the test process that imports this module to
# publish keeps its own emitter and handlers.
_events_file = os.environ.get("APM_TEST_EVENTS") if os.environ.get("APM_TEST_WORKER") else None
if _events_file:
    configure(enabled=True, service_name="apmtest-worker")
    from logging_apm import http as apm_http

    apm_http.install(services={"127.0.0.1": "local-api"})

    class _JsonLines(logging.Handler):
        """Appends each event as one line and flushes, so the test can read while the worker runs."""

        def emit(self, record: logging.LogRecord) -> None:
            if isinstance(record.msg, dict):
                with open(_events_file, "a", encoding="utf-8") as fh:  # type: ignore[arg-type]
                    fh.write(json.dumps(record.msg, separators=(",", ":")) + "\n")

    events = logging.getLogger(EVENT_LOGGER)
    events.addHandler(_JsonLines())
    events.setLevel(logging.INFO)
    events.propagate = False


@app.task(name="apmtest.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="apmtest.fail")
def fail() -> None:
    raise ValueError("this task always fails")


@app.task(name="apmtest.flaky", bind=True, max_retries=5)
def flaky(self, succeed_after: int) -> str:  # type: ignore[no-untyped-def]
    if self.request.retries < succeed_after:
        raise self.retry(exc=ConnectionError("upstream hiccup"), countdown=0)
    return "ok"


@app.task(name="apmtest.fan_out")
def fan_out() -> None:
    """Publishes a child task and records a business metric, both inside this task's span."""
    metrics.count("apmtest.fanned", kind="child")
    add.apply_async((1, 1), queue=QUEUE2)


@app.task(name="apmtest.call_http")
def call_http(url: str) -> int:
    """An outgoing HTTP call inside a task (timed by logging_apm.http in the worker)."""
    import requests

    return requests.get(url, timeout=10).status_code
