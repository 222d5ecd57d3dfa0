"""Django for the logging_apm tests: the real test project ``tests/djangoapp``, configured once per session.

SQLite is the default database (a file in a session temp dir, tables migrated here); the ``postgres`` alias
and the ``redis`` cache alias are used by the tests that request the ``postgres``/``redis_server`` fixtures.
Events of the session go to a temp file (``APM_LOG_FILE``), tests read them with ``capture_events``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="logging_apm_tests_"))
os.environ.setdefault("DJANGOAPP_SQLITE", str(_SESSION_DIR / "db.sqlite3"))
os.environ.setdefault("APM_LOG_FILE", str(_SESSION_DIR / "events.log"))
os.environ.setdefault("DJANGOAPP_PG_NAME", f"logging_apm_tests_{os.getpid()}")
os.environ.setdefault("DJANGOAPP_REDIS_DB", "12")
os.environ.setdefault("DJANGOAPP_REDIS_PREFIX", f"logging_apm_tests_{os.getpid()}")

import djangoapp  # noqa: E402

djangoapp.setup()
djangoapp.migrate("default")


@pytest.fixture(scope="session")
def pg_database(postgres: tuple[str, int]) -> Iterator[str]:
    """A fresh PostgreSQL database for the ``postgres`` alias, migrated; dropped at the end of the session."""
    import psycopg
    from django.db import connections

    name = os.environ["DJANGOAPP_PG_NAME"]
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=test", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    djangoapp.migrate("postgres")
    yield name
    connections["postgres"].close()
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=test", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def seeded() -> Iterator[None]:
    """Five authors with one story each in the default database, removed afterwards."""
    from djangoapp.models import Author, Story

    for i in range(5):
        Story.objects.create(title=f"story {i}", author=Author.objects.create(name=f"author {i}"))
    yield
    Story.objects.all().delete()
    Author.objects.all().delete()
