"""The embedded state store: one SQLite file (WAL) holding windows, checkpoints, outboxes and alert state.

Each component owns its tables and declares their migrations under its own name with
``register_migrations(component, [sql, ...])``; opening the store applies the ones not yet applied, in
order, each in its own transaction, and records them in ``schema_migrations``. A migration is never edited
once released: changes are new entries at the end of the component's list. An entry is SQL, or a function
given the connection, for a change SQL cannot express (rows re-encoded in Python).

All writes of a run that must be atomic (new window aggregates, advanced checkpoints, outbox entries) go
through one ``with store.transaction():`` block.
"""

from __future__ import annotations

import errno
import fcntl
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Final

STORE_APPLICATION_ID: Final = 0x4C41504D  # "LAPM": tells our file from a foreign SQLite database
# Pages of a new store (an existing one keeps its own). SQLite's default 4 KB made a 1M-event run's one
# transaction (~8.5 MB: windows, their index, the open traces) about 2,100 pages: past the WAL's
# auto-checkpoint (1,000 pages), so the commit also copied them all into the database, with two fsyncs,
# and closing the store did it again for the post-commit stages' writes. In 16 KB pages it is ~530, one
# checkpoint at the close, and fewer B-tree pages to insert into.
PAGE_SIZE: Final = 16384
# What ``start_checkpoint`` wants free beyond the log's size: the database file grows by at most the log's
# size while the log stays (the stages append to it meanwhile), and the stages write their own.
CHECKPOINT_ROOM: Final = 64 << 20

Migration = str | Callable[[sqlite3.Connection], None]  # SQL (statements separated by ";"), or a function
_MIGRATIONS: dict[str, list[Migration]] = {}


class StoreError(RuntimeError):
    """The state store cannot be used: the message says which file and why."""


class LockedError(StoreError):
    """Another run holds the run lock."""


def register_migrations(component: str, statements: Sequence[Migration]) -> None:
    """Declare ``component``'s migrations (each entry is one migration: SQL, possibly several statements, or a
    function run with the connection inside the migration's transaction).

    Calling it again for the same component replaces the list (modules may be re-imported in tests); the
    list must only ever grow.
    """
    _MIGRATIONS[component] = list(statements)


class Store:
    """An open state store. Not thread-safe: one run, one thread, one connection."""

    def __init__(self, path: str | os.PathLike[str], *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self._depth = 0
        self.transactions = 0  # write transactions begun: what a reader may cache is valid within one
        self._checkpointer: threading.Thread | None = None
        if readonly:
            if not self.path.exists():
                raise StoreError(f"state store {self.path} does not exist")
            uri = f"file:{self.path}?mode=ro"
            self.conn = sqlite3.connect(uri, uri=True, isolation_level=None)
        else:
            parent = self.path.parent
            if not parent.exists():
                raise StoreError(f"state directory {parent} does not exist")
            if not os.access(parent, os.W_OK):
                raise StoreError(f"state directory {parent} is not writable")
            try:
                self.conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open state store {self.path}: {exc}") from None
        try:
            self._check_identity()
            if not readonly:
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute("PRAGMA synchronous=NORMAL")
                self.conn.execute("PRAGMA foreign_keys=ON")
                self.migrate()
        except sqlite3.DatabaseError as exc:
            self.conn.close()
            raise StoreError(f"state store {self.path} is not a usable SQLite database: {exc}") from None
        except BaseException:  # a refused store, a migration function that failed: no connection left behind
            self.conn.close()
            raise

    def _check_identity(self) -> None:
        app_id = self.conn.execute("PRAGMA application_id").fetchone()[0]
        if app_id == STORE_APPLICATION_ID:
            return
        tables = self.conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if app_id == 0 and tables == 0 and not self.readonly:
            # A new store. Its page size is fixed by its first write, so it is set before; and WAL before the
            # application id, so that the first write needs no rollback journal (and its fsyncs) either.
            self.conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute(f"PRAGMA application_id={STORE_APPLICATION_ID}")
            return
        raise StoreError(
            f"{self.path} is a SQLite database that logging-apm did not create "
            f"(application_id={app_id:#x}, {tables} objects); refusing to write to it"
        )

    def migrate(self) -> None:
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " component TEXT NOT NULL, version INTEGER NOT NULL, applied_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),"
            " PRIMARY KEY (component, version))"
        )
        applied = {
            (c, v) for c, v in self.conn.execute("SELECT component, version FROM schema_migrations")
        }
        _refuse_newer(self.path, applied)
        for component in sorted(_MIGRATIONS):
            for version, sql in enumerate(_MIGRATIONS[component], start=1):
                if (component, version) in applied:
                    continue
                with self.transaction():
                    if callable(sql):
                        sql(self.conn)
                    else:
                        for statement in _split(sql):
                            self.conn.execute(statement)
                    self.conn.execute(
                        "INSERT INTO schema_migrations (component, version) VALUES (?, ?)", (component, version)
                    )

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``); nested uses join the outer one."""
        if self._depth:
            self._depth += 1
            try:
                yield self.conn
            finally:
                self._depth -= 1
            return
        self.conn.execute("BEGIN IMMEDIATE")
        self._depth = 1
        self.transactions += 1
        try:
            yield self.conn
        except BaseException as exc:
            self._depth = 0
            if self.conn.in_transaction:  # SQLite has already rolled back after SQLITE_FULL or an I/O error
                self.conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError):  # a full disk, a read-only file: name the store
                raise StoreError(f"cannot write to state store {self.path}: {exc}") from None
            raise
        self._depth = 0
        try:
            self.conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise StoreError(f"cannot commit to state store {self.path}: {exc}") from None

    @property
    def in_write_transaction(self) -> bool:
        """Inside ``transaction()``: no other connection can write until it ends."""
        return bool(self._depth) and self.conn.in_transaction

    def start_checkpoint(self) -> None:
        """Start copying what the write-ahead log holds into the database file, in a thread with a connection
        of its own (``PRAGMA wal_checkpoint(PASSIVE)``: it waits for no one), while this connection goes on;
        ``close`` waits for it, then checkpoints what was written since, as it always does.

        For the run: its commit leaves ~8.5 MB in the log (1M events), whose checkpoint at the close took
        ~25 ms at the run's very end (~8 ms of CPU copying, the rest waiting for two fsyncs), with one core
        idle; started after the commit, it overlaps the post-commit stages, and the close copies only what
        they wrote. Nothing is left in the log either way: the database file alone holds the run once the
        store is closed.

        Until the close, the log's pages take room twice (in the log and in the database file) while the
        stages append to the log: on a file system without room for that (``CHECKPOINT_ROOM`` beyond the
        log's size), the checkpoint is left to the close, so that a stage's write does not fail for it."""
        if self.readonly or self._checkpointer is not None or not self._room_to_checkpoint():
            return
        self._checkpointer = threading.Thread(target=_checkpoint, args=(self.path,), name="logapm-checkpoint",
                                              daemon=True)
        self._checkpointer.start()

    def _room_to_checkpoint(self) -> bool:
        try:
            log = os.path.getsize(f"{self.path}-wal")
            fs = os.statvfs(self.path.parent)
        except OSError:
            return False
        return fs.f_bavail * fs.f_frsize >= log + CHECKPOINT_ROOM

    def close(self) -> None:
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            checkpointer.join()
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _checkpoint(path: Path) -> None:
    """A passive checkpoint of the store at ``path`` through a connection of its own (``Store.start_checkpoint``).
    A checkpoint that cannot be done now is not an error: the store's close does it."""
    try:
        conn = sqlite3.connect(path, isolation_level=None, timeout=0)
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        pass


def _refuse_newer(path: Path, applied: set[tuple[str, int]]) -> None:
    """A store that a newer logging-apm migrated past what this one knows of a component is refused: its
    tables may no longer mean what this code assumes (a later migration need not keep older code working)."""
    for component, version in sorted(applied):
        known = len(_MIGRATIONS.get(component, ()))
        if component in _MIGRATIONS and version > known:
            raise StoreError(
                f"state store {path} was written by a newer logging-apm ({component} schema version {version}; "
                f"this one knows {known}): run that version, or point --state at a new store"
            )


def _split(sql: str) -> list[str]:
    return [s.strip() for s in sql.split(";") if s.strip()]


@contextmanager
def run_lock(state_path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the run lock of a state store (a ``.lock`` file beside it) or raise ``LockedError`` at once.

    An ``flock`` is released by the kernel when the process dies, so a killed run never leaves a stale lock.
    """
    lock_path = Path(str(state_path) + ".lock")
    try:
        handle: IO[str] = open(lock_path, "a+")  # noqa: SIM115 - held for the block
    except OSError as exc:
        raise StoreError(f"cannot create run lock {lock_path}: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise LockedError(
                    f"another logapm run holds the lock on {state_path}; this run exits without doing anything"
                ) from None
            raise
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        handle.close()
