"""Event time for the demo: each simulated request runs for real, on a clock shifted to its scheduled time.

The demo replays 15 minutes of traffic in a few seconds. Durations are real (the instrumentation measures
them with ``time.perf_counter``, which is never shifted); only the wall clock that stamps the events
(``time.time``) reads as the request's scheduled moment plus the time it has really run. The shift is a
context variable, so it applies to the thread running that request and to nothing else; outside a
shifted block the clock is the real one. ``shifted_clock()`` installs the hook for the demo's duration and
removes it afterwards.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from contextlib import contextmanager

_real_time = time.time
_offset: contextvars.ContextVar[float] = contextvars.ContextVar("logapm_demo_clock_offset", default=0.0)


def _shifted_time() -> float:
    return _real_time() + _offset.get()


@contextmanager
def shifted_clock() -> Iterator[None]:
    """Route ``time.time`` through the per-context offset while the block runs."""
    previous = time.time
    time.time = _shifted_time
    try:
        yield
    finally:
        time.time = previous


@contextmanager
def at(event_time: float) -> Iterator[None]:
    """Run the block as if it started at ``event_time`` (epoch seconds)."""
    token = _offset.set(event_time - _real_time())
    try:
        yield
    finally:
        _offset.reset(token)


def current_offset() -> float:
    """The shift of the running context (0.0 outside the demo's requests)."""
    return _offset.get()


def set_offset(offset: float) -> contextvars.Token[float]:
    """Shift this context's clock (a worker thread running a task published at a shifted time)."""
    return _offset.set(offset)


def reset_offset(token: contextvars.Token[float]) -> None:
    _offset.reset(token)
