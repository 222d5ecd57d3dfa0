"""Dead letters, exactly once: invalid lines are recorded in the store in the run's transaction, then
exported to the dead-letter file after the commit.

The export is idempotent across kills: the store remembers the last exported row and the file's size after
that export. An export first truncates the file back to that size (removing anything a killed export
appended without recording it), appends the new rows, fsyncs, then records the new position. If the file
was rotated away or shrank (someone handled it), the export starts a fresh file instead.

File format: the parsers' (``parsers.deadletter.dead_letter_record``): one JSON object per line with
``source``, ``offset``, ``reason``, ``line`` (and ``line_base64`` / ``truncated`` when needed), so
``parsers.deadletter.read_dead_letters`` reads it back.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import orjson

from aggregator.store import Store, register_migrations
from parsers.deadletter import dead_letter_record
from parsers.lines import DeadLetter

MAX_LINE: Final = 16_384

register_migrations("pipeline", [
    """
    CREATE TABLE dead_letters (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        source TEXT NOT NULL,
        offset INTEGER NOT NULL,
        reason TEXT NOT NULL,
        line BLOB NOT NULL,            -- the line's bytes (the parser keeps at most 4 KiB)
        recorded_at REAL NOT NULL
    );
    CREATE TABLE dead_letter_export (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        path TEXT NOT NULL,
        last_id INTEGER NOT NULL,
        size INTEGER NOT NULL
    );
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        started_at REAL NOT NULL,
        finished_at REAL NOT NULL,
        summary TEXT NOT NULL           -- JSON: the run's counts (aggregator.summary)
    );
    """,
])


def _line_bytes(line: Any) -> bytes:
    if isinstance(line, bytes | bytearray | memoryview):
        return bytes(line)[:MAX_LINE]
    return str(line).encode("utf-8", errors="replace")[:MAX_LINE]


class DeadLetters:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.conn = store.conn

    def record(self, letters: Iterable[Any], now: float) -> int:
        """Insert dead letters (objects with source, offset, reason, line) inside the run's transaction."""
        rows = [(str(d.source), int(d.offset), str(d.reason), _line_bytes(d.line), now) for d in letters]
        self.conn.executemany(
            "INSERT INTO dead_letters (source, offset, reason, line, recorded_at) VALUES (?, ?, ?, ?, ?)", rows
        )
        return len(rows)

    def export(self, path: str | os.PathLike[str]) -> int:
        """Append the not-yet-exported dead letters to ``path``; returns how many were appended."""
        target = Path(path)
        row = self.conn.execute("SELECT path, last_id, size FROM dead_letter_export WHERE id = 1").fetchone()
        last_id, size = (0, 0) if row is None else (int(row[1]), int(row[2]))
        if row is not None and row[0] != str(target):
            size = 0  # a new file: start it fresh, from the next row not yet exported anywhere
        pending = self.conn.execute(
            "SELECT id, source, offset, reason, line, recorded_at FROM dead_letters WHERE id > ? ORDER BY id",
            (last_id,),
        ).fetchall()
        if not pending:
            return 0
        try:
            current = target.stat().st_size
        except FileNotFoundError:
            current = 0
        if current < size:  # rotated or emptied by someone else: a fresh file
            size = 0
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT, 0o640)
        try:
            if current > size:
                os.ftruncate(fd, size)
            os.lseek(fd, size, os.SEEK_SET)
            data = b"".join(
                orjson.dumps(dead_letter_record(DeadLetter(s, o, r, bytes(ln)))) + b"\n"
                for _i, s, o, r, ln, _t in pending
            )
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        with self.store.transaction() as conn:
            conn.execute(
                "INSERT INTO dead_letter_export (id, path, last_id, size) VALUES (1, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET path = excluded.path, last_id = excluded.last_id, size = excluded.size",
                (str(target), int(pending[-1][0]), size + len(data)),
            )
        return len(pending)

    def count(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0])
