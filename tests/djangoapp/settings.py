"""Settings of the test project, driven by the environment.

- ``DJANGOAPP_DB``: ``sqlite`` (default; file ``DJANGOAPP_SQLITE``, default a file in the temp dir) or
  ``postgres`` (127.0.0.1:5432, user postgres, database ``DJANGOAPP_PG_NAME``, default ``test``).
  A second alias ``postgres`` always points at that PostgreSQL database, for tests that use both.
- ``DJANGOAPP_CACHE``: ``locmem`` (default) or ``redis`` (Django's built-in ``RedisCache`` on
  127.0.0.1:6379, database ``DJANGOAPP_REDIS_DB``, default 0). A second alias ``redis`` is always Redis.
- ``APM_LOG_FILE`` / ``APM_LOG_STDOUT`` / ``APM_LOG_FORMAT``: where ``build_logging()`` writes events.
- ``DJANGOAPP_APM=off``: the project without logging_apm at all (benchmark baseline).
"""

from __future__ import annotations

import os
import tempfile

from logging_apm.logging_config import build_logging

SECRET_KEY = "djangoapp-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "djangoapp.urls"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "logging_apm",
    "djangoapp",
]

MIDDLEWARE = [
    "logging_apm.middleware.APMMiddleware",
    "django.middleware.common.CommonMiddleware",
]

_PG = {
    "ENGINE": "django.db.backends.postgresql",
    "HOST": "127.0.0.1",
    "PORT": "5432",
    "USER": "postgres",
    "NAME": os.environ.get("DJANGOAPP_PG_NAME", "test"),
}
_SQLITE = {
    "ENGINE": "django.db.backends.sqlite3",
    "NAME": os.environ.get("DJANGOAPP_SQLITE", os.path.join(tempfile.gettempdir(), "djangoapp.sqlite3")),
}
DATABASES = {
    "default": _PG if os.environ.get("DJANGOAPP_DB", "sqlite") == "postgres" else _SQLITE,
    "postgres": dict(_PG),
}

_REDIS = {
    "BACKEND": "django.core.cache.backends.redis.RedisCache",
    "LOCATION": f"redis://127.0.0.1:6379/{os.environ.get('DJANGOAPP_REDIS_DB', '0')}",
    "KEY_PREFIX": os.environ.get("DJANGOAPP_REDIS_PREFIX", "djangoapp"),
}
CACHES = {
    "default": _REDIS if os.environ.get("DJANGOAPP_CACHE", "locmem") == "redis" else {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
    },
    "redis": dict(_REDIS),
}

LOGGING_APM = {"service_name": "djangoapp", "environment": "test"}
LOGGING = build_logging(stdout=os.environ.get("APM_LOG_FILE") is None)

if os.environ.get("DJANGOAPP_APM", "on") == "off":
    # The same project without any instrumentation: the benchmark's baseline.
    INSTALLED_APPS.remove("logging_apm")
    MIDDLEWARE.remove("logging_apm.middleware.APMMiddleware")
    LOGGING = {"version": 1, "disable_existing_loggers": False}
