"""The Django app config: ``"logging_apm"`` in ``INSTALLED_APPS`` switches the instrumentation on.

``ready()`` reads the settings once, up front (``settings.LOGGING_APM`` overrides the environment; an
unknown key is an error at start-up, not a silent no-op), configures the process-wide emitter, and installs
the database and cache instrumentation unless turned off (``APM_INSTRUMENT_DB``/``APM_INSTRUMENT_CACHE`` or
``"instrument_db"``/``"instrument_cache"`` in ``LOGGING_APM``). With ``APM_ENABLED=false`` nothing is
installed at all.
"""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig


class LoggingAPMConfig(AppConfig):
    name = "logging_apm"
    label = "logging_apm"
    verbose_name = "logging-apm instrumentation"
    default = True

    def ready(self) -> None:
        from django.conf import settings

        from logging_apm.cache import install as install_cache
        from logging_apm.conf import env_bool
        from logging_apm.db import install as install_db
        from logging_apm.emit import configure

        options: dict[str, Any] = dict(getattr(settings, "LOGGING_APM", None) or {})
        instrument_db = options.pop("instrument_db", None)
        instrument_cache = options.pop("instrument_cache", None)
        emitter = configure(**options)
        if not emitter.enabled:
            return
        if env_bool("APM_INSTRUMENT_DB", True) if instrument_db is None else instrument_db:
            install_db()
        if env_bool("APM_INSTRUMENT_CACHE", True) if instrument_cache is None else instrument_cache:
            install_cache()
