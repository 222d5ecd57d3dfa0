"""A small real Django project for tests (and for other engineers' tests and the demo).

Settings come from the environment so that one project runs on SQLite or PostgreSQL, with a local-memory
or Redis cache (see ``settings.py``). ``djangoapp.setup()`` configures Django in the current process;
``djangoapp.migrate(alias)`` creates the tables.
"""

from __future__ import annotations

import os

SETTINGS_MODULE = "djangoapp.settings"


def setup() -> None:
    """Configure Django with ``djangoapp.settings`` (idempotent)."""
    import django
    from django.apps import apps

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", SETTINGS_MODULE)
    if not apps.ready:
        django.setup()


def migrate(alias: str = "default") -> None:
    """Create the project's tables on ``alias`` (quietly)."""
    from django.core.management import call_command

    call_command("migrate", database=alias, verbosity=0, interactive=False)
