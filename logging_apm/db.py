"""Database instrumentation: one ``db`` event per query, on every connection, ``executemany`` included.

Django's ``connection.execute_wrappers`` is the hook: every ``cursor.execute``/``executemany`` of the ORM
and of raw cursors runs through it. ``install()`` adds ``QueryRecorder`` to each connection as it is created
(the ``connection_created`` signal: Django makes one connection object per thread and per alias) and to
those that already exist in this thread; ``uninstall()`` removes it everywhere it was added. Both are safe to
call twice.

Per query: duration, outcome (``error.type`` when the driver raised), rows (``cursor.rowcount``: rows
affected, or rows returned where the driver knows; -1 when it does not), operation and main table, the
obfuscated statement (``logging_apm.sql``, never a literal and never the parameters) and its fingerprint.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Final

from logging_apm import emit as _emit
from logging_apm import sql as _sql
from logging_apm.errors import instrumentation_failed
from logging_apm.schema import MAX_STRING_LENGTH

__all__ = ["QueryRecorder", "install", "installed", "uninstall"]

# Django vendor -> (OpenTelemetry db.system, obfuscation dialect)
_SYSTEMS: Final[dict[str, tuple[str, str]]] = {
    "postgresql": ("postgresql", "postgres"),
    "sqlite": ("sqlite", "sqlite"),
    "mysql": ("mysql", "mysql"),
    "oracle": ("oracle", "oracle"),
}
_perf = time.perf_counter


class QueryRecorder:
    """The execute wrapper: times the call and emits the event; a failure of its own is counted, not raised."""

    def __call__(self, execute: Callable[..., Any], sql: str, params: Any, many: bool,
                 context: dict[str, Any]) -> Any:
        emitter = _emit.get_emitter()
        if not emitter.enabled:
            return execute(sql, params, many, context)
        start = _perf()
        try:
            result = execute(sql, params, many, context)
        except BaseException as exc:
            self._record(sql, params, many, context, start, type(exc).__name__)
            raise
        self._record(sql, params, many, context, start, None)
        return result

    @staticmethod
    def _record(sql: Any, params: Any, many: bool, context: dict[str, Any], start: float,
                error: str | None) -> None:
        duration_ms = (_perf() - start) * 1000.0
        try:
            connection = context["connection"]
            system, dialect = _SYSTEMS.get(connection.vendor, (connection.vendor, "sqlite"))
            text = sql if isinstance(sql, str) else str(sql)
            obfuscated = _sql.obfuscate(text, dialect)
            operation, table = _sql.operation_and_table(obfuscated)
            attrs: dict[str, Any] = {
                "db.system": system,
                "db.namespace": connection.alias,
                "db.query.text": obfuscated if len(obfuscated) <= MAX_STRING_LENGTH
                else obfuscated[:MAX_STRING_LENGTH - 3] + "...",
                "db.query.fingerprint": _sql.fingerprint(text, dialect),
            }
            if operation is not None:
                attrs["db.operation.name"] = operation
            if table is not None:
                attrs["db.collection.name"] = table
            if error is None:
                rows = getattr(context.get("cursor"), "rowcount", None)
                if isinstance(rows, int) and rows >= -1:
                    attrs["db.response.returned_rows"] = rows
            else:
                attrs["error.type"] = error
            if many and isinstance(params, Sequence):  # an iterator of parameter sets has no length
                attrs["db.executemany"] = len(params)
            _emit.emit("db", duration_ms, "failure" if error else "success", attrs)
        except Exception as exc:
            instrumentation_failed("db.record", exc)


_recorder: Final = QueryRecorder()
_lock = threading.Lock()
_wrapped: weakref.WeakSet[Any] = weakref.WeakSet()
_installed = False


def _attach(connection: Any) -> None:
    wrappers = connection.execute_wrappers
    if _recorder not in wrappers:
        # First in the list = outermost: the time includes other wrappers the app installed.
        wrappers.insert(0, _recorder)
    _wrapped.add(connection)


def _on_connection_created(sender: Any, connection: Any, **kwargs: Any) -> None:
    try:
        _attach(connection)
    except Exception as exc:
        instrumentation_failed("db.attach", exc)


def install() -> None:
    """Instrument every connection, present and future. Safe to call twice."""
    global _installed
    from django.db import connections
    from django.db.backends.signals import connection_created

    with _lock:
        if not _installed:
            connection_created.connect(_on_connection_created, dispatch_uid="logging_apm.db")
            _installed = True
        for alias in connections:
            # Existing connection objects of this thread, connected or not: attaching before the first
            # query is enough, connection_created covers reconnects and other threads.
            _attach(connections[alias])


def uninstall() -> None:
    """Remove the instrumentation from every connection it was added to. Safe to call twice."""
    global _installed
    from django.db.backends.signals import connection_created

    with _lock:
        connection_created.disconnect(dispatch_uid="logging_apm.db")
        _installed = False
        for connection in list(_wrapped):
            while _recorder in connection.execute_wrappers:
                connection.execute_wrappers.remove(_recorder)
        _wrapped.clear()


def installed() -> bool:
    return _installed
