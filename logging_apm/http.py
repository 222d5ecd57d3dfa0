"""Automatic ``external`` events for outgoing HTTP made with ``requests`` and ``httpx`` (sync and async).

    from logging_apm import http
    http.install(services={"api.stripe.com": "stripe"})   # merged over the defaults; safe to call twice

Each request sent through ``requests.Session.send``, ``httpx.Client.send`` or ``httpx.AsyncClient.send``
becomes one ``external`` event: ``peer.service`` from the host-to-service map (the host itself when it is
not in the map), ``external.operation`` the HTTP method, ``server.address`` the host, the response status,
and ``outcome`` failure on an exception or a status of 400 and above. The request carries a W3C
``traceparent`` header naming the call's span (a header the caller set is left alone).

The map is looked up by ``host:port``, then by host, then by parent domains written with a leading dot
(``".amazonaws.com": "aws"`` matches every subdomain). It is also read from ``APM_EXTERNAL_SERVICES``
(``host=service,host=service``) at install time.

Inside an ``external_call`` block the call is already timed: no second event; the status is handed to the
enclosing call when it has none.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from logging_apm import tracing
from logging_apm.errors import instrumentation_failed
from logging_apm.external import current_call, record

__all__ = ["DEFAULT_SERVICES", "install", "installed", "service_for", "uninstall"]

DEFAULT_SERVICES: Final[Mapping[str, str]] = {
    "api.clerk.com": "clerk",
    "api.clerk.dev": "clerk",
    "api.resend.com": "resend",
    "api.stripe.com": "stripe",
    "api.sendgrid.com": "sendgrid",
    "hooks.slack.com": "slack",
    "slack.com": "slack",
    "api.openai.com": "openai",
    ".amazonaws.com": "aws",
}

_lock = threading.Lock()
_services: dict[str, str] = dict(DEFAULT_SERVICES)
_originals: dict[str, Any] = {}


def parse_services(text: str) -> dict[str, str]:
    """``host=service,host=service`` (the ``APM_EXTERNAL_SERVICES`` format)."""
    out: dict[str, str] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        host, sep, service = item.partition("=")
        if not sep or not host.strip() or not service.strip():
            raise ValueError(f"APM_EXTERNAL_SERVICES: {item!r} is not host=service")
        out[host.strip().lower()] = service.strip()
    return out


def service_for(host: str, port: int | None = None) -> str:
    """The ``peer.service`` for a host (see the module docs for the lookup order)."""
    host = host.lower()
    services = _services
    if port is not None:
        hit = services.get(f"{host}:{port}")
        if hit:
            return hit
    hit = services.get(host)
    if hit:
        return hit
    dot = host.find(".")
    while dot != -1:
        hit = services.get(host[dot:])
        if hit:
            return hit
        dot = host.find(".", dot + 1)
    return host or "unknown"


class _Timer:
    """The per-request part shared by the three wrappers."""

    __slots__ = ("host", "method", "outer", "port", "span", "start")

    def __init__(self, method: str, host: str, port: int | None) -> None:
        self.method = method.upper()
        self.host = host
        self.port = port
        self.outer = current_call()
        parent = tracing.current()
        if self.outer is not None and self.outer.span is not None:
            self.span = self.outer.span  # the enclosing call is the span the server sees
        elif parent is not None:
            self.span = parent.child()
        else:
            self.span = tracing.TraceContext(tracing.new_trace_id(), tracing.new_span_id())
        self.start = time.perf_counter()

    def inject(self, headers: Any) -> None:
        if "traceparent" not in headers:
            headers["traceparent"] = self.span.traceparent

    def done(self, status: int | None, error: BaseException | None) -> None:
        duration_ms = (time.perf_counter() - self.start) * 1000.0
        if self.outer is not None:
            if self.outer.status_code is None and status is not None:
                self.outer.status_code = status
            return
        record(service_for(self.host, self.port), self.method, duration_ms, status_code=status,
               error=error, server_address=self.host, span=self.span)


def _requests_parts(request: Any) -> tuple[str, str | None, int | None, Any]:
    from urllib.parse import urlsplit

    parts = urlsplit(request.url)
    return request.method or "GET", parts.hostname, parts.port, request.headers


def _httpx_parts(request: Any) -> tuple[str, str | None, int | None, Any]:
    return request.method, request.url.host, request.url.port, request.headers


Parts = Callable[[Any], tuple[str, str | None, int | None, Any]]


def _start(request: Any, parts: Parts, where: str) -> _Timer | None:
    try:
        method, host, port, headers = parts(request)
        timer = _Timer(method, host or "", port)
        timer.inject(headers)
        return timer
    except Exception as exc:
        instrumentation_failed(where, exc)
        return None


def _finish(timer: _Timer | None, status: int | None, error: BaseException | None, where: str) -> None:
    if timer is None:
        return
    try:
        timer.done(status, error)
    except Exception as exc:
        instrumentation_failed(where, exc)


def _wrap_sync(original: Any, parts: Parts, where: str) -> Any:
    def send(self: Any, request: Any, **kwargs: Any) -> Any:
        timer = _start(request, parts, where)
        try:
            response = original(self, request, **kwargs)
        except BaseException as exc:
            _finish(timer, None, exc, where)
            raise
        _finish(timer, response.status_code, None, where)
        return response

    send._logging_apm = True  # type: ignore[attr-defined]
    return send


def _wrap_async(original: Any, parts: Parts, where: str) -> Any:
    async def send(self: Any, request: Any, **kwargs: Any) -> Any:
        timer = _start(request, parts, where)
        try:
            response = await original(self, request, **kwargs)
        except BaseException as exc:
            _finish(timer, None, exc, where)
            raise
        _finish(timer, response.status_code, None, where)
        return response

    send._logging_apm = True  # type: ignore[attr-defined]
    return send


def _targets() -> list[tuple[str, Any, Any]]:
    """(key, class, wrapper factory) for each library that is importable."""
    out: list[tuple[str, Any, Any]] = []
    try:
        import requests
        out.append(("requests.Session.send", requests.Session,
                    lambda original: _wrap_sync(original, _requests_parts, "http.requests")))
    except ImportError:
        pass
    try:
        import httpx
        out.append(("httpx.Client.send", httpx.Client,
                    lambda original: _wrap_sync(original, _httpx_parts, "http.httpx")))
        out.append(("httpx.AsyncClient.send", httpx.AsyncClient,
                    lambda original: _wrap_async(original, _httpx_parts, "http.httpx")))
    except ImportError:
        pass
    return out


def install(services: Mapping[str, str] | None = None, *, environ: Mapping[str, str] | None = None) -> None:
    """Instrument ``requests`` and ``httpx``; safe to call twice (the second call only updates the map)."""
    global _services
    env = os.environ if environ is None else environ
    merged = dict(DEFAULT_SERVICES)
    merged.update(parse_services(env.get("APM_EXTERNAL_SERVICES", "")))
    merged.update({k.lower(): v for k, v in (services or {}).items()})
    with _lock:
        _services = merged
        for key, cls, factory in _targets():
            if key in _originals:
                continue
            original = cls.send
            if getattr(original, "_logging_apm", False):  # wrapped by another copy of this module
                continue
            _originals[key] = (cls, original)
            cls.send = factory(original)


def uninstall() -> None:
    """Restore the libraries' own ``send``; safe to call twice or without install."""
    with _lock:
        for cls, original in _originals.values():
            cls.send = original
        _originals.clear()


def installed() -> bool:
    return bool(_originals)
