"""The insights' tables in the state store: N+1 findings, pending traces, counters; and their read side.

Every write happens inside the run's transaction (``TraceAnalyzer.finish``), so a killed run leaves no
half-counted trace and a finished one has counted each trace exactly once.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from aggregator.insights.partials import OpenTrace
from aggregator.store import register_migrations

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


def load_open_traces(conn: sqlite3.Connection) -> Iterator[tuple[str, OpenTrace]]:
    for trace_id, newest, events, queries, db_ms, cache_ms, external_ms, fps in conn.execute(
        "SELECT trace_id, newest, events, queries, db_ms, cache_ms, external_ms, fingerprints"
        " FROM insights_open_traces ORDER BY rowid"
    ):
        ops = OpenTrace()
        ops.newest, ops.events, ops.queries = newest, events, queries
        ops.db_ms, ops.cache_ms, ops.external_ms = db_ms, cache_ms, external_ms
        ops.fingerprints = orjson.loads(fps)
        yield trace_id, ops


def load_open_trace_heads(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
    """The stored open traces, in rowid order, as what every run reads of them: (newest, events, rowid,
    trace_id); ``open_trace_values`` reads the rest of a row (a run needs it only for the few it merges or
    moves)."""
    return conn.execute("SELECT newest, events, rowid, trace_id FROM insights_open_traces ORDER BY rowid").fetchall()


def open_trace_values(conn: sqlite3.Connection, rowids: list[int]) -> dict[int, tuple[Any, ...]]:
    """The rest of these open-trace rows: rowid -> (queries, db_ms, cache_ms, external_ms, fingerprints JSON
    text)."""
    out: dict[int, tuple[Any, ...]] = {}
    for at in range(0, len(rowids), 500):
        some = rowids[at:at + 500]
        for rowid, *values in conn.execute(
                "SELECT rowid, queries, db_ms, cache_ms, external_ms, fingerprints FROM insights_open_traces"
                f" WHERE rowid IN ({','.join('?' * len(some))})", some):
            out[rowid] = tuple(values)
    return out


def replace_open_trace_rows(conn: sqlite3.Connection, rows: Iterable[tuple[Any, ...]]) -> None:
    """The open traces become ``rows``: (trace_id, newest, events, queries, db_ms, cache_ms, external_ms,
    fingerprints JSON text)."""
    conn.execute("DELETE FROM insights_open_traces")
    conn.executemany("INSERT INTO insights_open_traces VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)


def update_open_trace_rows(conn: sqlite3.Connection, below: int, deleted: Iterable[int],
                           rows: Iterable[tuple[Any, ...]]) -> None:
    """Delete the open-trace rows of rowids under ``below`` and of these rowids, then append ``rows`` (as
    ``replace_open_trace_rows`` takes them): they come after every row kept (a new rowid is the largest one plus
    one)."""
    conn.execute("DELETE FROM insights_open_traces WHERE rowid < ?", (below,))
    conn.executemany("DELETE FROM insights_open_traces WHERE rowid = ?", ((r,) for r in deleted))
    conn.executemany("INSERT INTO insights_open_traces VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)


def add_counters(conn: sqlite3.Connection, deltas: dict[str, int]) -> None:
    conn.executemany(
        "INSERT INTO insights_counters (name, value) VALUES (?, ?)"
        " ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
        [(k, v) for k, v in deltas.items() if v],
    )


def counters(conn: sqlite3.Connection) -> dict[str, int]:
    out = dict.fromkeys(COUNTERS, 0)
    if _has_tables(conn):
        out.update(dict(conn.execute("SELECT name, value FROM insights_counters")))
        out["pending_events"], out["pending_traces"] = conn.execute(
            "SELECT coalesce(sum(events), 0), count(*) FROM insights_open_traces").fetchone()
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
