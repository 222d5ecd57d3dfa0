"""Real events from the Django instrumentation: the test project's N+1 view is found by the analysis.

The Django part runs in a child process (Django's settings are process-wide and read the environment once),
driven by Django's test client with the instrumentation writing JSON lines to a file; this process then
parses the file and runs the trace analysis on it, as ``logapm run`` does.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from aggregator import catalog
from aggregator.config import load_config
from aggregator.insights.findings import load_findings
from aggregator.insights.traces import TraceAnalyzer, extract
from aggregator.store import Store

TESTS = Path(__file__).resolve().parent.parent
ROOT = TESTS.parent
STORIES = 8  # seeded stories: the N+1 view runs one author query per story

DRIVE = textwrap.dedent(
    """
    import logging, sys
    import djangoapp
    djangoapp.setup()
    djangoapp.migrate()
    from django.test import Client
    client = Client()
    assert client.get("/api/seed/", {"n": sys.argv[1]}).status_code == 200
    for _ in range(3):
        assert client.get("/api/stories/n-plus-one/").status_code == 200
    assert client.get("/api/stories/").status_code == 200
    assert client.get("/ping/").status_code == 200
    logging.shutdown()  # drains the background handler's queue into the file
    """
)


def drive_django(tmp_path: Path, **settings: str) -> Path:
    log = tmp_path / "events.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APM_", "DJANGO"))}
    env.update({
        "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT), env.get("PYTHONPATH", "")]),
        "DJANGO_SETTINGS_MODULE": "djangoapp.settings",
        "DJANGOAPP_DB": "sqlite",
        "DJANGOAPP_SQLITE": str(tmp_path / "app.sqlite3"),
        "DJANGOAPP_CACHE": "locmem",
        "APM_LOG_FILE": str(log),
        "APM_ENABLED": "true",
        **settings,
    })
    proc = subprocess.run([sys.executable, "-c", DRIVE, str(STORIES)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert log.exists() and log.stat().st_size > 0, proc.stderr[-2000:]
    return log


@pytest.fixture
def postgres_database(postgres: tuple[str, int]) -> Iterator[str]:
    """A database of its own on the local PostgreSQL (other tests seed the shared one)."""
    import psycopg

    name = f"logapm_insights_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    dsn = f"host={postgres[0]} port={postgres[1]} user=postgres dbname=test"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_django_n_plus_one_view_is_found(tmp_path: Path) -> None:
    """Three requests to the N+1 view give three findings of its author query, 8 executions each (one per
    story); the select_related view and the plain view give none; every request was joined with its
    queries, and nothing is left pending."""
    check_n_plus_one(tmp_path, drive_django(tmp_path))


@pytest.mark.services
def test_django_n_plus_one_view_is_found_on_postgresql(tmp_path: Path, postgres_database: str) -> None:
    """The same on PostgreSQL (psycopg): the instrumentation's fingerprints group the author queries."""
    log = drive_django(tmp_path, DJANGOAPP_DB="postgres", DJANGOAPP_PG_NAME=postgres_database)
    check_n_plus_one(tmp_path, log)


def check_n_plus_one(tmp_path: Path, log: Path) -> None:
    from parsers import LineParser

    result = LineParser().parse(log.read_bytes(), str(log), 0)
    assert not result.invalid, result.dead_letters
    records = extract(result.events)
    store = Store(tmp_path / "state.db")
    analyzer = TraceAnalyzer(store, load_config(environ={}))
    analyzer.feed(records)
    with store.transaction():
        aggs = analyzer.finish()
    findings = load_findings(store.conn)
    store.close()

    by_finding_route = {f.route for f in findings}
    assert "api/stories/" not in by_finding_route and "ping/" not in by_finding_route, findings
    # The seed view creates its authors one INSERT at a time: a real N+1 of inserts, found too.
    assert all("insert" in f.query_text.lower() for f in findings if f.route == "api/seed/"), findings
    (f,) = [f for f in findings if f.route == "api/stories/n-plus-one/"]
    assert f.route == "api/stories/n-plus-one/" and f.method == "GET"
    assert f.requests == 3 and f.executions == 3 * STORIES and f.max_executions == STORIES
    assert "author" in f.query_text.lower() and f.db_table.endswith("author")
    assert "?" in f.query_text or "%s" in f.query_text  # obfuscated: no literal id
    assert f.time_ms > 0
    by_route = {a.series.tag("route"): a for a in aggs}
    nplus = catalog.merge(a for a in aggs if a.series.tag("route") == "api/stories/n-plus-one/")
    assert nplus is not None
    assert catalog.value("apm.db.n_plus_one", nplus) == 3
    assert catalog.value("apm.db.queries_per_request.avg", nplus) == 1 + STORIES
    share = catalog.value("apm.request.time_share.db", nplus)
    assert share is not None and 0 < share <= 1
    assert {"api/stories/", "ping/"} <= set(by_route)
    assert analyzer.pending_events == 0
