"""Timing calls to external services: one ``external`` event per call.

    from logging_apm.external import external_call, external

    with external_call("clerk", "get_user") as call:        # or: async with external_call(...)
        resp = clerk.users.get(user_id)
        call.status_code = resp.status_code                 # optional: HTTP status where there is one

    @external("resend", "send_email")                       # sync or async functions
    def send_welcome(to): ...

The call runs in its own span (a child of the current one, or a new trace outside any), so that outgoing
HTTP made inside it carries a ``traceparent`` pointing at this span. While an ``external_call`` is open,
the automatic HTTP instrumentation (``logging_apm.http``) does not emit a second event for the same call:
it injects the header and, when the block did not set one, records the response status on the enclosing
call.

Outcome: ``failure`` when the block raises or when the HTTP status is 400 or above (a client call that got
a 4xx did not do what it was asked, as in OpenTelemetry's client-span rule); ``success`` otherwise.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Final, TypeVar, cast

from logging_apm import tracing
from logging_apm.emit import emit, get_emitter
from logging_apm.errors import instrumentation_failed

__all__ = ["ExternalCall", "current_call", "external", "external_call", "outcome_for_status"]

F = TypeVar("F", bound=Callable[..., Any])

FAILURE_STATUS: Final = 400

_current_call: contextvars.ContextVar[ExternalCall | None] = contextvars.ContextVar(
    "logging_apm_external_call", default=None
)


def current_call() -> ExternalCall | None:
    """The ``external_call`` block in progress, if any (the HTTP instrumentation defers to it)."""
    return _current_call.get()


def outcome_for_status(status: int | None) -> str:
    return "failure" if status is not None and status >= FAILURE_STATUS else "success"


class ExternalCall:
    """A timed call to ``peer_service``; a context manager for ``with`` and ``async with``."""

    __slots__ = ("_start", "_tokens", "operation", "peer_service", "server_address", "span",
                 "status_code")

    def __init__(self, peer_service: str, operation: str | None = None, *,
                 server_address: str | None = None) -> None:
        self.peer_service = peer_service
        self.operation = operation
        self.server_address = server_address
        self.status_code: int | None = None
        self.span: tracing.TraceContext | None = None
        self._start = 0.0
        self._tokens: list[tuple[contextvars.Token[Any], contextvars.Token[Any]]] = []

    def __enter__(self) -> ExternalCall:
        parent = tracing.current()
        self.span = parent.child() if parent is not None else tracing.TraceContext(
            tracing.new_trace_id(), tracing.new_span_id())
        # Tokens stack so that one ExternalCall object may be re-entered (a decorated recursive function
        # gets a new object per call, but a user could reuse one).
        self._tokens.append((tracing._current.set(self.span), _current_call.set(self)))
        self._start = time.perf_counter()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        duration_ms = (time.perf_counter() - self._start) * 1000.0
        span_token, call_token = self._tokens.pop()
        _current_call.reset(call_token)
        tracing._current.reset(span_token)
        try:
            record(self.peer_service, self.operation, duration_ms, status_code=self.status_code,
                   error=exc, server_address=self.server_address, span=self.span)
        except Exception as failure:
            instrumentation_failed("external.call", failure)

    async def __aenter__(self) -> ExternalCall:
        return self.__enter__()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.__exit__(exc_type, exc, tb)


def external_call(peer_service: str, operation: str | None = None, *,
                  server_address: str | None = None) -> ExternalCall:
    """Time the block as one call to ``peer_service`` (see the module docs)."""
    return ExternalCall(peer_service, operation, server_address=server_address)


def external(peer_service: str, operation: str | None = None, *,
             server_address: str | None = None) -> Callable[[F], F]:
    """Decorate a function (sync or async) so that each call is an external call; ``operation`` defaults
    to the function's name."""

    def decorate(func: F) -> F:
        op = operation or func.__name__
        if inspect.iscoroutinefunction(func):
            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                async with ExternalCall(peer_service, op, server_address=server_address):
                    return await func(*args, **kwargs)
            return cast(F, async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with ExternalCall(peer_service, op, server_address=server_address):
                return func(*args, **kwargs)
        return cast(F, wrapper)

    return decorate


def record(peer_service: str, operation: str | None, duration_ms: float, *, status_code: int | None = None,
           error: BaseException | None = None, server_address: str | None = None,
           span: tracing.TraceContext | None = None) -> None:
    """Emit one ``external`` event (shared by the context manager and the automatic instrumentations)."""
    if not get_emitter().enabled:
        return
    attrs: dict[str, Any] = {"peer.service": peer_service}
    if operation:
        attrs["external.operation"] = operation
    if server_address:
        attrs["server.address"] = server_address
    if status_code is not None and 100 <= status_code <= 599:
        attrs["http.response.status_code"] = status_code
    outcome = outcome_for_status(status_code)
    if error is not None:
        outcome = "failure"
        attrs["error.type"] = type(error).__name__
    emit("external", max(duration_ms, 0.0), outcome, attrs, span=span)
