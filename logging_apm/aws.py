"""Automatic ``external`` events for boto3/botocore calls (S3, Rekognition, SES, ...), through botocore's
event system.

    from logging_apm import aws
    aws.install()          # safe to call twice; clients created from then on are timed

Each API call is one event: ``peer.service`` the botocore service name (``s3``, ``rekognition``),
``external.operation`` the AWS operation name (``PutObject``, ``DetectLabels``), ``server.address`` the
endpoint host, the final HTTP status, and ``outcome`` failure on an error response (status 300 and above,
which botocore raises as a ``ClientError``) or a connection error. The time runs from ``before-call`` to
``after-call`` (or ``after-call-error``), so botocore's own retries are inside one call.

How: botocore gives every client its own copy of its session's event emitter, so ``install`` wraps
``botocore.session.Session.create_client`` to register three handlers on each new client
(``before-call``, ``after-call``, ``after-call-error``, with unique ids so a client is never registered
twice). A client made before ``install`` can be added with ``instrument_client(client)``. ``uninstall``
restores ``create_client`` and turns the handlers already registered into no-ops.
"""

from __future__ import annotations

import threading
import time
from typing import Any
from urllib.parse import urlsplit

from logging_apm import tracing
from logging_apm.errors import instrumentation_failed
from logging_apm.external import record

__all__ = ["install", "installed", "instrument_client", "uninstall"]

_CONTEXT_KEY = "logging_apm"
_lock = threading.Lock()
_original_create_client: Any = None
_active = False


def _before_call(model: Any = None, context: Any = None, **_: Any) -> None:
    if not _active or context is None:
        return
    try:
        parent = tracing.current()
        span = parent.child() if parent is not None else None
        context[_CONTEXT_KEY] = (time.perf_counter(), span)
    except Exception as exc:
        instrumentation_failed("aws.before_call", exc)


def _take(context: Any) -> tuple[float, tracing.TraceContext | None] | None:
    """The start time and span that ``before-call`` left in the request context (each used once)."""
    if context is None:
        return None
    started = context.pop(_CONTEXT_KEY, None)
    return started if _active else None


def _service(model: Any) -> str:
    service_model = model.service_model
    return str(getattr(service_model, "service_name", None) or service_model.endpoint_prefix)


def _after_call(http_response: Any = None, parsed: Any = None, model: Any = None, context: Any = None,
                **_: Any) -> None:
    started = _take(context)
    if started is None:
        return
    try:
        start, span = started
        status = getattr(http_response, "status_code", None)
        host = urlsplit(getattr(http_response, "url", "") or "").hostname
        error: BaseException | None = None
        record(_service(model), model.name, (time.perf_counter() - start) * 1000.0, status_code=status,
               error=error, server_address=host, span=span)
    except Exception as exc:
        instrumentation_failed("aws.after_call", exc)


def _after_call_error(exception: BaseException | None = None, context: Any = None, event_name: str = "",
                      **_: Any) -> None:
    started = _take(context)
    if started is None:
        return
    try:
        start, span = started
        # event_name is "after-call-error.<service-id>.<Operation>"; the model is not passed here.
        _event, service_id, operation = [*event_name.split(".", 2), "", ""][:3]
        service = context.get("logging_apm_service") or service_id or "aws"
        record(service, operation or None, (time.perf_counter() - start) * 1000.0,
               error=exception or RuntimeError("aws call failed"), span=span)
    except Exception as exc:
        instrumentation_failed("aws.after_call_error", exc)


def _remember_service(model: Any = None, context: Any = None, **_: Any) -> None:
    # after-call-error does not get the operation model; keep the service name where it can find it.
    if context is not None and model is not None and _active:
        try:
            context["logging_apm_service"] = _service(model)
        except Exception as exc:
            instrumentation_failed("aws.before_call", exc)


def instrument_client(client: Any) -> Any:
    """Register the timing handlers on one client (idempotent); returns the client."""
    events = client.meta.events
    events.register("before-call", _remember_service, unique_id="logging_apm.aws.service")
    events.register("before-call", _before_call, unique_id="logging_apm.aws.before")
    events.register("after-call", _after_call, unique_id="logging_apm.aws.after")
    events.register("after-call-error", _after_call_error, unique_id="logging_apm.aws.error")
    return client


def install() -> None:
    """Time every botocore client created from now on; safe to call twice."""
    global _original_create_client, _active
    import botocore.session

    with _lock:
        _active = True
        if _original_create_client is not None:
            return
        original = botocore.session.Session.create_client
        _original_create_client = original

        def create_client(self: Any, *args: Any, **kwargs: Any) -> Any:
            client = original(self, *args, **kwargs)
            try:
                instrument_client(client)
            except Exception as exc:
                instrumentation_failed("aws.create_client", exc)
            return client

        botocore.session.Session.create_client = create_client  # type: ignore[method-assign]


def uninstall() -> None:
    """Stop timing (handlers already on clients become no-ops); safe to call twice."""
    global _original_create_client, _active
    import botocore.session

    with _lock:
        _active = False
        if _original_create_client is not None:
            botocore.session.Session.create_client = _original_create_client  # type: ignore[method-assign]
            _original_create_client = None


def installed() -> bool:
    return _active
