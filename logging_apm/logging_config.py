"""``build_logging()``: the dict for Django's ``LOGGING`` that writes timing events as JSON lines.

    from logging_apm.logging_config import build_logging
    LOGGING = build_logging(filename="/var/log/app/events.log")

Events go to the dedicated logger ``logging_apm.events`` (route it like any logger; it does not propagate to
the root logger by default) through ``logging_apm.handlers.BackgroundHandler``: the request thread only
enqueues, a listener thread formats and writes, the queue is drained at exit. Output is a file that
logrotate can rotate with its default move-and-create, and/or stdout (for containers).

Nothing here imports a handler or formatter class: the dict names them by dotted path, so an optional
handler (``logging_apm.fluent``'s forward handler, for instance) is imported only when ``dictConfig`` runs.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from os import PathLike
from typing import Any, Final, Literal

from logging_apm.conf import env_bool, env_int, env_str
from logging_apm.emit import EVENT_LOGGER, INTERNAL_LOGGER

__all__ = ["FORMATS", "HANDLER_NAME", "build_logging"]

Format = Literal["orjson", "json", "structlog"]

# The formatter each format names, by dotted path (dictConfig imports it).
FORMATS: Final[Mapping[str, dict[str, Any]]] = {
    "orjson": {"()": "logging_apm.formatters.OrjsonFormatter"},
    "json": {"()": "logging_apm.formatters.EventJsonFormatter"},
    "structlog": {"()": "logging_apm.formatters.structlog_formatter"},
}
HANDLER_NAME: Final = "logging_apm"
FORMATTER_NAME: Final = "logging_apm"


def build_logging(
    filename: str | PathLike[str] | None = None,
    *,
    stdout: bool | None = None,
    format: Format | None = None,
    level: str = "INFO",
    extra_handlers: Mapping[str, str | Mapping[str, Any]] | Sequence[str] = (),
    max_queue: int | None = None,
    propagate: bool = False,
    base: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A ``LOGGING`` dict (``dictConfig`` version 1) routing ``logging_apm.events`` to JSON lines.

    Arguments left as ``None`` come from the environment (``APM_LOG_FILE``, ``APM_LOG_STDOUT``,
    ``APM_LOG_FORMAT``, ``APM_LOG_QUEUE_SIZE``). With neither a file nor ``stdout=False``, events go to
    stdout.

    ``extra_handlers`` adds handlers to the events logger by dotted class path, without importing them here:
    a sequence of paths, or a mapping of handler name to a path or to a full ``dictConfig`` handler dict
    (``{"class": "logging_apm.fluent.FluentForwardHandler", "host": "127.0.0.1", ...}``).

    ``base`` is an existing ``LOGGING`` dict to extend (it is copied, not modified): its formatters, handlers
    and loggers are kept, and ours added under the name ``logging_apm``.
    """
    filename = filename if filename is not None else env_str("APM_LOG_FILE", environ)
    if stdout is None:
        stdout = env_bool("APM_LOG_STDOUT", filename is None, environ)
    fmt = format or env_str("APM_LOG_FORMAT", environ) or "orjson"
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r}: use one of {', '.join(FORMATS)}")
    queue_size = max_queue if max_queue is not None else env_int("APM_LOG_QUEUE_SIZE", 100_000, environ)
    if filename is None and not stdout:
        raise ValueError("build_logging: no output (give a filename, set APM_LOG_FILE, or allow stdout)")

    handler: dict[str, Any] = {
        "()": "logging_apm.handlers.BackgroundHandler",
        "formatter": FORMATTER_NAME,
        "max_queue": queue_size,
    }
    if filename is not None:
        handler["filename"] = str(filename)
    if stdout:
        handler["stream"] = "ext://sys.stdout"

    handlers: dict[str, Any] = {HANDLER_NAME: handler}
    for name, spec in _extra(extra_handlers).items():
        handlers[name] = spec

    config: dict[str, Any] = copy.deepcopy(dict(base)) if base is not None else {}
    config.setdefault("version", 1)
    config.setdefault("disable_existing_loggers", False)
    config.setdefault("formatters", {})[FORMATTER_NAME] = dict(FORMATS[fmt])
    config.setdefault("handlers", {}).update(handlers)
    loggers = config.setdefault("loggers", {})
    loggers[EVENT_LOGGER] = {"handlers": list(handlers), "level": level, "propagate": propagate}
    # The instrumentation's own failures (logged once each) must reach someone: stderr via the root logger
    # unless the app configured that logger itself.
    loggers.setdefault(INTERNAL_LOGGER, {"level": "WARNING"})
    return config


def _extra(spec: Mapping[str, str | Mapping[str, Any]] | Sequence[str]) -> dict[str, dict[str, Any]]:
    if isinstance(spec, str):
        spec = [spec]
    items = spec.items() if isinstance(spec, Mapping) else (
        (f"{HANDLER_NAME}_{path.rsplit('.', 1)[-1].lower()}", path) for path in spec)
    out: dict[str, dict[str, Any]] = {}
    for name, value in items:
        entry = {"class": value} if isinstance(value, str) else dict(value)
        if "class" not in entry and "()" not in entry:
            raise ValueError(f"extra handler {name!r} needs a 'class' (dotted path)")
        if name == HANDLER_NAME:
            raise ValueError(f"extra handler name {name!r} is taken by logging_apm's own handler")
        out[name] = entry
    return out
