"""W3C Trace Context: the trace and span that every event emitted inside an operation carries.

The current span lives in a ``contextvars.ContextVar``, so it follows the request through sync views,
async views and threads started with ``contextvars.copy_context()``. The request middleware opens the
root span (continuing an incoming ``traceparent`` when there is a valid one); each timed operation inside
it gets a fresh span id whose parent is the current span.
"""

from __future__ import annotations

import contextvars
import os
import random
import re
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import repeat
from typing import Final, NamedTuple

from logging_apm._native import speedups

__all__ = [
    "TraceContext",
    "current",
    "format_traceparent",
    "new_root",
    "new_span_id",
    "new_trace_id",
    "parse_traceparent",
    "start_span",
    "use",
]

# version "-" trace-id "-" parent-id "-" trace-flags, then (for versions above 00 only) "-" anything.
_TRACEPARENT = re.compile(
    r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?", re.DOTALL
)
_ZERO_TRACE: Final = "0" * 32
_ZERO_SPAN: Final = "0" * 16
_getrandbits = random.getrandbits


class TraceContext(NamedTuple):
    """A position in a trace: the trace, this span, and the span it descends from.

    A NamedTuple rather than a frozen dataclass: one is built per request and per traced operation, and a
    tuple is built about four times faster while being just as immutable.
    """

    trace_id: str
    span_id: str
    parent_span_id: str | None = None
    sampled: bool = True

    def child(self) -> TraceContext:
        """A new span in the same trace whose parent is this one."""
        return _new(TraceContext, (self[0], (_getrandbits(64) or 1).to_bytes(8, "big").hex(), self[1], self[3]))

    @property
    def traceparent(self) -> str:
        return format_traceparent(self)


# _new(TraceContext, (trace_id, span_id, parent_span_id, sampled)) builds the tuple without NamedTuple's
# Python-level __new__ and its defaults: half the cost, and one is built per request and per span.
_new = tuple.__new__


# random.getrandbits, as OpenTelemetry's RandomIdGenerator: ids need to be unique, not secret, and the random
# module re-seeds itself in a forked child. An all-zero id is invalid in W3C: it becomes ...01, as before.
# int.to_bytes().hex() is about twice as fast as formatting the int with f"{n:032x}".
def new_trace_id() -> str:
    return (_getrandbits(128) or 1).to_bytes(16, "big").hex()


def new_span_id() -> str:
    return (_getrandbits(64) or 1).to_bytes(8, "big").hex()


def new_root() -> TraceContext:
    """A new trace's root span. One is made per request: they are drawn 64 at a time (one os.urandom call,
    two hex conversions and splits), which costs each request a list pop instead of a few microseconds."""
    while True:
        try:
            return _roots.pop()
        except IndexError:
            _roots.extend(_draw_roots(64))


def _draw_roots(count: int) -> list[TraceContext]:
    # os.urandom rather than getrandbits: the same uniform 128 and 64 bits, without building a big int and
    # converting it back to bytes (about a thousand instructions a root, callgrind); like the random module,
    # it is fork-safe. The C extension's roots() makes the same list as _roots_of, 700 instructions a root less.
    raw = _urandom(24 * count)
    return _roots_of(raw) if _native_roots is None else _native_roots(raw, TraceContext)


def _roots_of(raw: bytes) -> list[TraceContext]:
    """The roots of ``raw`` (24 * n random bytes: n trace ids, then n span ids), all-zero ids left out."""
    # All in C (hex with a separator, split, map, zip): a Python loop over the ids, or a regex split, would
    # cost what drawing them one by one does.
    count = len(raw) // 24
    trace_ids = raw[:16 * count].hex(" ", 16).split(" ")
    span_ids = raw[16 * count:].hex(" ", 8).split(" ")
    if _ZERO_TRACE in trace_ids or _ZERO_SPAN in span_ids:  # all-zero is invalid: one time in 2**58
        valid = [i for i in range(count) if trace_ids[i] != _ZERO_TRACE and span_ids[i] != _ZERO_SPAN]
        trace_ids, span_ids = [trace_ids[i] for i in valid], [span_ids[i] for i in valid]
    return list(map(_new, repeat(TraceContext), zip(trace_ids, span_ids, repeat(None), repeat(True),
                                                    strict=False)))


_urandom = os.urandom
_native_roots = getattr(speedups, "roots", None)


# Roots drawn and not used yet; list.pop and list.extend are atomic, so threads share it safely (a thread
# that finds it empty refills it). A forked child starts without its parent's: they would be reused there.
_roots: list[TraceContext] = []
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_roots.clear)


def parse_traceparent(value: str | bytes | None) -> TraceContext | None:
    """Parse a ``traceparent`` header per W3C Trace Context level 1; ``None`` when it must be ignored.

    The returned context's ``span_id`` is the caller's span (the header's parent-id): a server continuing
    the trace opens its own span as ``ctx.child()``. Rules: version ``ff`` is invalid; version ``00`` has
    exactly four fields; a higher version may append ``-``-separated fields; ids are lowercase hex and not
    all zero. Surrounding whitespace (optional whitespace of HTTP header values) is ignored.
    """
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    value = value.strip(" \t")
    if len(value) > 512:  # no valid header is that long; refuse before running the regex
        return None
    match = _TRACEPARENT.fullmatch(value)
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff":
        return None
    if version == "00" and rest is not None:
        return None
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return TraceContext(trace_id=trace_id, span_id=span_id, sampled=bool(int(flags, 16) & 1))


def format_traceparent(ctx: TraceContext) -> str:
    return f"00-{ctx.trace_id}-{ctx.span_id}-{'01' if ctx.sampled else '00'}"


_current: contextvars.ContextVar[TraceContext | None] = contextvars.ContextVar(
    "logging_apm_trace", default=None
)


def current() -> TraceContext | None:
    """The span of the operation in progress, or ``None`` outside any traced operation."""
    return _current.get()


@contextmanager
def use(ctx: TraceContext | None) -> Iterator[TraceContext | None]:
    """Make ``ctx`` the current span for the duration of the block."""
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)


@contextmanager
def start_span(parent: TraceContext | None = None) -> Iterator[TraceContext]:
    """Open a child span of ``parent`` (default: the current span), or a new trace when there is none."""
    parent = parent if parent is not None else _current.get()
    ctx = parent.child() if parent is not None else new_root()
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)
