"""A new state store is created with ``PAGE_SIZE`` pages, in WAL mode from its first write; a store made with
SQLite's default 4 KB pages (every store before) keeps them, and a run stores the same rows in either."""

from __future__ import annotations

import os
import sqlite3
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any

import pytest
from runhelp import store_content

from aggregator.config import load_config
from aggregator.loggen import generate_events, write_log
from aggregator.model import RunContext, StageResult
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
    got_new, got_old = store_content(new), store_content(old)
    assert got_new["windows"] and got_new["dead_letters"] and got_new["checkpoints"]
    assert got_new == got_old


def _windows_in_file_alone(path: Path, copy: Path) -> int:
    """The windows the database file holds without its write-ahead log (a copy of the file alone; 0 before
    the table itself is there)."""
    copy.write_bytes(path.read_bytes())
    conn = sqlite3.connect(copy)
    try:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'windows'").fetchone():
            return 0
        return int(conn.execute("SELECT count(*) FROM windows").fetchone()[0])
    finally:
        conn.close()


@pytest.mark.parametrize("room", [True, False])
def test_the_commit_is_checkpointed_while_the_stages_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         room: bool) -> None:
    """The run's commit is copied into the database file while the post-commit stages run (in a thread, by a
    connection of its own), not at the close; unless the file system lacks the room for the log's pages a
    second time (then the close does it, as before). Either way, after the close the file alone holds
    everything, the stages' writes too, and no thread is left."""
    seen: list[int] = []
    if not room:
        real = os.statvfs

        def statvfs(path: Any) -> Any:  # what the state's file system would say with 64 MB free
            fs = real(path)
            return types.SimpleNamespace(f_bavail=(64 << 20) // fs.f_frsize, f_frsize=fs.f_frsize)

        monkeypatch.setattr("aggregator.store.os.statvfs", statvfs)

    def stage(ctx: RunContext) -> StageResult:
        with ctx.store.transaction():  # a stage's own write, in the log until the close
            ctx.store.conn.execute("INSERT INTO runs (started_at, finished_at, summary) VALUES (0, 0, '{}')")
        deadline = time.monotonic() + (10 if room else 0.3)
        while not (n := _windows_in_file_alone(ctx.store.path, tmp_path / "during.db")):
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)
        seen.append(n)
        return StageResult("probe")

    mod = types.ModuleType("checkpoint_probe_stage")
    mod.stage = stage  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "checkpoint_probe_stage", mod)
    start = int(time.time() // 60) * 60 - 1800
    log, state = tmp_path / "app.log", tmp_path / "s.db"
    write_log(log, generate_events(3000, start=start, seconds=600, seed=5))
    threads = threading.active_count()
    report = execute(load_config(environ={}, overrides={"run.workers": 2}), inputs=[str(log)], state_path=state,
                     stages=("checkpoint_probe_stage:stage",), warn=lambda m: None)
    assert report.ok, report.stages
    windows = report.windows_updated + 1  # the run's windows and its pipeline window
    assert seen == [windows if room else 0]
    assert threading.active_count() == threads
    alone = tmp_path / "after.db"
    assert _windows_in_file_alone(state, alone) == windows
    conn = sqlite3.connect(alone)
    try:
        assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 2  # the run's row and the stage's
    finally:
        conn.close()


def test_a_started_checkpoint_ends_with_the_close(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``start_checkpoint`` starts one checkpoint a store (none on a read-only store), and the close waits for
    it to end: the real checkpoint, held back until after the close has begun. What was committed before is
    in the file alone after the close."""
    from aggregator import store as store_module

    path = tmp_path / "s.db"
    release, ran = threading.Event(), []
    real = store_module._checkpoint

    def held_back(p: Path) -> None:
        release.wait(10)
        real(p)
        ran.append(p)

    monkeypatch.setattr(store_module, "_checkpoint", held_back)
    threads = threading.active_count()
    store = Store(path)
    with store.transaction():
        store.conn.execute("CREATE TABLE t (x)")
        store.conn.execute("INSERT INTO t VALUES (1)")
    store.start_checkpoint()
    store.start_checkpoint()  # a store starts one: this is still the first
    timer = threading.Timer(0.2, release.set)
    timer.start()
    store.close()
    assert ran == [path] and release.is_set()
    timer.join()
    assert threading.active_count() == threads
    reader = Store(path, readonly=True)
    reader.start_checkpoint()
    reader.close()
    assert ran == [path]
    copy = tmp_path / "copy.db"
    copy.write_bytes(path.read_bytes())
    conn = sqlite3.connect(copy)
    try:
        assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]
    finally:
        conn.close()
