"""Trace insights on generated JSON log files, read by the real parsers (and by ``logapm run``)."""

from __future__ import annotations

import datetime as dt
import itertools
import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from aggregator import catalog
from aggregator.config import load_config
from aggregator.insights.findings import counters, load_findings
from aggregator.insights.traces import TraceAnalyzer, extract
from aggregator.model import WindowAggregate
from aggregator.store import Store

T0 = 1_764_399_960.0  # a multiple of 60
LOOP_MS = (0.5, 0.75, 1.25, 1.5)  # exact in binary floating point: sums compare exactly
N_PLUS_ONE_ROUTE = "api/stories/"
CHAPTER_QUERY = 'SELECT "chapter"."id", "chapter"."title" FROM "chapter" WHERE "chapter"."story_id" = ?'


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class Traffic:
    """Writes schema-1 lines the way the app does: each operation when it ends, the request last."""

    def __init__(self, seed: int = 1, base: float = T0) -> None:
        self.base = base
        self.rng = random.Random(seed)
        self.lines: list[bytes] = []
        self.ids = itertools.count(1)
        self.expected_loop: list[tuple[int, float]] = []  # per looping request: executions, time

    def _id(self, width: int) -> str:
        return f"{self.rng.getrandbits(width * 4) | 1:0{width}x}"

    def emit(self, kind: str, end_ms: int, dur: float, trace: str, span: str, parent: str | None,
             **fields: Any) -> None:
        doc: dict[str, Any] = {"timestamp": iso(end_ms / 1000), "apm.schema": 1, "apm.kind": kind,
                               "duration_ms": dur, "outcome": fields.pop("outcome", "success"),
                               "service.name": "demo", "trace_id": trace, "span_id": span}
        if parent:
            doc["parent_span_id"] = parent
        doc.update(fields)
        self.lines.append(orjson.dumps(doc) + b"\n")

    def noise(self) -> None:
        self.lines.append(orjson.dumps({"timestamp": "x", "level": "info", "message": "hello"}) + b"\n")

    def request(self, start_ms: int, route: str, loop: int = 0, other: int = 1, cache: bool = False,
                external: bool = False, status: int = 200) -> str:
        """One request whose operations each take whole milliseconds of wall time (end timestamps are
        exact), with durations chosen to be exact binary fractions."""
        trace, root = self._id(32), self._id(16)
        t = start_ms
        total_loop = 0.0
        for i in range(other):
            t += 2
            self.emit("db", t, 1.0, trace, self._id(16), root, **{
                "db.system": "sqlite", "db.operation.name": "SELECT", "db.collection.name": "story",
                "db.query.text": 'SELECT "story"."id" FROM "story" WHERE "story"."id" = ?',
                "db.query.fingerprint": f"story{i % 2}"})
        for i in range(loop):
            t += 2
            ms = LOOP_MS[i % len(LOOP_MS)]
            total_loop += ms
            self.emit("db", t, ms, trace, self._id(16), root, **{
                "db.system": "sqlite", "db.operation.name": "SELECT", "db.collection.name": "chapter",
                "db.query.text": CHAPTER_QUERY, "db.query.fingerprint": "chapter_by_story"})
            if self.rng.random() < 0.1:
                self.noise()
        if cache:
            t += 1
            self.emit("cache", t, 0.5, trace, self._id(16), root, **{
                "cache.name": "default", "cache.operation": "get", "cache.hit": True})
        if external:
            t += 20
            self.emit("external", t, 16.0, trace, self._id(16), root, **{
                "peer.service": "s3", "external.operation": "PutObject", "http.response.status_code": 200})
        t += 3
        self.emit("request", t, float(t - start_ms), trace, root, None, **{
            "http.request.method": "GET", "http.route": route, "http.response.status_code": status})
        if loop:
            self.expected_loop.append((loop, total_loop))
        return trace

    def mixed(self, n: int) -> None:
        """``n`` requests on four routes, overlapping in time as concurrent requests would."""
        for i in range(n):
            start = int(self.base * 1000) + i * 700
            kind = i % 4
            if kind == 0:
                self.request(start, N_PLUS_ONE_ROUTE, loop=6 + i % 7)
            elif kind == 1:
                self.request(start, "api/stories/<int:story_id>/", loop=3, cache=True)  # below threshold
            elif kind == 2:
                self.request(start, "api/upload/", external=True)
            else:
                self.request(start, "health/", other=0, status=503 if i % 8 == 3 else 200)
            if i % 5 == 0:
                self.noise()

    def n_plus_one(self, threshold: int = 5) -> list[tuple[int, float]]:
        """Executions and time of each request whose loop makes an N+1 finding."""
        return [(n, t) for n, t in self.expected_loop if n >= threshold]

    def data(self) -> bytes:
        return b"".join(self.lines)


def parse(data: bytes) -> list[Any]:
    from parsers import LineParser

    result = LineParser().parse(data, "app.log", 0)
    assert not result.invalid, result.dead_letters
    return list(result.events)


def analyse(store_path: Path, chunks: list[bytes], **overrides: Any) -> list[WindowAggregate]:
    store = Store(store_path)
    try:
        analyzer = TraceAnalyzer(store, load_config(environ={}, overrides=overrides))
        for chunk in chunks:
            analyzer.feed(extract(parse(chunk)))
        with store.transaction():
            return analyzer.finish()
    finally:
        store.close()


def snapshot(path: Path, aggs: list[WindowAggregate]) -> tuple[object, ...]:
    merged: dict[tuple[int, str], WindowAggregate] = {}
    for a in aggs:
        key = (a.start, a.series.tag("route"))
        merged.setdefault(key, WindowAggregate(a.series, a.start, a.width))
        catalog.merge_into(merged[key], a)
    points = sorted((p.metric, p.tags, p.timestamp, round(p.value, 9))
                    for a in merged.values() for p in catalog.points(a, "apm"))
    store = Store(path)
    rows = sorted(store.conn.execute("SELECT * FROM insights_n_plus_one").fetchall())
    pending = counters(store.conn)["pending_events"]
    store.close()
    return points, rows, pending


def test_n_plus_one_on_generated_logs(tmp_path: Path) -> None:
    """Every request of the N+1 route is a finding with its exact executions and time; the route that runs
    its query three times is not; noise lines do not disturb the join."""
    traffic = Traffic()
    traffic.mixed(80)
    aggs = analyse(tmp_path / "s.db", [traffic.data()])
    store = Store(tmp_path / "s.db")
    (finding,) = load_findings(store.conn)
    store.close()
    assert (finding.route, finding.method, finding.fingerprint) == (N_PLUS_ONE_ROUTE, "GET", "chapter_by_story")
    assert finding.query_text == CHAPTER_QUERY and finding.db_table == "chapter"
    expected = traffic.n_plus_one()
    assert finding.requests == len(expected) == 20
    assert finding.executions == sum(n for n, _ in expected)
    assert finding.max_executions == max(n for n, _ in expected) == 12
    assert finding.time_ms == sum(t for _, t in expected)
    n_plus_one = sum(catalog.value("apm.db.n_plus_one", a) or 0 for a in aggs)
    assert n_plus_one == 20
    by_route = {a.series.tag("route") for a in aggs}
    assert by_route == {N_PLUS_ONE_ROUTE, "api/stories/<int:story_id>/", "api/upload/", "health/"}


def test_time_share_on_generated_logs(tmp_path: Path) -> None:
    """The upload route spends 16 ms of each 25 ms request in S3 and 1 ms in its one query."""
    traffic = Traffic()
    for i in range(10):
        traffic.request(int(T0 * 1000) + i * 100, "api/upload/", external=True)
    aggs = analyse(tmp_path / "s.db", [traffic.data()])
    merged = catalog.merge(aggs)
    assert merged is not None
    assert catalog.value("apm.request.time_share.external", merged) == pytest.approx(16 / 25)
    assert catalog.value("apm.request.time_share.db", merged) == pytest.approx(1 / 25)
    assert catalog.value("apm.request.time_share.cache", merged) == 0.0


@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.8])
def test_log_split_across_two_runs_gives_the_one_run_result(tmp_path: Path, fraction: float) -> None:
    """Reading the first part of the file in run 1 and the rest in run 2 (a run boundary inside many
    requests) gives the same findings, metrics and pending state as one run over the whole file."""
    traffic = Traffic(seed=3)
    traffic.mixed(120)
    data = traffic.data()
    cut = data.rfind(b"\n", 0, int(len(data) * fraction)) + 1
    one = snapshot(tmp_path / "one.db", analyse(tmp_path / "one.db", [data]))
    two_path = tmp_path / "two.db"
    aggs = analyse(two_path, [data[:cut]]) + analyse(two_path, [data[cut:]])
    assert snapshot(two_path, aggs) == one
