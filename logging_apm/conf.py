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
