"""App-side settings: read once, up front, so that the per-event path only reads attributes.

Sources, strongest first: explicit keyword arguments (or ``settings.LOGGING_APM`` in Django), then the
original environment variables of the project's ``.env`` (``APM_ENABLED``, ``DATADOG_SERVICE_NAME``,
``NEW_RELIC_APP_NAME``, ``DATADOG_ENVIRONMENT``, ``NEW_RELIC_ENVIRONMENT``, ...), then defaults.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

_TRUE = frozenset({"1", "true", "yes", "on", "y", "t"})
_FALSE = frozenset({"0", "false", "no", "off", "n", "f", ""})


def env_bool(name: str, default: bool, environ: Mapping[str, str] | None = None) -> bool:
    """A boolean environment variable; an unrecognised value is an error, not a silent default."""
    env = os.environ if environ is None else environ
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{name}={raw!r} is not a boolean (use true/false, 1/0, yes/no, on/off)")


def _first(env: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        value = env.get(name)
        if value:
            return value
    return None


@dataclass(frozen=True, slots=True)
class EnvVar:
    """One app-side environment variable: the README's configuration table is checked against these."""

    name: str
    default: str
    meaning: str


# Every environment variable the app side reads, strongest source first where several feed one setting.
ENV_VARS: tuple[EnvVar, ...] = (
    EnvVar("APM_ENABLED", "true", "`false` turns emission off (events cost one attribute read)."),
    EnvVar("APM_SERVICE_NAME", "unset", "`service.name`; else `DATADOG_SERVICE_NAME`, `NEW_RELIC_APP_NAME`, "
           "`OTEL_SERVICE_NAME`."),
    EnvVar("DATADOG_SERVICE_NAME", "unset", "`service.name` when `APM_SERVICE_NAME` is unset."),
    EnvVar("NEW_RELIC_APP_NAME", "unset", "`service.name` when neither of the above is set."),
    EnvVar("APM_ENVIRONMENT", "unset", "`deployment.environment`; else `DATADOG_ENVIRONMENT`, "
           "`NEW_RELIC_ENVIRONMENT`, `DD_ENV`."),
    EnvVar("DATADOG_ENVIRONMENT", "unset", "`deployment.environment` when `APM_ENVIRONMENT` is unset."),
    EnvVar("NEW_RELIC_ENVIRONMENT", "unset", "`deployment.environment` when the two above are unset."),
    EnvVar("APM_SERVICE_VERSION", "unset", "`service.version`; else `DD_VERSION`."),
    EnvVar("APM_HOST_NAME", "the host name", "`host.name`; else `HOSTNAME`, else `socket.gethostname()`."),
    EnvVar("APM_LOG_FILE", "unset", "`build_logging()`: the JSON-lines file for events (logrotate-safe)."),
    EnvVar("APM_LOG_STDOUT", "true when no file", "`build_logging()`: also (or only) write events to stdout."),
    EnvVar("APM_LOG_FORMAT", "orjson", "`build_logging()`: `orjson`, `json` (python-json-logger) or "
           "`structlog`."),
    EnvVar("APM_LOG_QUEUE_SIZE", "100000", "`build_logging()`: records queued before new ones are dropped "
           "(and counted) when the disk stalls."),
    EnvVar("APM_INSTRUMENT_DB", "true", "The app config installs the database instrumentation."),
    EnvVar("APM_INSTRUMENT_CACHE", "true", "The app config installs the cache instrumentation."),
)


def env_str(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    value = (os.environ if environ is None else environ).get(name)
    return value if value else None


def env_int(name: str, default: int, environ: Mapping[str, str] | None = None) -> int:
    raw = env_str(name, environ)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None


@dataclass(frozen=True, slots=True)
class AppSettings:
    """What the in-app instrumentation needs to know."""

    enabled: bool = True
    service_name: str | None = None
    environment: str | None = None
    version: str | None = None
    host_name: str | None = None
    # Attributes copied onto every event (the unified service tags), computed once.
    resource: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> AppSettings:
        env = os.environ if environ is None else environ
        settings = cls(
            enabled=env_bool("APM_ENABLED", True, env),
            service_name=_first(env, "APM_SERVICE_NAME", "DATADOG_SERVICE_NAME", "NEW_RELIC_APP_NAME",
                                "OTEL_SERVICE_NAME"),
            environment=_first(env, "APM_ENVIRONMENT", "DATADOG_ENVIRONMENT", "NEW_RELIC_ENVIRONMENT",
                               "DD_ENV"),
            version=_first(env, "APM_SERVICE_VERSION", "DD_VERSION"),
            host_name=_first(env, "APM_HOST_NAME", "HOSTNAME") or socket.gethostname(),
        )
        unknown = set(overrides) - {f for f in cls.__dataclass_fields__ if f != "resource"}
        if unknown:
            raise TypeError(f"unknown logging_apm setting(s): {', '.join(sorted(unknown))}")
        settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
        return replace(settings, resource=settings._resource())

    def _resource(self) -> dict[str, str]:
        pairs = {
            "service.name": self.service_name,
            "deployment.environment": self.environment,
            "service.version": self.version,
            "host.name": self.host_name,
        }
        return {k: v for k, v in pairs.items() if v}
