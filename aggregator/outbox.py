"""The outbox: one delivery lane per sink in the state store (``model.Outbox``).

A window that changed in a run gets an entry ``(sink, window_start)`` for each configured sink, upserted in
the same transaction as the windows and the checkpoints, so a commit can never change a window without
queueing its delivery. Entries hold no points: ``pending()`` renders them from the windows as stored at
delivery time through ``catalog.points``, so a window republished after a late event sends its latest
values, and an entry queued twice sends once.

Status: ``pending`` (due at ``next_attempt``) -> ``delivered`` | ``dropped`` (with the reason); a later
change of the window makes it ``pending`` again.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aggregator import catalog
from aggregator.model import Delivery, MetricPoint
from aggregator.optional import optional_attr
from aggregator.store import Store, register_migrations
from aggregator.windows_store import WindowsStore

register_migrations("outbox", [
    """
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        sink TEXT NOT NULL,
        window_start INTEGER NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',   -- pending | delivered | dropped
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt REAL NOT NULL DEFAULT 0,      -- wall clock, epoch seconds
        last_error TEXT,
        enqueued_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        UNIQUE (sink, window_start)
    );
    CREATE INDEX outbox_due ON outbox (sink, status, next_attempt);
    """,
])


def configured_sinks(config: Any) -> list[str]:
    """The names of the configured sinks (``aggregator.sinks.sink_names``); none when sinks are absent."""
    sink_names = optional_attr("aggregator.sinks", "sink_names")
    return [] if sink_names is None else list(sink_names(config))


class StoreOutbox:
    """``model.Outbox`` on the state store. ``prefix`` is the metric prefix (``run.metric_prefix``)."""

    def __init__(self, store: Store, prefix: str = "apm") -> None:
        self.store = store
        self.prefix = prefix
        self.windows = WindowsStore(store)

    # --- written by the run, inside its transaction -------------------------------------------------

    def enqueue(self, sinks: Iterable[str], window_starts: Iterable[int], now: float) -> int:
        """Queue (or re-queue) each changed window for each sink. An entry waiting out a retry keeps its
        schedule; a delivered or dropped one becomes pending again."""
        rows = [(s, w, now, now) for s in sinks for w in sorted(set(window_starts))]
        self.store.conn.executemany(
            "INSERT INTO outbox (sink, window_start, enqueued_at, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (sink, window_start) DO UPDATE SET "
            " next_attempt = CASE WHEN status = 'pending' THEN next_attempt ELSE 0 END,"
            " attempts = CASE WHEN status = 'pending' THEN attempts ELSE 0 END,"
            " status = 'pending', last_error = NULL, updated_at = excluded.updated_at",
            rows,
        )
        return len(rows)

    # --- model.Outbox ---------------------------------------------------------------------------------

    def render(self, window_start: int) -> list[MetricPoint]:
        """The current points of every series of one window."""
        out: list[MetricPoint] = []
        for agg in self.windows.all_windows(window_start, window_start + 1):
            out.extend(catalog.points(agg, self.prefix))
        return out

    def pending(self, sink: str, now: float, limit: int = 1000) -> list[Delivery]:
        rows = self.store.conn.execute(
            "SELECT id, window_start, attempts FROM outbox WHERE sink = ? AND status = 'pending' "
            "AND next_attempt <= ? ORDER BY window_start LIMIT ?",
            (sink, now, limit),
        ).fetchall()
        return [Delivery(id=i, sink=sink, window_start=w, points=self.render(w), attempts=a) for i, w, a in rows]

    def delivered(self, sink: str, ids: Iterable[int]) -> None:
        self._set(sink, ids, "UPDATE outbox SET status = 'delivered', attempts = attempts + 1, last_error = NULL,"
                             " updated_at = ? WHERE sink = ? AND id = ?", ())

    def failed(self, sink: str, ids: Iterable[int], error: str, retry_at: float) -> None:
        self._set(sink, ids, "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt = ?,"
                             " updated_at = ? WHERE sink = ? AND id = ? AND status = 'pending'",
                  (error[:2000], retry_at))

    def dropped(self, sink: str, ids: Iterable[int], reason: str) -> None:
        self._set(sink, ids, "UPDATE outbox SET status = 'dropped', last_error = ?, updated_at = ?"
                             " WHERE sink = ? AND id = ?", (reason[:2000],))

    def _set(self, sink: str, ids: Iterable[int], sql: str, head: tuple[object, ...]) -> None:
        import time

        now = time.time()
        with self.store.transaction() as conn:
            conn.executemany(sql, [(*head, now, sink, i) for i in ids])

    # --- inspection ---------------------------------------------------------------------------------

    def stats(self) -> dict[str, dict[str, int]]:
        """sink -> status -> entries."""
        out: dict[str, dict[str, int]] = {}
        for sink, status, n in self.store.conn.execute(
            "SELECT sink, status, count(*) FROM outbox GROUP BY sink, status"
        ):
            out.setdefault(sink, {})[status] = int(n)
        return out

    def entry(self, sink: str, window_start: int) -> dict[str, Any] | None:
        row = self.store.conn.execute(
            "SELECT id, status, attempts, next_attempt, last_error FROM outbox WHERE sink = ? AND window_start = ?",
            (sink, window_start),
        ).fetchone()
        if row is None:
            return None
        return dict(zip(("id", "status", "attempts", "next_attempt", "last_error"), row, strict=True))
