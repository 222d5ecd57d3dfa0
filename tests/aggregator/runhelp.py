"""Helpers for the run tests: ground truth from generated events, stored state read back, the CLI."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from aggregator.model import Tags, make_tags
from aggregator.store import Store
from aggregator.windows_store import WindowsStore

ROOT = Path(__file__).resolve().parents[2]
WIDTH = 60


def _ts(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def series_of(e: dict[str, Any]) -> list[tuple[str, Tags, float]]:
    """(family, tags, value) entries an event must produce: an independent restatement of the design table."""
    kind = e["apm.kind"]
    if kind == "request":
        return [("request", make_tags(route=e.get("http.route"), method=e.get("http.request.method"),
                                      service=e.get("service.name"), env=e.get("deployment.environment")),
                 e["duration_ms"])]
    if kind == "db":
        return [("db", make_tags(db=e.get("db.namespace") or e.get("db.system"), operation=e.get("db.operation.name"),
                                 table=e.get("db.collection.name")), e["duration_ms"])]
    if kind == "cache":
        return [("cache", make_tags(cache=e.get("cache.name"), operation=e.get("cache.operation")), e["duration_ms"])]
    if kind == "external":
        return [("external", make_tags(peer_service=e.get("peer.service"), operation=e.get("external.operation")),
                 e["duration_ms"])]
    if kind == "task":
        tags = make_tags(task=e.get("task.name"), queue=e.get("messaging.destination.name"))
        out = [("task", tags, e["duration_ms"])]
        if e.get("task.queue_wait_ms") is not None:
            out.append(("task.queue_wait", tags, e["task.queue_wait_ms"]))
        return out
    return [(f"metric:{e['metric.name']}", make_tags(e.get("metric.tags") or {}), e["metric.value"])]


def is_error(e: dict[str, Any]) -> bool:
    kind = e["apm.kind"]
    status = e.get("http.response.status_code")
    if kind in ("request", "external"):
        return e.get("outcome") == "failure" or (status is not None and status >= 500)
    if kind == "task":
        return e.get("task.state") == "failure" or (e.get("task.state") is None and e.get("outcome") == "failure")
    if kind in ("db", "cache"):
        return e.get("outcome") == "failure"
    return False


def truth(events: list[dict[str, Any]]) -> dict[tuple[str, Tags, int], dict[str, Any]]:
    """Expected (family, tags, window start) -> {"values": array, "errors": n}."""
    vals: dict[tuple[str, Tags, int], list[float]] = defaultdict(list)
    errs: dict[tuple[str, Tags, int], int] = defaultdict(int)
    for e in events:
        start = int(_ts(e["timestamp"]) // WIDTH) * WIDTH
        for i, (family, tags, v) in enumerate(series_of(e)):
            vals[(family, tags, start)].append(v)
            if i == 0 and is_error(e):
                errs[(family, tags, start)] += 1
    return {k: {"values": np.asarray(v), "errors": errs[k]} for k, v in vals.items()}


def stored(state: Path) -> dict[tuple[str, Tags, int], Any]:
    with Store(state) as store:
        return {(a.series.family, a.series.tags, a.start): a for a in WindowsStore(store).all_windows()
                if a.series.family not in ("pipeline",) and not a.series.family.startswith("trace")}


def assert_matches(state: Path, events: list[dict[str, Any]], *, quantiles: bool = True) -> None:
    """Stored windows == ground truth: exact counts, errors, sums, min, max; quantiles within 1%."""
    want = truth(events)
    got = stored(state)
    assert set(got) == set(want), f"missing {set(want) - set(got)}; unexpected {set(got) - set(want)}"
    for key, t in want.items():
        agg = got[key]
        v = t["values"]
        assert agg.count == v.size, key
        assert agg.errors == t["errors"], key
        assert agg.min == v.min() and agg.max == v.max(), key
        assert abs(agg.total - v.sum()) <= 1e-9 * max(1.0, abs(v.sum())) + 1e-6, key
        if quantiles:
            for q in (0.5, 0.95, 0.99):
                exact = float(np.quantile(v, q))
                est = agg.sketch.quantile(q)
                assert abs(est - exact) <= 0.01 * abs(exact) + 1e-12, (key, q, est, exact)


def logapm(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    base = dict(os.environ, APM_PROVIDER="", PYTHONPATH=str(ROOT))
    base.pop("LOGAPM_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "aggregator.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**base, **(env or {})}, cwd=ROOT)


def store_content(path: Path) -> dict[str, list[Any]]:
    """Every table's rows, but for the columns that record the wall clock or name the store's own files."""
    clock = {"updated_at", "applied_at", "recorded_at", "started_at", "finished_at", "summary", "created_at",
             "enqueued_at"}
    conn = sqlite3.connect(path)
    try:
        out: dict[str, list[Any]] = {}
        for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"):
            cols = [c[1] for c in conn.execute(f'PRAGMA table_info("{table}")') if c[1] not in clock]
            rows = conn.execute(f'SELECT {", ".join(cols)} FROM "{table}"').fetchall()
            if table in ("windows", "series"):  # the pipeline's own window holds the run's duration, and
                # its series the minute of the commit (two runs a second apart may straddle a minute)
                rows = [r for r in rows if r[0] != "pipeline"]
            if table == "dead_letter_export":
                rows = [r[:1] + r[2:] for r in rows]  # path: each store's own dead-letter file
            if table == "checkpoints":  # data: the checkpoint's JSON, with its read time
                rows = [(*r[:-1], {**json.loads(r[-1]), "read_at": None}) for r in rows]
            out[table] = sorted(rows, key=repr)
        return out
    finally:
        conn.close()
