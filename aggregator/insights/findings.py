"""The insights' tables in the state store: N+1 findings, pending traces, counters; and their read side.

Every write happens inside the run's transaction (``TraceAnalyzer.finish``), so a killed run leaves no
half-counted trace and a finished one has counted each trace exactly once.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from typing import Any, NamedTuple

import numpy as np
import orjson

from aggregator.insights.partials import Fingerprints, OpenTrace, PackedTrace, pack
from aggregator.store import StoreError, register_migrations

# The columns of an open trace's sums (after its trace id), in both of the open-trace table's migrations.
_OPEN_TRACE_SUMS = """newest REAL NOT NULL,
        events INTEGER NOT NULL,
        queries INTEGER NOT NULL,
        db_ms REAL NOT NULL,
        cache_ms REAL NOT NULL,
        external_ms REAL NOT NULL,
        fingerprints TEXT NOT NULL"""

register_migrations("insights", [
    # N+1 findings, one row per window, route and query: bounded by windows x routes x queries, not by
    # traffic. ``requests`` counts the requests in which the pattern was found.
    """
    CREATE TABLE insights_n_plus_one (
        window_start INTEGER NOT NULL,
        route TEXT NOT NULL,
        method TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        query_text TEXT NOT NULL,
        db_table TEXT NOT NULL,
        requests INTEGER NOT NULL,
        executions INTEGER NOT NULL,
        max_executions INTEGER NOT NULL,
        time_ms REAL NOT NULL,
        example_trace_id TEXT NOT NULL,
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL,
        PRIMARY KEY (window_start, route, method, fingerprint)
    );
    CREATE TABLE insights_pending (
        trace_id TEXT NOT NULL,
        span_id TEXT,
        parent_span_id TEXT,
        kind TEXT NOT NULL,
        end_ts REAL NOT NULL,
        duration_ms REAL NOT NULL,
        outcome TEXT,
        name TEXT,
        detail TEXT,
        extra,
        status INTEGER
    );
    CREATE TABLE insights_counters (
        name TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    )
    """,
    # Open traces are kept as their sums (partials.OpenTrace), one row per trace, not one per event.
    f"""
    DROP TABLE insights_pending;
    CREATE TABLE insights_open_traces (
        trace_id TEXT PRIMARY KEY,
        {_OPEN_TRACE_SUMS}
    )
    """,
    # The same rows and rowids without the trace_id index: every read is by rowid, and keeping the index was
    # ~40% of inserting the rows at the end of a run (23,500 rows at 1M events); trace ids stay unique (one
    # per open trace of the run's dict, see ``traces._write_open_traces``).
    f"""
    CREATE TABLE insights_open_traces_by_rowid (
        trace_id TEXT NOT NULL,
        {_OPEN_TRACE_SUMS}
    );
    INSERT INTO insights_open_traces_by_rowid (rowid, trace_id, newest, events, queries, db_ms, cache_ms,
                                               external_ms, fingerprints)
        SELECT rowid, trace_id, newest, events, queries, db_ms, cache_ms, external_ms, fingerprints
        FROM insights_open_traces;
    DROP TABLE insights_open_traces;
    ALTER TABLE insights_open_traces_by_rowid RENAME TO insights_open_traces
    """,
    # The open traces as columns, a few rows a store (``OpenTraceColumns``); the rows of the table before
    # become them, in their order (``_open_traces_as_columns``).
    lambda conn: _open_traces_as_columns(conn),
])

# Counter names in ``insights_counters`` (cumulative over all runs).
COUNTERS = (
    "traces_completed",  # requests analysed with their trace
    "task_traces_completed",  # traces closed by a task event (their queries are not per-route)
    "n_plus_one_findings",
    "pending_expired_events",  # events whose request never arrived within the pending time
    "pending_evicted_events",  # events dropped because pending traces exceeded their cap
)


@dataclass(slots=True)
class FindingRow:
    """N+1 findings of one route and query, summed over a span of windows."""

    route: str
    method: str
    fingerprint: str
    query_text: str
    db_table: str
    requests: int
    executions: int
    max_executions: int
    time_ms: float
    example_trace_id: str
    first_seen: float
    last_seen: float

    @property
    def executions_per_request(self) -> float:
        return self.executions / self.requests if self.requests else 0.0

    @property
    def time_per_request_ms(self) -> float:
        return self.time_ms / self.requests if self.requests else 0.0


def upsert_findings(conn: sqlite3.Connection, rows: Iterable[tuple[object, ...]]) -> None:
    """Add findings (window_start, route, method, fingerprint, text, table, requests, executions,
    max_executions, time_ms, example_trace_id, first_seen, last_seen) to the stored sums."""
    conn.executemany(
        """
        INSERT INTO insights_n_plus_one VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (window_start, route, method, fingerprint) DO UPDATE SET
            requests = requests + excluded.requests,
            executions = executions + excluded.executions,
            example_trace_id = CASE WHEN excluded.max_executions > max_executions
                                    THEN excluded.example_trace_id ELSE example_trace_id END,
            max_executions = max(max_executions, excluded.max_executions),
            time_ms = time_ms + excluded.time_ms,
            first_seen = min(first_seen, excluded.first_seen),
            last_seen = max(last_seen, excluded.last_seen)
        """,
        rows,
    )


# --- open traces: a few rows of columns ------------------------------------------------------------

# A row holds at most this many open traces: a backlog far past the default cap (50,000 events, so at most as
# many traces) is several rows rather than one blob of any size.
CHUNK_TRACES = 1 << 15


_OPEN_TRACE_COLUMNS = """
    CREATE TABLE insights_open_trace_columns (
        trace_count INTEGER NOT NULL,
        event_count INTEGER NOT NULL,
        dtypes TEXT NOT NULL,
        trace_ids BLOB NOT NULL,
        newest BLOB NOT NULL,
        events BLOB NOT NULL,
        queries BLOB NOT NULL,
        db_ms BLOB NOT NULL,
        cache_ms BLOB NOT NULL,
        external_ms BLOB NOT NULL,
        fp_groups BLOB NOT NULL,
        fp_key BLOB NOT NULL,
        fp_n BLOB NOT NULL,
        fp_ms BLOB NOT NULL,
        fp_text BLOB NOT NULL,
        fp_table BLOB NOT NULL,
        strings BLOB NOT NULL
    )
"""
# The table's arrays, in its order: which hold floats (stored as little-endian doubles); the others hold counts
# and indexes, stored in the narrowest little-endian dtype that holds a row's values (``_stored_dtype``: most are
# small, and a row's bytes are most of what writing it costs). ``dtypes`` names each array's, in this order.
_ARRAYS = ("newest", "events", "queries", "db_ms", "cache_ms", "external_ms", "fp_groups", "fp_key", "fp_n", "fp_ms",
           "fp_text", "fp_table")
_FLOATS = {"newest", "db_ms", "cache_ms", "external_ms", "fp_ms"}


class TraceSums(NamedTuple):
    """What some open traces hold beyond their ids, newest and events, as columns: per trace its queries, db_ms,
    cache_ms, external_ms and number of fingerprint groups; per group (trace by trace, each trace's in the order
    of its fingerprints dict) the fingerprint, executions, time_ms, query text and table, the three strings as
    indexes into ``strings`` (which keeps None and "" apart)."""

    queries: Any
    db_ms: Any
    cache_ms: Any
    external_ms: Any
    fp_groups: Any
    fp_key: Any
    fp_n: Any
    fp_ms: Any
    fp_text: Any
    fp_table: Any
    strings: list[Any]


def take_sums(idx: Any, per_trace: tuple[Any, ...], bounds: Any, groups: tuple[Any, ...],
              tables: tuple[list[Any], list[Any], list[Any]]) -> TraceSums:
    """The ``TraceSums`` of traces ``idx`` (in that order) of some columns: ``per_trace`` their queries, db_ms,
    cache_ms and external_ms, trace i's groups the rows ``bounds[i] .. bounds[i + 1] - 1`` of ``groups``
    (fingerprint, executions, time_ms, text, table), whose strings index ``tables`` (fingerprints, texts,
    tables; one list may be all three). Only the strings used are kept."""
    starts = bounds[idx]
    counts = bounds[idx + 1] - starts
    ends = np.cumsum(counts)
    rows = np.arange(int(ends[-1]) if ends.size else 0) + np.repeat(starts - (ends - counts), counts)
    key, n, ms, text, table = (g[rows] for g in groups)
    (key, text, table), strings = _compact(tables, (key, text, table))
    queries, db_ms, cache_ms, external_ms = (c[idx] for c in per_trace)
    return TraceSums(queries.astype(np.int64), db_ms, cache_ms, external_ms, counts.astype(np.int64), key,
                     n.astype(np.int64), ms, text, table, strings)


def _compact(tables: tuple[list[Any], ...], codes: tuple[Any, ...]) -> tuple[list[Any], list[Any]]:
    """``codes`` (indexes into ``tables``, one array each) as indexes into one list of the strings they use (a
    table given more than once is taken once). The tables are put end to end, so that one pass of numpy finds
    what is used (a handful of numpy calls each: a batch's rests are one of many sources of a write)."""
    distinct = list({id(t): t for t in tables}.values())
    at = {id(t): sum(map(len, distinct[:k])) for k, t in enumerate(distinct)}  # where each table starts
    size = sum(map(len, distinct))
    every = np.concatenate([c.astype(np.int64) + at[id(t)] for t, c in zip(tables, codes, strict=True)])
    if every.size * 8 < size:  # a few strings of large tables (a batch's rests, of all its fingerprints): sorted
        used, new = np.unique(every, return_inverse=True)
    else:
        present = np.zeros(size, np.bool_)
        present[every] = True
        used = np.flatnonzero(present)
        new = (np.cumsum(present) - 1)[every]
    strings: list[Any] = []
    bounds = np.searchsorted(used, [at[id(t)] for t in distinct] + [size]).tolist()
    for k, t in enumerate(distinct):
        strings += map(t.__getitem__, (used[bounds[k]:bounds[k + 1]] - at[id(t)]).tolist())
    ends = np.cumsum([c.size for c in codes]).tolist()
    return [new[e - c.size:e] for c, e in zip(codes, ends, strict=True)], strings


def packed_sums(traces: list[PackedTrace]) -> TraceSums:
    """The ``TraceSums`` of these packed traces (the few a run merged: one pass of Python over them)."""
    n = len(traces)
    queries, db_ms, cache_ms, external_ms = (np.fromiter(map(itemgetter(k), traces), dtype, n)
                                             for k, dtype in ((2, np.int64), (3, np.float64), (4, np.float64),
                                                              (5, np.float64)))
    flat = list(chain.from_iterable(t[6:] for t in traces))  # key, executions, time_ms, text, table per group
    keys = flat[0::5]
    g = len(keys)
    return TraceSums(queries, db_ms, cache_ms, external_ms,
                     np.fromiter(((len(t) - 6) // 5 for t in traces), np.int64, n),
                     np.arange(g), np.array(flat[1::5], np.int64), np.array(flat[2::5], np.float64),
                     np.arange(g, 2 * g), np.arange(2 * g, 3 * g), keys + flat[3::5] + flat[4::5])


def assemble_sums(n: int, parts: list[tuple[Any, TraceSums]]) -> TraceSums:
    """The ``TraceSums`` of ``n`` traces from parts of them: (their places among the n, their sums); every place
    in exactly one part."""
    def per_trace(name: str, dtype: Any) -> Any:
        out = np.empty(n, dtype)
        for at, s in parts:
            out[at] = getattr(s, name)
        return out

    # each trace's groups stay in their order: a stable sort of every part's rows by their trace's place
    order = np.argsort(np.concatenate([np.repeat(at, s.fp_groups) for at, s in parts] or [np.zeros(0, np.int64)]),
                       kind="stable")
    strings: list[Any] = []
    offsets = []
    for _, s in parts:
        offsets.append(len(strings))
        strings += s.strings

    def rows(name: str, strings_at: bool = False) -> Any:
        got = [getattr(s, name) + off if strings_at else getattr(s, name) for off, (_, s) in zip(offsets, parts,
                                                                                                 strict=True)]
        return np.concatenate(got or [np.zeros(0, np.int64)])[order]

    return TraceSums(per_trace("queries", np.int64), per_trace("db_ms", np.float64), per_trace("cache_ms", np.float64),
                     per_trace("external_ms", np.float64), per_trace("fp_groups", np.int64), rows("fp_key", True),
                     rows("fp_n"), rows("fp_ms"), rows("fp_text", True), rows("fp_table", True), strings)


_COUNT_DTYPES = {"<u1", "<u2", "<u4", "<i8"}  # what ``_stored_dtype`` picks for counts and indexes


class OpenTracesCorrupt(StoreError):
    """A row of stored open traces is not as ``write_open_traces`` wrote it (a damaged or edited store)."""

    def __init__(self, rowid: int, why: str) -> None:
        super().__init__(f"state store: the open traces' row {rowid} (insights_open_trace_columns) is corrupt: {why};"
                         " delete that row to drop its traces (they are then never joined) and run again")


class OpenTraceColumns:
    """One stored row of open traces, read: its arrays are views of the row's bytes, its trace ids a list, its
    strings parsed when first needed. A run indexes it for the few traces it merges (``sums``,
    ``fingerprints``), and takes the rest in bulk when it writes them back (``take``)."""

    __slots__ = ("_bounds", "_strings", "arrays", "events", "newest", "rowid", "trace_ids")

    def __init__(self, row: tuple[Any, ...]) -> None:
        """``row``: its rowid, trace_count, event_count, dtypes, trace_ids, arrays (``_ARRAYS``) and strings.
        Raises ``OpenTracesCorrupt`` for a row this module did not write: one read as it comes would join the
        wrong sums to a trace, or lose traces, without a word."""
        rowid, count, event_count, dtypes, ids, *blobs, strings = row
        try:
            self.trace_ids: list[str] = orjson.loads(ids)
            dtypes = dtypes.split()
        except (orjson.JSONDecodeError, AttributeError, TypeError):
            raise OpenTracesCorrupt(rowid, "its trace ids or dtypes do not parse") from None
        if type(self.trace_ids) is not list or len(self.trace_ids) != count or count < 1:
            got = len(self.trace_ids) if type(self.trace_ids) is list else "no list of"
            raise OpenTracesCorrupt(rowid, f"trace_count {count} with {got} trace ids (a row holds one or more)")
        if len(dtypes) != len(_ARRAYS) or not all(d == "<f8" if name in _FLOATS else d in _COUNT_DTYPES
                                                  for name, d in zip(_ARRAYS, dtypes, strict=True)):
            raise OpenTracesCorrupt(rowid, f"dtypes {' '.join(dtypes)!r}")
        if not all(type(b) is bytes and len(b) % np.dtype(d).itemsize == 0 for b, d in zip(blobs, dtypes, strict=True)):
            raise OpenTracesCorrupt(rowid, "an array's bytes are cut")
        self.arrays = [np.frombuffer(blob, dtype) for blob, dtype in zip(blobs, dtypes, strict=True)]
        groups = int(self.arrays[6].sum()) if self.arrays[6].size == count else -1
        if any(a.size != count for a in self.arrays[:7]) or any(a.size != groups for a in self.arrays[7:]):
            raise OpenTracesCorrupt(rowid, "an array's length is not its traces' or their fingerprints'")
        if int(self.arrays[1].sum()) != event_count or any(int(a.min()) < 0 for a in self.arrays[6:] if a.size
                                                            and a.dtype.kind == "i"):
            raise OpenTracesCorrupt(rowid, "its events or fingerprint indexes are not as written")
        self.newest, self.events = self.arrays[0], self.arrays[1]
        self.rowid = rowid
        self._strings: Any = strings  # bytes until parsed, then the list
        self._bounds: Any = None

    def __len__(self) -> int:
        return len(self.trace_ids)

    def strings(self) -> list[Any]:
        if type(self._strings) is not list:
            try:
                strings = orjson.loads(self._strings)
            except (orjson.JSONDecodeError, TypeError):
                raise OpenTracesCorrupt(self.rowid, "its strings do not parse") from None
            codes = (self.arrays[7], self.arrays[10], self.arrays[11])  # fp_key, fp_text, fp_table
            if type(strings) is not list or max((int(a.max()) for a in codes if a.size), default=-1) >= len(strings):
                raise OpenTracesCorrupt(self.rowid, "a fingerprint's string is not among its strings")
            self._strings = strings
        return self._strings  # type: ignore[no-any-return]

    def bounds(self) -> Any:
        """Trace i's groups are rows ``bounds[i] .. bounds[i + 1] - 1``."""
        if self._bounds is None:
            self._bounds = np.concatenate(([0], np.cumsum(self.arrays[6], dtype=np.int64)))
        return self._bounds

    def sums(self, i: int) -> tuple[int, float, float, float]:
        """Trace ``i``'s queries, db_ms, cache_ms and external_ms."""
        a = self.arrays
        return int(a[2][i]), float(a[3][i]), float(a[4][i]), float(a[5][i])

    def fingerprints(self, i: int) -> Fingerprints:
        """Trace ``i``'s fingerprints, as ``partials.summarize`` has them."""
        bounds = self.bounds()
        lo, hi = int(bounds[i]), int(bounds[i + 1])
        if lo == hi:
            return {}
        s = self.strings()
        a = self.arrays
        return {s[k]: [n, ms, s[x], s[y]] for k, n, ms, x, y in zip(
            *(a[j][lo:hi].tolist() for j in range(7, 12)), strict=True)}

    def take(self, idx: Any) -> TraceSums:
        """The ``TraceSums`` of traces ``idx``."""
        s = self.strings()
        return take_sums(idx, tuple(self.arrays[2:6]), self.bounds(), tuple(self.arrays[7:12]), (s, s, s))


def load_open_trace_columns(conn: sqlite3.Connection) -> list[OpenTraceColumns]:
    """The stored open traces, row by row (oldest trace first: by newest event, ties by trace id)."""
    return [OpenTraceColumns(row) for row in conn.execute(
        f"SELECT rowid, trace_count, event_count, dtypes, trace_ids, {', '.join(_ARRAYS)}, strings"
        " FROM insights_open_trace_columns ORDER BY rowid")]


def load_open_traces(conn: sqlite3.Connection) -> Iterator[tuple[str, OpenTrace]]:
    """Each stored open trace (oldest first) with its sums."""
    for cols in load_open_trace_columns(conn):
        for i, (trace_id, newest, events) in enumerate(zip(cols.trace_ids, cols.newest.tolist(),
                                                            cols.events.tolist(), strict=True)):
            ops = OpenTrace()
            ops.newest, ops.events = newest, events
            ops.queries, ops.db_ms, ops.cache_ms, ops.external_ms = cols.sums(i)
            ops.fingerprints = cols.fingerprints(i)
            yield trace_id, ops


def write_open_traces(conn: sqlite3.Connection, trace_ids: list[str], newest: Any, events: Any,
                      sums: TraceSums) -> None:
    """The stored open traces become these (in this order; ids unique), ``CHUNK_TRACES`` a row.

    newest, db_ms, cache_ms and external_ms are stored as the REAL columns of the table before kept them: -0.0
    as 0.0 (SQLite reads a REAL -0.0 back as 0.0), so that a run after this one sums what it would have
    summed then; everything else as it is (a fingerprint's -0.0 time too: it was JSON text)."""
    conn.execute("DELETE FROM insights_open_trace_columns")
    n = len(trace_ids)
    for a in range(0, n, CHUNK_TRACES):
        b = min(a + CHUNK_TRACES, n)
        part = sums if (a, b) == (0, n) else _chunk(sums, a, b)
        arrays = (newest[a:b] + 0.0, events[a:b], part.queries, part.db_ms + 0.0, part.cache_ms + 0.0,
                  part.external_ms + 0.0, *part[4:10])
        dtypes = [_stored_dtype(name, x) for name, x in zip(_ARRAYS, arrays, strict=True)]
        conn.execute(f"INSERT INTO insights_open_trace_columns (trace_count, event_count, dtypes, trace_ids,"
                     f" {', '.join(_ARRAYS)}, strings) VALUES ({', '.join('?' * 17)})",
                     (b - a, int(events[a:b].sum()), " ".join(dtypes), orjson.dumps(trace_ids[a:b]),
                      *(np.ascontiguousarray(x, dtype).tobytes() for x, dtype in zip(arrays, dtypes, strict=True)),
                      orjson.dumps(part.strings)))


def _stored_dtype(name: str, values: Any) -> str:
    """How array ``name`` of a row is stored: floats as doubles, counts and indexes in the narrowest unsigned
    dtype that holds them, all little-endian."""
    if name in _FLOATS:
        return "<f8"
    if not values.size:
        return "<u1"
    top = int(values.max())
    if int(values.min()) < 0:
        return "<i8"
    return "<u1" if top < 1 << 8 else "<u2" if top < 1 << 16 else "<u4" if top < 1 << 32 else "<i8"


def _chunk(sums: TraceSums, a: int, b: int) -> TraceSums:
    """The ``TraceSums`` of traces ``a .. b - 1`` of ``sums``, with only the strings they use."""
    bounds = np.concatenate(([0], np.cumsum(sums.fp_groups, dtype=np.int64)))
    s = sums.strings
    return take_sums(np.arange(a, b), sums[:4], bounds, sums[5:10], (s, s, s))


def _open_traces_as_columns(conn: sqlite3.Connection) -> None:
    """Migration 4: the open traces as the table before held them, one row each in rowid order, become rows of
    columns in the same order, the same values (those read as the table gave them: its REAL columns had no
    -0.0, its fingerprints were ``orjson.dumps`` text; the format as of this migration: a later one converts it)."""
    conn.execute(_OPEN_TRACE_COLUMNS)
    trace_ids, traces = [], []
    for trace_id, newest, events, queries, db_ms, cache_ms, external_ms, fps in conn.execute(
            "SELECT trace_id, newest, events, queries, db_ms, cache_ms, external_ms, fingerprints"
            " FROM insights_open_traces ORDER BY rowid"):
        ops = OpenTrace()
        ops.newest, ops.events, ops.queries = newest, events, queries
        ops.db_ms, ops.cache_ms, ops.external_ms = db_ms, cache_ms, external_ms
        ops.fingerprints = orjson.loads(fps)
        trace_ids.append(trace_id)
        traces.append(pack(ops))
    if traces:
        write_open_traces(conn, trace_ids, np.fromiter(map(itemgetter(0), traces), np.float64, len(traces)),
                          np.fromiter(map(itemgetter(1), traces), np.int64, len(traces)), packed_sums(traces))
    conn.execute("DROP TABLE insights_open_traces")


def add_counters(conn: sqlite3.Connection, deltas: dict[str, int]) -> None:
    conn.executemany(
        "INSERT INTO insights_counters (name, value) VALUES (?, ?)"
        " ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
        [(k, v) for k, v in deltas.items() if v],
    )


def counters(conn: sqlite3.Connection) -> dict[str, int]:
    """The cumulative counters, and what is pending now. Works on a read-only store not migrated yet (its open
    traces one row each: the table before insights migration 4)."""
    out = dict.fromkeys(COUNTERS, 0)
    if _has_tables(conn):
        out.update(dict(conn.execute("SELECT name, value FROM insights_counters")))
        old = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'insights_open_traces'").fetchone()
        out["pending_events"], out["pending_traces"] = conn.execute(
            "SELECT coalesce(sum(events), 0), count(*) FROM insights_open_traces" if old else
            "SELECT coalesce(sum(event_count), 0), coalesce(sum(trace_count), 0) FROM insights_open_trace_columns"
        ).fetchone()
    return out


def _has_tables(conn: sqlite3.Connection) -> bool:
    return conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name='insights_n_plus_one'").fetchone() is not None


def load_findings(
    conn: sqlite3.Connection, start: int | None = None, end: int | None = None, limit: int | None = None
) -> list[FindingRow]:
    """N+1 findings per route and query over windows starting in ``[start, end)``, most time first.

    Works on a read-only store and on one that predates the insights (no table: no findings)."""
    if not _has_tables(conn):
        return []
    sql = """
        SELECT route, method, fingerprint, max(query_text), max(db_table), sum(requests), sum(executions),
               max(max_executions), sum(time_ms), first_seen, last_seen, example_trace_id
        FROM insights_n_plus_one
        WHERE window_start >= ? AND window_start < ?
        GROUP BY route, method, fingerprint
        ORDER BY sum(time_ms) DESC, route, fingerprint
    """
    lo = -(2**62) if start is None else start
    hi = 2**62 if end is None else end
    rows = conn.execute(sql, (lo, hi)).fetchall()
    out: list[FindingRow] = []
    for route, method, fp, text, table, requests, executions, max_exec, time_ms, _f, _l, _ex in rows:
        # The example is the request with the most executions over the whole span.
        example, first, last = conn.execute(
            "SELECT example_trace_id, (SELECT min(first_seen) FROM insights_n_plus_one WHERE route=?1 AND"
            " method=?2 AND fingerprint=?3 AND window_start >= ?4 AND window_start < ?5),"
            " (SELECT max(last_seen) FROM insights_n_plus_one WHERE route=?1 AND method=?2 AND"
            " fingerprint=?3 AND window_start >= ?4 AND window_start < ?5)"
            " FROM insights_n_plus_one WHERE route=?1 AND method=?2 AND fingerprint=?3 AND window_start >= ?4"
            " AND window_start < ?5 ORDER BY max_executions DESC, window_start LIMIT 1",
            (route, method, fp, lo, hi),
        ).fetchone()
        out.append(FindingRow(route, method, fp, text, table, int(requests), int(executions), int(max_exec),
                              float(time_ms), example, float(first), float(last)))
        if limit is not None and len(out) >= limit:
            break
    return out
