"""Source checkpoints in the state store: where each input file was read up to.

A checkpoint (``aggregator.sources.Checkpoint``: file identity, path, device, inode, fingerprint of the
first bytes, byte offset, compressed flag) is saved in the same transaction as the windows its lines went
into, so the two can never disagree: a run killed before its commit re-reads the same bytes, one killed
after has them counted and checkpointed.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any

import orjson

from aggregator.store import Store, register_migrations

register_migrations("checkpoints", [
    """
    CREATE TABLE checkpoints (
        identity TEXT PRIMARY KEY,     -- the source's identity of the file (device, inode, fingerprint)
        path TEXT NOT NULL,            -- where it was last seen (for people), identity is what counts
        data TEXT NOT NULL,            -- Checkpoint.to_json()
        updated_at REAL NOT NULL
    );
    """,
])


def _checkpoint_class() -> Any:
    return importlib.import_module("aggregator.sources").Checkpoint


def _as_text(data: Any) -> str:
    if isinstance(data, str):
        return data
    if isinstance(data, bytes):
        return data.decode()
    return orjson.dumps(data).decode()


class CheckpointStore:
    def __init__(self, store: Store) -> None:
        self.conn = store.conn

    def load(self) -> dict[str, Any]:
        """identity -> Checkpoint."""
        cls = _checkpoint_class()
        out: dict[str, Any] = {}
        for identity, data in self.conn.execute("SELECT identity, data FROM checkpoints"):
            try:
                out[identity] = cls.from_json(data)
            except (TypeError, ValueError):
                out[identity] = cls.from_json(orjson.loads(data))
        return out

    def save(self, checkpoints: Iterable[Any], now: float) -> int:
        """Insert or replace checkpoints (call inside the run's transaction)."""
        rows = [(str(cp.identity), str(cp.path), _as_text(cp.to_json()), now) for cp in checkpoints]
        self.conn.executemany(
            "INSERT OR REPLACE INTO checkpoints (identity, path, data, updated_at) VALUES (?, ?, ?, ?)", rows
        )
        return len(rows)

    def rows(self) -> list[tuple[str, str, float]]:
        return [tuple(r) for r in self.conn.execute(  # type: ignore[misc]
            "SELECT identity, path, updated_at FROM checkpoints ORDER BY path")]
