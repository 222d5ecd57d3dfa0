"""Database instrumentation: every query on every connection (SQLite and PostgreSQL), executemany too."""

from __future__ import annotations

import threading

import pytest
from django.db import connections

from logging_apm import db
from logging_apm.testing import capture_events

SECRET = "s3cr3t-literal-4242"


def test_orm_queries_give_db_events_without_literals(seeded: None) -> None:
    """An ORM filter on a literal: operation, table, rows, fingerprint, and no literal in the text."""
    from djangoapp.models import Author

    with capture_events() as events:
        found = list(Author.objects.filter(name=SECRET))
        Author.objects.raw(f"SELECT * FROM djangoapp_author WHERE name = '{SECRET}' AND id > 12345")[:]
    assert found == []
    orm, raw = events.of_kind("db")
    assert orm["db.system"] == "sqlite" and orm["db.namespace"] == "default"
    assert orm["db.operation.name"] == "SELECT" and orm["db.collection.name"] == "djangoapp_author"
    assert orm["outcome"] == "success" and orm["duration_ms"] >= 0
    assert len(orm["db.query.fingerprint"]) == 16
    assert raw["db.query.text"] == "SELECT * FROM djangoapp_author WHERE name = ? AND id > ?"
    assert SECRET not in str(events) and "12345" not in str(events)


def test_n_plus_one_repeats_one_fingerprint(seeded: None) -> None:
    """The N+1 view's per-story queries share one fingerprint: what the aggregator's N+1 finding keys on."""
    from django.test import Client

    with capture_events() as events:
        Client().get("/api/stories/n-plus-one/")
    prints = [e["db.query.fingerprint"] for e in events.of_kind("db")]
    assert len(prints) == 6
    assert len(set(prints[1:])) == 1 and prints[0] != prints[1]


def test_writes_and_executemany(seeded: None) -> None:
    """INSERT/UPDATE/DELETE report rows affected; executemany reports its parameter sets."""
    from djangoapp.models import Author

    with capture_events() as events:
        Author.objects.filter(name__startswith="author").update(name="renamed")
        with connections["default"].cursor() as cursor:
            cursor.executemany("INSERT INTO djangoapp_author (name) VALUES (%s)", [("a",), ("b",), ("c",)])
        Author.objects.filter(name__in=["a", "b", "c"]).delete()
    update, many, *rest = events.of_kind("db")
    assert update["db.operation.name"] == "UPDATE" and update["db.response.returned_rows"] == 5
    assert many["db.executemany"] == 3 and many["db.operation.name"] == "INSERT"
    assert many["db.collection.name"] == "djangoapp_author"
    deletes = [e for e in rest if e["db.operation.name"] == "DELETE"]
    assert deletes and deletes[-1]["db.response.returned_rows"] == 3


def test_failing_query_is_a_failure_and_still_raises() -> None:
    """A query the database rejects gives a failure event with the driver's exception class, and raises."""
    from django.db import DatabaseError

    with capture_events() as events, pytest.raises(DatabaseError):
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT * FROM no_such_table WHERE x = 'y'")
    [event] = events.of_kind("db")
    assert event["outcome"] == "failure" and event["error.type"] == "OperationalError"


def test_connections_of_other_threads_are_instrumented(seeded: None) -> None:
    """A connection made in another thread (Django has one per thread) gets the wrapper on creation."""
    from djangoapp.models import Author

    def work() -> None:
        list(Author.objects.all()[:1])
        connections.close_all()

    with capture_events() as events:
        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
    assert len(events.of_kind("db")) == 1


def test_install_and_uninstall_are_safe_twice(seeded: None) -> None:
    """Installing twice wraps once; uninstalling (twice) stops events; installing again restores them."""
    from djangoapp.models import Author

    db.install()
    db.install()
    conn = connections["default"]
    assert conn.execute_wrappers.count(db._recorder) == 1
    try:
        db.uninstall()
        db.uninstall()
        assert db._recorder not in conn.execute_wrappers and not db.installed()
        with capture_events() as events:
            list(Author.objects.all())
        assert events.of_kind("db") == []
    finally:
        db.install()
    with capture_events() as events:
        list(Author.objects.all())
    assert len(events.of_kind("db")) == 1


def test_postgres_queries(pg_database: str) -> None:
    """On PostgreSQL: db.system postgresql, the alias as namespace, rows returned, bulk insert, no literal."""
    from djangoapp.models import Author, Story

    with capture_events() as events:
        author = Author.objects.using("postgres").create(name=SECRET)
        Story.objects.using("postgres").bulk_create([Story(title=f"t{i}", author=author) for i in range(4)])
        titles = list(Story.objects.using("postgres").filter(title__in=["t1", "t2"]).values_list("title"))
        Story.objects.using("postgres").all().delete()
        Author.objects.using("postgres").all().delete()
    assert len(titles) == 2
    pg = [e for e in events.of_kind("db") if e["db.namespace"] == "postgres"]
    assert pg and all(e["db.system"] == "postgresql" for e in pg)
    select = next(e for e in pg if e["db.operation.name"] == "SELECT" and e["db.collection.name"] ==
                  "djangoapp_story")
    assert select["db.response.returned_rows"] == 2
    insert = next(e for e in pg if e["db.operation.name"] == "INSERT" and e["db.collection.name"] ==
                  "djangoapp_story")
    assert insert["db.response.returned_rows"] == 4
    assert SECRET not in str(events)
