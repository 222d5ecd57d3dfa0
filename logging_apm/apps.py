"""The Django app config: ``"logging_apm"`` in ``INSTALLED_APPS`` switches the instrumentation on.

``ready()`` reads the settings once, up front (``settings.LOGGING_APM`` overrides the environment; an
unknown key is an error at start-up, not a silent no-op), configures the process-wide emitter, and installs
the database and cache instrumentation unless turned off (``APM_INSTRUMENT_DB``/``APM_INSTRUMENT_CACHE`` or
``"instrument_db"``/``"instrument_cache"`` in ``LOGGING_APM``). With ``APM_ENABLED=false`` nothing is
installed at all.

The optional parts are switched the same way, each installed only when its library is importable:
outgoing ``requests``/``httpx`` calls (``APM_INSTRUMENT_HTTP``/``"instrument_http"``, default on; a dict
instead of ``True`` adds host-to-service entries), boto3/botocore (``APM_INSTRUMENT_AWS``/``"instrument_aws"``,
default on), Celery's signals (``APM_INSTRUMENT_CELERY``/``"instrument_celery"``, default on), and the
background pool/queue sampler (``APM_SAMPLE_EVERY``/``"sample_every"`` seconds, default 0 = off; it is how the
DB pool utilization of the web processes gets sampled).
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from django.apps import AppConfig

from logging_apm.conf import env_bool


class LoggingAPMConfig(AppConfig):
    name = "logging_apm"
    label = "logging_apm"
    verbose_name = "logging-apm instrumentation"
    default = True

    def ready(self) -> None:
        from django.conf import settings

        from logging_apm.cache import install as install_cache
        from logging_apm.db import install as install_db
        from logging_apm.emit import configure

        options: dict[str, Any] = dict(getattr(settings, "LOGGING_APM", None) or {})
        switches = {name: options.pop(name, None) for name in _SWITCHES}
        sample_every = options.pop("sample_every", None)
        emitter = configure(**options)
        if not emitter.enabled:
            return
        if _switch(switches, "instrument_db"):
            install_db()
        if _switch(switches, "instrument_cache"):
            install_cache()
        http = _switch(switches, "instrument_http")
        if http and (_importable("requests") or _importable("httpx")):
            from logging_apm import http as http_instrumentation

            http_instrumentation.install(http if isinstance(http, dict) else None)
        if _switch(switches, "instrument_aws") and _importable("botocore"):
            from logging_apm import aws as aws_instrumentation

            aws_instrumentation.install()
        if _switch(switches, "instrument_celery") and _importable("celery"):
            from logging_apm import celery as celery_instrumentation

            celery_instrumentation.install()
        every = float(os.environ.get("APM_SAMPLE_EVERY", "0") if sample_every is None else sample_every)
        if every > 0:
            from logging_apm import samplers

            samplers.start_background(every=every)


_SWITCHES = ("instrument_db", "instrument_cache", "instrument_http", "instrument_aws", "instrument_celery")


def _switch(switches: dict[str, Any], name: str) -> Any:
    """``LOGGING_APM[name]`` when set, else the environment's ``APM_<NAME>`` (default on)."""
    value = switches[name]
    return env_bool(f"APM_{name.upper()}", True) if value is None else value


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None
