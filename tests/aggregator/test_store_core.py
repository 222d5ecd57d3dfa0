"""aggregator.store: per-component migrations, atomic transactions, identity check, and the run lock."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from aggregator.store import LockedError, Store, StoreError, register_migrations, run_lock

register_migrations("test_core", ["CREATE TABLE tc_items (k TEXT PRIMARY KEY, v INTEGER)"])


def test_migrations_apply_once(tmp_path: Path) -> None:
    """Opening a store twice applies each migration exactly once."""
    path = tmp_path / "s.db"
    Store(path).close()
    with Store(path) as store:
        rows = store.conn.execute(
            "SELECT count(*) FROM schema_migrations WHERE component='test_core'"
        ).fetchone()
    assert rows == (1,)


def test_a_migration_given_as_a_function_runs_once_in_its_transaction(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A migration may be a function of the connection (rows re-encoded in Python): it runs once, after the ones
    before it, inside the migration's transaction: one that fails leaves nothing of itself and is not recorded,
    and runs again at the next open."""
    from aggregator import store as store_module

    calls: list[int] = []

    def move(conn: sqlite3.Connection) -> None:
        calls.append(conn.execute("SELECT count(*) FROM tc_fn").fetchone()[0])
        conn.execute("INSERT INTO tc_fn VALUES (2)")
        if len(calls) == 1:
            raise RuntimeError("killed halfway")

    monkeypatch.setitem(store_module._MIGRATIONS, "test_fn", ["CREATE TABLE tc_fn (v INTEGER); INSERT INTO tc_fn VALUES (1)",
                                                              move])
    path = tmp_path / "s.db"
    opened: list[sqlite3.Connection] = []
    connect = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: opened.append(connect(*a, **k)) or opened[-1])
    with pytest.raises(RuntimeError, match="killed halfway"):
        Store(path)
    with pytest.raises(sqlite3.ProgrammingError):  # closed
        opened[0].execute("SELECT 1")
    monkeypatch.setattr(sqlite3, "connect", connect)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT v FROM tc_fn").fetchall() == [(1,)]
        assert conn.execute("SELECT version FROM schema_migrations WHERE component = 'test_fn'").fetchall() == [(1,)]
    conn.close()
    Store(path).close()
    Store(path).close()
    assert calls == [1, 1]
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT v FROM tc_fn").fetchall() == [(1,), (2,)]
    conn.close()


def test_a_store_migrated_by_a_newer_version_is_refused(tmp_path: Path) -> None:
    """A store whose component schema is past what this code knows (a newer logging-apm migrated it) is
    refused with a message naming the component and both versions, and left as it was: an older binary must
    not write to tables whose meaning may have changed."""
    path = tmp_path / "s.db"
    Store(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO schema_migrations (component, version) VALUES ('test_core', 2)")
    before = path.read_bytes()
    with pytest.raises(StoreError, match=r"newer logging-apm \(test_core schema version 2; this one knows 1\)"):
        Store(path)
    assert path.read_bytes() == before
    with sqlite3.connect(path) as conn:  # a component this code does not know at all is not its business
        conn.execute("DELETE FROM schema_migrations WHERE component='test_core' AND version=2")
        conn.execute("INSERT INTO schema_migrations (component, version) VALUES ('not_installed_here', 9)")
    Store(path).close()


def test_a_refused_store_closes_its_connection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store refused after it was opened (another program's database, one a newer logging-apm migrated)
    leaves no connection open behind the error: the caller gets no Store to close."""
    foreign, newer = tmp_path / "other.db", tmp_path / "s.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER)")
    conn.close()
    Store(newer).close()
    with sqlite3.connect(newer) as conn:
        conn.execute("INSERT INTO schema_migrations (component, version) VALUES ('test_core', 2)")
    conn.close()
    opened: list[sqlite3.Connection] = []
    connect = sqlite3.connect

    def spy(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        opened.append(connect(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(sqlite3, "connect", spy)
    for path in (foreign, newer):
        with pytest.raises(StoreError):
            Store(path)
    assert len(opened) == 2
    for conn in opened:
        with pytest.raises(sqlite3.ProgrammingError, match="closed"):
            conn.execute("SELECT 1")


def test_transaction_rolls_back_on_error(tmp_path: Path) -> None:
    """A failed transaction leaves no trace; nested blocks join the outer one."""
    with Store(tmp_path / "s.db") as store:
        with pytest.raises(RuntimeError):
            with store.transaction() as conn:
                conn.execute("INSERT INTO tc_items VALUES ('a', 1)")
                with store.transaction() as inner:
                    inner.execute("INSERT INTO tc_items VALUES ('b', 2)")
                raise RuntimeError("boom")
        assert store.conn.execute("SELECT count(*) FROM tc_items").fetchone() == (0,)


def test_foreign_sqlite_file_is_refused(tmp_path: Path) -> None:
    """A SQLite database that logging-apm did not create is refused, and left unchanged."""
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER)")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match="did not create"):
        Store(path)
    assert path.read_bytes() == before


def test_garbage_file_is_refused(tmp_path: Path) -> None:
    """A corrupted state file gives a clear StoreError naming the file."""
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match=str(path)):
        Store(path)


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    """A state path in a directory that does not exist names the directory."""
    with pytest.raises(StoreError, match="does not exist"):
        Store(tmp_path / "nope" / "s.db")


def test_second_run_lock_fails_at_once_and_lock_dies_with_process(tmp_path: Path) -> None:
    """The run lock excludes a second holder at once, and is released when its process is killed."""
    state = tmp_path / "s.db"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys,time; from aggregator.store import run_lock\n"
         f"with run_lock({str(state)!r}):\n print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(LockedError, match="another logapm run"), run_lock(state):
            pass
    finally:
        holder.kill()
        holder.wait()
    with run_lock(state):
        pass
