"""Alert state in the state store: each group's lifecycle, the history of its transitions, and the
notification log with one delivery row per notifier.

Why a log and not "send, then remember": evaluation writes the new states *and* the notifications they
make due in one transaction, so a run killed before that commit re-judges the same evaluation points
(same windows, same event times) and makes the same notifications due again - nothing is forgotten; a run
killed after it finds them pending. A delivery is marked sent in its own commit right after the notifier
accepted it, so a restart never repeats a delivered message; only a run killed between the notifier's
acceptance and that commit sends that one message again.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from aggregator.store import Store, register_migrations

AlertState = Literal["inactive", "pending", "firing", "resolved"]
Kind = Literal["firing", "repeat", "resolved"]
GroupKey = tuple[tuple[str, str], ...]

register_migrations(
    "alerting",
    [
        """
        CREATE TABLE alert_rules (
            rule TEXT PRIMARY KEY,
            last_eval INTEGER NOT NULL            -- event time (a window end) of the last point judged
        );
        CREATE TABLE alert_groups (
            rule TEXT NOT NULL,
            group_key TEXT NOT NULL,              -- JSON [[tag, value], ...]
            state TEXT NOT NULL CHECK (state IN ('inactive', 'pending', 'firing', 'resolved')),
            active_since INTEGER,                 -- first point of the current breach (pending/firing)
            firing_since INTEGER,
            cleared_since INTEGER,                -- first non-breaching point while firing (keep_firing_for)
            resolved_at INTEGER,
            last_value REAL,
            last_samples INTEGER NOT NULL DEFAULT 0,
            last_eval INTEGER NOT NULL,
            last_notified INTEGER,                -- event time of the last firing/repeat notification
            PRIMARY KEY (rule, group_key)
        );
        CREATE TABLE alert_history (
            id INTEGER PRIMARY KEY,
            rule TEXT NOT NULL,
            group_key TEXT NOT NULL,
            at INTEGER NOT NULL,                  -- event time
            from_state TEXT NOT NULL,
            to_state TEXT NOT NULL,
            value REAL,
            recorded REAL NOT NULL                -- wall clock
        );
        CREATE INDEX alert_history_at ON alert_history (at);
        CREATE TABLE alert_notifications (
            id INTEGER PRIMARY KEY,
            rule TEXT NOT NULL,
            group_key TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('firing', 'repeat', 'resolved')),
            at INTEGER NOT NULL,                  -- event time of the point that made it due
            body TEXT NOT NULL,                   -- JSON snapshot of the alert for the message
            created REAL NOT NULL,
            UNIQUE (rule, group_key, kind, at)
        );
        CREATE TABLE alert_deliveries (
            notification_id INTEGER NOT NULL REFERENCES alert_notifications (id) ON DELETE CASCADE,
            notifier TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'expired')),
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt REAL NOT NULL DEFAULT 0,
            last_error TEXT,
            sent_at REAL,
            PRIMARY KEY (notification_id, notifier)
        );
        CREATE INDEX alert_deliveries_due ON alert_deliveries (notifier, status, next_attempt);
        """,
    ],
)


def encode_key(key: GroupKey) -> str:
    return json.dumps([list(p) for p in key], separators=(",", ":"))


def decode_key(text: str) -> GroupKey:
    return tuple((str(k), str(v)) for k, v in json.loads(text))


@dataclass(slots=True)
class GroupState:
    """The lifecycle of one group (one tag combination) of one rule."""

    rule: str
    key: GroupKey
    state: AlertState = "inactive"
    active_since: int | None = None
    firing_since: int | None = None
    cleared_since: int | None = None
    resolved_at: int | None = None
    last_value: float | None = None
    last_samples: int = 0
    last_eval: int = 0
    last_notified: int | None = None
    dirty: bool = field(default=False, compare=False)


@dataclass(frozen=True, slots=True)
class Transition:
    rule: str
    key: GroupKey
    at: int
    from_state: str
    to_state: str
    value: float | None


@dataclass(frozen=True, slots=True)
class Notification:
    rule: str
    key: GroupKey
    kind: Kind
    at: int
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class PendingDelivery:
    """A notification waiting for one notifier."""

    notification_id: int
    notifier: str
    rule: str
    key: GroupKey
    kind: Kind
    at: int
    body: dict[str, Any]
    attempts: int
    created: float


class AlertStore:
    """Alerting's tables in an open ``Store``. Writes join the caller's ``store.transaction()``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.conn: sqlite3.Connection = store.conn
        if not store.readonly:
            # ``logapm run`` opens the store before it imports this stage (stages resolve lazily), so
            # the migrations registered above may not have been applied yet: apply them now (idempotent).
            store.migrate()

    # --- evaluation progress and group states ---------------------------------------------------------

    def last_eval(self, rule: str) -> int | None:
        row = self.conn.execute("SELECT last_eval FROM alert_rules WHERE rule = ?", (rule,)).fetchone()
        return None if row is None else int(row[0])

    def set_last_eval(self, rule: str, at: int) -> None:
        self.conn.execute(
            "INSERT INTO alert_rules (rule, last_eval) VALUES (?, ?)"
            " ON CONFLICT (rule) DO UPDATE SET last_eval = excluded.last_eval",
            (rule, at),
        )

    def groups(self, rule: str) -> dict[GroupKey, GroupState]:
        out: dict[GroupKey, GroupState] = {}
        for row in self.conn.execute(
            "SELECT group_key, state, active_since, firing_since, cleared_since, resolved_at, last_value,"
            " last_samples, last_eval, last_notified FROM alert_groups WHERE rule = ?",
            (rule,),
        ):
            key = decode_key(row[0])
            out[key] = GroupState(rule, key, row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8],
                                  row[9])
        return out

    def save_groups(self, states: Iterable[GroupState]) -> None:
        for g in states:
            if not g.dirty:
                continue
            self.conn.execute(
                "INSERT OR REPLACE INTO alert_groups (rule, group_key, state, active_since, firing_since,"
                " cleared_since, resolved_at, last_value, last_samples, last_eval, last_notified)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (g.rule, encode_key(g.key), g.state, g.active_since, g.firing_since, g.cleared_since,
                 g.resolved_at, g.last_value, g.last_samples, g.last_eval, g.last_notified),
            )
            g.dirty = False

    def forget_rules_except(self, names: Iterable[str], now: float) -> int:
        """Rules gone from the configuration: their open alerts end (recorded in the history, no message:
        nobody judges them any more) and their progress is dropped. Returns how many alerts ended."""
        keep = set(names)
        gone = [r for (r,) in self.conn.execute("SELECT DISTINCT rule FROM alert_rules") if r not in keep]
        ended = 0
        for rule in gone:
            for g in self.groups(rule).values():
                if g.state in ("pending", "firing"):
                    self.record_transition(Transition(rule, g.key, g.last_eval, g.state, "inactive", None), now)
                    ended += 1
            self.conn.execute("DELETE FROM alert_groups WHERE rule = ?", (rule,))
            self.conn.execute("DELETE FROM alert_rules WHERE rule = ?", (rule,))
        return ended

    def record_transition(self, t: Transition, now: float) -> None:
        self.conn.execute(
            "INSERT INTO alert_history (rule, group_key, at, from_state, to_state, value, recorded)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (t.rule, encode_key(t.key), t.at, t.from_state, t.to_state, t.value, now),
        )

    # --- the notification log ----------------------------------------------------------------------------

    def enqueue(self, n: Notification, notifiers: Iterable[str], now: float) -> int | None:
        """Log a due notification and a pending delivery per notifier. The same (rule, group, kind, event
        time) is logged once: re-judging a point can never make a second copy."""
        cur = self.conn.execute(
            "INSERT OR IGNORE INTO alert_notifications (rule, group_key, kind, at, body, created)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (n.rule, encode_key(n.key), n.kind, n.at, json.dumps(n.body, sort_keys=True), now),
        )
        if not cur.rowcount:
            return None
        nid = int(cur.lastrowid or 0)
        for name in notifiers:
            self.conn.execute(
                "INSERT INTO alert_deliveries (notification_id, notifier, status, next_attempt)"
                " VALUES (?, ?, 'pending', 0)",
                (nid, name),
            )
        return nid

    def due(self, notifier: str, now: float) -> list[PendingDelivery]:
        rows = self.conn.execute(
            "SELECT n.id, d.notifier, n.rule, n.group_key, n.kind, n.at, n.body, d.attempts, n.created"
            " FROM alert_deliveries d JOIN alert_notifications n ON n.id = d.notification_id"
            " WHERE d.notifier = ? AND d.status = 'pending' AND d.next_attempt <= ?"
            " ORDER BY n.rule, n.at, n.id",
            (notifier, now),
        ).fetchall()
        return [
            PendingDelivery(r[0], r[1], r[2], decode_key(r[3]), r[4], r[5], json.loads(r[6]), r[7], r[8])
            for r in rows
        ]

    def mark_attempt(self, notifier: str, ids: Iterable[int]) -> None:
        self.conn.executemany(
            "UPDATE alert_deliveries SET attempts = attempts + 1 WHERE notifier = ? AND notification_id = ?",
            [(notifier, i) for i in ids],
        )

    def mark_sent(self, notifier: str, ids: Iterable[int], now: float) -> None:
        self.conn.executemany(
            "UPDATE alert_deliveries SET status = 'sent', sent_at = ?, last_error = NULL"
            " WHERE notifier = ? AND notification_id = ?",
            [(now, notifier, i) for i in ids],
        )

    def mark_failed(self, notifier: str, ids: Iterable[int], error: str, retry_at: float) -> None:
        self.conn.executemany(
            "UPDATE alert_deliveries SET last_error = ?, next_attempt = ?"
            " WHERE notifier = ? AND notification_id = ?",
            [(error[:500], retry_at, notifier, i) for i in ids],
        )

    def expire(self, older_than: float) -> int:
        """Give up on deliveries still pending after a notifier was down for too long."""
        cur = self.conn.execute(
            "UPDATE alert_deliveries SET status = 'expired',"
            " last_error = COALESCE(last_error, '') || ' (expired: not delivered in time)'"
            " WHERE status = 'pending' AND notification_id IN"
            " (SELECT id FROM alert_notifications WHERE created < ?)",
            (older_than,),
        )
        return cur.rowcount

    def prune(self, history_before: int) -> None:
        """Keep the history and the delivered log bounded (event time)."""
        self.conn.execute("DELETE FROM alert_history WHERE at < ?", (history_before,))
        self.conn.execute(
            "DELETE FROM alert_notifications WHERE at < ? AND NOT EXISTS"
            " (SELECT 1 FROM alert_deliveries d WHERE d.notification_id = alert_notifications.id"
            "  AND d.status = 'pending')",
            (history_before,),
        )

    # --- reading, for `logapm alerts` and the tests -----------------------------------------------------------

    def all_groups(self) -> Iterator[GroupState]:
        rules = [r for (r,) in self.conn.execute("SELECT DISTINCT rule FROM alert_groups ORDER BY rule")]
        for rule in rules:
            yield from sorted(self.groups(rule).values(), key=lambda g: g.key)

    def history(self, limit: int = 50) -> list[Transition]:
        rows = self.conn.execute(
            "SELECT rule, group_key, at, from_state, to_state, value FROM alert_history"
            " ORDER BY at DESC, id DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [Transition(r[0], decode_key(r[1]), r[2], r[3], r[4], r[5]) for r in rows]

    def notifications(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The log, newest first, with each notifier's delivery status."""
        sql = (
            "SELECT n.id, n.rule, n.group_key, n.kind, n.at, n.created,"
            " (SELECT group_concat(d.notifier || ':' || d.status || ':' || d.attempts, ' ')"
            "  FROM alert_deliveries d WHERE d.notification_id = n.id)"
            " FROM alert_notifications n ORDER BY n.at DESC, n.id DESC"
        )
        params: tuple[Any, ...] = ()
        if limit is not None:
            sql += " LIMIT ?"
            params = (limit,)
        out = []
        for r in self.conn.execute(sql, params):
            deliveries = {}
            for part in (r[6] or "").split():
                name, status, attempts = part.rsplit(":", 2)
                deliveries[name] = {"status": status, "attempts": int(attempts)}
            out.append({"id": r[0], "rule": r[1], "key": decode_key(r[2]), "kind": r[3], "at": r[4],
                        "created": r[5], "deliveries": deliveries})
        return out

    def delivery_errors(self) -> list[tuple[str, int, str]]:
        return [
            (r[0], r[1], r[2])
            for r in self.conn.execute(
                "SELECT notifier, count(*), max(last_error) FROM alert_deliveries"
                " WHERE status = 'pending' AND last_error IS NOT NULL GROUP BY notifier"
            )
        ]
