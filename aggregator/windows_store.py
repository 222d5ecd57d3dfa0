"""Window aggregates in the state store: the ``windows`` table, the series register, and a ``WindowReader``.

A row per (family, tags, window start) holds the aggregate's exact fields, its family counters (JSON) and
its sketch (``aggregator.sketch`` bytes). A run reads the rows its new events touch, merges, and writes them
back inside the run's single transaction (``aggregator.run``). The ``series`` table remembers every series
ever admitted per family: the series cap (``run.max_series_per_metric``) counts it, so a folded tag stays
folded and a kill-and-rerun folds exactly the same way.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final

import orjson

from aggregator.model import SeriesKey, Tags, WindowAggregate
from aggregator.sketch import DDSketch
from aggregator.store import Store, register_migrations

register_migrations("windows", [
    """
    CREATE TABLE windows (
        family TEXT NOT NULL,
        tags TEXT NOT NULL,            -- JSON array of [key, value] pairs, sorted: canonical
        start INTEGER NOT NULL,        -- window start, epoch seconds
        width INTEGER NOT NULL,
        count INTEGER NOT NULL,
        errors INTEGER NOT NULL,
        total REAL NOT NULL,
        min REAL,                      -- NULL when count = 0
        max REAL,
        counters TEXT NOT NULL,        -- JSON object of the family's exact counters
        sketch BLOB,                   -- aggregator.sketch.DDSketch.to_bytes(), NULL for count-only series
        updated_at REAL NOT NULL,      -- wall clock of the run that last changed it
        PRIMARY KEY (family, tags, start)
    ) WITHOUT ROWID;
    CREATE INDEX windows_by_start ON windows (start);
    CREATE TABLE series (
        family TEXT NOT NULL,
        tags TEXT NOT NULL,
        first_window INTEGER NOT NULL,
        PRIMARY KEY (family, tags)
    ) WITHOUT ROWID;
    CREATE TABLE window_state (
        key TEXT PRIMARY KEY,
        value REAL NOT NULL
    );
    """,
])

OTHER: Final = "other"  # the tag value excess series fold into


_ENCODED: dict[Tags, str] = {}  # tags -> their text: a series recurs in every window a run writes
_ENCODED_MAX: Final = 1 << 16


def encode_tags(tags: Tags) -> str:
    text = _ENCODED.get(tags)
    if text is None:
        if len(_ENCODED) >= _ENCODED_MAX:
            _ENCODED.clear()
        text = _ENCODED[tags] = orjson.dumps([list(p) for p in tags]).decode()
    return text


def decode_tags(text: str) -> Tags:
    return tuple((str(k), str(v)) for k, v in orjson.loads(text))


def fold_tags(tags: Tags) -> Tags:
    """The series an over-the-cap series folds into: same tag keys, every value ``other``."""
    return tuple((k, OTHER) for k, _ in tags)


_UNSEEN: Final = SeriesKey("")


def _matching(series: SeriesKey, match: Mapping[str, str] | None) -> SeriesKey | None:
    """``series`` when its tags include ``match`` (a tag it lacks never matches), else None."""
    if match and any(series.tag(k, "\0") != v for k, v in match.items()):
        return None
    return series


_COLUMNS = "family, tags, start, width, count, errors, total, min, max, counters, sketch"


def _row_to_agg(row: tuple, series: SeriesKey | None = None) -> WindowAggregate:  # type: ignore[type-arg]
    family, tags, start, width, count, errors, total, mn, mx, counters, blob = row
    return WindowAggregate(
        series=series or SeriesKey(family, decode_tags(tags)),
        start=int(start),
        width=int(width),
        count=int(count),
        errors=int(errors),
        total=float(total),
        min=float("inf") if mn is None else float(mn),
        max=float("-inf") if mx is None else float(mx),
        counters={str(k): float(v) for k, v in orjson.loads(counters).items()},
        sketch=None if blob is None else DDSketch.from_bytes(blob),
    )


class WindowsStore:
    """Read and write window aggregates through an open ``Store``; also the ``WindowReader`` that
    alerting, the report and the insights use."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.conn: sqlite3.Connection = store.conn
        # ``get``'s rows, per window start: read with one query per start (a run's commit asks for every
        # series of a few hundred starts), valid within one write transaction until anything is written
        self._rows: dict[int, dict[tuple[str, str], tuple[Any, ...]]] = {}
        self._rows_valid: tuple[int, int] = (-1, -1)

    # --- WindowReader ------------------------------------------------------------------------------

    def windows(
        self, family: str, start: int, end: int, *, match: Mapping[str, str] | None = None
    ) -> Iterator[WindowAggregate]:
        for key, row in _matched_rows(self.conn, _COLUMNS, family, start, end, match):
            yield _row_to_agg(row, key)

    def earliest_start(
        self, family: str, start: int, end: int, *, match: Mapping[str, str] | None = None
    ) -> int | None:
        """The earliest start in ``[start, end)`` of the windows ``windows`` would yield, without decoding
        them (one query; tags decoded once per series until a match)."""
        if not match:
            row = self.conn.execute(
                "SELECT min(start) FROM windows WHERE family = ? AND start >= ? AND start < ?",
                (family, start, end),
            ).fetchone()
            return None if row is None or row[0] is None else int(row[0])
        seen: dict[str, bool] = {}
        for first, tags in self.conn.execute(
            "SELECT start, tags FROM windows WHERE family = ? AND start >= ? AND start < ? ORDER BY start, tags",
            (family, start, end),
        ):
            ok = seen.get(tags)
            if ok is None:
                ok = seen[tags] = _matching(SeriesKey(family, decode_tags(tags)), match) is not None
            if ok:
                return int(first)
        return None

    def latest_window_start(self) -> int | None:
        row = self.conn.execute(
            "SELECT max(start) FROM windows WHERE family != 'pipeline'"
        ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    # --- for the run, the outbox and `logapm metrics` -------------------------------------------------

    def all_windows(self, start: int | None = None, end: int | None = None,
                    families: Iterable[str] | None = None) -> Iterator[WindowAggregate]:
        """Every stored aggregate with a start in ``[start, end)``, by start then family and tags."""
        sql = f"SELECT {_COLUMNS} FROM windows WHERE start >= ? AND start < ?"
        args: list[object] = [start if start is not None else -(2**62), end if end is not None else 2**62]
        fams = list(families) if families is not None else None
        if fams:
            sql += f" AND family IN ({','.join('?' * len(fams))})"
            args.extend(fams)
        sql += " ORDER BY start, family, tags"
        for row in self.conn.execute(sql, args):
            yield _row_to_agg(row)

    def families(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT DISTINCT family FROM windows ORDER BY family")]

    def get(self, family: str, tags: Tags, start: int) -> WindowAggregate | None:
        if not self.store.in_write_transaction:
            row = self.conn.execute(
                f"SELECT {_COLUMNS} FROM windows WHERE family = ? AND tags = ? AND start = ?",
                (family, encode_tags(tags), start),
            ).fetchone()
            return None if row is None else _row_to_agg(row)
        rows = self._start_rows(start)
        row = rows.get((family, encode_tags(tags))) if rows else None
        return None if row is None else _row_to_agg(row)

    def get_many(self, keys: Iterable[tuple[str, Tags, int]]) -> dict[tuple[str, Tags, int], WindowAggregate]:
        """``get`` of each (family, tags, start): the ones stored, by key (the run's commit asks for every window
        it writes; into a new store, or past the stored starts, it reads one empty query per start)."""
        out: dict[tuple[str, Tags, int], WindowAggregate] = {}
        if not self.store.in_write_transaction:
            for family, tags, start in keys:
                agg = self.get(family, tags, start)
                if agg is not None:
                    out[(family, tags, start)] = agg
            return out
        by_start: dict[int, dict[tuple[str, str], tuple[Any, ...]]] = {}
        for key in keys:
            family, tags, start = key
            rows = by_start.get(start)
            if rows is None:
                rows = by_start[start] = self._start_rows(start)
            if rows:
                row = rows.get((family, encode_tags(tags)))
                if row is not None:
                    out[key] = _row_to_agg(row)
        return out

    def _start_rows(self, start: int) -> dict[tuple[str, str], tuple[Any, ...]]:
        """The stored rows of a window start by (family, tags text), inside our write transaction: no one else
        writes in it, so the rows, read once, stay right until this connection changes something (its
        total_changes moves)."""
        valid = (self.store.transactions, self.conn.total_changes)
        if valid != self._rows_valid:
            self._rows.clear()
            self._rows_valid = valid
        rows = self._rows.get(start)
        if rows is None:
            rows = self._rows[start] = {
                (r[0], r[1]): r for r in self.conn.execute(f"SELECT {_COLUMNS} FROM windows WHERE start = ?", (start,))}
        return rows

    def put(self, aggs: Iterable[WindowAggregate], now: float) -> int:
        """Insert or replace aggregates (call inside the run's transaction). Returns how many."""
        self._rows.clear()
        rows = [
            (a.series.family, encode_tags(a.series.tags), a.start, a.width, a.count, a.errors, a.total,
             a.min if a.count else None, a.max if a.count else None,
             orjson.dumps(a.counters).decode(),
             None if a.sketch is None else a.sketch.to_bytes(), now)
            for a in aggs
        ]
        self.conn.executemany(
            f"INSERT OR REPLACE INTO windows ({_COLUMNS}, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows
        )
        return len(rows)

    # --- series register (the cap) -----------------------------------------------------------------

    def known_series(self) -> dict[str, set[Tags]]:
        out: dict[str, set[Tags]] = {}
        for family, tags in self.conn.execute("SELECT family, tags FROM series"):
            out.setdefault(family, set()).add(decode_tags(tags))
        return out

    def add_series(self, items: Iterable[tuple[str, Tags, int]]) -> None:
        self.conn.executemany(
            "INSERT OR IGNORE INTO series (family, tags, first_window) VALUES (?, ?, ?)",
            [(f, encode_tags(t), s) for f, t, s in items],
        )

    # --- watermark ---------------------------------------------------------------------------------

    def watermark(self) -> float | None:
        """The newest event time ever committed (lateness is judged against it)."""
        row = self.conn.execute("SELECT value FROM window_state WHERE key = 'watermark'").fetchone()
        return None if row is None else float(row[0])

    def set_watermark(self, value: float) -> None:
        self.conn.execute(
            "INSERT INTO window_state (key, value) VALUES ('watermark', ?) "
            "ON CONFLICT(key) DO UPDATE SET value = max(value, excluded.value)",
            (value,),
        )


def window_rows(
    store: WindowsStore, family: str, start: int, end: int, *, match: Mapping[str, str] | None = None,
    sketches: bool = True,
) -> list[tuple[SeriesKey, tuple[Any, ...]]]:
    """The rows ``WindowsStore.windows`` would decode, as stored: ``(series, row)`` in the same order (start,
    then tags) with the same filter, ``row`` the ``_COLUMNS`` (family, tags, start, width, count, errors,
    total, min, max, counters, sketch), which ``windows`` decodes with ``_row_to_agg(row, series)``.
    ``sketches=False`` reads the sketch column as NULL (the exact fields alone). For a reader that decodes
    only what it needs (``alerting.columns``)."""
    return list(_matched_rows(store.conn, _COLUMNS if sketches else _COLUMNS.replace("sketch", "NULL"), family,
                              start, end, match))


def _matched_rows(conn: sqlite3.Connection, columns: str, family: str, start: int, end: int,
                  match: Mapping[str, str] | None) -> Iterator[tuple[SeriesKey, tuple[Any, ...]]]:
    """``(series, row)`` of the family's windows starting in ``[start, end)``, by start then tags, whose series
    matches ``match``; ``row`` the ``columns`` read. A series recurs in every window: its tags are decoded and
    matched once per call (None: filtered out, and its rows are not decoded at all). SeriesKey is immutable,
    so its windows share it."""
    series: dict[str, SeriesKey | None] = {}
    for row in conn.execute(f"SELECT {columns} FROM windows WHERE family = ? AND start >= ? AND start < ? "
                            "ORDER BY start, tags", (family, start, end)):
        key = series.get(row[1], _UNSEEN)
        if key is _UNSEEN:
            key = series[row[1]] = _matching(SeriesKey(family, decode_tags(row[1])), match)
        if key is not None:
            yield key, row
