"""A new state store is created with ``PAGE_SIZE`` pages, in WAL mode from its first write; a store made with
SQLite's default 4 KB pages (every store before) keeps them, and a run stores the same rows in either."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from aggregator.config import load_config
from aggregator.loggen import generate_events, write_log
from aggregator.run import execute
from aggregator.store import PAGE_SIZE, STORE_APPLICATION_ID, Store

BAD = b'{"apm.schema":1,"apm.kind":"request","timestamp":"2026-01-01T00:00:00.000Z","duration_ms":-5}\n'


def _old_store(path: Path) -> None:
    """A store as ``Store`` created one before PAGE_SIZE: default pages, the application id written first."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA application_id={STORE_APPLICATION_ID}")
    conn.close()
    Store(path).close()


def _pragmas(path: Path) -> tuple[int, str, int]:
    conn = sqlite3.connect(path)
    try:
        return (conn.execute("PRAGMA page_size").fetchone()[0], conn.execute("PRAGMA journal_mode").fetchone()[0],
                conn.execute("PRAGMA application_id").fetchone()[0])
    finally:
        conn.close()


def _content(path: Path) -> dict[str, list[Any]]:
    """Every table's rows, but for the columns that record the wall clock or name the store's own files."""
    clock = {"updated_at", "applied_at", "recorded_at", "started_at", "finished_at", "summary", "created_at",
             "enqueued_at"}
    conn = sqlite3.connect(path)
    try:
        out: dict[str, list[Any]] = {}
        for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"):
            cols = [c[1] for c in conn.execute(f'PRAGMA table_info("{table}")') if c[1] not in clock]
            rows = conn.execute(f'SELECT {", ".join(cols)} FROM "{table}"').fetchall()
            if table == "windows":  # the pipeline's own window holds the run's duration
                rows = [r for r in rows if r[0] != "pipeline"]
            if table == "dead_letter_export":
                rows = [r[:1] + r[2:] for r in rows]  # path: each store's own dead-letter file
            if table == "checkpoints":  # data: the checkpoint's JSON, with its read time
                rows = [(*r[:-1], {**json.loads(r[-1]), "read_at": None}) for r in rows]
            out[table] = sorted(rows, key=repr)
        return out
    finally:
        conn.close()


def test_new_store_page_size_and_wal(tmp_path: Path) -> None:
    """A new store has PAGE_SIZE pages, WAL and our application id; reopened, it keeps them."""
    path = tmp_path / "s.db"
    Store(path).close()
    assert _pragmas(path) == (PAGE_SIZE, "wal", STORE_APPLICATION_ID)
    assert not Path(str(path) + "-journal").exists()
    Store(path).close()
    assert _pragmas(path) == (PAGE_SIZE, "wal", STORE_APPLICATION_ID)


def test_old_store_keeps_its_pages_and_a_run_stores_the_same(tmp_path: Path) -> None:
    """A store with 4 KB pages stays so, and two runs store the same rows in it as in a new store."""
    start = int(time.time() // 60) * 60 - 1800
    events = generate_events(8000, start=start, seconds=900, seed=11)
    log = tmp_path / "app.log"
    config = load_config(environ={}, overrides={"run.workers": 2})
    new, old = tmp_path / "new.db", tmp_path / "old.db"
    _old_store(old)
    assert _pragmas(old)[0] == 4096 != PAGE_SIZE
    for half in (events[:4000], events[4000:]):
        write_log(log, half, ordinary_every=89)
        with open(log, "ab") as f:
            f.write(BAD)
        for state in (new, old):
            execute(config, inputs=[str(log)], state_path=state, stages=(), warn=lambda m: None)
    assert _pragmas(old) == (4096, "wal", STORE_APPLICATION_ID)
    assert _pragmas(new) == (PAGE_SIZE, "wal", STORE_APPLICATION_ID)
    got_new, got_old = _content(new), _content(old)
    assert got_new["windows"] and got_new["dead_letters"] and got_new["checkpoints"]
    assert got_new == got_old
