"""Failures of the instrumentation itself: logged once per place, counted, and never raised to the app.

Every hook that runs inside the app's request, query, cache call or task wraps its own work so that a bug
in logging_apm can cost an event but never the operation it was timing:

    try:
        ...build and emit the event...
    except Exception as exc:
        instrumentation_failed("db.execute", exc)
"""

from __future__ import annotations

import logging
import threading
from collections import Counter

from logging_apm.emit import INTERNAL_LOGGER

_log = logging.getLogger(INTERNAL_LOGGER)
_lock = threading.Lock()
failures: Counter[str] = Counter()  # place -> how many times it failed, for tests and health checks


def instrumentation_failed(where: str, exc: BaseException) -> None:
    """Count a failure at ``where``; log it with its traceback the first time only."""
    try:
        with _lock:
            failures[where] += 1
            first = failures[where] == 1
        if first:
            _log.error("logging_apm instrumentation failed in %s (logged once, counted after)", where,
                       exc_info=(type(exc), exc, exc.__traceback__))
    except Exception:  # pragma: no cover - reporting must never raise either
        pass
