"""Celery in the demo: two tasks the views publish, a real worker in this process, and a queue-depth sampler.

The broker is kombu's in-memory transport (no server needed); the worker is Celery's own test worker
(``celery.contrib.testing.worker.start_worker``) consuming in a thread. The instrumentation is
``logging_apm.celery``'s signals, as in a real project; the samples are ``logging_apm.samplers``'.

Event time: a task runs in the worker thread, not in the request that published it, so the demo carries
the publishing request's clock shift in a message header (``before_task_publish``) and applies it for the
task's run (``task_prerun`` .. ``task_postrun``). The demo's handlers are connected around the
instrumentation's so that the shift covers everything it measures.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

from celery import Celery

from aggregator.demo import clock

BROKER: Final = "memory://"
QUEUE: Final = "celery"
HEADER: Final = "logapm_demo_clock_offset"

app = Celery("demo-stories", broker=BROKER, set_as_current=False)
app.conf.update(
    task_ignore_result=True,
    task_default_queue=QUEUE,
    worker_hijack_root_logger=False,
    worker_redirect_stdouts=False,
    broker_connection_retry_on_startup=True,
    broker_transport_options={"polling_interval": 0.2},  # the in-memory queue is polled; keep waits short
)


@app.task(name="stories.send_receipt")
def send_receipt(story_id: int) -> None:
    """Render and 'send' a receipt: a query and the time a mail API takes."""
    from aggregator.demo.site.models import Story

    Story.objects.filter(pk=story_id).values_list("title", flat=True).first()
    time.sleep(random.lognormvariate(0.0, 0.4) * 0.030)


@app.task(name="stories.refresh_recommendations")
def refresh_recommendations(story_id: int) -> None:
    """Recompute a story's neighbours: a heavier read."""
    from aggregator.demo.site.models import Story

    author = Story.objects.filter(pk=story_id).values_list("author_id", flat=True).first()
    list(Story.objects.filter(author_id=author).order_by("-likes").values_list("id", flat=True)[:10])
    time.sleep(random.lognormvariate(0.0, 0.4) * 0.045)


class _Tally:
    published = 0
    finished = 0


tally = _Tally()


def _stamp(headers: dict[str, Any] | None = None, **_: Any) -> None:
    if headers is not None:
        headers[HEADER] = clock.current_offset()
    tally.published += 1


_tokens: dict[str, Any] = {}


def _shift(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    request = getattr(task, "request", None)
    offset = getattr(request, HEADER, None)
    if offset is None:
        offset = (getattr(request, "headers", None) or {}).get(HEADER)
    if offset is not None and task_id is not None:
        _tokens[task_id] = clock.set_offset(float(offset))


def _unshift(task_id: str | None = None, **_: Any) -> None:
    token = _tokens.pop(task_id or "", None)
    if token is not None:
        clock.reset_offset(token)
    tally.finished += 1


def wait_idle(timeout: float = 30.0) -> bool:
    """Wait until the worker has run every task published so far."""
    deadline = time.monotonic() + timeout
    while tally.finished < tally.published:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@contextmanager
def running_worker() -> Iterator[Any]:
    """The instrumentation, the demo's clock handlers around it, and a worker consuming the queue."""
    from celery import signals
    from celery.contrib.testing.worker import start_worker

    from logging_apm import celery as apm_celery

    apm_celery.uninstall()
    signals.before_task_publish.connect(_stamp, weak=False, dispatch_uid="logapm-demo.stamp")
    signals.task_prerun.connect(_shift, weak=False, dispatch_uid="logapm-demo.shift")
    apm_celery.install()
    signals.task_postrun.connect(_unshift, weak=False, dispatch_uid="logapm-demo.unshift")
    try:
        with start_worker(app, pool="solo", concurrency=1, perform_ping_check=False, loglevel="ERROR",
                          shutdown_timeout=10.0) as worker:
            yield worker
    finally:
        apm_celery.uninstall()
        signals.before_task_publish.disconnect(_stamp, dispatch_uid="logapm-demo.stamp")
        signals.task_prerun.disconnect(_shift, dispatch_uid="logapm-demo.shift")
        signals.task_postrun.disconnect(_unshift, dispatch_uid="logapm-demo.unshift")


def queue_depth() -> int:
    """Messages waiting in the demo's queue (what the sampler reports)."""
    from logging_apm.samplers import queue_depths

    return queue_depths(BROKER, [QUEUE]).get(QUEUE, 0)


def sample_queue(event_time: float) -> int:
    """One sampler pass at ``event_time``: the queue's depth as a ``celery.queue.depth`` gauge."""
    from logging_apm.samplers import sample_once

    with clock.at(event_time):
        return sample_once(broker_url=BROKER, queues=[QUEUE], include_pools=False)
