"""Window aggregates round-trip through the state store, and the store serves them as a WindowReader."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aggregator.model import SeriesKey, WindowAggregate, make_tags
from aggregator.sketch import sketch_of
from aggregator.store import Store
from aggregator.windows_store import WindowsStore, decode_tags, encode_tags, fold_tags


def _agg(route: str, start: int, values: list[float]) -> WindowAggregate:
    v = np.asarray(values)
    return WindowAggregate(SeriesKey("request", make_tags(route=route, method="GET")), start, 60, count=v.size,
                           errors=1, total=float(v.sum()), min=float(v.min()), max=float(v.max()),
                           counters={"satisfied": 2.0}, sketch=sketch_of(v))


def test_put_get_and_read_back(tmp_path: Path) -> None:
    """Every field, counters and sketch included, survives the store; reads filter by family, span, tags."""
    with Store(tmp_path / "s.db") as store:
        ws = WindowsStore(store)
        with store.transaction():
            ws.put([_agg("a/", 60, [1, 2, 3]), _agg("b/", 60, [5]), _agg("a/", 120, [7, 8])], now=1.0)
        got = ws.get("request", make_tags(route="a/", method="GET"), 60)
        assert got is not None and got.count == 3 and got.total == 6 and got.min == 1 and got.max == 3
        assert got.counters == {"satisfied": 2.0} and got.sketch is not None and got.sketch.count == 3
        assert [a.start for a in ws.windows("request", 0, 180)] == [60, 60, 120]
        assert [a.series.tag("route") for a in ws.windows("request", 0, 180, match={"route": "a/"})] == ["a/", "a/"]
        assert list(ws.windows("request", 0, 60)) == []
        assert ws.latest_window_start() == 120


def test_rollback_leaves_nothing(tmp_path: Path) -> None:
    """Windows written in a transaction that fails are not there afterwards."""
    with Store(tmp_path / "s.db") as store:
        ws = WindowsStore(store)
        try:
            with store.transaction():
                ws.put([_agg("a/", 60, [1])], now=1.0)
                raise RuntimeError("killed")
        except RuntimeError:
            pass
        assert list(ws.all_windows()) == []


def test_tags_encoding_and_folding() -> None:
    """Tags encode canonically and round-trip; folding keeps the keys and sets every value to `other`."""
    tags = make_tags(route="x", method="GET", service="s")
    assert decode_tags(encode_tags(tags)) == tags
    assert fold_tags(tags) == (("method", "other"), ("route", "other"), ("service", "other"))


def test_series_register_and_watermark(tmp_path: Path) -> None:
    """Admitted series and the watermark persist; the watermark only moves forward."""
    with Store(tmp_path / "s.db") as store:
        ws = WindowsStore(store)
        with store.transaction():
            ws.add_series([("request", make_tags(route="a"), 60), ("request", make_tags(route="a"), 120)])
            ws.set_watermark(500.0)
            ws.set_watermark(400.0)
        assert ws.known_series() == {"request": {make_tags(route="a")}}
        assert ws.watermark() == 500.0


def test_get_in_a_transaction_sees_every_write(tmp_path: Path) -> None:
    """Inside a write transaction ``get`` reads a start's rows once; whatever is written after that (``put``,
    plain SQL, another WindowsStore on the connection, another transaction) is what the next ``get`` sees."""
    a, b = make_tags(route="a/", method="GET"), make_tags(route="b/", method="GET")
    with Store(tmp_path / "s.db") as store:
        ws, other = WindowsStore(store), WindowsStore(store)
        with store.transaction():
            ws.put([_agg("a/", 60, [1, 2, 3])], now=1.0)
            first = ws.get("request", a, 60)
            assert first is not None and first.count == 3 and ws.get("request", b, 60) is None
            assert ws.get("request", a, 120) is None and ws.get("db", a, 60) is None
            first.count = 99  # a caller's change to what it got is not what the store holds
            again = ws.get("request", a, 60)
            assert again is not None and again.count == 3 and again is not first
            other.put([_agg("b/", 60, [5])], now=1.0)
            got_b = ws.get("request", b, 60)
            assert got_b is not None and got_b.count == 1
            store.conn.execute("UPDATE windows SET count = 7 WHERE tags = ?", (encode_tags(a),))
            changed = ws.get("request", a, 60)
            assert changed is not None and changed.count == 7
            store.conn.execute("DELETE FROM windows WHERE start = 60")
            assert ws.get("request", a, 60) is None and ws.get("request", b, 60) is None
        with store.transaction():
            ws.put([_agg("a/", 60, [4])], now=1.0)
        with store.transaction():
            got = ws.get("request", a, 60)
            assert got is not None and got.count == 1 and got.total == 4


def test_get_in_a_new_transaction_sees_another_connections_write(tmp_path: Path) -> None:
    """The rows ``get`` read in one write transaction are not reused in the next: another connection may have
    written in between without this connection's ``total_changes`` moving."""
    a = make_tags(route="a/", method="GET")
    with Store(tmp_path / "s.db") as store, Store(tmp_path / "s.db") as writer:
        ws = WindowsStore(store)
        with store.transaction():
            ws.put([_agg("a/", 60, [1, 2, 3])], now=1.0)
        with store.transaction():
            got = ws.get("request", a, 60)
            assert got is not None and got.count == 3
        with writer.transaction():
            WindowsStore(writer).put([_agg("a/", 60, [4])], now=2.0)
        with store.transaction():
            got = ws.get("request", a, 60)
            assert got is not None and got.count == 1 and got.total == 4


def test_get_many_is_get_of_each_key(tmp_path: Path) -> None:
    """``get_many`` gives, by key, what ``get`` gives for each key that is stored, in a write transaction (rows
    read per start, seeing the writes made in it) and outside one."""
    a, b = make_tags(route="a/", method="GET"), make_tags(route="b/", method="GET")
    keys = [("request", a, 60), ("request", b, 60), ("request", a, 120), ("request", b, 180), ("db", a, 60)]

    def fields(agg: WindowAggregate | None) -> object:
        return None if agg is None else (agg.series, agg.start, agg.width, agg.count, agg.errors, agg.total,
                                         agg.min, agg.max, agg.counters,
                                         None if agg.sketch is None else agg.sketch.to_bytes())

    with Store(tmp_path / "s.db") as store:
        ws = WindowsStore(store)

        def check() -> None:
            got = ws.get_many(keys)
            assert list(got) == [k for k in keys if ws.get(*k) is not None]
            assert {k: fields(v) for k, v in got.items()} == {k: fields(ws.get(*k)) for k in got}

        with store.transaction():
            assert ws.get_many(keys) == {}
            ws.put([_agg("a/", 60, [1, 2, 3]), _agg("b/", 60, [5]), _agg("a/", 120, [7, 8])], now=1.0)
            check()
            ws.put([_agg("b/", 180, [9])], now=1.0)
            check()
            assert len(ws.get_many(keys)) == 4
        check()
