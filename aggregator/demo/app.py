"""The embedded demo app: Django configured in code (SQLite in a temporary directory, local-memory cache),
with ``logging_apm`` installed the way a real project installs it: the app, the middleware first, and
``build_logging`` writing JSON lines to a file.

Django can be configured once per process, so ``start_app`` is meant for the ``logapm demo`` process.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SERVICE_NAME = "demo-stories"
STORIES = 200
AUTHORS = 25


@dataclass(frozen=True, slots=True)
class DemoApp:
    log_path: Path
    db_path: Path
    stories: int


def settings_for(*, log_path: Path, db_path: Path, scenario: dict[str, Any]) -> dict[str, Any]:
    """The Django settings of the demo, as a project would write them in settings.py."""
    from logging_apm.logging_config import build_logging

    # The app's ordinary error logs (Django's 500 tracebacks) go to the same JSON-lines file as the timing
    # events, as in a real deployment: the aggregator counts them and skips them.
    base_logging = {"loggers": {"django.request": {"handlers": ["logging_apm"], "level": "ERROR",
                                                   "propagate": False}}}
    return {
        "DEBUG": False,
        "SECRET_KEY": "logapm-demo-not-secret",
        "ALLOWED_HOSTS": ["testserver", "127.0.0.1", "localhost"],
        "ROOT_URLCONF": "aggregator.demo.site.urls",
        "INSTALLED_APPS": ["django.contrib.contenttypes", "logging_apm", "aggregator.demo.site"],
        "MIDDLEWARE": ["logging_apm.middleware.APMMiddleware", "django.middleware.common.CommonMiddleware"],
        "DATABASES": {"default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(db_path),
            # WAL and a busy timeout: the traffic driver's threads write concurrently.
            "OPTIONS": {"timeout": 30, "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"},
        }},
        "CACHES": {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                               "LOCATION": "logapm-demo"}},
        "USE_TZ": True,
        "LOGGING_APM": {"service_name": SERVICE_NAME, "environment": "demo", "version": "1.4.2"},
        "LOGGING": build_logging(log_path, stdout=False, base=base_logging),
        "DEMO": scenario,
    }


def start_app(*, log_path: Path, db_path: Path, scenario: dict[str, Any], seed: int = 7) -> DemoApp:
    """Configure Django, create the tables and the seed data (with the instrumentation paused, so that the
    logs hold the traffic only)."""
    import django
    from django.conf import settings
    from django.core.management import call_command

    from logging_apm.emit import get_emitter

    settings.configure(**settings_for(log_path=log_path, db_path=db_path, scenario=scenario))
    django.setup()
    emitter = get_emitter()
    emitter.enabled = False
    try:
        call_command("migrate", run_syncdb=True, verbosity=0, interactive=False)
        _seed(seed)
    finally:
        emitter.enabled = True
    return DemoApp(log_path=log_path, db_path=db_path, stories=STORIES)


def _seed(seed: int) -> None:
    from django.db import transaction

    from aggregator.demo.site.models import Author, Chapter, Story

    rng = random.Random(seed)
    first = ["Ada", "Bo", "Chidi", "Dana", "Eun", "Farah", "Goran", "Hana", "Ines", "Jonas", "Kofi", "Lena"]
    last = ["Okafor", "Lindqvist", "Moreau", "Tanaka", "Silva", "Novak", "Haddad", "Berg", "Quispe"]
    words = ["river", "glass", "night", "orchard", "signal", "ember", "harbor", "atlas", "winter", "echo"]
    with transaction.atomic():
        authors = Author.objects.bulk_create(
            Author(name=f"{rng.choice(first)} {rng.choice(last)}", country=rng.choice(["NG", "SE", "FR", "JP"]))
            for _ in range(AUTHORS))
        stories = Story.objects.bulk_create(
            Story(title=f"The {rng.choice(words)} of {rng.choice(words)}", author=rng.choice(authors),
                  likes=rng.randint(0, 500), words=rng.randint(2_000, 90_000))
            for _ in range(STORIES))
        Chapter.objects.bulk_create(
            Chapter(story=story, number=n, words=rng.randint(800, 6_000))
            for story in stories for n in range(1, rng.randint(2, 12)))


def flush_logs() -> None:
    """Wait until every event the app emitted is written to the log file."""
    import logging

    from logging_apm.emit import EVENT_LOGGER

    for handler in logging.getLogger(EVENT_LOGGER).handlers:
        handler.flush()
