"""Celery tasks as ``task`` events, through Celery's signals; and the samplers as a periodic task.

    # in the module that creates the Celery app (both the publishing side and the worker import it)
    from logging_apm import celery as apm_celery
    apm_celery.install()                                   # safe to call twice
    apm_celery.register_sampler_task(app, every=30.0)      # optional: queue depth + DB pool gauges via beat

What happens:

- ``before_task_publish`` (in the process that sends the task) stamps two message headers: the publish
  time (``apm_published_at``, epoch seconds) and, when a span is current (a request, or another task),
  the W3C ``traceparent`` of that span. Celery's protocol 2 carries custom headers to the worker, where they
  appear on ``task.request``.
- ``task_prerun`` (in the worker) starts the clock, opens the task's span (a child of the publishing span,
  so the task's events share the request's trace id and point at the span that published it; a new trace
  when there was none) and makes it current, so DB, cache and external events inside the task belong to it.
- ``task_failure`` and ``task_retry`` note the exception type; ``task_postrun`` (sent for every outcome)
  emits one ``task`` event: ``task.name``, ``messaging.destination.name`` (the queue: the routing key the
  message was delivered with), ``task.state`` (success, failure, retry), ``task.retries`` (how many retries
  preceded this run), ``task.queue_wait_ms`` (publish, or the ETA when one was set, to start of run) and the
  duration. ``outcome`` is ``failure`` for a failed run and for a run that ended in a retry (it raised);
  ``task.state`` tells the two apart.

A retry is published from inside the running task, so the next attempt's parent is the attempt that
retried: the chain of attempts reads as a chain of spans in one trace.

Queue wait uses the wall clocks of two machines (publisher and worker); with NTP it is good to a few
milliseconds, and a negative difference (clock skew) is reported as 0.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from logging_apm import tracing
from logging_apm.emit import emit, get_emitter
from logging_apm.errors import instrumentation_failed

__all__ = [
    "HEADER_PUBLISHED_AT",
    "HEADER_TRACEPARENT",
    "install",
    "installed",
    "register_sampler_task",
    "uninstall",
]

HEADER_PUBLISHED_AT: Final = "apm_published_at"
HEADER_TRACEPARENT: Final = "traceparent"
SAMPLER_TASK_NAME: Final = "logging_apm.sample"

_STATES: Final = {"SUCCESS": "success", "FAILURE": "failure", "RETRY": "retry"}


@dataclass(slots=True)
class _Run:
    start: float  # perf_counter at prerun
    start_wall: float
    span: tracing.TraceContext
    token: Any  # contextvars token of the span made current
    error_type: str | None = None


_runs: dict[str, _Run] = {}  # task id -> the run in progress (one entry per concurrently running task)
_lock = threading.Lock()
_installed = False
_UID: Final = "logging_apm.celery"


def _on_publish(sender: Any = None, headers: dict[str, Any] | None = None, **_: Any) -> None:
    try:
        if headers is None or not get_emitter().enabled:
            return
        headers[HEADER_PUBLISHED_AT] = time.time()
        span = tracing.current()
        if span is not None:
            headers[HEADER_TRACEPARENT] = span.traceparent
    except Exception as exc:
        instrumentation_failed("celery.before_task_publish", exc)


def _header(request: Any, name: str) -> Any:
    value = getattr(request, name, None)
    if value is None:
        # Protocol 1 and eager runs keep custom headers in a dict of their own.
        headers = getattr(request, "headers", None)
        if isinstance(headers, dict):
            value = headers.get(name)
    return value


def _on_prerun(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    try:
        if task_id is None or task is None or not get_emitter().enabled:
            return
        parent = tracing.parse_traceparent(_header(task.request, HEADER_TRACEPARENT))
        span = parent.child() if parent is not None else tracing.TraceContext(
            tracing.new_trace_id(), tracing.new_span_id())
        token = tracing._current.set(span)
        _runs[task_id] = _Run(time.perf_counter(), time.time(), span, token)
    except Exception as exc:
        instrumentation_failed("celery.task_prerun", exc)


def _on_failure(task_id: str | None = None, exception: BaseException | None = None, **_: Any) -> None:
    run = _runs.get(task_id or "")
    if run is not None and exception is not None:
        run.error_type = type(exception).__name__


def _on_retry(request: Any = None, reason: Any = None, **_: Any) -> None:
    run = _runs.get(getattr(request, "id", None) or "")
    # ``reason`` is Celery's Retry exception; the error that caused the retry is its ``exc``.
    inner = getattr(reason, "exc", None)
    if isinstance(inner, BaseException):
        reason = inner
    if run is not None and isinstance(reason, BaseException):
        run.error_type = type(reason).__name__


def _queue_wait_ms(request: Any, start_wall: float) -> float | None:
    published = _header(request, HEADER_PUBLISHED_AT)
    if not isinstance(published, int | float) or isinstance(published, bool):
        return None
    ready = float(published)
    eta = getattr(request, "eta", None)
    if eta:
        # A task with a countdown/ETA is not waiting in the queue before its ETA.
        try:
            ready = max(ready, (eta if isinstance(eta, datetime) else datetime.fromisoformat(eta)).timestamp())
        except (TypeError, ValueError):
            pass
    return max(0.0, (start_wall - ready) * 1000.0)


def _queue(request: Any) -> str | None:
    info = getattr(request, "delivery_info", None) or {}
    queue = info.get("routing_key") or info.get("queue")
    return str(queue) if queue else None


def _on_postrun(task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any) -> None:
    run = _runs.pop(task_id or "", None)
    if run is None:
        return
    duration_ms = (time.perf_counter() - run.start) * 1000.0
    try:
        tracing._current.reset(run.token)
    except ValueError:  # reset from another context (a pool that moved the task): leave the context alone
        pass
    try:
        request = task.request
        task_state = _STATES.get(state or "", "failure")
        attrs: dict[str, Any] = {
            "task.name": task.name,
            "task.state": task_state,
            "task.retries": int(getattr(request, "retries", 0) or 0),
        }
        queue = _queue(request)
        if queue:
            attrs["messaging.destination.name"] = queue
        wait = _queue_wait_ms(request, run.start_wall)
        if wait is not None:
            attrs["task.queue_wait_ms"] = round(wait, 3)
        if task_state != "success":
            attrs["error.type"] = run.error_type or (state or "unknown").title()
        emit("task", duration_ms, "success" if task_state == "success" else "failure", attrs, span=run.span)
    except Exception as exc:
        instrumentation_failed("celery.task_postrun", exc)


def install() -> None:
    """Connect the signal handlers (idempotent: dispatch uids make a second connect a no-op)."""
    global _installed
    from celery import signals

    with _lock:
        signals.before_task_publish.connect(_on_publish, weak=False, dispatch_uid=f"{_UID}.publish")
        signals.task_prerun.connect(_on_prerun, weak=False, dispatch_uid=f"{_UID}.prerun")
        signals.task_failure.connect(_on_failure, weak=False, dispatch_uid=f"{_UID}.failure")
        signals.task_retry.connect(_on_retry, weak=False, dispatch_uid=f"{_UID}.retry")
        signals.task_postrun.connect(_on_postrun, weak=False, dispatch_uid=f"{_UID}.postrun")
        _installed = True


def uninstall() -> None:
    """Disconnect the handlers; safe to call twice or without install."""
    global _installed
    from celery import signals

    with _lock:
        signals.before_task_publish.disconnect(_on_publish, dispatch_uid=f"{_UID}.publish")
        signals.task_prerun.disconnect(_on_prerun, dispatch_uid=f"{_UID}.prerun")
        signals.task_failure.disconnect(_on_failure, dispatch_uid=f"{_UID}.failure")
        signals.task_retry.disconnect(_on_retry, dispatch_uid=f"{_UID}.retry")
        signals.task_postrun.disconnect(_on_postrun, dispatch_uid=f"{_UID}.postrun")
        _runs.clear()
        _installed = False


def installed() -> bool:
    return _installed


def register_sampler_task(app: Any, *, every: float | None = 30.0, queues: list[str] | None = None,
                          name: str = SAMPLER_TASK_NAME) -> Any:
    """Define the sampler task on ``app`` and, with ``every`` (seconds), add it to ``app.conf.beat_schedule``.

    Each run samples once: the depth of every queue the app knows (or ``queues``) on the app's broker, and
    the utilization of the Django psycopg pools of this process when Django is configured (see
    ``logging_apm.samplers``). It is cheap (one passive declare or LLEN per queue) and safe to run on any
    worker; results are not stored.
    """
    from logging_apm import samplers

    @app.task(name=name, ignore_result=True)
    def sample() -> int:
        return samplers.sample_once(app=app, queues=queues)

    if every:
        schedule = dict(app.conf.beat_schedule or {})
        schedule.setdefault(name, {"task": name, "schedule": float(every), "options": {"expires": float(every)}})
        app.conf.beat_schedule = schedule
    return sample
