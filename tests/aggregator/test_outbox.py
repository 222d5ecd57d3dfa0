"""The outbox on the state store: lanes per sink, rendered at delivery time, outcomes recorded."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aggregator.model import SeriesKey, WindowAggregate, make_tags
from aggregator.outbox import StoreOutbox
from aggregator.sketch import sketch_of
from aggregator.store import Store
from aggregator.windows_store import WindowsStore


def _agg(start: int, values: list[float]) -> WindowAggregate:
    v = np.asarray(values)
    return WindowAggregate(SeriesKey("request", make_tags(route="r/", method="GET")), start, 60, count=v.size,
                           total=float(v.sum()), min=float(v.min()), max=float(v.max()), sketch=sketch_of(v))


def test_lanes_render_latest_values(tmp_path: Path) -> None:
    """Each sink gets its own entry per window; points are the stored window's values at delivery time."""
    with Store(tmp_path / "s.db") as store:
        box, ws = StoreOutbox(store), WindowsStore(store)
        with store.transaction():
            ws.put([_agg(60, [10.0])], now=0)
            box.enqueue(["datadog", "newrelic"], [60], now=0)
        with store.transaction():  # a late event changed the window before delivery
            ws.put([_agg(60, [10.0, 20.0])], now=1)
            box.enqueue(["datadog", "newrelic"], [60], now=1)
        (dd,) = box.pending("datadog", now=5)
        (nr,) = box.pending("newrelic", now=5)
        assert dd.id != nr.id and dd.window_start == 60
        counts = {p.metric: p.value for p in dd.points}
        assert counts["apm.request.count"] == 2.0


def test_delivered_failed_dropped(tmp_path: Path) -> None:
    """delivered() clears an entry, failed() reschedules it, dropped() records why; a change requeues."""
    with Store(tmp_path / "s.db") as store:
        box, ws = StoreOutbox(store), WindowsStore(store)
        with store.transaction():
            ws.put([_agg(60, [1.0]), _agg(120, [2.0]), _agg(180, [3.0])], now=0)
            box.enqueue(["s"], [60, 120, 180], now=0)
        d60, d120, d180 = box.pending("s", now=0)
        box.delivered("s", [d60.id])
        box.failed("s", [d120.id], "HTTP 503", retry_at=100.0)
        box.dropped("s", [d180.id], "too old for the vendor")
        assert box.pending("s", now=50) == []
        (again,) = box.pending("s", now=100)
        assert again.window_start == 120 and again.attempts == 1
        assert box.entry("s", 180)["status"] == "dropped"  # type: ignore[index]
        with store.transaction():
            box.enqueue(["s"], [60, 120], now=200)
        entries = box.pending("s", now=60)  # 120 keeps its retry schedule, 60 is due again
        assert [d.window_start for d in entries] == [60]
        assert box.stats()["s"] == {"pending": 2, "dropped": 1}
