"""Sampled gauges: Celery queue depth per queue, and DB connection pool utilization per database.

Both are ``metric`` events (``metric.type`` gauge) with the names the aggregator's catalog expects:

- ``celery.queue.depth`` (tag ``queue``): messages ready in the queue, read from the broker with a passive
  queue declare through kombu, so every broker kombu speaks works the same way: on RabbitMQ the declare-ok's
  message count, on Redis the length of the queue's lists (all priority levels). A queue the broker does
  not know holds nothing: depth 0 (Redis deletes an empty list, so an idle queue looks exactly like that).
- ``db.pool.utilization`` (tag ``db``): connections in use / the pool's maximum size, 0..1, for each psycopg
  pool of this process (Django's ``OPTIONS: {"pool": {...}}`` on PostgreSQL). In use is
  ``pool_size - pool_available`` from ``ConnectionPool.get_stats()``; clients waiting for a connection
  make it 1.0 (the pool is exhausted whatever the counts say).

Pools live inside the app's processes, so utilization is sampled there: by ``start_background()`` (a daemon
thread, every few seconds) or by the Celery sampler task on a worker. Queue depth can be sampled from
anywhere: ``logapm sample``, the beat task, or ``sample_once()``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from logging_apm.emit import INTERNAL_LOGGER, emit, get_emitter
from logging_apm.errors import instrumentation_failed

__all__ = [
    "POOL_UTILIZATION",
    "QUEUE_DEPTH",
    "Gauge",
    "SampleReport",
    "django_pools",
    "pool_utilization",
    "queue_depths",
    "sample_once",
    "start_background",
]

QUEUE_DEPTH: Final = "celery.queue.depth"
POOL_UTILIZATION: Final = "db.pool.utilization"

_log = logging.getLogger(INTERNAL_LOGGER)


@dataclass(frozen=True, slots=True)
class Gauge:
    name: str
    value: float
    tags: Mapping[str, str]


@dataclass(slots=True)
class SampleReport:
    """What one sampling pass produced, and what it could not read (never silently empty)."""

    gauges: list[Gauge] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def emit(self) -> int:
        """Emit every gauge as a ``metric`` event; the number emitted."""
        if not get_emitter().enabled:
            return 0
        for g in self.gauges:
            emit("metric", None, "success", {"metric.name": g.name, "metric.type": "gauge",
                                            "metric.value": g.value, "metric.tags": dict(g.tags)})
        return len(self.gauges)


# -- queue depth ---------------------------------------------------------------------------------------

def _is_not_found(exc: BaseException) -> bool:
    # py-amqp raises NotFound (code 404); kombu's virtual transports (Redis) a ChannelError whose
    # reply_code is the string "404".
    codes = {str(getattr(exc, "code", "")), str(getattr(exc, "reply_code", ""))}
    return "404" in codes or type(exc).__name__ == "NotFound"


def queue_depths(broker_url: str, queues: Iterable[str], *,
                 transport_options: Mapping[str, Any] | None = None,
                 timeout: float = 5.0) -> dict[str, int]:
    """Messages ready in each queue. Raises when the broker cannot be reached (the caller reports it)."""
    from kombu import Connection

    depths: dict[str, int] = {}
    with Connection(broker_url, transport_options=dict(transport_options or {}),
                    connect_timeout=timeout) as conn:
        conn.ensure_connection(max_retries=1, timeout=timeout)
        for queue in dict.fromkeys(queues):  # de-duplicated, in order
            # One channel per queue: AMQP closes a channel on a failed passive declare.
            channel = conn.channel()
            try:
                _, count, _ = channel.queue_declare(queue=queue, passive=True)
                depths[queue] = int(count)
            except Exception as exc:
                if not _is_not_found(exc):
                    raise
                depths[queue] = 0
            finally:
                try:
                    channel.close()
                except Exception:
                    pass
    return depths


def celery_queues(app: Any) -> list[str]:
    """The queues a Celery app routes to: its configured queues plus the default queue."""
    names = [str(name) for name in (app.amqp.queues or {})]
    default = app.conf.task_default_queue
    if default and default not in names:
        names.append(str(default))
    return names


# -- pool utilization ----------------------------------------------------------------------------------

def pool_utilization(pool: Any) -> float:
    """In use / max size (0..1) of a psycopg ``ConnectionPool`` (anything with ``get_stats()``)."""
    stats = pool.get_stats()
    size = int(stats.get("pool_max") or getattr(pool, "max_size", 0) or 0)
    if size <= 0:
        return 0.0
    if int(stats.get("requests_waiting", 0)) > 0:
        return 1.0
    in_use = int(stats.get("pool_size", 0)) - int(stats.get("pool_available", 0))
    return min(1.0, max(0.0, in_use / size))


def django_pools() -> dict[str, Any]:
    """The psycopg pools Django has opened in this process, by database alias (none are created here)."""
    try:
        from django.conf import settings

        if not settings.configured:
            return {}
        from django.db.backends.postgresql.base import DatabaseWrapper
    except Exception:  # Django or psycopg not installed: no pools
        return {}
    return dict(getattr(DatabaseWrapper, "_connection_pools", {}))


# -- one pass ------------------------------------------------------------------------------------------

def collect(*, app: Any = None, broker_url: str | None = None, queues: Sequence[str] | None = None,
            transport_options: Mapping[str, Any] | None = None, pools: Mapping[str, Any] | None = None,
            include_pools: bool = True) -> SampleReport:
    """Read the gauges (without emitting): queue depths when a broker is known, and pool utilizations."""
    report = SampleReport()
    if app is not None:
        broker_url = broker_url or app.connection_for_read().as_uri(include_password=True)
        queues = list(queues) if queues else celery_queues(app)
        if transport_options is None:
            transport_options = app.conf.broker_transport_options
    if broker_url and queues:
        try:
            for queue, depth in queue_depths(broker_url, queues, transport_options=transport_options).items():
                report.gauges.append(Gauge(QUEUE_DEPTH, float(depth), {"queue": queue}))
        except Exception as exc:
            report.errors.append(f"queue depth: {type(exc).__name__}: {exc}")
    if include_pools:
        for alias, pool in (pools if pools is not None else django_pools()).items():
            try:
                report.gauges.append(Gauge(POOL_UTILIZATION, round(pool_utilization(pool), 4), {"db": alias}))
            except Exception as exc:
                report.errors.append(f"pool {alias}: {type(exc).__name__}: {exc}")
    return report


def sample_once(**kwargs: Any) -> int:
    """Collect and emit once (arguments as ``collect``); errors are logged, the number emitted returned."""
    report = collect(**kwargs)
    for error in report.errors:
        _log.warning("logging_apm sampler: %s", error)
    return report.emit()


class _Background:
    def __init__(self, every: float, kwargs: dict[str, Any]) -> None:
        self.every = every
        self.kwargs = kwargs
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="logging_apm-sampler", daemon=True)

    def _loop(self) -> None:
        while not self.stop.wait(self.every):
            try:
                sample_once(**self.kwargs)
            except Exception as exc:
                instrumentation_failed("samplers.background", exc)


_background: _Background | None = None
_bg_lock = threading.Lock()


def start_background(every: float = 10.0, **kwargs: Any) -> None:
    """Sample every ``every`` seconds in a daemon thread of this process (idempotent; pools by default)."""
    global _background
    with _bg_lock:
        if _background is not None:
            return
        _background = _Background(every, kwargs)
        _background.thread.start()


def stop_background() -> None:
    global _background
    with _bg_lock:
        bg, _background = _background, None
    if bg is not None:
        bg.stop.set()
        bg.thread.join(5)
